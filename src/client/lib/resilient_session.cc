#include "infrachat/client/resilient_session.h"

#include <algorithm>

namespace infrachat::client {

ResilientSession::ResilientSession(std::shared_ptr<Client> client, EventCallback on_event,
                                   SessionOptions options)
    : client_(std::move(client)),
      on_event_(std::move(on_event)),
      options_(options),
      backoff_(options.reconnect_backoff),
      core_(options.send_retry_backoff) {}

ResilientSession::~ResilientSession() { Stop(); }

void ResilientSession::Start() {
  std::lock_guard lock(mu_);
  if (started_ || stop_) return;
  started_ = true;
  thread_ = std::thread([this] { Run(); });
}

void ResilientSession::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    if (stream_) stream_->Cancel();
  }
  cv_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void ResilientSession::Push(Item item) {
  {
    std::lock_guard lock(mu_);
    inbox_.push_back(std::move(item));
  }
  cv_.notify_all();
}

void ResilientSession::Subscribe(const std::string& channel,
                                 std::optional<std::uint64_t> after_seq) {
  Item item;
  item.kind = Item::Kind::kCommand;
  item.command.kind = Command::Kind::kSubscribe;
  item.command.channel = channel;
  item.command.after_seq = after_seq;
  Push(std::move(item));
}

void ResilientSession::Unsubscribe(const std::string& channel) {
  Item item;
  item.kind = Item::Kind::kCommand;
  item.command.kind = Command::Kind::kUnsubscribe;
  item.command.channel = channel;
  Push(std::move(item));
}

std::string ResilientSession::Send(const std::string& channel, const std::string& body) {
  std::string id = NewClientMsgId();
  SendWithId(channel, id, body);
  return id;
}

void ResilientSession::SendWithId(const std::string& channel, const std::string& client_msg_id,
                                  const std::string& body) {
  Item item;
  item.kind = Item::Kind::kCommand;
  item.command.kind = Command::Kind::kSend;
  item.command.channel = channel;
  item.command.client_msg_id = client_msg_id;
  item.command.body = body;
  Push(std::move(item));
}

void ResilientSession::Ack(const std::string& channel, std::uint64_t seq, v1::AckKind kind) {
  Item item;
  item.kind = Item::Kind::kCommand;
  item.command.kind = Command::Kind::kAck;
  item.command.channel = channel;
  item.command.seq = seq;
  item.command.ack_kind = kind;
  Push(std::move(item));
}

void ResilientSession::Typing(const std::string& channel) {
  Item item;
  item.kind = Item::Kind::kCommand;
  item.command.kind = Command::Kind::kTyping;
  item.command.channel = channel;
  Push(std::move(item));
}

std::optional<SessionEvent> ResilientSession::NextEvent(std::chrono::milliseconds timeout) {
  std::unique_lock lock(events_mu_);
  events_cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
  if (events_.empty()) return std::nullopt;
  SessionEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

bool ResilientSession::connected() const {
  std::lock_guard lock(core_mu_);
  return core_.connected();
}

std::optional<std::uint64_t> ResilientSession::LastSeen(const std::string& channel) const {
  std::lock_guard lock(core_mu_);
  return core_.ResumeAfterSeq(channel);
}

std::vector<std::string> ResilientSession::Channels() const {
  std::lock_guard lock(core_mu_);
  return core_.Channels();
}

StreamLimits ResilientSession::limits() const {
  std::lock_guard lock(core_mu_);
  return core_.limits();
}

std::vector<PendingSend> ResilientSession::pending_snapshot() const {
  std::lock_guard lock(core_mu_);
  return {core_.pending().begin(), core_.pending().end()};
}

void ResilientSession::Emit(SessionEvent event) {
  if (on_event_) {
    on_event_(event);
    return;
  }
  {
    std::lock_guard lock(events_mu_);
    events_.push_back(std::move(event));
  }
  events_cv_.notify_all();
}

void ResilientSession::Apply(SessionCore::Output& out) {
  std::shared_ptr<ChatStream> stream = stream_;  // only this thread replaces stream_
  for (const auto& frame : out.frames) {
    // A failed write means the stream ended: its end arrives through the inbox.
    if (!stream || !stream->Write(frame)) break;
  }
  for (auto& event : out.events) Emit(std::move(event));
  out = {};
}

void ResilientSession::Run() {
  reconnect_at_ = SteadyClock::now();
  std::unique_lock lock(mu_);
  while (!stop_) {
    const auto now = SteadyClock::now();
    if (!stream_ && !auth_dead_ && now >= reconnect_at_) {
      lock.unlock();
      Connect();
      lock.lock();
      continue;
    }
    if (inbox_.empty()) {
      std::optional<SteadyClock::time_point> wake;
      if (!stream_ && !auth_dead_) wake = reconnect_at_;
      {
        std::lock_guard core_lock(core_mu_);
        if (auto t = core_.NextTimer(); t && (!wake || *t < *wake)) wake = t;
      }
      if (wake && *wake <= now) {
        lock.unlock();
        SessionCore::Output out;
        {
          std::lock_guard core_lock(core_mu_);
          core_.OnTimer(now, out);
        }
        Apply(out);
        lock.lock();
        continue;
      }
      if (wake) {
        cv_.wait_until(lock, *wake);
      } else {
        cv_.wait(lock);
      }
      continue;
    }
    std::deque<Item> items;
    items.swap(inbox_);
    lock.unlock();
    for (auto& item : items) {
      SessionCore::Output out;
      switch (item.kind) {
        case Item::Kind::kCommand: {
          const Command& c = item.command;
          std::lock_guard core_lock(core_mu_);
          switch (c.kind) {
            case Command::Kind::kSubscribe:
              core_.Subscribe(c.channel, c.after_seq, out);
              break;
            case Command::Kind::kUnsubscribe:
              core_.Unsubscribe(c.channel, out);
              break;
            case Command::Kind::kSend:
              core_.Send(c.client_msg_id, c.channel, c.body, SteadyClock::now(), out);
              break;
            case Command::Kind::kAck:
              core_.Ack(c.channel, c.seq, c.ack_kind, out);
              break;
            case Command::Kind::kTyping:
              core_.Typing(c.channel, out);
              break;
          }
          break;
        }
        case Item::Kind::kFrame: {
          if (item.generation != generation_) break;  // from a stream already replaced
          std::lock_guard core_lock(core_mu_);
          if (!confirmed_) {
            // Limits count only from a stream that works: a failed attempt ends without any.
            confirmed_ = true;
            backoff_.Reset();
            auth_failures_ = 0;
            core_.SetLimits(stream_limits_.value_or(StreamLimits{}), SteadyClock::now(), out);
            SessionEvent event;
            event.kind = SessionEvent::Kind::kConnected;
            event.resumed = ever_connected_;
            event.limits = core_.limits();
            ever_connected_ = true;
            out.events.insert(out.events.begin(), std::move(event));
          }
          core_.OnFrame(item.frame, SteadyClock::now(), out);
          break;
        }
        case Item::Kind::kLimits:
          if (item.generation != generation_) break;
          stream_limits_ = item.limits;
          break;
        case Item::Kind::kEnd:
          if (item.generation != generation_) break;
          HandleEnd(item.status);
          break;
      }
      Apply(out);
    }
    lock.lock();
  }
  std::shared_ptr<ChatStream> stream = std::move(stream_);
  lock.unlock();
  // Destroyed outside mu_: its reader thread may be pushing into the inbox.
  stream.reset();
}

bool ResilientSession::RefreshToken(const std::string& stale_token) {
  auto result = client_->RefreshIfStale(stale_token);
  if (result.ok()) {
    need_refresh_ = false;
    SessionEvent event;
    event.kind = SessionEvent::Kind::kTokenRefreshed;
    Emit(std::move(event));
    return true;
  }
  const Code code = result.code();
  if (code == Code::kUnauthenticated || code == Code::kPermissionDenied ||
      code == Code::kInvalidArgument || code == Code::kNotFound) {
    auth_dead_ = true;
    SessionEvent event;
    event.kind = SessionEvent::Kind::kAuthFailed;
    event.status = Status{code, result.error().message};
    Emit(std::move(event));
    return false;
  }
  need_refresh_ = true;
  ScheduleReconnect(Status{code, "refreshing the access token: " + result.error().message});
  return false;
}

void ResilientSession::Connect() {
  const Credentials creds = client_->credentials();
  const auto now_unix = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  const bool expiring = creds.access_expires_at_unix != 0 &&
                        creds.access_expires_at_unix - now_unix < options_.refresh_margin.count();
  if ((need_refresh_ || expiring) && !creds.refresh_token.empty()) {
    if (!RefreshToken(creds.access_token)) return;
  }

  const std::uint64_t generation = ++generation_;
  confirmed_ = false;
  stream_limits_.reset();
  stream_token_ = client_->access_token();
  ChatStreamOptions stream_options;
  stream_options.on_frame = [this, generation](v1::ServerFrame&& frame) {
    Item item;
    item.kind = Item::Kind::kFrame;
    item.generation = generation;
    item.frame = std::move(frame);
    Push(std::move(item));
  };
  stream_options.on_limits = [this, generation](const StreamLimits& limits) {
    Item item;
    item.kind = Item::Kind::kLimits;
    item.generation = generation;
    item.limits = limits;
    Push(std::move(item));
  };
  stream_options.on_end = [this, generation](const Status& status) {
    Item item;
    item.kind = Item::Kind::kEnd;
    item.generation = generation;
    item.status = status;
    Push(std::move(item));
  };
  auto stream = std::shared_ptr<ChatStream>(client_->Connect(std::move(stream_options)));
  {
    std::lock_guard lock(mu_);
    stream_ = stream;
    if (stop_) stream->Cancel();
  }
  SessionCore::Output out;
  // A Pong confirms a stream even when nothing is subscribed.
  v1::ClientFrame ping;
  ping.mutable_ping()->set_nonce(generation);
  out.frames.push_back(std::move(ping));
  {
    std::lock_guard core_lock(core_mu_);
    core_.OnConnected(SteadyClock::now(), out);
  }
  Apply(out);
}

void ResilientSession::ScheduleReconnect(const Status& status) {
  const auto delay = backoff_.Next();
  reconnect_at_ = SteadyClock::now() + delay;
  SessionEvent event;
  event.kind = SessionEvent::Kind::kDisconnected;
  event.status = status;
  event.retry_in = delay;
  Emit(std::move(event));
}

void ResilientSession::HandleEnd(const Status& status) {
  std::shared_ptr<ChatStream> old;
  {
    std::lock_guard lock(mu_);
    old = std::move(stream_);
  }
  old.reset();  // joins its reader thread, which has finished
  {
    SessionCore::Output out;
    {
      std::lock_guard core_lock(core_mu_);
      core_.OnDisconnected(status, out);
    }
    Apply(out);  // no stream: only events (a send failed by the frame size limit)
  }
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
  }
  if (status.code == Code::kUnauthenticated) {
    // Token expired or revoked. Refresh and reconnect at once, but not in a loop: a second
    // UNAUTHENTICATED without a working stream in between goes through the backoff.
    if (++auth_failures_ <= 1) {
      if (RefreshToken(stream_token_)) {
        reconnect_at_ = SteadyClock::now();
        SessionEvent event;
        event.kind = SessionEvent::Kind::kDisconnected;
        event.status = status;
        Emit(std::move(event));
      }
      return;
    }
    need_refresh_ = true;
  }
  ScheduleReconnect(status);
}

}  // namespace infrachat::client
