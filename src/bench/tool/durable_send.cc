// durable-send: ACKed messages/s and ACK latency (send write -> send_ack; from the scheduled time
// in open loop). Every sender is its own user on its own stream; nobody subscribes, so the figure
// is the durable write path alone.
#include <fmt/format.h>

#include <algorithm>

#include "bench_stream.h"
#include "scenarios.h"
#include "setup.h"

namespace infrachat::bench {

namespace {

constexpr auto kDrainTimeout = std::chrono::seconds(10);

struct SendStats {
  Histogram ack;
  std::uint64_t acked = 0;  // measured phase
  std::uint64_t acked_all = 0;
};

class DurableSend final : public CountingHandler {
 public:
  DurableSend(const CommonOptions& common, const DurableSendOptions& options,
              const PhaseClock* clock)
      : clock_(clock), closed_loop_(options.rate <= 0), body_(common.body_bytes, 'x') {}

  void AddSender(std::string channel) { senders_.push_back(std::make_unique<Sender>(channel)); }

  // The client_msg_id carries `scheduled_ns`, so the ack alone gives the latency.
  void SendOne(BenchStream& stream, std::int64_t scheduled_ns) {
    Sender& sender = *senders_[stream.index()];
    const std::uint64_t number = sender.next.fetch_add(1, std::memory_order_relaxed);
    sender.inflight.fetch_add(1, std::memory_order_relaxed);
    if (!stream.Send(sender.channel, StampedMsgId(number, scheduled_ns), body_)) {
      sender.inflight.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  void OnFrame(BenchStream& stream, v1::ServerFrame& frame) override {
    Sender& sender = *senders_[stream.index()];
    switch (frame.frame_case()) {
      case v1::ServerFrame::kSendAck: {
        const std::int64_t now = SteadyNanos();
        const auto& ack = frame.send_ack();
        if (ack.duplicate()) counts_.duplicates.fetch_add(1, std::memory_order_relaxed);
        SendStats& stats = stats_.Local();
        ++stats.acked_all;
        if (clock_->measuring()) {
          ++stats.acked;
          if (auto sent = ParseMsgIdTime(ack.client_msg_id())) stats.ack.Record(now - *sent);
        }
        sender.inflight.fetch_sub(1, std::memory_order_relaxed);
        if (closed_loop_ && !clock_->draining()) SendOne(stream, now);
        return;
      }
      case v1::ServerFrame::kError:
        counts_.errors.Add(frame.error().code(), frame.error().message());
        // A failed send is not retried: the window shrinks and the run is reported unclean.
        if (!frame.error().client_msg_id().empty()) {
          sender.inflight.fetch_sub(1, std::memory_order_relaxed);
        }
        return;
      default:
        return CountUnhandled(frame);
    }
  }

  std::int64_t inflight() const {
    std::int64_t total = 0;
    for (const auto& s : senders_) total += s->inflight.load(std::memory_order_relaxed);
    return total;
  }
  std::uint64_t sent() const {
    std::uint64_t total = 0;
    for (const auto& s : senders_) total += s->next.load(std::memory_order_relaxed);
    return total;
  }

  const PerThread<SendStats>& stats() const { return stats_; }

 private:
  struct Sender {
    explicit Sender(std::string c) : channel(std::move(c)) {}
    const std::string channel;
    std::atomic<std::uint64_t> next{0};
    std::atomic<std::int64_t> inflight{0};
  };

  const PhaseClock* const clock_;
  const bool closed_loop_;
  const std::string body_;
  std::vector<std::unique_ptr<Sender>> senders_;
  PerThread<SendStats> stats_;
};

}  // namespace

int RunDurableSend(const CommonOptions& common, const DurableSendOptions& options) {
  const std::string scenario = "durable-send";
  if (options.senders == 0 || options.channels == 0 || options.window == 0) {
    return SetupFailed(scenario, "--senders, --channels and --window must be positive");
  }
  auto users = RegisterUsers(common, "s", options.senders);
  if (!users.ok()) return SetupFailed(scenario, users.error().message);
  const auto channel_of = [&](std::size_t i) {
    return fmt::format("{}-c{}", common.prefix, i % options.channels);
  };
  if (auto joined = CreateAndJoin(common, *users, channel_of); !joined.ok()) {
    return SetupFailed(scenario, joined.error().message);
  }

  PhaseClock clock(common);
  DurableSend handler(common, options, &clock);
  StreamGroup group(common.target, common.streams_per_connection, &handler, common.batches);
  for (std::size_t i = 0; i < users->size(); ++i) {
    handler.AddSender(channel_of(i));
    group.Add((*users)[i].token);
  }
  group.StartAll();

  std::unique_ptr<Pacer> pacer;
  if (options.rate > 0) {
    // Sender j sends every S/R seconds, the senders evenly staggered: R msg/s in total.
    pacer = StaggeredPacer(options.senders, options.rate,
                           [&](std::size_t j, std::chrono::steady_clock::time_point at) {
                             if (!clock.draining()) {
                               handler.SendOne(group.at(j), at.time_since_epoch().count());
                             }
                           });
  } else {
    const std::int64_t now = SteadyNanos();
    for (std::size_t j = 0; j < group.size(); ++j) {
      for (std::size_t w = 0; w < options.window; ++w) handler.SendOne(group.at(j), now);
    }
  }
  const double measured_s =
      clock.Run(common.warmup_s, common.duration_s, [&] { return group.ended() == group.size(); });
  double max_lag_ms = 0;
  if (pacer) {
    pacer->Stop();
    max_lag_ms = static_cast<double>(pacer->max_lag().count()) / 1e6;
  }
  Drain(
      group, [&] { return handler.inflight() > 0; }, kDrainTimeout);
  const std::int64_t unacked = handler.inflight();
  group.CancelAndWait(std::chrono::seconds(30));

  ScenarioReport report = StartReport(scenario, common, "msg/s", "ack");
  report.params["senders"] = options.senders;
  report.params["channels"] = options.channels;
  report.params["window"] = options.window;
  report.params["rate"] = options.rate;
  report.duration_s = measured_s;
  std::uint64_t acked_all = 0;
  handler.stats().ForEach([&](const SendStats& s) {
    report.count += s.acked;
    acked_all += s.acked_all;
    report.latency.Merge(s.ack);
  });
  report.extra["mode"] = options.rate > 0 ? "open" : "closed";
  report.extra["sent_total"] = handler.sent();
  report.extra["acked_total"] = acked_all;
  report.extra["unacked_after_drain"] = unacked;
  if (options.rate > 0) report.extra["pacer_max_lag_ms"] = max_lag_ms;
  ReportStreams(report, handler.counts(), group);

  std::vector<std::string> problems;
  CheckStreams(handler.counts(), SeqTotals{}, problems);  // no subscribers: no cuts, no seqs
  if (unacked > 0) problems.push_back(fmt::format("{} sends unacknowledged after drain", unacked));
  clock.AddCpu(report);
  return Finish(report, std::move(problems));
}

}  // namespace infrachat::bench
