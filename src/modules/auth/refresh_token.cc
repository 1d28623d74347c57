#include "refresh_token.h"

#include "sodium_util.h"

namespace infrachat::auth {

namespace {

bool IsWellFormed(std::string_view text, std::size_t raw_bytes) {
  auto decoded = Base64UrlDecode(text);
  return decoded && decoded->size() == raw_bytes;
}

}  // namespace

std::string NewSessionId() { return RandomBase64Url(kSessionIdBytes); }

std::string NewRefreshSecret() { return RandomBase64Url(kRefreshSecretBytes); }

bool IsWellFormedSessionId(std::string_view id) { return IsWellFormed(id, kSessionIdBytes); }

std::string FormatRefreshToken(const RefreshToken& token) {
  return token.session_id + "." + token.secret;
}

std::optional<RefreshToken> ParseRefreshToken(std::string_view text) {
  const auto dot = text.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const std::string_view id = text.substr(0, dot);
  const std::string_view secret = text.substr(dot + 1);
  if (!IsWellFormedSessionId(id) || !IsWellFormed(secret, kRefreshSecretBytes)) {
    return std::nullopt;
  }
  return RefreshToken{std::string(id), std::string(secret)};
}

std::string HashRefreshSecret(std::string_view secret) { return ToHex(Sha256(secret)); }

}  // namespace infrachat::auth
