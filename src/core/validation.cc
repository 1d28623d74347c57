#include "infrachat/core/validation.h"

#include <fmt/format.h>

namespace infrachat {

std::size_t DecodeUtf8(std::string_view text, std::size_t i, std::uint32_t& code_point) {
  const auto c = static_cast<unsigned char>(text[i]);
  std::size_t len;
  if (c < 0x80) {
    code_point = c;
    return 1;
  } else if ((c & 0xE0) == 0xC0) {
    len = 2;
    code_point = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3;
    code_point = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4;
    code_point = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > text.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(text[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    code_point = (code_point << 6) | (b & 0x3F);
  }
  // Reject overlong encodings, UTF-16 surrogates and code points past Unicode's range.
  static constexpr std::uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (code_point < kMinForLength[len] || code_point > 0x10FFFF ||
      (code_point >= 0xD800 && code_point <= 0xDFFF)) {
    return 0;
  }
  return len;
}

bool IsValidUtf8(std::string_view text) {
  std::uint32_t code_point = 0;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t len = DecodeUtf8(text, i, code_point);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

Result<std::string> NormalizeChannelName(std::string_view name) {
  if (!name.empty() && name.front() == '#') name.remove_prefix(1);
  if (name.empty()) return MakeError(Code::kInvalidArgument, "channel name is empty");
  if (name.size() > 64) {
    return MakeError(Code::kInvalidArgument, "channel name is longer than 64 characters");
  }
  for (char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) {
      return MakeError(Code::kInvalidArgument,
                       "channel name may contain only a-z, 0-9, '.', '_' and '-'");
    }
  }
  return std::string(name);
}

Result<void> ValidateUsername(std::string_view username) {
  if (username.size() < 3 || username.size() > 32) {
    return MakeError(Code::kInvalidArgument, "username must be 3 to 32 characters long");
  }
  for (char c : username) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) {
      return MakeError(Code::kInvalidArgument,
                       "username may contain only a-z, 0-9, '.', '_' and '-'");
    }
  }
  const char first = username.front();
  if (!((first >= 'a' && first <= 'z') || (first >= '0' && first <= '9'))) {
    return MakeError(Code::kInvalidArgument, "username must start with a letter or a digit");
  }
  return Ok();
}

Result<void> ValidateBody(std::string_view body, std::size_t max_bytes) {
  if (body.empty()) return MakeError(Code::kInvalidArgument, "message body is empty");
  if (body.size() > max_bytes) {
    return MakeError(
        Code::kInvalidArgument,
        fmt::format("message body is {} bytes; the limit is {}", body.size(), max_bytes));
  }
  if (!IsValidUtf8(body))
    return MakeError(Code::kInvalidArgument, "message body is not valid UTF-8");
  if (body.find('\0') != std::string_view::npos) {
    return MakeError(Code::kInvalidArgument, "message body contains a NUL character");
  }
  return Ok();
}

Result<void> ValidateClientMsgId(std::string_view id) {
  if (id.empty() || id.size() > 64) {
    return MakeError(Code::kInvalidArgument, "client_msg_id must be 1 to 64 characters long");
  }
  for (char c : id) {
    if (c < 0x21 || c > 0x7e) {
      return MakeError(Code::kInvalidArgument, "client_msg_id must be printable ASCII");
    }
  }
  return Ok();
}

}  // namespace infrachat
