// Pure helpers of the `infrachat` command line client: exit codes, JSON output, terminal-safe
// text. Kept in the library so they are unit-tested. Thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "infrachat/client/client.h"

namespace infrachat::client {

// Exit codes of `infrachat` (documented in --help and src/client/README.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitOther = 1,
  kExitUsage = 2,        // bad command line, or INVALID_ARGUMENT from the server
  kExitAuth = 3,         // UNAUTHENTICATED: login failed or the session expired
  kExitDenied = 4,       // PERMISSION_DENIED or NOT_FOUND
  kExitUnavailable = 5,  // UNAVAILABLE: server down or unreachable
  kExitTimeout = 6,      // DEADLINE_EXCEEDED or the command's own timeout
};

int ExitCodeFor(Code code);

// One line for stderr: "infrachat: CODE_NAME: message".
std::string ErrorLine(Code code, std::string_view message);

// JSON objects printed by the subcommands (one per line). Bodies that are not valid UTF-8 have
// their bad bytes replaced by U+FFFD when dumped with DumpJsonLine.
nlohmann::json MessageJson(const v1::ChatMessage& message);
nlohmann::json SendAckJson(const v1::SendAck& ack);
nlohmann::json ChannelJson(const v1::Channel& channel);
// Compact dump that never throws on invalid UTF-8.
std::string DumpJsonLine(const nlohmann::json& value);

// Text from other users made safe to print on a terminal: C0/C1 control characters and DEL
// (which could carry escape sequences) become U+FFFD, except that a tab becomes a space.
// Invalid UTF-8 bytes become U+FFFD too, and so do invisible formatting characters: bidi
// overrides, embeddings, isolates and marks (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F,
// U+061C) and zero-width characters (U+200B-U+200D, U+2060, U+FEFF).
std::string SanitizeForTerminal(std::string_view text);

// Number of terminal columns `text` (already sanitized UTF-8) takes, counting one per code point
// (an approximation: wide CJK characters count as one).
std::size_t DisplayWidth(std::string_view text);

}  // namespace infrachat::client
