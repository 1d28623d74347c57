// AuthService: the in-process AuthApi of the auth module (users, sessions, refresh tokens,
// access tokens).
#pragma once

#include <prometheus/counter.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "infrachat/api/auth_api.h"
#include "infrachat/config/config.h"
#include "infrachat/storage/pg.h"
#include "key_store.h"
#include "password_hasher.h"
#include "token_signer.h"

namespace infrachat::auth {

inline constexpr std::size_t kMinPasswordBytes = 8;
inline constexpr std::size_t kMaxPasswordBytes = 1024;
inline constexpr std::size_t kMaxDisplayNameChars = 64;
inline constexpr std::size_t kMaxDeviceIdBytes = 128;

// The one message for an unknown user and for a wrong password.
inline constexpr std::string_view kBadCredentials = "invalid username or password";

// The auth module's counters (docs/adr/0010), each by a `result` label from a fixed set:
// infrachat_auth_logins_total, infrachat_auth_registrations_total,
// infrachat_auth_token_refreshes_total. (Refused access tokens are counted where they are
// verified: infrachat_auth_token_verifications_failed_total, token_signer.cc.)
// `result` empty: derived from `code` (ok, unavailable, invalid_request or error).
// Thread-safety: immutable after construction; counting is atomic.
class AuthMetrics {
 public:
  AuthMetrics();
  void Login(Code code, std::string_view result) const;
  void Registration(Code code, std::string_view result) const;
  void Refresh(Code code, std::string_view result) const;

 private:
  std::map<std::string_view, prometheus::Counter*> logins_;
  std::map<std::string_view, prometheus::Counter*> registrations_;
  std::map<std::string_view, prometheus::Counter*> refreshes_;
};

// Thread-safety: all methods may be called concurrently from any thread (state is immutable
// after construction; the database and the pool serialize the rest).
// Blocking: everything but VerifyAccessToken blocks on the database and/or argon2id; password
// hashing runs without holding a database connection.
// Errors: never throws from an AuthApi method; database failures come back as UNAVAILABLE /
// INTERNAL from ConnectionPool::With.
// Ownership: `db` is borrowed and must outlive the service.
class AuthService final : public AuthApi {
 public:
  // Throws std::invalid_argument for argon2 limits libsodium does not accept.
  AuthService(pg::ConnectionPool* db, const AuthConfig& config, KeySet keys,
              UnixClock clock = SystemUnixClock());

  Result<v1::Session> Register(const CallContext& call,
                               const v1::RegisterRequest& request) override;
  Result<v1::Session> Login(const CallContext& call, const v1::LoginRequest& request) override;
  Result<v1::Session> Refresh(const CallContext& call, const v1::RefreshRequest& request) override;
  Result<void> Logout(const CallContext& call, const v1::LogoutRequest& request) override;
  Result<Principal> VerifyAccessToken(std::string_view token) const override;
  Result<bool> IsSessionActive(const CallContext& call, std::string_view session_id) override;
  Result<std::vector<std::string>> ActiveSessions(
      const CallContext& call, const std::vector<std::string>& session_ids) override;
  Result<TokenVerificationKeys> VerificationKeys() const override;
  Result<std::map<std::uint64_t, std::string>> DisplayNames(
      const CallContext& call, const std::vector<std::uint64_t>& user_ids) override;

  Result<std::uint64_t> LookupUserId(const CallContext& call, std::string_view username) override;

  const std::string& signing_kid() const { return signer_.kid(); }

 private:
  struct IssuedSession;
  // The calls themselves; each sets `*result` where it decides an outcome the code alone does
  // not tell (unknown user or wrong password, ...), for AuthMetrics.
  Result<v1::Session> DoRegister(const CallContext& call, const v1::RegisterRequest& request,
                                 std::string_view* result);
  Result<v1::Session> DoLogin(const CallContext& call, const v1::LoginRequest& request,
                              std::string_view* result);
  Result<v1::Session> DoRefresh(const CallContext& call, const v1::RefreshRequest& request,
                                std::string_view* result);
  Result<IssuedSession> CreateSession(pqxx::work& tx, std::uint64_t user_id,
                                      const std::string& username, const std::string& device_id);

  pg::ConnectionPool* db_;
  std::int64_t refresh_ttl_s_;
  UnixClock clock_;
  PasswordHasher hasher_;
  TokenSigner signer_;
  TokenVerifier verifier_;
  TokenVerificationKeys public_keys_;
  AuthMetrics metrics_;
};

}  // namespace infrachat::auth
