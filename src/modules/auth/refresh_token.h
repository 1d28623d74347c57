// Opaque refresh tokens: "<session_id>.<secret>", both parts unpadded base64url of random bytes.
// The database keeps only SHA-256(secret); the secret itself exists only in the client's hands.
// Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace infrachat::auth {

inline constexpr std::size_t kSessionIdBytes = 16;      // 22 base64url characters
inline constexpr std::size_t kRefreshSecretBytes = 32;  // 43 base64url characters

// A fresh random session id (also the JWT `sid`). Never contains '.'.
std::string NewSessionId();

// A fresh random refresh secret.
std::string NewRefreshSecret();

// True if `id` has the shape NewSessionId produces (cheap check before any query).
bool IsWellFormedSessionId(std::string_view id);

struct RefreshToken {
  std::string session_id;
  std::string secret;
};

std::string FormatRefreshToken(const RefreshToken& token);

// nullopt unless `text` is exactly "<session id>.<secret>" with both parts well formed.
std::optional<RefreshToken> ParseRefreshToken(std::string_view text);

// What the sessions table stores for a secret: hex of SHA-256(secret), 64 characters.
std::string HashRefreshSecret(std::string_view secret);

}  // namespace infrachat::auth
