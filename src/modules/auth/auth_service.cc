#include "auth_service.h"

#include <prometheus/family.h>
#include <spdlog/spdlog.h>

#include <optional>

#include "infrachat/core/logging.h"
#include "infrachat/core/metrics.h"
#include "infrachat/core/validation.h"
#include "refresh_token.h"
#include "sodium_util.h"

namespace infrachat::auth {

namespace {

std::shared_ptr<spdlog::logger> Log() { return ModuleLogger("auth"); }

Error BadCredentials() { return MakeError(Code::kUnauthenticated, std::string(kBadCredentials)); }
Error InvalidRefreshToken() { return MakeError(Code::kUnauthenticated, "invalid refresh token"); }

bool HasControlCharacter(std::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

std::size_t CodePoints(std::string_view utf8) {
  std::size_t n = 0;
  for (unsigned char c : utf8) n += (c & 0xC0) != 0x80;
  return n;
}

// Registration-time username check: the shared rule, plus a hint for upper-case input.
Result<void> CheckNewUsername(const std::string& username) {
  auto valid = ValidateUsername(username);
  if (valid.ok()) return valid;
  std::string lower = username;
  bool had_upper = false;
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
      had_upper = true;
    }
  }
  if (had_upper && ValidateUsername(lower).ok()) {
    return MakeError(Code::kInvalidArgument,
                     "usernames are lower-case only; try \"" + lower + "\"");
  }
  return valid;
}

Result<void> CheckPassword(const std::string& password) {
  if (password.size() < kMinPasswordBytes || password.size() > kMaxPasswordBytes) {
    return MakeError(Code::kInvalidArgument, "password must be 8 to 1024 bytes long");
  }
  return Ok();
}

Result<void> CheckDeviceId(const std::string& device_id) {
  if (device_id.size() > kMaxDeviceIdBytes || !IsValidUtf8(device_id) ||
      HasControlCharacter(device_id)) {
    return MakeError(Code::kInvalidArgument,
                     "device_id must be at most 128 bytes of UTF-8 without control characters");
  }
  return Ok();
}

Result<std::string> CheckDisplayName(const std::string& display_name, const std::string& username) {
  if (display_name.empty()) return username;
  if (!IsValidUtf8(display_name)) {
    return MakeError(Code::kInvalidArgument, "display_name is not valid UTF-8");
  }
  if (HasControlCharacter(display_name)) {
    return MakeError(Code::kInvalidArgument, "display_name contains control characters");
  }
  if (CodePoints(display_name) > kMaxDisplayNameChars) {
    return MakeError(Code::kInvalidArgument, "display_name is longer than 64 characters");
  }
  return display_name;
}

}  // namespace

AuthMetrics::AuthMetrics() {
  auto& logins = prometheus::BuildCounter()
                     .Name("infrachat_auth_logins_total")
                     .Help(
                         "Logins by result: ok, unknown_user, wrong_password, "
                         "invalid_request, unavailable, error")
                     .Register(MetricsRegistry());
  auto& registrations = prometheus::BuildCounter()
                            .Name("infrachat_auth_registrations_total")
                            .Help(
                                "Registrations by result: ok, username_taken, "
                                "invalid_request, unavailable, error")
                            .Register(MetricsRegistry());
  auto& refreshes = prometheus::BuildCounter()
                        .Name("infrachat_auth_token_refreshes_total")
                        .Help(
                            "Refresh-token rotations by result: ok, invalid_token, reused "
                            "(the session is revoked), revoked, expired, unavailable, error")
                        .Register(MetricsRegistry());
  // Every result of the bounded set shows (at 0) from the start.
  for (const char* r :
       {"ok", "unknown_user", "wrong_password", "invalid_request", "unavailable", "error"}) {
    logins_[r] = &logins.Add({{"result", r}});
  }
  for (const char* r : {"ok", "username_taken", "invalid_request", "unavailable", "error"}) {
    registrations_[r] = &registrations.Add({{"result", r}});
  }
  for (const char* r :
       {"ok", "invalid_token", "reused", "revoked", "expired", "unavailable", "error"}) {
    refreshes_[r] = &refreshes.Add({{"result", r}});
  }
}

namespace {

// The result label of an outcome whose decision did not name one: ok, or how it failed.
std::string_view ResultOf(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kUnavailable:
    case Code::kDeadlineExceeded:
    case Code::kCancelled:
      return "unavailable";
    case Code::kInvalidArgument:
      return "invalid_request";
    default:
      return "error";
  }
}

void CountIn(const std::map<std::string_view, prometheus::Counter*>& counters, Code code,
             std::string_view result) {
  if (result.empty()) result = ResultOf(code);
  auto it = counters.find(result);
  if (it == counters.end()) it = counters.find("error");
  it->second->Increment();
}

}  // namespace

void AuthMetrics::Login(Code code, std::string_view result) const {
  CountIn(logins_, code, result);
}
void AuthMetrics::Registration(Code code, std::string_view result) const {
  CountIn(registrations_, code, result);
}
void AuthMetrics::Refresh(Code code, std::string_view result) const {
  CountIn(refreshes_, code, result);
}

struct AuthService::IssuedSession {
  std::string session_id;
  std::string refresh_token;
  SignedToken access;
};

AuthService::AuthService(pg::ConnectionPool* db, const AuthConfig& config, KeySet keys,
                         UnixClock clock)
    : db_(db),
      refresh_ttl_s_(config.refresh_token_ttl_s),
      clock_(clock),
      hasher_(PasswordHasherOptions{config.argon2_ops_limit, config.argon2_mem_limit_kib, 0}),
      signer_(std::move(keys.signing),
              TokenOptions{config.issuer, config.audience, config.access_token_ttl_s, 0}, clock),
      verifier_(keys.verification, TokenOptions{config.issuer, config.audience, 0, 0}, clock) {
  for (const VerificationKey& key : keys.verification) {
    public_keys_.public_pems.emplace_back(key.kid, key.public_pem);
  }
  public_keys_.issuer = config.issuer;
  public_keys_.audience = config.audience;
}

Result<TokenVerificationKeys> AuthService::VerificationKeys() const { return public_keys_; }

// Inserts a session row and signs its first access token, inside the caller's transaction, so
// that a signing failure leaves no session behind.
Result<AuthService::IssuedSession> AuthService::CreateSession(pqxx::work& tx, std::uint64_t user_id,
                                                              const std::string& username,
                                                              const std::string& device_id) {
  const std::int64_t now = clock_();
  RefreshToken refresh{NewSessionId(), NewRefreshSecret()};
  tx.exec_params(
      "INSERT INTO sessions (id, user_id, device_id, refresh_hash, created_at, expires_at)"
      " VALUES ($1, $2, $3, decode($4, 'hex'), to_timestamp($5), to_timestamp($6))",
      refresh.session_id, static_cast<std::int64_t>(user_id), device_id,
      HashRefreshSecret(refresh.secret), now, now + refresh_ttl_s_);
  auto access = signer_.Sign(user_id, username, refresh.session_id);
  if (!access.ok()) return access.error();
  return IssuedSession{refresh.session_id, FormatRefreshToken(refresh), std::move(access).value()};
}

namespace {

v1::Session ToProto(std::uint64_t user_id, const std::string& username,
                    const std::string& display_name, std::string access_token,
                    std::int64_t access_expires_at, std::string refresh_token) {
  v1::Session s;
  s.set_user_id(user_id);
  s.set_username(username);
  s.set_display_name(display_name);
  s.set_access_token(std::move(access_token));
  s.set_access_expires_at_unix(access_expires_at);
  s.set_refresh_token(std::move(refresh_token));
  return s;
}

}  // namespace

Result<v1::Session> AuthService::Register(const CallContext& call,
                                          const v1::RegisterRequest& request) {
  std::string_view result;
  auto session = DoRegister(call, request, &result);
  metrics_.Registration(session.code(), result);
  return session;
}

Result<v1::Session> AuthService::DoRegister(const CallContext& call,
                                            const v1::RegisterRequest& request,
                                            std::string_view* result) {
  try {
    if (auto r = CheckNewUsername(request.username()); !r.ok()) return r.error();
    if (auto r = CheckPassword(request.password()); !r.ok()) return r.error();
    if (auto r = CheckDeviceId(request.device_id()); !r.ok()) return r.error();
    auto display_name = CheckDisplayName(request.display_name(), request.username());
    if (!display_name.ok()) return display_name.error();

    // Hash before taking a connection: argon2id is the slow part.
    auto hash = hasher_.Hash(request.password());
    if (!hash.ok()) return hash.error();

    return db_->With<v1::Session>(call, [&](pqxx::connection& conn) -> Result<v1::Session> {
      pqxx::work tx(conn);
      std::uint64_t user_id = 0;
      try {
        auto row = tx.exec_params1(
            "INSERT INTO users (username, display_name, password_hash) VALUES ($1, $2, $3)"
            " RETURNING id",
            request.username(), *display_name, *hash);
        user_id = row[0].as<std::uint64_t>();
      } catch (const pqxx::unique_violation&) {
        *result = "username_taken";
        return MakeError(Code::kAlreadyExists, "username is taken");
      }
      auto session = CreateSession(tx, user_id, request.username(), request.device_id());
      if (!session.ok()) return session.error();
      tx.commit();
      LogTraceScope trace(call.trace_id());
      LogEvent(Log(), spdlog::level::info, "user registered",
               {{"user_id", user_id}, {"username", request.username()}});
      return ToProto(user_id, request.username(), *display_name, session->access.token,
                     session->access.expires_at_unix, session->refresh_token);
    });
  } catch (const std::exception& e) {
    return MakeError(Code::kInternal, std::string("register failed: ") + e.what());
  }
}

Result<v1::Session> AuthService::Login(const CallContext& call, const v1::LoginRequest& request) {
  std::string_view result;
  auto session = DoLogin(call, request, &result);
  metrics_.Login(session.code(), result);
  if (!session.ok()) {
    // The username only when it names a user: an unknown one is often a password typed into
    // the wrong field. Never the password.
    LogTraceScope trace(call.trace_id());
    const bool known = result == "wrong_password";
    // Without a result of its own, the reason is the metrics' (from the code).
    const std::string_view reason = result.empty() ? ResultOf(session.code()) : result;
    LogEvent(Log(), spdlog::level::info, "login failed",
             {{"reason", reason},
              {"code", CodeName(session.code())},
              {"username", known ? std::string_view(request.username()) : std::string_view()}});
  }
  return session;
}

Result<v1::Session> AuthService::DoLogin(const CallContext& call, const v1::LoginRequest& request,
                                         std::string_view* result) {
  try {
    if (auto r = CheckDeviceId(request.device_id()); !r.ok()) return r.error();
    const std::string& username = request.username();
    const std::string& password = request.password();
    if (!ValidateUsername(username).ok() || password.size() > kMaxPasswordBytes) {
      // Cannot exist; still costs one verification, like every other failure.
      hasher_.DummyVerify(password.substr(0, kMaxPasswordBytes));
      *result = "unknown_user";
      return BadCredentials();
    }

    struct UserRow {
      std::uint64_t id = 0;
      std::string display_name;
      std::string password_hash;
    };
    auto user = db_->With<std::optional<UserRow>>(
        call, [&](pqxx::connection& conn) -> Result<std::optional<UserRow>> {
          pqxx::read_transaction tx(conn);
          auto rows = tx.exec_params(
              "SELECT id, display_name, password_hash FROM users WHERE username = $1", username);
          if (rows.empty()) return std::optional<UserRow>();
          return std::optional<UserRow>(UserRow{rows[0][0].as<std::uint64_t>(),
                                                rows[0][1].as<std::string>(),
                                                rows[0][2].as<std::string>()});
        });
    if (!user.ok()) return user.error();
    if (!user->has_value()) {
      hasher_.DummyVerify(password);
      *result = "unknown_user";
      return BadCredentials();
    }
    const UserRow& row = **user;
    if (!hasher_.Verify(row.password_hash, password)) {
      *result = "wrong_password";
      return BadCredentials();
    }

    // Limits were raised since this hash was made: upgrade it while the password is at hand.
    std::optional<std::string> rehash;
    if (hasher_.NeedsRehash(row.password_hash)) {
      if (auto h = hasher_.Hash(password); h.ok()) rehash = std::move(h).value();
    }

    return db_->With<v1::Session>(call, [&](pqxx::connection& conn) -> Result<v1::Session> {
      pqxx::work tx(conn);
      if (rehash) {
        tx.exec_params("UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3",
                       static_cast<std::int64_t>(row.id), *rehash, row.password_hash);
      }
      auto session = CreateSession(tx, row.id, username, request.device_id());
      if (!session.ok()) return session.error();
      tx.commit();
      return ToProto(row.id, username, row.display_name, session->access.token,
                     session->access.expires_at_unix, session->refresh_token);
    });
  } catch (const std::exception& e) {
    return MakeError(Code::kInternal, std::string("login failed: ") + e.what());
  }
}

Result<v1::Session> AuthService::Refresh(const CallContext& call,
                                         const v1::RefreshRequest& request) {
  std::string_view result;
  auto session = DoRefresh(call, request, &result);
  metrics_.Refresh(session.code(), result);
  return session;
}

Result<v1::Session> AuthService::DoRefresh(const CallContext& call,
                                           const v1::RefreshRequest& request,
                                           std::string_view* result) {
  try {
    auto token = ParseRefreshToken(request.refresh_token());
    if (!token) {
      *result = "invalid_token";
      return InvalidRefreshToken();
    }
    const std::string presented = HashRefreshSecret(token->secret);

    return db_->With<v1::Session>(call, [&](pqxx::connection& conn) -> Result<v1::Session> {
      const std::int64_t now = clock_();
      *result = {};  // a database failure from here is counted by its code
      pqxx::work tx(conn);
      // FOR UPDATE: concurrent refreshes of one session take turns, so exactly one rotates.
      auto rows = tx.exec_params(
          "SELECT s.user_id, encode(s.refresh_hash, 'hex'), s.revoked_at IS NOT NULL,"
          " s.expires_at <= to_timestamp($2), u.username, u.display_name"
          " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 FOR UPDATE OF s",
          token->session_id, now);
      if (rows.empty()) {
        *result = "invalid_token";
        return InvalidRefreshToken();
      }
      const auto& row = rows[0];
      const auto user_id = row[0].as<std::uint64_t>();
      const std::string current = row[1].as<std::string>();
      const bool revoked = row[2].as<bool>();
      const bool expired = row[3].as<bool>();
      const std::string username = row[4].as<std::string>();
      const std::string display_name = row[5].as<std::string>();

      if (!ConstantTimeEquals(presented, current)) {
        // Not the current secret. One we handed out earlier means it was copied: whoever
        // holds the session now cannot be trusted, so the session ends. A secret we never
        // issued changes nothing (otherwise knowing a sid, which is in every access token,
        // would be enough to log someone out).
        auto old = tx.exec_params(
            "SELECT encode(refresh_hash, 'hex') FROM session_rotated_refresh WHERE session_id = $1",
            token->session_id);
        bool reused = false;
        for (const auto& r : old) reused |= ConstantTimeEquals(presented, r[0].as<std::string>());
        if (!reused) {
          *result = "invalid_token";
          return InvalidRefreshToken();
        }
        *result = "reused";
        if (!revoked) {
          tx.exec_params(
              "UPDATE sessions SET revoked_at = to_timestamp($2),"
              " revoke_reason = 'refresh token reuse' WHERE id = $1",
              token->session_id, now);
          tx.commit();
          Log()->warn("refresh token reuse on session {} of user {}: session revoked",
                      token->session_id, user_id);
        }
        return MakeError(Code::kUnauthenticated,
                         "refresh token was already used; session revoked, log in again");
      }
      if (revoked) {
        *result = "revoked";
        return MakeError(Code::kUnauthenticated, "session revoked");
      }
      if (expired) {
        *result = "expired";
        return MakeError(Code::kUnauthenticated, "session expired");
      }

      const std::string secret = NewRefreshSecret();
      // A secret rotated away more than a refresh TTL ago would have expired by itself by now:
      // forget it, so an active session's history stays bounded.
      tx.exec_params(
          "DELETE FROM session_rotated_refresh WHERE session_id = $1"
          " AND rotated_at < to_timestamp($2)",
          token->session_id, now - refresh_ttl_s_);
      tx.exec_params(
          "INSERT INTO session_rotated_refresh (session_id, refresh_hash, rotated_at)"
          " VALUES ($1, decode($2, 'hex'), to_timestamp($3)) ON CONFLICT DO NOTHING",
          token->session_id, current, now);
      tx.exec_params(
          "UPDATE sessions SET refresh_hash = decode($2, 'hex'), rotated_at = to_timestamp($3),"
          " expires_at = to_timestamp($4) WHERE id = $1",
          token->session_id, HashRefreshSecret(secret), now, now + refresh_ttl_s_);
      auto access = signer_.Sign(user_id, username, token->session_id);
      if (!access.ok()) return access.error();
      tx.commit();
      return ToProto(user_id, username, display_name, access->token, access->expires_at_unix,
                     FormatRefreshToken({token->session_id, secret}));
    });
  } catch (const std::exception& e) {
    return MakeError(Code::kInternal, std::string("refresh failed: ") + e.what());
  }
}

Result<void> AuthService::Logout(const CallContext& call, const v1::LogoutRequest& request) {
  try {
    auto token = ParseRefreshToken(request.refresh_token());
    if (!token) return InvalidRefreshToken();
    const std::string presented = HashRefreshSecret(token->secret);

    auto done = db_->With<bool>(call, [&](pqxx::connection& conn) -> Result<bool> {
      const std::int64_t now = clock_();
      pqxx::work tx(conn);
      auto rows = tx.exec_params(
          "SELECT encode(refresh_hash, 'hex'), revoked_at IS NOT NULL FROM sessions"
          " WHERE id = $1 FOR UPDATE",
          token->session_id);
      if (rows.empty()) return InvalidRefreshToken();
      bool known = ConstantTimeEquals(presented, rows[0][0].as<std::string>());
      if (!known) {
        // A rotated-away secret may end its session too (reuse detection would anyway).
        auto old = tx.exec_params(
            "SELECT encode(refresh_hash, 'hex') FROM session_rotated_refresh WHERE session_id = $1",
            token->session_id);
        for (const auto& r : old) known |= ConstantTimeEquals(presented, r[0].as<std::string>());
      }
      if (!known) return InvalidRefreshToken();
      if (!rows[0][1].as<bool>()) {
        tx.exec_params(
            "UPDATE sessions SET revoked_at = to_timestamp($2), revoke_reason = 'logout'"
            " WHERE id = $1",
            token->session_id, now);
        tx.commit();
      }
      return true;
    });
    if (!done.ok()) return done.error();
    return Ok();
  } catch (const std::exception& e) {
    return MakeError(Code::kInternal, std::string("logout failed: ") + e.what());
  }
}

Result<Principal> AuthService::VerifyAccessToken(std::string_view token) const {
  return verifier_.Verify(token);
}

Result<bool> AuthService::IsSessionActive(const CallContext& call, std::string_view session_id) {
  try {
    if (!IsWellFormedSessionId(session_id)) return false;
    const std::string id(session_id);
    return db_->With<bool>(call, [&](pqxx::connection& conn) -> Result<bool> {
      pqxx::read_transaction tx(conn);
      auto rows = tx.exec_params(
          "SELECT revoked_at IS NULL AND expires_at > to_timestamp($2) FROM sessions"
          " WHERE id = $1",
          id, clock_());
      return !rows.empty() && rows[0][0].as<bool>();
    });
  } catch (const std::exception& e) {
    return MakeError(Code::kInternal, std::string("session check failed: ") + e.what());
  }
}

Result<std::vector<std::string>> AuthService::ActiveSessions(
    const CallContext& call, const std::vector<std::string>& session_ids) {
  try {
    std::vector<std::string> ids;
    for (const auto& id : session_ids) {
      if (IsWellFormedSessionId(id)) ids.push_back(id);
    }
    if (ids.empty()) return std::vector<std::string>{};
    return db_->With<std::vector<std::string>>(
        call, [&](pqxx::connection& conn) -> Result<std::vector<std::string>> {
          pqxx::read_transaction tx(conn);
          auto rows = tx.exec_params(
              "SELECT id FROM sessions WHERE id = ANY($1::text[])"
              " AND revoked_at IS NULL AND expires_at > to_timestamp($2)",
              pg::ToArrayLiteral(ids), clock_());
          std::vector<std::string> active;
          for (const auto& row : rows) active.push_back(row[0].as<std::string>());
          return active;
        });
  } catch (const std::exception& e) {
    return MakeError(Code::kInternal, std::string("session check failed: ") + e.what());
  }
}

Result<std::map<std::uint64_t, std::string>> AuthService::DisplayNames(
    const CallContext& call, const std::vector<std::uint64_t>& user_ids) {
  using Names = std::map<std::uint64_t, std::string>;
  if (user_ids.empty()) return Names{};
  try {
    std::vector<std::int64_t> ids(user_ids.begin(), user_ids.end());
    return db_->With<Names>(call, [&](pqxx::connection& conn) -> Result<Names> {
      pqxx::read_transaction tx(conn);
      auto rows = tx.exec_params("SELECT id, display_name FROM users WHERE id = ANY($1::bigint[])",
                                 pg::ToArrayLiteral(ids));
      Names names;
      for (const auto& row : rows) names[row[0].as<std::uint64_t>()] = row[1].as<std::string>();
      return names;
    });
  } catch (const std::exception& e) {
    return MakeError(Code::kInternal, std::string("display names failed: ") + e.what());
  }
}

Result<std::uint64_t> AuthService::LookupUserId(const CallContext& call,
                                                std::string_view username) {
  try {
    if (!ValidateUsername(username).ok()) {
      return MakeError(Code::kNotFound, "no user named " + std::string(username));
    }
    const std::string name(username);
    return db_->With<std::uint64_t>(call, [&](pqxx::connection& conn) -> Result<std::uint64_t> {
      pqxx::read_transaction tx(conn);
      auto rows = tx.exec_params("SELECT id FROM users WHERE username = $1", name);
      if (rows.empty()) return MakeError(Code::kNotFound, "no user named " + name);
      return rows[0][0].as<std::uint64_t>();
    });
  } catch (const std::exception& e) {
    return MakeError(Code::kInternal, std::string("user lookup failed: ") + e.what());
  }
}

}  // namespace infrachat::auth
