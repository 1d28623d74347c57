// rooms: many small channels, every member subscribed to its room and sending at a fixed rate
// (open loop, each member starting at a random point of its period). The figures are latency at a
// given offered load, not the maximum rate: send_to_receive (every member receives every message
// of its room, its own included) and, in extra, the ACK latency.
#include <fmt/format.h>

#include <random>

#include "bench_stream.h"
#include "scenarios.h"
#include "setup.h"

namespace infrachat::bench {

namespace {

constexpr auto kSubscribeTimeout = std::chrono::seconds(120);
constexpr auto kDrainTimeout = std::chrono::seconds(10);
constexpr auto kQuiet = std::chrono::milliseconds(500);

class Rooms final : public CountingHandler {
 public:
  Rooms(const CommonOptions& common, const RoomsOptions& options, const PhaseClock* clock)
      : common_(common),
        options_(options),
        clock_(clock),
        members_(options.rooms * options.members),
        max_acked_(options.rooms) {}

  std::size_t room_of(std::size_t member) const { return member / options_.members; }
  std::string channel(std::size_t room) const {
    return fmt::format("{}-room{}", common_.prefix, room);
  }

  void SendScheduled(BenchStream& stream, std::chrono::steady_clock::time_point at) {
    const std::uint64_t number = sent_.fetch_add(1, std::memory_order_relaxed);
    unacked_.fetch_add(1, std::memory_order_relaxed);
    if (!stream.Send(channel(room_of(stream.index())),
                     StampedMsgId(number, at.time_since_epoch().count()),
                     TimestampedBody(ToUnixNanos(at), number, common_.body_bytes))) {
      unacked_.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  void OnFrame(BenchStream& stream, v1::ServerFrame& frame) override {
    SubscriberState& member = members_[stream.index()];
    switch (frame.frame_case()) {
      case v1::ServerFrame::kMessage: {
        const std::int64_t now = UnixNanos();
        member.seqs.Observe(frame.message().seq());
        const auto stamp = ParseBody(frame.message().body());
        if (stamp && clock_->measuring()) {
          DeliveryStats& stats = stats_.Local();
          ++stats.deliveries;
          stats.delivery.Record(now - stamp->unix_ns);
        }
        return;
      }
      case v1::ServerFrame::kSendAck:
        CountAck(frame.send_ack(), SteadyNanos(), clock_->measuring(), counts_, stats_);
        AtomicMax(max_acked_[room_of(stream.index())], frame.send_ack().seq());
        unacked_.fetch_sub(1, std::memory_order_relaxed);
        return;
      case v1::ServerFrame::kSubscribed:
        if (!member.subscribed) {
          member.subscribed = true;
          member.seqs.Baseline(frame.subscribed().head_seq());
          subscribed_.fetch_add(1, std::memory_order_release);
        }
        return;
      case v1::ServerFrame::kUnsubscribed:
        counts_.cuts.fetch_add(1, std::memory_order_relaxed);
        stream.Subscribe(frame.unsubscribed().channel(), frame.unsubscribed().resume_after_seq());
        return;
      case v1::ServerFrame::kError:
        counts_.errors.Add(frame.error().code(), frame.error().message());
        if (!frame.error().client_msg_id().empty())
          unacked_.fetch_sub(1, std::memory_order_relaxed);
        return;
      default:
        return CountUnhandled(frame);
    }
  }

  std::size_t MembersBehind() const {
    std::size_t behind = 0;
    for (std::size_t i = 0; i < members_.size(); ++i) {
      behind += members_[i].seqs.last() < max_acked_[room_of(i)].load() ? 1 : 0;
    }
    return behind;
  }
  SeqTotals Seqs() const { return SumSeqs(members_); }

  std::size_t subscribed() const { return subscribed_.load(std::memory_order_acquire); }
  std::int64_t unacked() const { return unacked_.load(); }
  std::uint64_t sent() const { return sent_.load(); }
  const PerThread<DeliveryStats>& stats() const { return stats_; }

 private:
  const CommonOptions& common_;
  const RoomsOptions& options_;
  const PhaseClock* const clock_;
  std::vector<SubscriberState> members_;
  std::vector<std::atomic<std::uint64_t>> max_acked_;  // per room
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::int64_t> unacked_{0};
  std::atomic<std::size_t> subscribed_{0};
  PerThread<DeliveryStats> stats_;
};

}  // namespace

int RunRooms(const CommonOptions& common, const RoomsOptions& options) {
  const std::string scenario = "rooms";
  if (options.rooms == 0 || options.members == 0 || options.rate_per_member <= 0) {
    return SetupFailed(scenario, "--rooms, --members and --rate-per-member must be positive");
  }
  if (common.body_bytes < kBodyHeaderBytes) {
    return SetupFailed(scenario, fmt::format("--body-bytes must be at least {}", kBodyHeaderBytes));
  }
  PhaseClock clock(common);
  Rooms handler(common, options, &clock);
  auto users = RegisterUsers(common, "m", options.rooms * options.members);
  if (!users.ok()) return SetupFailed(scenario, users.error().message);
  if (auto joined = CreateAndJoin(
          common, *users, [&](std::size_t i) { return handler.channel(handler.room_of(i)); });
      !joined.ok()) {
    return SetupFailed(scenario, joined.error().message);
  }

  StreamGroup group(common.target, common.streams_per_connection, &handler, common.batches);
  for (std::size_t i = 0; i < users->size(); ++i) {
    group.Add((*users)[i].token).Subscribe(handler.channel(handler.room_of(i)));
  }
  const SubscribePhase subscribe = StartAndSubscribe(
      group, handler.counts(), [&] { return handler.subscribed(); }, group.size(), kQuiet,
      kSubscribeTimeout);
  const bool all_subscribed = subscribe.all_subscribed;

  double measured_s = 0;
  double max_lag_ms = 0;
  if (all_subscribed) {
    const double period_s = 1.0 / options.rate_per_member;
    std::mt19937_64 random(std::random_device{}());
    std::uniform_real_distribution<double> jitter(0, period_s);
    std::vector<std::chrono::nanoseconds> phases;
    for (std::size_t j = 0; j < group.size(); ++j) {
      phases.emplace_back(static_cast<std::int64_t>(1e9 * jitter(random)));
    }
    Pacer pacer(std::move(phases),
                std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 * period_s)),
                [&](std::size_t j, std::chrono::steady_clock::time_point at) {
                  if (!clock.draining()) handler.SendScheduled(group.at(j), at);
                });
    measured_s = clock.Run(common.warmup_s, common.duration_s,
                           [&] { return group.ended() == group.size(); });
    pacer.Stop();
    max_lag_ms = static_cast<double>(pacer.max_lag().count()) / 1e6;
    Drain(
        group, [&] { return handler.unacked() > 0 || handler.MembersBehind() > 0; }, kDrainTimeout);
  }
  const std::int64_t unacked = handler.unacked();
  const std::size_t behind = handler.MembersBehind();
  group.CancelAndWait(std::chrono::seconds(60));

  ScenarioReport report = StartReport(scenario, common, "deliveries/s", "send_to_receive");
  report.params["rooms"] = options.rooms;
  report.params["members"] = options.members;
  report.params["rate_per_member"] = options.rate_per_member;
  report.duration_s = measured_s;
  const DeliveryStats sum = SumDeliveries(handler.stats(), report);
  const SeqTotals seqs = handler.Seqs();
  const double offered = options.rate_per_member * static_cast<double>(group.size());
  report.extra["offered_msg_per_s"] = offered;
  report.extra["offered_deliveries_per_s"] = offered * static_cast<double>(options.members);
  report.extra["acked_msg_per_s"] =
      measured_s > 0 ? static_cast<double>(sum.acked) / measured_s : 0;
  report.extra["ack_latency"] = LatencyJson(sum.ack);
  report.extra["messages_sent"] = handler.sent();
  report.extra["pacer_max_lag_ms"] = max_lag_ms;
  report.extra["unacked_after_drain"] = unacked;
  report.extra["members_behind_after_drain"] = behind;
  ReportSubscribers(report, subscribe, handler.counts(), seqs);
  ReportStreams(report, handler.counts(), group);

  std::vector<std::string> problems;
  if (!all_subscribed) {
    problems.push_back(
        fmt::format("only {} of {} members got Subscribed", handler.subscribed(), group.size()));
  }
  CheckStreams(handler.counts(), seqs, problems);
  if (all_subscribed && unacked > 0) {
    problems.push_back(fmt::format("{} sends unacknowledged after drain", unacked));
  }
  if (all_subscribed && behind > 0) {
    problems.push_back(fmt::format("{} members missing messages after drain", behind));
  }
  clock.AddCpu(report);
  return Finish(report, std::move(problems));
}

}  // namespace infrachat::bench
