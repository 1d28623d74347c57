// Parsing of the interactive client's input lines (irssi-like slash commands). Pure; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace infrachat::client {

struct SlashCommand {
  enum class Kind {
    kEmpty,     // blank line: nothing to do
    kSay,       // plain text (or "//text", sent as "/text"): `text`
    kJoin,      // /join #c                      `channel`
    kPart,      // /part [#c]                    `channel` (empty: the current channel)
    kCreate,    // /create #c [private|public] [topic...]   `channel`, `is_private`, `text`=topic
    kInvite,    // /invite user                  `username`
    kWho,       // /who
    kHistory,   // /history [n]                  `count` (default 20, 1..1000)
    kChannels,  // /channels (alias /list)
    kSwitch,    // /switch #c                    `channel`
    kQuit,      // /quit (alias /exit)
    kHelp,      // /help
    kInvalid,   // `text` = what is wrong
  };

  Kind kind = Kind::kEmpty;
  std::string channel;  // normalized: no leading '#'
  std::string username;
  std::string text;
  bool is_private = false;
  std::uint32_t count = 0;
};

inline constexpr std::uint32_t kDefaultHistoryCount = 20;
inline constexpr std::uint32_t kMaxHistoryCount = 1000;

// Parses one input line. Command names are case-insensitive; channel names are validated with
// NormalizeChannelName and usernames with ValidateUsername, errors become kInvalid.
SlashCommand ParseSlashCommand(std::string_view line);

// The /help text, one command per line.
const char* SlashCommandHelp();

}  // namespace infrachat::client
