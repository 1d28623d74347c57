// AuthService: the in-process AuthApi of the auth module (users, sessions, refresh tokens,
// access tokens).
#pragma once

#include <cstdint>
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
  Result<IssuedSession> CreateSession(pqxx::work& tx, std::uint64_t user_id,
                                      const std::string& username, const std::string& device_id);

  pg::ConnectionPool* db_;
  std::int64_t refresh_ttl_s_;
  UnixClock clock_;
  PasswordHasher hasher_;
  TokenSigner signer_;
  TokenVerifier verifier_;
  TokenVerificationKeys public_keys_;
};

}  // namespace infrachat::auth
