#include "infrachat/client/session_core.h"

#include <algorithm>
#include <cmath>

namespace infrachat::client {

// --- Backoff ------------------------------------------------------------------------------------

Backoff::Backoff(Params params) : Backoff(params, std::random_device{}()) {}

Backoff::Backoff(Params params, std::uint64_t seed) : params_(params), rng_(seed) {}

std::chrono::milliseconds Backoff::Ceiling(const Params& params, int attempt) {
  const double max_ms = static_cast<double>(params.max.count());
  double ms = static_cast<double>(params.initial.count()) *
              std::pow(params.multiplier, static_cast<double>(std::max(attempt, 0)));
  if (!(ms < max_ms)) ms = max_ms;  // also catches inf/nan
  return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
}

std::chrono::milliseconds Backoff::Delay(const Params& params, int attempt, double u) {
  u = std::clamp(u, 0.0, 1.0);
  const double jitter = std::clamp(params.jitter, 0.0, 1.0);
  const double ceiling = static_cast<double>(Ceiling(params, attempt).count());
  return std::chrono::milliseconds(static_cast<std::int64_t>(ceiling * (1.0 - jitter * u)));
}

std::chrono::milliseconds Backoff::Next() {
  return Next(std::uniform_real_distribution<double>(0.0, 1.0)(rng_));
}

std::chrono::milliseconds Backoff::Next(double u) {
  const auto delay = Delay(params_, attempt_, u);
  if (attempt_ < 1000) ++attempt_;
  return delay;
}

bool IsRetryableSendError(Code code) {
  switch (code) {
    case Code::kUnavailable:
    case Code::kResourceExhausted:
    case Code::kDeadlineExceeded:
    case Code::kAborted:
    case Code::kCancelled:
    case Code::kUnauthenticated:
    case Code::kInternal:
    case Code::kUnknown:
      return true;
    default:
      return false;
  }
}

// --- ChannelCursor ------------------------------------------------------------------------------

bool ChannelCursor::Observe(std::uint64_t seq) {
  const bool seen = (last_seen_ && seq <= *last_seen_) || shown_ahead_.count(seq) > 0;
  if (!last_seen_ || seq > *last_seen_) last_seen_ = seq;
  Prune();
  return !seen;
}

void ChannelCursor::MarkShown(std::uint64_t seq) {
  if (last_seen_ && seq <= *last_seen_) return;
  shown_ahead_.insert(seq);
  // Bounded: only own messages not yet echoed live here; keep the newest ones.
  while (shown_ahead_.size() > 4096) shown_ahead_.erase(shown_ahead_.begin());
}

void ChannelCursor::SetBaselineIfUnset(std::uint64_t seq) {
  if (last_seen_) return;
  last_seen_ = seq;
  Prune();
}

void ChannelCursor::Reset(std::optional<std::uint64_t> last_seen) {
  last_seen_ = last_seen;
  shown_ahead_.clear();
}

void ChannelCursor::Prune() {
  if (!last_seen_) return;
  shown_ahead_.erase(shown_ahead_.begin(), shown_ahead_.upper_bound(*last_seen_));
}

std::uint64_t ResumeAfterUnsubscribed(std::optional<std::uint64_t> last_seen,
                                      std::uint64_t resume_after_seq) {
  return last_seen.value_or(resume_after_seq);
}

const char* KindName(SessionEvent::Kind kind) {
  using K = SessionEvent::Kind;
  switch (kind) {
    case K::kConnected:
      return "connected";
    case K::kDisconnected:
      return "disconnected";
    case K::kAuthFailed:
      return "auth_failed";
    case K::kTokenRefreshed:
      return "token_refreshed";
    case K::kSubscribed:
      return "subscribed";
    case K::kSubscribeFailed:
      return "subscribe_failed";
    case K::kResubscribing:
      return "resubscribing";
    case K::kMessage:
      return "message";
    case K::kSendAcked:
      return "send_acked";
    case K::kSendRetrying:
      return "send_retrying";
    case K::kSendFailed:
      return "send_failed";
    case K::kError:
      return "error";
    case K::kTyping:
      return "typing";
    case K::kReceipt:
      return "receipt";
    case K::kPresence:
      return "presence";
  }
  return "unknown";
}

// --- SessionCore --------------------------------------------------------------------------------

SessionCore::SessionCore(Backoff::Params send_retry, std::function<double()> uniform)
    : send_retry_(send_retry), uniform_(std::move(uniform)) {
  if (!uniform_) {
    auto rng = std::make_shared<std::mt19937_64>(std::random_device{}());
    uniform_ = [rng] { return std::uniform_real_distribution<double>(0.0, 1.0)(*rng); };
  }
}

std::chrono::milliseconds SessionCore::RetryDelay(int attempt) {
  return Backoff::Delay(send_retry_, attempt, uniform_());
}

SessionCore::Subscription* SessionCore::FindSub(const std::string& channel) {
  auto it = subs_.find(channel);
  return it == subs_.end() ? nullptr : &it->second;
}

std::deque<PendingSend>::iterator SessionCore::PendingById(const std::string& client_msg_id) {
  return std::find_if(pending_.begin(), pending_.end(),
                      [&](const PendingSend& p) { return p.client_msg_id == client_msg_id; });
}

const PendingSend* SessionCore::FindPending(const std::string& client_msg_id) const {
  auto it = std::find_if(pending_.begin(), pending_.end(),
                         [&](const PendingSend& p) { return p.client_msg_id == client_msg_id; });
  return it == pending_.end() ? nullptr : &*it;
}

void SessionCore::WriteSubscribe(const std::string& channel, Subscription& sub, Output& out) {
  sub.active = false;
  sub.retry_at.reset();
  if (!connected_) return;
  v1::ClientFrame frame;
  auto* subscribe = frame.mutable_subscribe();
  subscribe->set_channel(channel);
  if (auto after = sub.cursor.last_seen()) subscribe->set_after_seq(*after);
  out.frames.push_back(std::move(frame));
}

void SessionCore::WriteSend(PendingSend& send, Output& out) {
  v1::ClientFrame frame;
  auto* s = frame.mutable_send();
  s->set_channel(send.channel);
  s->set_client_msg_id(send.client_msg_id);
  s->set_body(send.body);
  out.frames.push_back(std::move(frame));
  send.in_flight = true;
  ++send.attempts;
}

void SessionCore::Subscribe(const std::string& channel, std::optional<std::uint64_t> after_seq,
                            Output& out) {
  auto [it, inserted] = subs_.try_emplace(channel);
  if (inserted) order_.push_back(channel);
  Subscription& sub = it->second;
  if (after_seq) sub.cursor.Reset(after_seq);
  sub.failures = 0;
  sub.last_unsubscribed_at.reset();
  WriteSubscribe(channel, sub, out);
}

void SessionCore::Unsubscribe(const std::string& channel, Output& out) {
  if (subs_.erase(channel) == 0) return;
  order_.erase(std::remove(order_.begin(), order_.end(), channel), order_.end());
  if (!connected_) return;
  v1::ClientFrame frame;
  frame.mutable_unsubscribe()->set_channel(channel);
  out.frames.push_back(std::move(frame));
}

void SessionCore::Send(const std::string& client_msg_id, const std::string& channel,
                       const std::string& body, SteadyClock::time_point now, Output& out) {
  if (PendingById(client_msg_id) != pending_.end()) return;  // already queued
  PendingSend send;
  send.client_msg_id = client_msg_id;
  send.channel = channel;
  send.body = body;
  send.next_attempt = now;
  pending_.push_back(std::move(send));
  Pump(now, out);
}

std::size_t SessionCore::SendWindow() const {
  return limits_.max_inflight_sends > 0 ? limits_.max_inflight_sends : 1;
}

void SessionCore::SetLimits(const StreamLimits& limits, SteadyClock::time_point now, Output& out) {
  limits_ = limits;
  Pump(now, out);
}

void SessionCore::FailSend(std::deque<PendingSend>::iterator it, Status status, Output& out) {
  SessionEvent event;
  event.kind = SessionEvent::Kind::kSendFailed;
  event.channel = it->channel;
  event.status = std::move(status);
  event.send = std::move(*it);
  pending_.erase(it);
  out.events.push_back(std::move(event));
}

void SessionCore::Pump(SteadyClock::time_point now, Output& out) {
  if (!connected_) return;
  const std::size_t window = SendWindow();
  std::size_t in_flight = 0;
  for (const auto& send : pending_) in_flight += send.in_flight ? 1 : 0;
  std::set<std::string> held;  // channels with an earlier send that may not be written yet
  for (auto it = pending_.begin(); it != pending_.end() && in_flight < window;) {
    if (it->in_flight || held.count(it->channel) > 0) {
      ++it;
      continue;
    }
    if (it->next_attempt > now) {
      held.insert(it->channel);
      ++it;
      continue;
    }
    if (limits_.announced && it->body.size() > limits_.max_body_bytes) {
      const std::size_t size = it->body.size();
      FailSend(
          it,
          Status{Code::kInvalidArgument,
                 "message body is " + std::to_string(size) + " bytes; the server accepts at most " +
                     std::to_string(limits_.max_body_bytes) + " (infrachat-max-body-bytes)"},
          out);
      it = pending_.begin();  // erase invalidated the iterator; written ones are skipped
      continue;
    }
    WriteSend(*it, out);
    ++in_flight;
    ++it;
  }
}

void SessionCore::Ack(const std::string& channel, std::uint64_t seq, v1::AckKind kind,
                      Output& out) {
  if (!connected_) return;
  v1::ClientFrame frame;
  auto* ack = frame.mutable_ack();
  ack->set_channel(channel);
  ack->set_seq(seq);
  ack->set_kind(kind);
  out.frames.push_back(std::move(frame));
}

void SessionCore::Typing(const std::string& channel, Output& out) {
  if (!connected_) return;
  v1::ClientFrame frame;
  frame.mutable_typing()->set_channel(channel);
  out.frames.push_back(std::move(frame));
}

void SessionCore::OnConnected(SteadyClock::time_point now, Output& out) {
  connected_ = true;
  for (const auto& channel : order_) WriteSubscribe(channel, subs_.at(channel), out);
  for (auto& send : pending_) {
    send.in_flight = false;
    send.next_attempt = now;
  }
  Pump(now, out);
}

void SessionCore::OnDisconnected(const Status& status, Output& out) {
  // gRPC ends the call when a frame is over the server's receive limit. Rewriting that send
  // would end every stream the same way: it is final.
  if (status.code == Code::kResourceExhausted &&
      status.message.find("larger than max") != std::string::npos) {
    auto largest = pending_.end();
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (it->in_flight && (largest == pending_.end() || it->body.size() > largest->body.size())) {
        largest = it;
      }
    }
    if (largest != pending_.end()) {
      const std::size_t size = largest->body.size();
      FailSend(largest,
               Status{Code::kInvalidArgument, "message body of " + std::to_string(size) +
                                                  " bytes is larger than the server accepts (" +
                                                  status.message + ")"},
               out);
    }
  }
  OnDisconnected();
}

void SessionCore::OnDisconnected() {
  connected_ = false;
  for (auto& [channel, sub] : subs_) {
    sub.active = false;
    sub.retry_at.reset();
  }
  for (auto& send : pending_) send.in_flight = false;
}

void SessionCore::OnFrame(const v1::ServerFrame& frame, SteadyClock::time_point now, Output& out) {
  using F = v1::ServerFrame;
  switch (frame.frame_case()) {
    case F::kSubscribed: {
      const auto& s = frame.subscribed();
      Subscription* sub = FindSub(s.channel());
      if (sub == nullptr) return;
      sub->active = true;
      sub->retry_at.reset();
      sub->cursor.SetBaselineIfUnset(s.head_seq());
      SessionEvent event;
      event.kind = SessionEvent::Kind::kSubscribed;
      event.channel = s.channel();
      event.seq = s.head_seq();
      out.events.push_back(std::move(event));
      return;
    }
    case F::kMessage:
      OnMessage(frame.message(), out);
      Pump(now, out);  // an echo may have acknowledged a send: room in the window
      return;
    case F::kSendAck:
      OnSendAck(frame.send_ack(), out);
      Pump(now, out);
      return;
    case F::kError:
      OnError(frame.error(), now, out);
      return;
    case F::kUnsubscribed:
      OnUnsubscribed(frame.unsubscribed(), now, out);
      return;
    case F::kTyping:
    case F::kReceipt:
    case F::kPresence: {
      SessionEvent event;
      event.kind = frame.frame_case() == F::kTyping    ? SessionEvent::Kind::kTyping
                   : frame.frame_case() == F::kReceipt ? SessionEvent::Kind::kReceipt
                                                       : SessionEvent::Kind::kPresence;
      event.channel = frame.frame_case() == F::kTyping    ? frame.typing().channel()
                      : frame.frame_case() == F::kReceipt ? frame.receipt().channel()
                                                          : frame.presence().channel();
      event.frame = frame;
      out.events.push_back(std::move(event));
      return;
    }
    case F::kBatch:
      // ChatStream unpacks batches before they get here; a batch fed directly is taken apart
      // the same way. Batches never nest (a nested one would be ignored).
      for (const v1::ServerFrame& inner : frame.batch().frames()) {
        if (!inner.has_batch()) OnFrame(inner, now, out);
      }
      return;
    case F::kPong:
    case F::FRAME_NOT_SET:
      return;
  }
}

void SessionCore::OnMessage(const v1::ChatMessage& message, Output& out) {
  Subscription* sub = FindSub(message.channel());
  const bool fresh = sub != nullptr && sub->cursor.Observe(message.seq());
  if (sub != nullptr) sub->failures = 0;  // progress

  // The live echo (or replay) of an own pending send proves it is durable: it counts as its ack.
  auto pending =
      message.client_msg_id().empty() ? pending_.end() : PendingById(message.client_msg_id());
  if (pending != pending_.end() && pending->channel == message.channel()) {
    SessionEvent event;
    event.kind = SessionEvent::Kind::kSendAcked;
    event.channel = message.channel();
    event.seq = message.seq();
    event.ack.set_client_msg_id(message.client_msg_id());
    event.ack.set_channel(message.channel());
    event.ack.set_seq(message.seq());
    event.ack.set_sent_at_unix_ms(message.sent_at_unix_ms());
    event.send = std::move(*pending);
    pending_.erase(pending);
    out.events.push_back(std::move(event));
    return;
  }
  if (!fresh) return;
  SessionEvent event;
  event.kind = SessionEvent::Kind::kMessage;
  event.channel = message.channel();
  event.seq = message.seq();
  event.message = message;
  out.events.push_back(std::move(event));
}

void SessionCore::OnSendAck(const v1::SendAck& ack, Output& out) {
  auto pending = PendingById(ack.client_msg_id());
  if (pending == pending_.end()) return;  // already shown through its echo
  if (Subscription* sub = FindSub(pending->channel)) sub->cursor.MarkShown(ack.seq());
  SessionEvent event;
  event.kind = SessionEvent::Kind::kSendAcked;
  event.channel = pending->channel;
  event.seq = ack.seq();
  event.ack = ack;
  event.send = std::move(*pending);
  pending_.erase(pending);
  out.events.push_back(std::move(event));
}

void SessionCore::OnError(const v1::Error& error, SteadyClock::time_point now, Output& out) {
  const Code code = static_cast<Code>(error.code());
  const Status status{code, error.message()};
  if (!error.client_msg_id().empty()) {
    auto pending = PendingById(error.client_msg_id());
    if (pending != pending_.end()) {
      SessionEvent event;
      event.channel = pending->channel;
      event.status = status;
      if (IsRetryableSendError(code)) {
        // Held back with it: every later send of the channel not written yet (Pump writes
        // nothing of the channel past a send that waits for its retry).
        pending->in_flight = false;
        pending->last_error = status;
        event.retry_in = RetryDelay(std::max(pending->attempts - 1, 0));
        pending->next_attempt = now + event.retry_in;
        event.kind = SessionEvent::Kind::kSendRetrying;
        event.send = *pending;
      } else {
        event.kind = SessionEvent::Kind::kSendFailed;
        event.send = std::move(*pending);
        pending_.erase(pending);
      }
      out.events.push_back(std::move(event));
      Pump(now, out);
      return;
    }
  }
  // An error for a subscribe in progress (no Subscribed yet) ends or delays that subscription.
  Subscription* sub = error.client_msg_id().empty() ? FindSub(error.channel()) : nullptr;
  if (sub != nullptr && !sub->active && connected_) {
    SessionEvent event;
    event.channel = error.channel();
    event.status = status;
    if (code == Code::kUnauthenticated) {
      // The stream ends next; the subscription is redone after the token refresh.
      event.kind = SessionEvent::Kind::kError;
    } else if (IsRetryableSendError(code)) {
      event.kind = SessionEvent::Kind::kError;
      event.retry_in = RetryDelay(sub->failures++);
      sub->retry_at = now + event.retry_in;
    } else {
      event.kind = SessionEvent::Kind::kSubscribeFailed;
      subs_.erase(error.channel());
      order_.erase(std::remove(order_.begin(), order_.end(), error.channel()), order_.end());
    }
    out.events.push_back(std::move(event));
    return;
  }
  SessionEvent event;
  event.kind = SessionEvent::Kind::kError;
  event.channel = error.channel();
  event.status = status;
  out.events.push_back(std::move(event));
}

void SessionCore::OnUnsubscribed(const v1::Unsubscribed& frame, SteadyClock::time_point now,
                                 Output& out) {
  Subscription* sub = FindSub(frame.channel());
  if (sub == nullptr) return;  // we asked for it
  const std::uint64_t after =
      ResumeAfterUnsubscribed(sub->cursor.last_seen(), frame.resume_after_seq());
  // Twice at the same point means no progress: slow down instead of spinning.
  const bool stuck = sub->last_unsubscribed_at == after;
  sub->last_unsubscribed_at = after;
  sub->cursor.SetBaselineIfUnset(after);
  SessionEvent event;
  event.kind = SessionEvent::Kind::kResubscribing;
  event.channel = frame.channel();
  event.seq = after;
  event.reason = frame.reason();
  if (stuck) {
    sub->active = false;
    event.retry_in = RetryDelay(sub->failures++);
    sub->retry_at = now + event.retry_in;
  } else {
    WriteSubscribe(frame.channel(), *sub, out);
  }
  out.events.push_back(std::move(event));
}

void SessionCore::OnTimer(SteadyClock::time_point now, Output& out) {
  if (!connected_) return;
  for (const auto& channel : order_) {
    Subscription& sub = subs_.at(channel);
    if (sub.retry_at && *sub.retry_at <= now) WriteSubscribe(channel, sub, out);
  }
  Pump(now, out);
}

std::optional<SteadyClock::time_point> SessionCore::NextTimer() const {
  if (!connected_) return std::nullopt;
  std::optional<SteadyClock::time_point> next;
  auto consider = [&](SteadyClock::time_point t) {
    if (!next || t < *next) next = t;
  };
  for (const auto& [channel, sub] : subs_) {
    if (sub.retry_at) consider(*sub.retry_at);
  }
  // Only a send that Pump would write when its time comes: the first one not in flight of its
  // channel, and only while the window has room (an answer frees it otherwise).
  std::size_t in_flight = 0;
  for (const auto& send : pending_) in_flight += send.in_flight ? 1 : 0;
  if (in_flight < SendWindow()) {
    std::set<std::string> seen;
    for (const auto& send : pending_) {
      if (send.in_flight || !seen.insert(send.channel).second) continue;
      consider(send.next_attempt);
    }
  }
  return next;
}

bool SessionCore::IsSubscribed(const std::string& channel) const {
  return subs_.count(channel) > 0;
}

std::vector<std::string> SessionCore::Channels() const { return order_; }

std::optional<std::uint64_t> SessionCore::ResumeAfterSeq(const std::string& channel) const {
  auto it = subs_.find(channel);
  if (it == subs_.end()) return std::nullopt;
  return it->second.cursor.last_seen();
}

const ChannelCursor* SessionCore::Cursor(const std::string& channel) const {
  auto it = subs_.find(channel);
  return it == subs_.end() ? nullptr : &it->second.cursor;
}

}  // namespace infrachat::client
