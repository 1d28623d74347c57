// Access tokens: compact JWS (JWT) signed with ES256, made with cpp-jwt.
//
// Header  {"alg":"ES256","typ":"JWT","kid":"<kid>"}
// Claims  sub  user id, decimal string       name  username
//         sid  login session id              iat, exp  unix seconds
//         iss  AuthConfig::issuer            aud   AuthConfig::audience
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "infrachat/api/principal.h"
#include "infrachat/core/result.h"
#include "signing_keys.h"

namespace infrachat::auth {

// Seconds since the Unix epoch. Injected so tests control expiry without sleeping.
using UnixClock = std::function<std::int64_t()>;
UnixClock SystemUnixClock();

// The only algorithm accepted. Everything else, "none" and HS256 in particular, is rejected
// before any key is used (no algorithm confusion).
inline constexpr std::string_view kAccessTokenAlgorithm = "ES256";
inline constexpr std::size_t kMaxAccessTokenBytes = 4096;
// The refusal of a token signed with a key id this verifier does not hold: a process that
// fetched auth's keys refetches them when it sees it (auth rotated its key).
inline constexpr std::string_view kUnknownSigningKey = "unknown signing key";

struct TokenOptions {
  std::string issuer = "infrachat";
  std::string audience = "infrachat";
  std::int64_t ttl_s = 900;   // access token lifetime (signer only)
  std::int64_t leeway_s = 0;  // tolerated clock skew for exp/nbf (verifier only)
};

struct SignedToken {
  std::string token;
  std::int64_t expires_at_unix = 0;
};

// Signs access tokens with one private key. Immutable after construction: thread-safe.
class TokenSigner {
 public:
  TokenSigner(SigningKey key, TokenOptions options, UnixClock clock);

  // INTERNAL if signing fails (a key that cpp-jwt cannot use).
  Result<SignedToken> Sign(std::uint64_t user_id, const std::string& username,
                           const std::string& session_id) const;

  const std::string& kid() const { return key_.kid; }

 private:
  SigningKey key_;
  TokenOptions options_;
  UnixClock clock_;
};

// Verifies access tokens against a set of public keys chosen by `kid`. Never blocks, never
// touches the database. Immutable after construction: thread-safe.
//
// Order of checks: shape, header (alg allowlist, kid), signature; only then the claims
// (exp, nbf, iss, aud, sub, name, sid). A token without exp is rejected.
class TokenVerifier {
 public:
  TokenVerifier(const std::vector<VerificationKey>& keys, TokenOptions options, UnixClock clock);

  // UNAUTHENTICATED with a short reason: "malformed token", "algorithm not allowed",
  // "unknown signing key", "bad signature", "token expired", "wrong issuer", "wrong audience",...
  Result<Principal> Verify(std::string_view token) const;

 private:
  std::map<std::string, std::string, std::less<>> public_pems_;  // kid -> PEM
  TokenOptions options_;
  UnixClock clock_;
};

}  // namespace infrachat::auth
