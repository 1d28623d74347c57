#include "fanout_service.h"

#include <fmt/format.h>
#include <prometheus/family.h>

#include <algorithm>
#include <random>

#include "infrachat/core/logging.h"
#include "infrachat/core/tracing.h"

namespace infrachat::fanout {

namespace {

// Encoded once per message, whatever the number of streams it goes to.
EncodedFrame MessageFrame(const v1::ChatMessage& message) {
  v1::ServerFrame frame;
  *frame.mutable_message() = message;
  return EncodedFrame(frame);
}

constexpr std::chrono::milliseconds kFullQueueRetry{10};
constexpr std::chrono::milliseconds kLogErrorRetry{500};
// A catch-up read nobody waits for but the subscriber: bounded so that a read lost in the
// network is retried (a remote shard caps it at grpc.internal_call_timeout_ms anyway).
constexpr std::chrono::milliseconds kLogReadTimeout{10000};

// Random, so that instances in different processes do not collide without coordination.
std::uint64_t NewOrigin() {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32) ^ rd();
}

}  // namespace

FanoutService::Metrics::Metrics() {
  auto& deliveries = prometheus::BuildCounter()
                         .Name("infrachat_fanout_deliveries_total")
                         .Help(
                             "Messages handed to client streams, by path: live from the bus, "
                             "or read from the log (catch-up and switch-over)")
                         .Register(MetricsRegistry());
  live = &deliveries.Add({{"path", "live"}});
  from_log = &deliveries.Add({{"path", "log"}});
  cuts = &prometheus::BuildCounter()
              .Name("infrachat_fanout_slow_consumer_cuts_total")
              .Help("Subscriptions ended because their stream's queue was full")
              .Register(MetricsRegistry())
              .Add({});
  log_reads = &prometheus::BuildCounter()
                   .Name("infrachat_fanout_log_reads_total")
                   .Help("Reads of a channel's log for catch-up or switch-over")
                   .Register(MetricsRegistry())
                   .Add({});
}

FanoutService::FanoutService(FanoutOptions options, EventBus* bus, LogReader* shard,
                             std::shared_ptr<spdlog::logger> logger)
    : options_(options),
      bus_(bus),
      shard_(shard),
      log_(std::move(logger)),
      reads_(log_, {"catch-up reads failing", "catch-up reads recovered"}, {}),
      origin_(NewOrigin()),
      workers_(options.workers, "fanout") {
  life_->self = this;
  bus_subscription_ = bus_->Subscribe([this](const BusEvent& event) { OnEvent(event); });
}

FanoutService::~FanoutService() {
  bus_->Unsubscribe(bus_subscription_);
  {
    std::lock_guard lock(life_->mu);  // waits for a running `ready`
    life_->self = nullptr;
  }
  workers_.Stop();
}

void FanoutService::Subscribe(const std::shared_ptr<SessionSink>& sink, const Principal& principal,
                              std::string_view channel, std::uint64_t head_seq,
                              std::optional<std::uint64_t> after_seq) {
  auto sub = std::make_shared<Subscription>();
  sub->sink = sink;
  sub->key = sink.get();
  sub->user_id = principal.user_id;
  sub->username = principal.username;
  sub->channel = std::string(channel);
  // A client that claims more than the log holds gets what comes after the head.
  sub->delivered = after_seq ? std::min(*after_seq, head_seq) : head_seq;

  std::lock_guard lock(mu_);
  // Counted in before the subscription it replaces is counted out: no offline/online flap.
  CountInLocked(*sub);
  // Added before the subscription it replaces is removed, so that the channel keeps its watch
  // (a resubscribe after a slow-consumer cut does not wait for the bus to be ready again).
  by_channel_[sub->channel].push_back(sub);
  if (auto mine = by_sink_.find(sub->key); mine != by_sink_.end()) {
    if (auto it = mine->second.find(sub->channel); it != mine->second.end()) {
      RemoveLocked(it->second);
    }
  }
  by_sink_[sub->key][sub->channel] = sub;

  v1::ServerFrame subscribed;
  subscribed.mutable_subscribed()->set_channel(sub->channel);
  subscribed.mutable_subscribed()->set_head_seq(head_seq);
  sink->Offer(EncodedFrame(subscribed), /*reserved=*/true);
  sub->start_behind = sub->delivered < head_seq;
  auto watch = watched_.find(sub->channel);
  if (watch == watched_.end()) {
    watched_.emplace(sub->channel, false);
    bus_->Watch(sub->channel, [life = life_, channel = sub->channel] {
      std::lock_guard lock(life->mu);
      if (life->self != nullptr) life->self->OnWatchReady(channel);
    });
  }
  if (watch == watched_.end() || !watch->second) {
    sub->awaiting_watch = true;  // OnWatchReady starts the switch-over
    return;
  }
  StartSwitchOverLocked(sub);
}

void FanoutService::StartSwitchOverLocked(const SubPtr& sub) {
  // The switch-over is confirmed by a log read that starts after this registration and after
  // the channel's events flow here: a message committed after the caller read head_seq may have
  // reached the bus before the subscription existed (it was dropped here), and in a quiet
  // channel nothing later would reveal the gap. Any message that such a read does not see
  // commits after the read started, so its event comes after the registration and is handled
  // by OnMessage.
  if (sub->start_behind) {
    StartCatchUpLocked(sub);  // its reads are the confirmation
  } else {
    StartProbeLocked(sub);  // live at once, plus a read of what may have come before
  }
}

void FanoutService::OnWatchReady(const std::string& channel) {
  std::lock_guard lock(mu_);
  auto watch = watched_.find(channel);
  if (watch == watched_.end()) return;  // nobody here watches it any more
  const bool again = watch->second;     // re-established: events may have been lost meanwhile
  watch->second = true;
  auto subs = by_channel_.find(channel);
  if (subs == by_channel_.end()) return;
  for (const SubPtr& sub : subs->second) {
    if (sub->awaiting_watch) {
      sub->awaiting_watch = false;
      StartSwitchOverLocked(sub);
    } else if (again) {
      // Repair from the log, as after a gap: a catch-up in progress reads once more (its read
      // may have begun before the events flowed again); a live one probes.
      if (sub->catching_up) {
        sub->reread = true;
      } else {
        StartProbeLocked(sub);
      }
    }
  }
}

void FanoutService::Unsubscribe(const SessionSink* sink, std::string_view channel) {
  std::lock_guard lock(mu_);
  auto it = by_sink_.find(sink);
  if (it == by_sink_.end()) return;
  auto sub_it = it->second.find(std::string(channel));
  if (sub_it == it->second.end()) return;
  RemoveLocked(sub_it->second);
}

void FanoutService::UnsubscribeAll(const SessionSink* sink) {
  std::lock_guard lock(mu_);
  auto it = by_sink_.find(sink);
  if (it == by_sink_.end()) return;
  std::vector<SubPtr> subs;
  for (auto& [channel, sub] : it->second) subs.push_back(sub);
  for (auto& sub : subs) RemoveLocked(sub);
}

bool FanoutService::IsSubscribed(const SessionSink* sink, std::string_view channel) const {
  std::lock_guard lock(mu_);
  auto it = by_sink_.find(sink);
  return it != by_sink_.end() && it->second.count(std::string(channel)) > 0;
}

std::size_t FanoutService::CountSubscriptions(const SessionSink* sink) const {
  std::lock_guard lock(mu_);
  auto it = by_sink_.find(sink);
  return it == by_sink_.end() ? 0 : it->second.size();
}

std::vector<std::uint64_t> FanoutService::OnlineUsers(std::string_view channel) const {
  std::vector<std::uint64_t> users;
  {
    std::lock_guard lock(mu_);
    auto it = online_.find(std::string(channel));
    if (it == online_.end()) return users;
    users.reserve(it->second.size());
    for (const auto& [user_id, origins] : it->second) users.push_back(user_id);
  }
  std::sort(users.begin(), users.end());
  return users;
}

std::size_t FanoutService::subscription_count() const {
  std::lock_guard lock(mu_);
  std::size_t n = 0;
  for (const auto& [channel, subs] : by_channel_) n += subs.size();
  return n;
}

std::uint64_t FanoutService::slow_consumer_cuts() const {
  std::lock_guard lock(mu_);
  return slow_consumer_cuts_;
}

void FanoutService::CountInLocked(const Subscription& sub) {
  if (++local_[sub.channel][sub.user_id] != 1) return;
  bus_->Publish(PresenceChanged{sub.channel, sub.user_id, sub.username, true, origin_});
}

void FanoutService::CountOutLocked(const Subscription& sub) {
  auto channel = local_.find(sub.channel);
  if (channel == local_.end()) return;
  auto user = channel->second.find(sub.user_id);
  if (user == channel->second.end() || --user->second > 0) return;
  channel->second.erase(user);
  if (channel->second.empty()) local_.erase(channel);
  bus_->Publish(PresenceChanged{sub.channel, sub.user_id, sub.username, false, origin_});
}

void FanoutService::RemoveLocked(const SubPtr& sub) {
  if (!sub->active) return;  // counted out once only
  sub->active = false;
  CountOutLocked(*sub);
  if (auto it = by_channel_.find(sub->channel); it != by_channel_.end()) {
    std::erase(it->second, sub);
    if (it->second.empty()) {
      by_channel_.erase(it);
      // The last subscription here: the channel's events are no longer needed.
      watched_.erase(sub->channel);
      bus_->Unwatch(sub->channel);
    }
  }
  if (auto it = by_sink_.find(sub->key); it != by_sink_.end()) {
    auto sub_it = it->second.find(sub->channel);
    if (sub_it != it->second.end() && sub_it->second == sub) it->second.erase(sub_it);
    if (it->second.empty()) by_sink_.erase(it);
  }
}

void FanoutService::EndLocked(const SubPtr& sub, const std::string& reason) {
  // Rare (a cut-off or a membership loss), so logged even under mu_.
  LogEvent(log_, spdlog::level::info,
           reason.rfind("slow consumer", 0) == 0 ? "slow consumer cut off" : "subscription ended",
           {{"user_id", sub->user_id},
            {"channel", sub->channel},
            {"delivered_seq", sub->delivered},
            {"reason", reason}});
  if (auto sink = sub->sink.lock()) {
    v1::ServerFrame frame;
    auto* u = frame.mutable_unsubscribed();
    u->set_channel(sub->channel);
    u->set_resume_after_seq(sub->delivered);
    u->set_reason(reason);
    sink->Offer(EncodedFrame(frame), /*reserved=*/true);
  }
  RemoveLocked(sub);
}

bool FanoutService::EndIfRefusedLocked(const SubPtr& sub, const Error& error) {
  if (error.code != Code::kPermissionDenied && error.code != Code::kNotFound) return false;
  // The subscriber left (or was removed) and the event saying so has not arrived yet: the
  // read stopped at the leave, so end here, as OnMembership will.
  EndLocked(sub, "no longer a member of the channel");
  return true;
}

void FanoutService::OnEvent(const BusEvent& event) {
  std::visit(
      [this](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, v1::ChatMessage>) {
          OnMessage(e);
        } else if constexpr (std::is_same_v<T, MembershipChanged>) {
          OnMembership(e);
        } else if constexpr (std::is_same_v<T, PresenceChanged>) {
          OnPresence(e);
        } else if constexpr (std::is_same_v<T, v1::TypingEvent>) {
          v1::ServerFrame frame;
          *frame.mutable_typing() = e;
          Broadcast(e.channel(), frame, e.user_id());
        } else {
          v1::ServerFrame frame;
          *frame.mutable_receipt() = e;
          Broadcast(e.channel(), frame, 0);
        }
      },
      event);
}

void FanoutService::OnMessage(const v1::ChatMessage& message) {
  // One span per message of a sampled send (not one per subscriber), a child of the bus's span.
  Span span = StartSpan("fanout deliver", SpanKind::kInternal, CurrentSpan());
  const std::uint64_t delivered = DeliverLive(message);
  if (span.context().has_trace() && log_->should_log(spdlog::level::debug)) {
    SpanScope scope(span.context());
    LogEvent(log_, spdlog::level::debug, "message delivered",
             {{"seq", message.seq()}, {"deliveries", delivered}});
  }
  if (!span.recording()) return;
  span.SetAttribute("infrachat.seq", message.seq());
  span.SetAttribute("infrachat.deliveries", delivered);
  span.End();
}

std::uint64_t FanoutService::DeliverLive(const v1::ChatMessage& message) {
  std::lock_guard lock(mu_);
  auto it = by_channel_.find(message.channel());
  if (it == by_channel_.end()) return 0;
  const EncodedFrame frame = MessageFrame(message);
  std::vector<SubPtr> cut;
  std::uint64_t delivered = 0;
  for (const SubPtr& sub : it->second) {
    if (message.seq() <= sub->delivered) continue;  // already delivered (from the log)
    if (sub->catching_up || sub->awaiting_watch) {
      sub->newest_live = std::max(sub->newest_live, message.seq());
      continue;
    }
    if (message.seq() != sub->delivered + 1) {
      sub->newest_live = message.seq();
      StartCatchUpLocked(sub);
      continue;
    }
    auto sink = sub->sink.lock();
    if (!sink) continue;
    if (sink->Offer(frame, /*reserved=*/false)) {
      sub->delivered = message.seq();
      ++delivered;
    } else {
      cut.push_back(sub);
    }
  }
  metrics_.live->Increment(static_cast<double>(delivered));
  for (const SubPtr& sub : cut) {
    ++slow_consumer_cuts_;
    metrics_.cuts->Increment();
    EndLocked(sub, "slow consumer: live delivery stopped; resubscribe with after_seq");
  }
  return delivered;
}

void FanoutService::OnMembership(const MembershipChanged& change) {
  if (change.joined) return;
  std::lock_guard lock(mu_);
  auto it = by_channel_.find(change.channel);
  if (it == by_channel_.end()) return;
  std::vector<SubPtr> leaving;
  for (const SubPtr& sub : it->second) {
    if (sub->user_id == change.user_id) leaving.push_back(sub);
  }
  for (const SubPtr& sub : leaving) EndLocked(sub, "no longer a member of the channel");
}

void FanoutService::OnPresence(const PresenceChanged& change) {
  bool tell = false;  // whether this report changes what the channel's subscribers were told
  {
    std::lock_guard lock(mu_);
    auto& users = online_[change.channel];
    auto& origins = users[change.user_id];
    if (change.online) {
      tell = origins.empty();
      origins.insert(change.origin);
    } else {
      // An offline from an origin that never reported online (this instance started after it)
      // changes nothing: the subscribers here were never told the user was online.
      tell = origins.erase(change.origin) > 0 && origins.empty();
    }
    if (origins.empty()) {
      users.erase(change.user_id);  // `origins`, then maybe `users`, dangle from here on
      if (users.empty()) online_.erase(change.channel);
    }
    // A big channel keeps the merged view (OnlineUsers) but gets no frames: see FanoutOptions.
    if (tell) {
      auto subs = by_channel_.find(change.channel);
      tell = subs != by_channel_.end() && !subs->second.empty() &&
             subs->second.size() <= options_.presence_max_subscribers;
    }
  }
  if (!tell) return;
  v1::ServerFrame frame;
  auto* p = frame.mutable_presence();
  p->set_channel(change.channel);
  p->set_user_id(change.user_id);
  p->set_username(change.username);
  p->set_online(change.online);
  // The user's own streams are not told about themselves (like typing).
  Broadcast(change.channel, frame, change.user_id);
}

void FanoutService::Broadcast(const std::string& channel, const v1::ServerFrame& frame,
                              std::uint64_t skip_user) {
  const EncodedFrame encoded(frame);
  std::lock_guard lock(mu_);
  auto it = by_channel_.find(channel);
  if (it == by_channel_.end()) return;
  for (const SubPtr& sub : it->second) {
    if (sub->user_id == skip_user) continue;
    // Ephemeral frames: dropped, not queued, when the stream is behind.
    if (auto sink = sub->sink.lock()) sink->Offer(encoded, /*reserved=*/false);
  }
}

void FanoutService::StartCatchUpLocked(const SubPtr& sub) {
  if (sub->catching_up) return;
  sub->catching_up = true;
  sub->stalled_since = {};
  workers_.Post([this, sub] { CatchUp(sub); });
}

void FanoutService::StartProbeLocked(const SubPtr& sub) {
  workers_.Post([this, sub] { Probe(sub); });
}

void FanoutService::ReadLogThen(const SubPtr& sub, std::uint64_t from, std::uint32_t limit,
                                ReadHandler handler) {
  metrics_.log_reads->Increment();
  // In process the read runs here, on the worker; across processes it completes on a gRPC
  // thread, and no worker waits for the round trip. The handler runs unless the service is
  // gone (the destructor waits for a running one).
  shard_->ReadLogAsync(
      CallContext::Background(kLogReadTimeout), sub->channel, sub->user_id, from, limit,
      [life = life_, sub, from, limit, handler](Result<std::vector<v1::ChatMessage>> messages) {
        std::lock_guard alive(life->mu);
        if (life->self != nullptr) {
          (life->self->*handler)(sub, from, limit, std::move(messages));
        }
      });
}

void FanoutService::Probe(const SubPtr& sub) {
  std::uint64_t from;
  {
    std::lock_guard lock(mu_);
    if (!sub->active || sub->catching_up) return;  // ended, or a catch-up reads anyway
    from = sub->delivered;
  }
  // Outside the lock. Usually empty; a batch when events were lost or are late.
  ReadLogThen(sub, from, options_.catchup_batch, &FanoutService::OnProbeRead);
}

void FanoutService::OnProbeRead(const SubPtr& sub, std::uint64_t from, std::uint32_t,
                                Result<std::vector<v1::ChatMessage>> missed) {
  std::lock_guard lock(mu_);
  if (!sub->active || sub->catching_up) return;
  if (!missed.ok() && EndIfRefusedLocked(sub, missed.error())) return;
  if (!missed.ok()) {
    reads_.Failed(CodeName(missed.error().code), missed.error().message);
    log_->debug("switch-over read of {} after {} failed: {}", sub->channel, from,
                missed.error().message);
    workers_.PostAfter(kLogErrorRetry, [this, sub] { Probe(sub); });
    return;
  }
  reads_.Succeeded();
  // Still live: hand over what live delivery has not, exactly as OnMessage would (its late
  // events are then at or below `delivered` and ignored), and cut the stream if it is full.
  auto sink = sub->sink.lock();
  if (!sink) return;
  for (const v1::ChatMessage& m : *missed) {
    if (m.seq() != sub->delivered + 1) continue;  // delivered live meanwhile
    if (!sink->Offer(MessageFrame(m), /*reserved=*/false)) {
      ++slow_consumer_cuts_;
      metrics_.cuts->Increment();
      EndLocked(sub, "slow consumer: live delivery stopped; resubscribe with after_seq");
      return;
    }
    sub->delivered = m.seq();
    metrics_.from_log->Increment();
  }
  if (missed->size() >= options_.catchup_batch) StartCatchUpLocked(sub);  // there may be more
}

void FanoutService::RetryStalledLocked(const SubPtr& sub) {
  const auto now = std::chrono::steady_clock::now();
  if (sub->stalled_since == std::chrono::steady_clock::time_point{}) sub->stalled_since = now;
  if (now - sub->stalled_since > options_.stalled_limit) {
    ++slow_consumer_cuts_;
    metrics_.cuts->Increment();
    EndLocked(sub, "slow consumer: catch-up stalled; resubscribe with after_seq");
    return;
  }
  workers_.PostAfter(kFullQueueRetry, [this, sub] { CatchUp(sub); });
}

void FanoutService::CatchUp(const SubPtr& sub) {
  std::uint64_t from;
  std::uint32_t want;
  {
    std::lock_guard lock(mu_);
    if (!sub->active) return;
    auto sink = sub->sink.lock();
    if (!sink) return;
    from = sub->delivered;
    want = static_cast<std::uint32_t>(
        std::min<std::size_t>(options_.catchup_batch, sink->FreeSlots()));
    if (want == 0) {
      // The stream's queue is full: come back when the client has read some of it.
      RetryStalledLocked(sub);
      return;
    }
    sub->stalled_since = {};
  }

  ReadLogThen(sub, from, want, &FanoutService::OnCatchUpRead);  // outside the lock
}

void FanoutService::OnCatchUpRead(const SubPtr& sub, std::uint64_t from, std::uint32_t want,
                                  Result<std::vector<v1::ChatMessage>> messages) {
  std::lock_guard lock(mu_);
  if (!sub->active) return;
  if (!messages.ok() && EndIfRefusedLocked(sub, messages.error())) return;
  if (!messages.ok()) {
    reads_.Failed(CodeName(messages.error().code), messages.error().message);
    log_->debug("catch-up of {} after {} failed: {}", sub->channel, from, messages.error().message);
    workers_.PostAfter(kLogErrorRetry, [this, sub] { CatchUp(sub); });
    return;
  }
  reads_.Succeeded();
  auto sink = sub->sink.lock();
  if (!sink) return;
  bool refused = false;
  for (const v1::ChatMessage& m : *messages) {
    if (m.seq() != sub->delivered + 1) continue;  // cannot happen with a gap-free log; be safe
    if (!sink->Offer(MessageFrame(m), /*reserved=*/false)) {
      refused = true;  // retried from `delivered`
      break;
    }
    sub->delivered = m.seq();
    metrics_.from_log->Increment();
  }
  if (refused) {
    // The queue filled up while the log was read (the stream's other channels and the
    // gateway's own frames share it): this read was short because of the queue, not because
    // the head was reached. Continue at the client's pace, or end as a slow consumer, exactly
    // as when the queue was full to begin with; never stop catching up silently.
    RetryStalledLocked(sub);
    return;
  }
  const bool head_reached = messages->size() < want;
  if (!head_reached || sub->newest_live > sub->delivered || sub->reread) {
    sub->reread = false;
    workers_.Post([this, sub] { CatchUp(sub); });
    return;
  }
  sub->catching_up = false;  // live delivery resumes with delivered + 1
}

}  // namespace infrachat::fanout
