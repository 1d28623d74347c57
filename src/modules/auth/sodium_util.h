// Small libsodium helpers of the auth module: initialization, random identifiers, base64url and
// SHA-256. Pure functions; thread-safe once EnsureSodium() has returned.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace infrachat::auth {

// Initializes libsodium exactly once per process. Throws std::runtime_error if it cannot
// (no entropy source); safe to call from any thread, any number of times.
void EnsureSodium();

// `n` random bytes from libsodium's CSPRNG, encoded as unpadded base64url.
std::string RandomBase64Url(std::size_t n);

// Unpadded base64url (RFC 4648 section 5, no '=').
std::string Base64UrlEncode(std::string_view bytes);

// Strict decoding of unpadded base64url: nullopt on any character outside the alphabet, on
// padding, or on a length no encoder produces.
std::optional<std::string> Base64UrlDecode(std::string_view text);

// SHA-256 of `data` as 32 raw bytes.
std::string Sha256(std::string_view data);

// Lower-case hex of raw bytes.
std::string ToHex(std::string_view bytes);

// Constant-time equality of two byte strings (sodium_memcmp); false if the lengths differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace infrachat::auth
