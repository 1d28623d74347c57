// Input validation shared by every boundary. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "infrachat/core/result.h"

namespace infrachat {

// Decodes the UTF-8 sequence starting at text[i]: returns its length in bytes and sets
// `code_point`, or returns 0 if it is not well-formed (truncated, overlong, a surrogate, or
// beyond U+10FFFF). Requires i < text.size().
std::size_t DecodeUtf8(std::string_view text, std::size_t i, std::uint32_t& code_point);

// True if `text` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool IsValidUtf8(std::string_view text);

// Channel names: 1-64 characters of [a-z0-9._-]. A single leading '#' is accepted and removed.
// Returns the canonical name, or INVALID_ARGUMENT saying what is wrong.
Result<std::string> NormalizeChannelName(std::string_view name);

// Usernames: 3-32 characters of [a-z0-9._-], starting with a letter or a digit.
Result<void> ValidateUsername(std::string_view username);

// Message bodies: non-empty, valid UTF-8, no NUL, at most max_bytes bytes.
Result<void> ValidateBody(std::string_view body, std::size_t max_bytes);

// client_msg_id: 1-64 printable ASCII characters (0x21-0x7e).
Result<void> ValidateClientMsgId(std::string_view id);

}  // namespace infrachat
