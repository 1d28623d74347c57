// Interactive mode: irssi-like commands over a ResilientSession.
//
// One UI thread owns the terminal. The session thread hands events over through a queue and a
// wakeup pipe; SIGINT/SIGTERM write to the same pipe. Own messages are printed as [pending] when
// typed and replaced by their final line (with seq) when the SendAck (or their echo) arrives;
// the session's dedupe guarantees the echo is not printed again.
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

constexpr std::uint64_t kCatchUpLimit = 50;    // unread messages replayed at start, per channel
constexpr std::uint64_t kJoinContext = 10;     // messages shown when joining
constexpr std::chrono::seconds kQuitGrace{3};  // wait for acks of the last messages on quit

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

class Interactive {
 public:
  Interactive(std::shared_ptr<client::Client> client, const GlobalOptions& options, bool tty)
      : client_(std::move(client)),
        options_(options),
        me_(client_->credentials().username),
        term_(tty, options.color) {}

  int Run();

 private:
  // --- output ---
  void Status(const std::string& text) { term_.Print(term_.Dim("-- " + text)); }
  void Fail(const Error& error) { term_.Print(term_.Color("-- " + client::ToString(error), 31)); }
  std::string MessageLine(const std::string& channel, std::uint64_t seq, const std::string& sender,
                          const std::string& body, std::int64_t sent_at_ms) const;
  std::string Prompt() const {
    return current_.empty() ? "[no channel] > " : "[#" + current_ + "] > ";
  }
  void UpdatePrompt() { term_.SetPrompt(Prompt()); }

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

  // --- events ---
  void DrainEvents();
  void Show(const SessionEvent& event, std::map<std::string, std::uint64_t>& to_ack);

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
  bool quit_ = false;
  bool ever_connected_ = false;
  bool outage_reported_ = false;  // a disconnect was shown since the last connect
};

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
  Status(fmt::format("logged in as {} on {}; /help for commands", me_, options_.server));
  ResumeMemberChannels();
  for (const auto& channel : options_.joins) {
    auto name = NormalizeChannelName(channel);
    if (!name.ok()) {
      Fail(name.error());
      continue;
    }
    Join(*name, channel == options_.joins.front());
  }
  UpdatePrompt();

  while (!quit_) {
    pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
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
  // Give messages typed just before quitting a moment to be acknowledged.
  const auto give_up = std::chrono::steady_clock::now() + kQuitGrace;
  while (!session_->pending_snapshot().empty() && std::chrono::steady_clock::now() < give_up) {
    pollfd fd = {wake_[0], POLLIN, 0};
    if (::poll(&fd, 1, 100) > 0) {
      char buf[256];
      while (::read(wake_[0], buf, sizeof buf) > 0) {
      }
    }
    DrainEvents();
  }
  const auto pending = session_->pending_snapshot();
  if (!pending.empty()) {
    Status(fmt::format("{} message(s) not acknowledged yet were not sent", pending.size()));
  }
  session_->Stop();
  term_.Stop();
  g_wake_write_fd = -1;
  ::close(wake_[0]);
  ::close(wake_[1]);
  return client::kExitOk;
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
  if (!NeedChannel()) return;
  if (auto ok = ValidateBody(text, 1 << 20); !ok.ok()) return Fail(ok.error());
  const std::string id = session_->Send(current_, text);
  const std::string line =
      fmt::format("{} {} {} {}", term_.Dim(Clock(0) + " #" + current_), term_.Dim("[pending]"),
                  term_.Dim("<" + me_ + ">"), term_.Dim(client::SanitizeForTerminal(text)));
  term_.Print(line, id);
}

void Interactive::Follow(const std::string& channel, std::optional<std::uint64_t> after_seq) {
  if (!Joined(channel)) joined_.push_back(channel);
  session_->Subscribe(channel, after_seq);
}

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
  for (const auto& m : *members) {
    if (m.online() && m.username() != me_) AppendName(names, m.username());
  }
  Status(names.empty() ? fmt::format("nobody else is online in #{}", channel)
                       : fmt::format("online in #{}: {}", channel, names));
}

void Interactive::Part(std::string channel) {
  if (channel.empty()) return Status("no current channel");
  auto left = client_->LeaveChannel(channel);
  if (!left.ok()) return Fail(left.error());
  session_->Unsubscribe(channel);
  Forget(channel);
  Status("left #" + channel);
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
  for (const auto& m : *members) AppendName(m.online() ? online : offline, m.username());
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
}

void Interactive::Show(const SessionEvent& e, std::map<std::string, std::uint64_t>& to_ack) {
  switch (e.kind) {
    case EK::kConnected:
      if (ever_connected_) Status("reconnected; resuming every channel from its last seq");
      ever_connected_ = true;
      outage_reported_ = false;
      return;
    case EK::kDisconnected:
      if (e.retry_in.count() == 0) {
        Status("stream ended (" + client::ToString(e.status) +
               "); access token refreshed, reconnecting");
      } else if (!outage_reported_) {
        Status(fmt::format("disconnected ({}); reconnecting in {}", client::ToString(e.status),
                           Seconds(e.retry_in)));
      } else {
        Status(fmt::format("still disconnected ({}); retrying in {}", CodeName(e.status.code),
                           Seconds(e.retry_in)));
      }
      outage_reported_ = true;
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
    case EK::kSubscribeFailed:
      Fail(MakeError(e.status.code, "#" + e.channel + ": " + e.status.message));
      Forget(e.channel);
      return;
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
    case EK::kSendAcked: {
      const std::string line =
          MessageLine(e.send.channel, e.ack.seq(), me_, e.send.body, e.ack.sent_at_unix_ms());
      if (!term_.ReplaceLast(e.send.client_msg_id, line)) term_.Print(line);
      to_ack[e.send.channel] = std::max(to_ack[e.send.channel], e.ack.seq());
      return;
    }
    case EK::kSendRetrying:
      Status(fmt::format("message pending ({}); retrying in {}", client::ToString(e.status),
                         Seconds(e.retry_in)));
      return;
    case EK::kSendFailed:
      Fail(MakeError(e.status.code, "not sent: " + e.status.message + ": " +
                                        client::SanitizeForTerminal(e.send.body)));
      return;
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
      Status(fmt::format("{} is {} in #{}", client::SanitizeForTerminal(p.username()),
                         p.online() ? "online" : "offline", p.channel()));
      return;
    }
  }
}

}  // namespace

int RunInteractive(const GlobalOptions& options) {
  std::setlocale(LC_ALL, "");  // libedit needs it for UTF-8 input
  auto client = Connect(options, /*auto_refresh=*/true);
  if (!client.ok()) return Report(FailureFrom(client.error()));
  const bool tty = ::isatty(STDIN_FILENO) != 0 && ::isatty(STDOUT_FILENO) != 0;
  Interactive ui(*client, options, tty);
  return ui.Run();
}

}  // namespace infrachat::cli
