// fanout: one channel, N subscriber streams, S sender streams. Bodies carry the send time, so each
// delivery gives a send-to-receive latency. Closed loop by default: at most --max-undelivered
// messages are not yet received by every subscriber, which keeps the server's bounded per-stream
// queues from overflowing, so the figure is the sustainable delivery rate.
#include <fmt/format.h>

#include <bit>

#include "bench_stream.h"
#include "scenarios.h"
#include "setup.h"

namespace infrachat::bench {

namespace {

constexpr auto kSubscribeTimeout = std::chrono::seconds(120);
constexpr auto kDrainTimeout = std::chrono::seconds(10);
constexpr auto kQuiet = std::chrono::milliseconds(1000);

class Fanout final : public CountingHandler {
 public:
  Fanout(const CommonOptions& common, const FanoutOptions& options, const PhaseClock* clock,
         std::string channel)
      : common_(common),
        options_(options),
        clock_(clock),
        channel_(std::move(channel)),
        closed_loop_(options.rate <= 0),
        subs_(options.subscribers),
        // Room for four windows: a slot is reused only once its message reached everybody, and
        // messages complete nearly in order (seq order), so no live slot is ever reused.
        ring_(std::bit_ceil(4 * std::max<std::size_t>(options.max_undelivered, 1))) {}

  bool is_sender(const BenchStream& stream) const { return stream.index() < options_.senders; }

  // Sends message `number`, stamped with `scheduled`, on sender number % S.
  void SendMessage(BenchStream& sender, std::uint64_t number,
                   std::chrono::steady_clock::time_point scheduled) {
    unacked_.fetch_add(1, std::memory_order_relaxed);
    if (!sender.Send(channel_, StampedMsgId(number, scheduled.time_since_epoch().count()),
                     TimestampedBody(ToUnixNanos(scheduled), number, common_.body_bytes))) {
      unacked_.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  // Closed loop: issues messages while fewer than max_undelivered are incomplete.
  void TrySendMore() {
    for (;;) {
      if (clock_->draining()) return;
      std::uint64_t k = issued_.load(std::memory_order_acquire);
      if (k - completed_.load(std::memory_order_acquire) >= options_.max_undelivered) return;
      if (issued_.compare_exchange_weak(k, k + 1, std::memory_order_acq_rel)) {
        SendMessage(*senders_[k % senders_.size()], k, std::chrono::steady_clock::now());
      }
    }
  }

  // Open loop: one message now on sender j.
  void SendScheduled(std::size_t j, std::chrono::steady_clock::time_point at) {
    SendMessage(*senders_[j], issued_.fetch_add(1, std::memory_order_relaxed), at);
  }

  void AddSender(BenchStream* stream) { senders_.push_back(stream); }

  void OnFrame(BenchStream& stream, v1::ServerFrame& frame) override {
    if (is_sender(stream)) return OnSenderFrame(frame);
    SubscriberState& sub = subs_[stream.index() - options_.senders];
    switch (frame.frame_case()) {
      case v1::ServerFrame::kMessage: {
        const std::int64_t now = UnixNanos();
        const auto& message = frame.message();
        sub.seqs.Observe(message.seq());
        const auto stamp = ParseBody(message.body());
        DeliveryStats& stats = stats_.Local();
        ++stats.deliveries_all;
        if (stamp && clock_->measuring()) {
          ++stats.deliveries;
          stats.delivery.Record(now - stamp->unix_ns);
        }
        if (stamp && closed_loop_) {
          auto& slot = ring_[stamp->number & (ring_.size() - 1)];
          if (slot.fetch_add(1, std::memory_order_acq_rel) + 1 == options_.subscribers) {
            slot.store(0, std::memory_order_relaxed);
            completed_.fetch_add(1, std::memory_order_acq_rel);
            TrySendMore();
          }
        }
        return;
      }
      case v1::ServerFrame::kSubscribed:
        if (!sub.subscribed) {
          sub.subscribed = true;
          if (!common_.raw || frame.subscribed().head_seq() > 0) {
            sub.seqs.Baseline(frame.subscribed().head_seq());
          }
          subscribed_.fetch_add(1, std::memory_order_release);
        }
        return;
      case v1::ServerFrame::kUnsubscribed:
        // The server cut a slow consumer: count it and resume from the log like a real client.
        counts_.cuts.fetch_add(1, std::memory_order_relaxed);
        if (!common_.raw) stream.Subscribe(channel_, frame.unsubscribed().resume_after_seq());
        return;
      case v1::ServerFrame::kError:
        counts_.errors.Add(frame.error().code(), frame.error().message());
        return;
      default:
        return CountUnhandled(frame);
    }
  }

  // Subscribers that have not yet received the newest acknowledged message.
  std::size_t SubscribersBehind() const {
    const std::uint64_t head = max_acked_seq_.load();
    std::size_t behind = 0;
    for (const auto& sub : subs_) behind += sub.seqs.last() < head ? 1 : 0;
    return behind;
  }

  SeqTotals Seqs() const { return SumSeqs(subs_); }

  std::size_t subscribed() const { return subscribed_.load(std::memory_order_acquire); }
  std::int64_t unacked() const { return unacked_.load(); }
  std::uint64_t issued() const { return issued_.load(); }
  std::uint64_t max_acked_seq() const { return max_acked_seq_.load(); }
  const PerThread<DeliveryStats>& stats() const { return stats_; }

 private:
  void OnSenderFrame(v1::ServerFrame& frame) {
    switch (frame.frame_case()) {
      case v1::ServerFrame::kSendAck:
        CountAck(frame.send_ack(), SteadyNanos(), clock_->measuring(), counts_, stats_);
        AtomicMax(max_acked_seq_, frame.send_ack().seq());
        unacked_.fetch_sub(1, std::memory_order_relaxed);
        return;
      case v1::ServerFrame::kError:
        counts_.errors.Add(frame.error().code(), frame.error().message());
        if (!frame.error().client_msg_id().empty()) {
          unacked_.fetch_sub(1, std::memory_order_relaxed);
          // Never delivered: count it complete so the closed loop does not wait for it.
          if (closed_loop_) {
            completed_.fetch_add(1, std::memory_order_acq_rel);
            TrySendMore();
          }
        }
        return;
      default:
        return CountUnhandled(frame);
    }
  }

  const CommonOptions& common_;
  const FanoutOptions& options_;
  const PhaseClock* const clock_;
  const std::string channel_;
  const bool closed_loop_;
  std::vector<BenchStream*> senders_;
  std::vector<SubscriberState> subs_;
  std::vector<std::atomic<std::uint32_t>> ring_;  // per message number: subscribers reached
  std::atomic<std::uint64_t> issued_{0};
  std::atomic<std::uint64_t> completed_{0};
  std::atomic<std::int64_t> unacked_{0};
  std::atomic<std::uint64_t> max_acked_seq_{0};
  std::atomic<std::size_t> subscribed_{0};
  PerThread<DeliveryStats> stats_;
};

}  // namespace

int RunFanout(const CommonOptions& common, const FanoutOptions& options) {
  const std::string scenario = "fanout";
  if (options.subscribers == 0 || options.senders == 0 || options.max_undelivered == 0) {
    return SetupFailed(scenario, "--subscribers, --senders and --max-undelivered must be positive");
  }
  if (common.body_bytes < kBodyHeaderBytes) {
    return SetupFailed(scenario, fmt::format("--body-bytes must be at least {} (the send time "
                                             "and message number travel in the body)",
                                             kBodyHeaderBytes));
  }
  const std::string channel = common.prefix + "-fanout";
  // Senders first (stream indexes 0..S-1), then subscribers.
  auto senders = RegisterUsers(common, "s", options.senders);
  if (!senders.ok()) return SetupFailed(scenario, senders.error().message);
  auto subscribers = RegisterUsers(common, "r", options.subscribers);
  if (!subscribers.ok()) return SetupFailed(scenario, subscribers.error().message);
  std::vector<BenchUser> users = std::move(*senders);
  users.insert(users.end(), subscribers->begin(), subscribers->end());
  if (auto joined = CreateAndJoin(common, users, [&](std::size_t) { return channel; });
      !joined.ok()) {
    return SetupFailed(scenario, joined.error().message);
  }

  PhaseClock clock(common);
  Fanout handler(common, options, &clock, channel);
  StreamGroup group(common.target, common.streams_per_connection, &handler, common.batches);
  for (std::size_t i = 0; i < users.size(); ++i) {
    BenchStream& stream = group.Add(users[i].token);
    if (i < options.senders) {
      handler.AddSender(&stream);
    } else {
      stream.Subscribe(channel);
    }
  }
  const SubscribePhase subscribe = StartAndSubscribe(
      group, handler.counts(), [&] { return handler.subscribed(); }, options.subscribers, kQuiet,
      kSubscribeTimeout);
  const bool all_subscribed = subscribe.all_subscribed;

  std::unique_ptr<Pacer> pacer;
  double measured_s = 0;
  if (all_subscribed) {
    if (options.rate > 0) {
      pacer = StaggeredPacer(options.senders, options.rate,
                             [&](std::size_t j, std::chrono::steady_clock::time_point at) {
                               if (!clock.draining()) handler.SendScheduled(j, at);
                             });
    } else {
      handler.TrySendMore();
    }
    measured_s = clock.Run(common.warmup_s, common.duration_s,
                           [&] { return group.ended() == group.size(); });
    if (pacer) pacer->Stop();
    Drain(
        group, [&] { return handler.unacked() > 0 || handler.SubscribersBehind() > 0; },
        kDrainTimeout);
  }
  const std::int64_t unacked = handler.unacked();
  const std::size_t behind = handler.SubscribersBehind();
  group.CancelAndWait(std::chrono::seconds(60));

  ScenarioReport report = StartReport(scenario, common, "deliveries/s", "send_to_receive");
  report.params["subscribers"] = options.subscribers;
  report.params["senders"] = options.senders;
  report.params["rate"] = options.rate;
  report.params["max_undelivered"] = options.max_undelivered;
  report.duration_s = measured_s;
  const DeliveryStats sum = SumDeliveries(handler.stats(), report);
  const SeqTotals seqs = handler.Seqs();
  report.extra["mode"] = options.rate > 0 ? "open" : "closed";
  report.extra["messages_sent"] = handler.issued();
  report.extra["messages_acked_per_s"] =
      measured_s > 0 ? static_cast<double>(sum.acked) / measured_s : 0;
  report.extra["deliveries_total"] = sum.deliveries_all;
  report.extra["head_seq"] = handler.max_acked_seq();
  report.extra["ack_latency"] = LatencyJson(sum.ack);
  report.extra["unacked_after_drain"] = unacked;
  report.extra["subscribers_behind_after_drain"] = behind;
  ReportSubscribers(report, subscribe, handler.counts(), seqs);
  ReportStreams(report, handler.counts(), group);

  std::vector<std::string> problems;
  if (!all_subscribed) {
    problems.push_back(fmt::format("only {} of {} subscribers got Subscribed", handler.subscribed(),
                                   options.subscribers));
  }
  CheckStreams(handler.counts(), seqs, problems);
  if (all_subscribed && unacked > 0) {
    problems.push_back(fmt::format("{} sends unacknowledged after drain", unacked));
  }
  if (all_subscribed && behind > 0) {
    problems.push_back(fmt::format("{} subscribers missing messages after drain", behind));
  }
  clock.AddCpu(report);
  return Finish(report, std::move(problems));
}

}  // namespace infrachat::bench
