// Interactive mode: irssi-like commands over a ResilientSession.
//
// One UI thread owns the terminal. The session thread hands events over through a queue and a
// wakeup pipe; SIGINT/SIGTERM write to the same pipe.
//
// Own messages are shown once: with their seq when the SendAck (or their echo) arrives. One not
// acknowledged within kPendingDelay is shown dimmed as [pending] (terminal only); it is rewritten
// in place when acknowledged while it is still the last line, otherwise its text is not printed
// a second time: a status line (updated in place) says which [pending] lines were stored.
// The session's dedupe guarantees the echo is not printed again.
//
// End of input (Ctrl-D, /quit, EOF of a pipe) waits for the acks of every message sent, at most
// --quit-timeout-s, and exits non-zero naming what was not stored.
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <clocale>
#include <csignal>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "app.h"
#include "infrachat/client/resilient_session.h"
#include "infrachat/client/slash_command.h"
#include "infrachat/core/validation.h"
#include "terminal.h"

namespace infrachat::cli {

namespace {

using client::SessionEvent;
using client::SlashCommand;
using EK = client::SessionEvent::Kind;
using SK = client::SlashCommand::Kind;

constexpr std::uint64_t kCatchUpLimit = 50;  // unread messages replayed at start, per channel
constexpr std::uint64_t kJoinContext = 10;   // messages shown when joining
constexpr std::chrono::milliseconds kPendingDelay{300};  // show [pending] after this long
constexpr std::size_t kThrottleThreshold = 10;           // waiting sends that mean "throttled"

int g_wake_write_fd = -1;

void OnSignal(int) {
  const char c = 'q';
  (void)!::write(g_wake_write_fd, &c, 1);
}

std::string Clock(std::int64_t unix_ms) {
  std::time_t t = unix_ms > 0 ? static_cast<std::time_t>(unix_ms / 1000) : std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[8];
  std::strftime(buf, sizeof buf, "%H:%M", &tm);
  return buf;
}

// Appends another user's name, made safe for the terminal, to a ", "-separated list.
void AppendName(std::string& list, const std::string& name) {
  if (!list.empty()) list += ", ";
  list += client::SanitizeForTerminal(name);
}

std::string Seconds(std::chrono::milliseconds ms) {
  return fmt::format("{:.1f} s", static_cast<double>(ms.count()) / 1000.0);
}

// The start of a message body for a status line.
std::string Excerpt(const std::string& body) {
  std::string out = client::SanitizeForTerminal(body);
  std::size_t cut = 0;
  std::size_t chars = 0;
  while (cut < out.size() && chars < 40) {
    ++cut;
    while (cut < out.size() && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) ++cut;
    ++chars;
  }
  return cut < out.size() ? "\"" + out.substr(0, cut) + "...\"" : "\"" + out + "\"";
}

using SteadyClock = std::chrono::steady_clock;

class Interactive {
 public:
  Interactive(std::shared_ptr<client::Client> client, const GlobalOptions& options, bool tty)
      : client_(std::move(client)),
        options_(options),
        me_(client_->credentials().username),
        term_(tty, options.color) {
    if (!client_->credentials().display_name.empty()) {
      display_names_[me_] = client_->credentials().display_name;
    }
  }

  int Run();

 private:
  // An own message not acknowledged yet.
  struct Outstanding {
    std::string id;
    std::string channel;
    std::string body;
    SteadyClock::time_point sent_at;
    bool shown_pending = false;  // its [pending] line was printed
  };

  // --- output ---
  void Status(const std::string& text, const std::string& tag = {}) {
    term_.Print(term_.Dim("-- " + text), tag);
  }
  // Rewrites the status line `tag` if it is still the last line; prints it when `or_print`.
  void UpdateStatus(const std::string& tag, const std::string& text, bool or_print) {
    if (!term_.ReplaceLast(tag, term_.Dim("-- " + text)) && or_print) Status(text, tag);
  }
  void Fail(const Error& error) { term_.Print(term_.Color("-- " + client::ToString(error), 31)); }
  std::string MessageLine(const std::string& channel, std::uint64_t seq, const std::string& sender,
                          const std::string& body, std::int64_t sent_at_ms) const;
  std::string Prompt() const {
    const std::string state = offline_ ? " offline" : "";
    return current_.empty() ? "[no channel" + state + "] > " : "[#" + current_ + state + "] > ";
  }
  void UpdatePrompt() { term_.SetPrompt(Prompt()); }
  // "alice (Alice Liddell)" when a display name is known, else "alice"; terminal-safe.
  std::string Name(const std::string& username) const;
  void RememberNames(const std::vector<client::v1::Member>& members);
  // Says where the user is now (after a /part, /switch, or a lost subscription).
  void SayWhere();

  // --- input ---
  void OnLine(std::optional<std::string> line);
  void Execute(const SlashCommand& cmd);
  void Say(const std::string& text);
  void Join(const std::string& channel, bool make_current);
  void Part(std::string channel);
  void Create(const SlashCommand& cmd);
  void Invite(const std::string& username);
  void Who();
  // One status line naming the other members online in `channel` now (as on irssi's join).
  void ShowOnline(const std::string& channel);
  void History(std::uint32_t count);
  void Channels();
  void Switch(const std::string& channel);
  void ResumeMemberChannels();
  bool Joined(const std::string& channel) const {
    return std::find(joined_.begin(), joined_.end(), channel) != joined_.end();
  }
  void Follow(const std::string& channel, std::optional<std::uint64_t> after_seq);
  void Forget(std::string channel);
  bool NeedChannel();
  // A line of input that could not be sent (for the exit code at the end of a pipe).
  void Refused(const std::string& why) { refused_.push_back(why); }

  // --- events ---
  void DrainEvents();
  void Show(const SessionEvent& event, std::map<std::string, std::uint64_t>& to_ack);
  void OnAcked(const SessionEvent& event);
  std::vector<Outstanding>::iterator FindOutstanding(const std::string& id) {
    return std::find_if(outstanding_.begin(), outstanding_.end(),
                        [&](const Outstanding& o) { return o.id == id; });
  }
  // Prints [pending] for own messages waiting longer than kPendingDelay; returns when the next
  // one is due, if any.
  std::optional<SteadyClock::time_point> ShowPendingDue();
  // Enters, updates or leaves the "sending is limited" state (one status line, not one a message).
  void UpdateThrottle();
  std::string ThrottleText() const;
  // Waits for the acks of every outstanding message, at most the quit timeout.
  void WaitForAcks();
  int ExitCode();

  std::shared_ptr<client::Client> client_;
  GlobalOptions options_;
  std::string me_;
  Terminal term_;

  std::mutex events_mu_;
  std::deque<SessionEvent> events_;
  int wake_[2] = {-1, -1};
  // Declared after what its callback touches, so it is destroyed (and its thread joined) first.
  std::unique_ptr<client::ResilientSession> session_;

  std::string current_;
  std::vector<std::string> joined_;
  std::map<std::string, std::string> display_names_;  // username -> display name (ListMembers)
  bool quit_ = false;
  bool ever_connected_ = false;
  bool offline_ = false;                   // the stream is down (shown in the prompt)
  bool outage_reported_ = false;           // a disconnect was shown since the last connect
  std::vector<Outstanding> outstanding_;   // own sends not acknowledged yet, in order
  std::vector<std::string> refused_;       // lines not sent (refused here or failed), for the exit
  Code refused_code_ = Code::kOk;          // the code of the last failed send
  bool throttled_ = false;                 // "sending is limited" is shown
  std::optional<client::Status> refusal_;  // the last RESOURCE_EXHAUSTED of a send, while waiting
  bool retry_reported_ = false;            // a transient send error was shown since the last ack
  // Acks of messages shown as [pending] whose line could not be rewritten: one status line.
  std::size_t stored_count_ = 0;
  std::string stored_channel_;
  std::uint64_t stored_first_ = 0;
  std::uint64_t stored_last_ = 0;
};

std::string Interactive::Name(const std::string& username) const {
  auto it = display_names_.find(username);
  if (it == display_names_.end() || it->second.empty() || it->second == username) {
    return client::SanitizeForTerminal(username);
  }
  return client::SanitizeForTerminal(username) + " (" + client::SanitizeForTerminal(it->second) +
         ")";
}

void Interactive::RememberNames(const std::vector<client::v1::Member>& members) {
  for (const auto& m : members) display_names_[m.username()] = m.display_name();
}

void Interactive::SayWhere() {
  if (current_.empty()) {
    Status(joined_.empty() ? "not in any channel; /join #channel"
                           : "no current channel; /switch #channel");
  } else {
    Status("now in #" + current_);
  }
}

std::string Interactive::MessageLine(const std::string& channel, std::uint64_t seq,
                                     const std::string& sender, const std::string& body,
                                     std::int64_t sent_at_ms) const {
  const bool own = sender == me_;
  const std::string who = "<" + client::SanitizeForTerminal(sender) + ">";
  return fmt::format("{} {} {} {}", term_.Dim(Clock(sent_at_ms) + " #" + channel),
                     term_.Dim(fmt::format("{:>4}", seq)),
                     own ? term_.Color(who, 36) : term_.Bold(who),
                     client::SanitizeForTerminal(body));
}

int Interactive::Run() {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    return Report(Failure{client::kExitOther, "infrachat: cannot create a pipe"});
  }
  g_wake_write_fd = wake_[1];
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  session_ = std::make_unique<client::ResilientSession>(client_, [this](const SessionEvent& e) {
    {
      std::lock_guard lock(events_mu_);
      events_.push_back(e);
    }
    const char c = 'e';
    (void)!::write(wake_[1], &c, 1);
  });
  session_->Start();

  term_.Start(Prompt(), [this](std::optional<std::string> line) { OnLine(std::move(line)); });
  Status(fmt::format("logged in as {} on {}; /help for commands", Name(me_), options_.server));
  ResumeMemberChannels();
  for (const auto& channel : options_.joins) {
    auto name = NormalizeChannelName(channel);
    if (!name.ok()) {
      Fail(name.error());
      Refused("--join " + channel + ": " + name.error().message);
      continue;
    }
    Join(*name, channel == options_.joins.front());
  }
  UpdatePrompt();
  SayWhere();  // lines typed (or piped) from now on go there

  while (!quit_) {
    term_.OnIdle();
    int timeout_ms = term_.IdleTimeoutMs();
    if (auto due = ShowPendingDue()) {
      const int pending_ms = static_cast<int>(std::max<std::int64_t>(
          1,
          std::chrono::duration_cast<std::chrono::milliseconds>(*due - SteadyClock::now()).count() +
              1));
      timeout_ms = timeout_ms < 0 ? pending_ms : std::min(timeout_ms, pending_ms);
    }
    pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 2, timeout_ms) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & POLLIN) {
      char buf[256];
      ssize_t n;
      while ((n = ::read(wake_[0], buf, sizeof buf)) > 0) {
        if (std::find(buf, buf + n, 'q') != buf + n) quit_ = true;
      }
      DrainEvents();
    }
    if (!quit_ && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) term_.OnStdinReadable();
  }
  WaitForAcks();
  const int code = ExitCode();
  session_->Stop();
  term_.Stop();
  g_wake_write_fd = -1;
  ::close(wake_[0]);
  ::close(wake_[1]);
  if (code != client::kExitOk) {
    std::string what;
    if (!outstanding_.empty()) {
      what = fmt::format("{} message(s) not acknowledged within {} s, maybe not stored:",
                         outstanding_.size(), options_.quit_timeout_s);
      for (const auto& o : outstanding_) what += " " + Excerpt(o.body);
    } else {
      what = fmt::format("{} line(s) not sent:", refused_.size());
      for (const auto& why : refused_) what += " [" + why + "]";
    }
    return Report(FailureFrom(MakeError(
        outstanding_.empty() ? (refused_code_ == Code::kOk ? Code::kInvalidArgument : refused_code_)
                             : Code::kDeadlineExceeded,
        what)));
  }
  return client::kExitOk;
}

void Interactive::WaitForAcks() {
  const auto give_up = SteadyClock::now() + std::chrono::seconds(options_.quit_timeout_s);
  DrainEvents();
  bool said = false;
  while (!outstanding_.empty() && SteadyClock::now() < give_up) {
    if (!said && term_.interactive()) {
      Status(fmt::format("waiting up to {} s for {} message(s) to be stored (Ctrl-C: quit now)",
                         options_.quit_timeout_s, outstanding_.size()));
      said = true;
    }
    pollfd fd = {wake_[0], POLLIN, 0};
    if (::poll(&fd, 1, 100) > 0) {
      char buf[256];
      ssize_t n;
      bool again = false;
      while ((n = ::read(wake_[0], buf, sizeof buf)) > 0) {
        if (std::find(buf, buf + n, 'q') != buf + n) again = true;
      }
      if (again) break;  // a second Ctrl-C: do not wait
    }
    DrainEvents();
  }
}

int Interactive::ExitCode() {
  if (!outstanding_.empty()) return client::kExitTimeout;
  // Lines refused on a terminal were answered there; a pipe has only the exit code to say so.
  if (!refused_.empty() && !term_.interactive()) {
    return client::ExitCodeFor(refused_code_ == Code::kOk ? Code::kInvalidArgument : refused_code_);
  }
  return client::kExitOk;
}

std::optional<SteadyClock::time_point> Interactive::ShowPendingDue() {
  if (!term_.interactive()) return std::nullopt;
  const auto now = SteadyClock::now();
  std::optional<SteadyClock::time_point> next;
  for (auto& o : outstanding_) {
    if (o.shown_pending) continue;
    const auto due = o.sent_at + kPendingDelay;
    if (due <= now) {
      term_.Print(
          fmt::format("{} {} {} {}", term_.Dim(Clock(0) + " #" + o.channel), term_.Dim("[pending]"),
                      term_.Dim("<" + me_ + ">"), term_.Dim(client::SanitizeForTerminal(o.body))),
          o.id);
      o.shown_pending = true;
    } else if (!next || due < *next) {
      next = due;
    }
  }
  return next;
}

std::string Interactive::ThrottleText() const {
  const auto limits = session_->limits();
  if (limits.announced && limits.send_rate_per_s > 0) {
    return fmt::format("sending is limited to {:g} messages/s by the server; {} waiting",
                       limits.send_rate_per_s, outstanding_.size());
  }
  return fmt::format("the server is limiting sending ({}); {} waiting",
                     refusal_ ? client::ToString(*refusal_) : std::string("RESOURCE_EXHAUSTED"),
                     outstanding_.size());
}

void Interactive::UpdateThrottle() {
  const auto limits = session_->limits();
  const std::size_t threshold =
      std::max<std::size_t>(kThrottleThreshold, limits.announced ? limits.send_burst : 0);
  const bool shaped = limits.announced && limits.send_rate_per_s > 0 &&
                      outstanding_.size() > threshold && !offline_;
  if (outstanding_.empty()) {
    refusal_.reset();
    if (throttled_) {
      throttled_ = false;
      UpdateStatus("throttle", "caught up: every message is stored", /*or_print=*/true);
    }
    return;
  }
  if (!throttled_ && (shaped || refusal_)) {
    throttled_ = true;
    Status(ThrottleText(), "throttle");
    return;
  }
  if (throttled_) UpdateStatus("throttle", ThrottleText(), /*or_print=*/false);
}

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

void Interactive::OnLine(std::optional<std::string> line) {
  if (!line) {
    quit_ = true;
    return;
  }
  Execute(client::ParseSlashCommand(*line));
}

void Interactive::Execute(const SlashCommand& cmd) {
  switch (cmd.kind) {
    case SK::kEmpty:
      return;
    case SK::kSay:
      return Say(cmd.text);
    case SK::kJoin:
      return Join(cmd.channel, true);
    case SK::kPart:
      return Part(cmd.channel.empty() ? current_ : cmd.channel);
    case SK::kCreate:
      return Create(cmd);
    case SK::kInvite:
      return Invite(cmd.username);
    case SK::kWho:
      return Who();
    case SK::kHistory:
      return History(cmd.count);
    case SK::kChannels:
      return Channels();
    case SK::kSwitch:
      return Switch(cmd.channel);
    case SK::kQuit:
      quit_ = true;
      return;
    case SK::kHelp: {
      std::string help = client::SlashCommandHelp();
      std::size_t start = 0;
      while (start < help.size()) {
        const std::size_t end = help.find('\n', start);
        term_.Print(term_.Dim(help.substr(start, end - start)));
        if (end == std::string::npos) break;
        start = end + 1;
      }
      return;
    }
    case SK::kInvalid:
      term_.Print(term_.Color("-- " + cmd.text, 31));
      return;
  }
}

bool Interactive::NeedChannel() {
  if (!current_.empty()) return true;
  Status("no current channel: /join #name first");
  return false;
}

void Interactive::Say(const std::string& text) {
  if (!NeedChannel()) return Refused("no current channel: " + Excerpt(text));
  if (auto ok = ValidateBody(text, 1 << 20); !ok.ok()) {
    Fail(ok.error());
    return Refused(ok.error().message);
  }
  // Checked here only against what the server announced; otherwise the server's answer is
  // final (see session_core.h).
  const auto limits = session_->limits();
  if (limits.announced && text.size() > limits.max_body_bytes) {
    const std::string why = fmt::format(
        "not sent: the message is {} bytes; the server accepts at most {} bytes per message",
        text.size(), limits.max_body_bytes);
    Fail(MakeError(Code::kInvalidArgument, why));
    return Refused(why);
  }
  const std::string id = session_->Send(current_, text);
  outstanding_.push_back(Outstanding{id, current_, text, SteadyClock::now(), false});
  UpdateThrottle();
}

void Interactive::Follow(const std::string& channel, std::optional<std::uint64_t> after_seq) {
  if (!Joined(channel)) joined_.push_back(channel);
  session_->Subscribe(channel, after_seq);
}

// Stops following `channel`. When it was the current one, another joined channel becomes
// current; the caller says so (SayWhere) before anything else can be typed.
void Interactive::Forget(std::string channel) {
  joined_.erase(std::remove(joined_.begin(), joined_.end(), channel), joined_.end());
  if (current_ == channel) current_ = joined_.empty() ? std::string() : joined_.front();
  UpdatePrompt();
}

void Interactive::Join(const std::string& channel, bool make_current) {
  if (!Joined(channel)) {
    auto joined = client_->JoinChannel(channel);
    if (!joined.ok()) return Fail(joined.error());
    const std::uint64_t head = joined->head_seq();
    Status(fmt::format(
        "joined #{}{}", channel,
        joined->topic().empty() ? "" : " - " + client::SanitizeForTerminal(joined->topic())));
    Follow(channel, head > kJoinContext ? head - kJoinContext : 0);
    ShowOnline(channel);
  }
  if (make_current) {
    current_ = channel;
    UpdatePrompt();
  }
}

void Interactive::ShowOnline(const std::string& channel) {
  auto members = client_->ListMembers(channel);
  if (!members.ok()) return;  // only a courtesy after a join that worked; /who says why
  std::string names;
  RememberNames(*members);
  for (const auto& m : *members) {
    if (m.online() && m.username() != me_) AppendName(names, Name(m.username()));
  }
  Status(names.empty() ? fmt::format("nobody else is online in #{}", channel)
                       : fmt::format("online in #{}: {}", channel, names));
}

void Interactive::Part(std::string channel) {
  if (channel.empty()) return Status("no current channel");
  auto left = client_->LeaveChannel(channel);
  if (!left.ok()) return Fail(left.error());
  session_->Unsubscribe(channel);
  const bool was_current = channel == current_;
  Forget(channel);
  Status("left #" + channel);
  if (was_current) SayWhere();
}

void Interactive::Create(const SlashCommand& cmd) {
  auto created = client_->CreateChannel(
      cmd.channel, cmd.is_private ? client::v1::PRIVATE : client::v1::PUBLIC, cmd.text);
  if (!created.ok()) return Fail(created.error());
  Status(fmt::format("created {} #{}", cmd.is_private ? "private" : "public", cmd.channel));
  Follow(cmd.channel, 0);
  current_ = cmd.channel;
  UpdatePrompt();
}

void Interactive::Invite(const std::string& username) {
  if (!NeedChannel()) return;
  auto invited = client_->InviteMember(current_, username);
  if (!invited.ok()) return Fail(invited.error());
  Status(fmt::format("invited {} to #{}", username, current_));
}

void Interactive::Who() {
  if (!NeedChannel()) return;
  auto members = client_->ListMembers(current_);
  if (!members.ok()) return Fail(members.error());
  std::string online;
  std::string offline;
  RememberNames(*members);
  for (const auto& m : *members) AppendName(m.online() ? online : offline, Name(m.username()));
  Status(fmt::format("#{}: {} member(s); online: {}; offline: {}", current_, members->size(),
                     online.empty() ? "-" : online, offline.empty() ? "-" : offline));
}

void Interactive::History(std::uint32_t count) {
  if (!NeedChannel()) return;
  std::uint64_t top = session_->LastSeen(current_).value_or(0);
  if (top == 0) {
    auto probe = client_->GetHistory(current_, 0, 1);
    if (!probe.ok()) return Fail(probe.error());
    top = probe->head_seq();
  }
  const std::uint64_t after = top > count ? top - count : 0;
  auto history = client_->GetHistory(current_, after, count);
  if (!history.ok()) return Fail(history.error());
  Status(fmt::format("history of #{} ({} message(s))", current_, history->messages_size()));
  for (const auto& m : history->messages()) {
    term_.Print(MessageLine(m.channel(), m.seq(), m.sender(), m.body(), m.sent_at_unix_ms()));
  }
  Status("end of history");
}

void Interactive::Channels() {
  auto channels = client_->ListChannels();
  if (!channels.ok()) return Fail(channels.error());
  for (const auto& c : *channels) {
    term_.Print(fmt::format("{:<24} {:<7} {:>4} member(s)  head {:<6} {}{}", "#" + c.name(),
                            c.visibility() == client::v1::PRIVATE ? "private" : "public",
                            c.member_count(), c.head_seq(), c.is_member() ? "[member] " : "",
                            client::SanitizeForTerminal(c.topic())));
  }
  if (channels->empty()) Status("no channels yet: /create #name");
}

void Interactive::Switch(const std::string& channel) {
  if (!Joined(channel)) return Status("not in #" + channel + ": /join it first");
  current_ = channel;
  UpdatePrompt();
  SayWhere();
}

// Follows every channel the user is a member of, from the position the server stored for
// them (Ack DELIVERED), so that what was missed while away is shown once.
void Interactive::ResumeMemberChannels() {
  auto channels = client_->ListChannels();
  if (!channels.ok()) return Fail(channels.error());
  const std::uint64_t my_id = client_->credentials().user_id;
  for (const auto& c : *channels) {
    if (!c.is_member()) continue;
    std::uint64_t delivered = c.head_seq();
    if (auto members = client_->ListMembers(c.name()); members.ok()) {
      RememberNames(*members);
      for (const auto& m : *members) {
        if (m.user_id() == my_id) delivered = m.delivered_seq();
      }
    }
    std::uint64_t after = delivered;
    const std::uint64_t unread = c.head_seq() > delivered ? c.head_seq() - delivered : 0;
    if (unread > kCatchUpLimit) {
      after = c.head_seq() - kCatchUpLimit;
      Status(fmt::format("#{}: {} unread, showing the last {} (/history for more)", c.name(),
                         unread, kCatchUpLimit));
    } else if (unread > 0) {
      Status(fmt::format("#{}: {} unread", c.name(), unread));
    }
    Follow(c.name(), after);
    if (current_.empty()) current_ = c.name();
  }
}

// ---------------------------------------------------------------------------------------------
// Session events
// ---------------------------------------------------------------------------------------------

void Interactive::DrainEvents() {
  std::deque<SessionEvent> events;
  {
    std::lock_guard lock(events_mu_);
    events.swap(events_);
  }
  std::map<std::string, std::uint64_t> to_ack;
  for (const auto& event : events) Show(event, to_ack);
  for (const auto& [channel, seq] : to_ack) session_->Ack(channel, seq, client::v1::DELIVERED);
  if (!events.empty()) UpdateThrottle();
}

void Interactive::OnAcked(const SessionEvent& e) {
  const std::string line =
      MessageLine(e.send.channel, e.ack.seq(), me_, e.send.body, e.ack.sent_at_unix_ms());
  auto it = FindOutstanding(e.send.client_msg_id);
  const bool shown_pending = it != outstanding_.end() && it->shown_pending;
  if (it != outstanding_.end()) outstanding_.erase(it);
  retry_reported_ = false;
  if (!shown_pending) return term_.Print(line);
  if (term_.ReplaceLast(e.send.client_msg_id, line)) return;
  // Its [pending] line is on screen above other lines: not printed a second time. One status
  // line, rewritten while it stays the last one, says what was stored.
  auto text = [&] {
    return stored_count_ == 1
               ? fmt::format("the [pending] message above is stored as #{} {}", stored_channel_,
                             stored_last_)
               : fmt::format("the {} [pending] messages above are stored as #{} {}..{}",
                             stored_count_, stored_channel_, stored_first_, stored_last_);
  };
  if (stored_count_ > 0 && stored_channel_ == e.send.channel) {
    ++stored_count_;
    stored_last_ = e.ack.seq();
    if (term_.ReplaceLast("stored", term_.Dim("-- " + text()))) return;
  }
  stored_count_ = 1;
  stored_channel_ = e.send.channel;
  stored_first_ = stored_last_ = e.ack.seq();
  Status(text(), "stored");
}

void Interactive::Show(const SessionEvent& e, std::map<std::string, std::uint64_t>& to_ack) {
  switch (e.kind) {
    case EK::kConnected:
      if (ever_connected_) {
        UpdateStatus("outage", "reconnected; resuming every channel from its last seq", true);
      }
      ever_connected_ = true;
      outage_reported_ = false;
      if (offline_) {
        offline_ = false;
        UpdatePrompt();
      }
      return;
    case EK::kDisconnected:
      if (!offline_) {
        offline_ = true;
        UpdatePrompt();
      }
      if (e.retry_in.count() == 0) {
        Status("stream ended (" + client::ToString(e.status) +
               "); access token refreshed, reconnecting");
      } else if (!outage_reported_) {
        Status(fmt::format("{} ({}); reconnecting in {}",
                           ever_connected_ ? "disconnected" : "cannot reach the server",
                           client::ToString(e.status), Seconds(e.retry_in)),
               "outage");
        outage_reported_ = true;
      } else {
        // Once per outage; later attempts only rewrite that line while it is the last one.
        UpdateStatus("outage",
                     fmt::format("still disconnected ({}); retrying in {}", CodeName(e.status.code),
                                 Seconds(e.retry_in)),
                     /*or_print=*/false);
      }
      return;
    case EK::kAuthFailed:
      Fail(MakeError(e.status.code, "session expired and cannot be refreshed (" + e.status.message +
                                        "); restart infrachat to log in"));
      return;
    case EK::kTokenRefreshed:
    case EK::kSubscribed:
    case EK::kTyping:
    case EK::kReceipt:
      return;
    case EK::kSubscribeFailed: {
      Fail(MakeError(e.status.code, "#" + e.channel + ": " + e.status.message));
      const bool was_current = e.channel == current_;
      Forget(e.channel);
      if (was_current) SayWhere();
      return;
    }
    case EK::kResubscribing:
      Status(fmt::format("#{}: live delivery stopped ({}); catching up from seq {}", e.channel,
                         e.reason.empty() ? "no reason given" : e.reason, e.seq));
      return;
    case EK::kMessage: {
      const auto& m = e.message;
      if (!Joined(m.channel())) return;  // queued before a /part
      term_.Print(MessageLine(m.channel(), m.seq(), m.sender(), m.body(), m.sent_at_unix_ms()));
      to_ack[m.channel()] = std::max(to_ack[m.channel()], m.seq());
      return;
    }
    case EK::kSendAcked:
      OnAcked(e);
      to_ack[e.send.channel] = std::max(to_ack[e.send.channel], e.ack.seq());
      return;
    case EK::kSendRetrying:
      // Kept in order by the session; said once (the throttle line, or one line per burst of
      // transient errors), not once per message.
      if (e.status.code == Code::kResourceExhausted) {
        refusal_ = e.status;
      } else if (!retry_reported_ && !offline_) {
        Status(
            fmt::format("sending is delayed ({}); retrying in order", client::ToString(e.status)));
        retry_reported_ = true;
      }
      return;
    case EK::kSendFailed: {
      if (auto it = FindOutstanding(e.send.client_msg_id); it != outstanding_.end()) {
        outstanding_.erase(it);
      }
      Fail(MakeError(e.status.code, "not sent: " + e.status.message + ": " +
                                        client::SanitizeForTerminal(e.send.body)));
      refused_code_ = e.status.code;
      Refused(CodeName(e.status.code) + std::string(": ") + e.status.message + ": " +
              Excerpt(e.send.body));
      return;
    }
    case EK::kError:
      if (!e.channel.empty() && !Joined(e.channel)) return;  // about a channel already parted
      Fail(MakeError(e.status.code,
                     (e.channel.empty() ? "" : "#" + e.channel + ": ") + e.status.message));
      return;
    case EK::kPresence: {
      // Only for the channel on screen: every member channel is followed, and a line per
      // channel for each arrival would drown the conversation.
      const auto& p = e.frame.presence();
      if (p.channel() != current_ || p.username() == me_) return;
      Status(fmt::format("{} is {} in #{}", Name(p.username()), p.online() ? "online" : "offline",
                         p.channel()));
      return;
    }
  }
}

}  // namespace

int RunInteractive(const GlobalOptions& options) {
  std::setlocale(LC_ALL, "");  // libedit needs it for UTF-8 input
  const bool tty = ::isatty(STDIN_FILENO) != 0 && ::isatty(STDOUT_FILENO) != 0;
  auto user = ReadUsername(options);
  if (!user.ok()) return Report(FailureFrom(user.error()));
  auto password = ReadPassword(options, options.register_first);
  if (!password.ok()) return Report(FailureFrom(password.error()));
  // A server that is down (or restarting) is waited for, as a running client does: said once,
  // retried with backoff. On a terminal until Ctrl-C; without one (a pipe) for --quit-timeout-s.
  client::Backoff backoff;
  const auto give_up = SteadyClock::now() + std::chrono::seconds(options.quit_timeout_s);
  bool said = false;
  Result<std::shared_ptr<client::Client>> client = MakeError(Code::kUnavailable, "not tried");
  for (;;) {
    client = ConnectAs(options, /*auto_refresh=*/true, *user, *password);
    const Code code = client.ok() ? Code::kOk : client.code();
    if (code != Code::kUnavailable && code != Code::kDeadlineExceeded) break;
    const auto delay = backoff.Next();
    if (!tty && SteadyClock::now() + delay > give_up) break;
    if (!said) {
      std::fprintf(stdout, "-- waiting for the server at %s (%s); retrying%s\n",
                   options.server.c_str(),
                   client::ToString(client::Status{code, client.error().message}).c_str(),
                   tty ? " until it answers (Ctrl-C to give up)" : "");
      std::fflush(stdout);
      said = true;
    }
    std::this_thread::sleep_for(delay);  // backoff between login attempts
  }
  if (!client.ok()) return Report(FailureFrom(client.error()));
  if (said) {
    std::fprintf(stdout, "-- the server answers\n");
    std::fflush(stdout);
  }
  Interactive ui(*client, options, tty);
  return ui.Run();
}

}  // namespace infrachat::cli
