#include "infrachat/client/cli_support.h"

#include <fmt/format.h>

#include "infrachat/core/validation.h"

namespace infrachat::client {

int ExitCodeFor(Code code) {
  switch (code) {
    case Code::kOk:
      return kExitOk;
    case Code::kInvalidArgument:
      return kExitUsage;
    case Code::kUnauthenticated:
      return kExitAuth;
    case Code::kPermissionDenied:
    case Code::kNotFound:
      return kExitDenied;
    case Code::kUnavailable:
      return kExitUnavailable;
    case Code::kDeadlineExceeded:
      return kExitTimeout;
    default:
      return kExitOther;
  }
}

std::string ErrorLine(Code code, std::string_view message) {
  std::string line = fmt::format("infrachat: {}: {}", CodeName(code), message);
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return line;
}

nlohmann::json MessageJson(const v1::ChatMessage& message) {
  return nlohmann::json{{"channel", message.channel()},
                        {"seq", message.seq()},
                        {"sender", message.sender()},
                        {"sender_id", message.sender_id()},
                        {"body", message.body()},
                        {"sent_at_unix_ms", message.sent_at_unix_ms()},
                        {"client_msg_id", message.client_msg_id()}};
}

nlohmann::json SendAckJson(const v1::SendAck& ack) {
  return nlohmann::json{{"channel", ack.channel()},
                        {"seq", ack.seq()},
                        {"client_msg_id", ack.client_msg_id()},
                        {"duplicate", ack.duplicate()},
                        {"sent_at_unix_ms", ack.sent_at_unix_ms()}};
}

nlohmann::json ChannelJson(const v1::Channel& channel) {
  return nlohmann::json{{"channel", channel.name()},
                        {"visibility", v1::Visibility_Name(channel.visibility())},
                        {"topic", channel.topic()},
                        {"head_seq", channel.head_seq()},
                        {"member_count", channel.member_count()},
                        {"created_at_unix", channel.created_at_unix()},
                        {"is_member", channel.is_member()}};
}

std::string DumpJsonLine(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Characters that change how the text around them is shown without being visible themselves:
// bidirectional overrides, embeddings, isolates and marks (they can make "evil.com/txt.exe" read
// as something else, "Trojan Source"), and zero-width characters (invisible differences in
// names and links).
bool IsInvisibleFormat(std::uint32_t cp) {
  return (cp >= 0x202A && cp <= 0x202E) ||  // LRE RLE PDF LRO RLO
         (cp >= 0x2066 && cp <= 0x2069) ||  // LRI RLI FSI PDI
         cp == 0x200E || cp == 0x200F ||    // LRM RLM
         cp == 0x061C ||                    // ALM
         (cp >= 0x200B && cp <= 0x200D) ||  // ZWSP ZWNJ ZWJ
         cp == 0x2060 ||                    // WJ
         cp == 0xFEFF;                      // ZWNBSP (BOM)
}

}  // namespace

std::string SanitizeForTerminal(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    std::uint32_t cp = 0;
    const std::size_t len = DecodeUtf8(text, i, cp);
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    if (cp == '\t') {
      out += ' ';
    } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) || IsInvisibleFormat(cp)) {
      out += kReplacement;
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
  }
  return out;
}

std::size_t DisplayWidth(std::string_view text) {
  std::size_t width = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++width;
  }
  return width;
}

}  // namespace infrachat::client
