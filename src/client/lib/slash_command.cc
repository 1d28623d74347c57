#include "infrachat/client/slash_command.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <vector>

#include "infrachat/core/validation.h"

namespace infrachat::client {

namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// Splits off the first whitespace-separated word; `rest` is what follows, left-trimmed.
std::string_view NextWord(std::string_view& rest) {
  rest = Trim(rest);
  std::size_t end = 0;
  while (end < rest.size() && !IsSpace(rest[end])) ++end;
  std::string_view word = rest.substr(0, end);
  rest = Trim(rest.substr(end));
  return word;
}

SlashCommand Invalid(std::string text) {
  SlashCommand cmd;
  cmd.kind = SlashCommand::Kind::kInvalid;
  cmd.text = std::move(text);
  return cmd;
}

// Parses a channel argument into `cmd.channel`; returns false and sets kInvalid on error.
bool TakeChannel(std::string_view word, std::string_view usage, SlashCommand& cmd) {
  if (word.empty()) {
    cmd = Invalid("usage: " + std::string(usage));
    return false;
  }
  auto name = NormalizeChannelName(word);
  if (!name.ok()) {
    cmd = Invalid(name.error().message);
    return false;
  }
  cmd.channel = std::move(name).value();
  return true;
}

}  // namespace

SlashCommand ParseSlashCommand(std::string_view line) {
  using K = SlashCommand::Kind;
  // Only the line terminator is stripped from text: leading spaces may be meaningful.
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  SlashCommand cmd;
  if (Trim(line).empty()) return cmd;  // kEmpty
  if (line.front() != '/') {
    cmd.kind = K::kSay;
    cmd.text = std::string(line);
    return cmd;
  }
  if (line.size() > 1 && line[1] == '/') {  // "//text" says "/text"
    cmd.kind = K::kSay;
    cmd.text = std::string(line.substr(1));
    return cmd;
  }

  std::string_view rest = line.substr(1);
  std::string name(NextWord(rest));
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });

  if (name == "join" || name == "j") {
    cmd.kind = K::kJoin;
    if (!TakeChannel(NextWord(rest), "/join #channel", cmd)) return cmd;
  } else if (name == "part" || name == "leave") {
    cmd.kind = K::kPart;
    std::string_view word = NextWord(rest);
    if (!word.empty() && !TakeChannel(word, "/part [#channel]", cmd)) return cmd;
  } else if (name == "create") {
    cmd.kind = K::kCreate;
    if (!TakeChannel(NextWord(rest), "/create #channel [private] [topic...]", cmd)) return cmd;
    std::string_view copy = rest;
    std::string flag(NextWord(copy));
    std::transform(flag.begin(), flag.end(), flag.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (flag == "private" || flag == "public") {
      cmd.is_private = flag == "private";
      rest = copy;
    }
    cmd.text = std::string(rest);
    return cmd;
  } else if (name == "invite") {
    cmd.kind = K::kInvite;
    std::string_view user = NextWord(rest);
    if (user.empty()) return Invalid("usage: /invite username");
    if (auto ok = ValidateUsername(user); !ok.ok()) return Invalid(ok.error().message);
    cmd.username = std::string(user);
  } else if (name == "who" || name == "names") {
    cmd.kind = K::kWho;
  } else if (name == "history") {
    cmd.kind = K::kHistory;
    cmd.count = kDefaultHistoryCount;
    std::string_view word = NextWord(rest);
    if (!word.empty()) {
      std::uint32_t n = 0;
      auto [ptr, ec] = std::from_chars(word.data(), word.data() + word.size(), n);
      if (ec != std::errc() || ptr != word.data() + word.size() || n == 0 || n > kMaxHistoryCount) {
        return Invalid("usage: /history [n], n from 1 to " + std::to_string(kMaxHistoryCount));
      }
      cmd.count = n;
    }
  } else if (name == "channels" || name == "list") {
    cmd.kind = K::kChannels;
  } else if (name == "switch" || name == "s" || name == "window") {
    cmd.kind = K::kSwitch;
    if (!TakeChannel(NextWord(rest), "/switch #channel", cmd)) return cmd;
  } else if (name == "quit" || name == "exit" || name == "q") {
    cmd.kind = K::kQuit;
    return cmd;
  } else if (name == "help" || name == "h" || name == "?") {
    cmd.kind = K::kHelp;
    return cmd;
  } else if (name.empty()) {
    return Invalid("empty command (to send a text starting with '/', type '//')");
  } else {
    return Invalid("unknown command /" + name + " (try /help)");
  }
  if (!rest.empty()) {
    return Invalid("too many arguments for /" + name + ": '" + std::string(rest) + "'");
  }
  return cmd;
}

const char* SlashCommandHelp() {
  return "/join #channel                 join a channel (and make it current)\n"
         "/part [#channel]               leave a channel (default: the current one)\n"
         "/create #channel [private] [topic...]  create a channel and join it\n"
         "/invite username               invite a user into the current channel\n"
         "/who                           members of the current channel\n"
         "/history [n]                   the last n messages of the current channel (20)\n"
         "/channels                      channels you can see\n"
         "/switch #channel               make a joined channel current\n"
         "/quit                          leave the client\n"
         "/help                          this help\n"
         "text                           send text to the current channel ('//x' sends '/x')";
}

}  // namespace infrachat::client
