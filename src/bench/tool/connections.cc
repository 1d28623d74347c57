// connections: C authenticated, subscribed, idle sessions (each its own user and, by default, its
// own TCP connection). Reports the time to connect them all and per-session connect latency
// (stream start -> Subscribed), and with --server-pid the server's RSS before, after and per
// session. The sessions are then held idle for --duration seconds; none may be closed.
#include <fmt/format.h>

#include "bench_stream.h"
#include "scenarios.h"
#include "setup.h"

namespace infrachat::bench {

namespace {

struct ConnectStats {
  Histogram connect;
};

class Connections final : public CountingHandler {
 public:
  explicit Connections(std::size_t sessions) : subscribed_flags_(sessions) {}

  void OnFrame(BenchStream& stream, v1::ServerFrame& frame) override {
    switch (frame.frame_case()) {
      case v1::ServerFrame::kSubscribed: {
        if (subscribed_flags_[stream.index()]) return;
        subscribed_flags_[stream.index()] = true;
        stats_.Local().connect.Record(
            (std::chrono::steady_clock::now() - stream.started_at()).count());
        {
          std::lock_guard lock(mu_);
          ++subscribed_;
          last_subscribed_ = std::chrono::steady_clock::now();
        }
        cv_.notify_one();
        return;
      }
      case v1::ServerFrame::kError:
        counts_.errors.Add(frame.error().code(), frame.error().message());
        if (!subscribed_flags_[stream.index()]) {
          // The subscribe failed: this session is settled, it no longer holds a connect slot.
          subscribed_flags_[stream.index()] = true;
          {
            std::lock_guard lock(mu_);
            ++failed_;
          }
          cv_.notify_one();
        }
        return;
      case v1::ServerFrame::kUnsubscribed:
        counts_.cuts.fetch_add(1, std::memory_order_relaxed);
        return;
      default:
        return CountUnhandled(frame);
    }
  }

  void OnEnd(BenchStream& stream, const grpc::Status& status) override {
    if (!counts_.ends.Record(stream, status)) return;
    // Under mu_: a waiter between checking closed() and waiting cannot miss this notification.
    std::lock_guard lock(mu_);
    cv_.notify_one();
  }

  // Waits until fewer than `window` started sessions are still connecting, or `deadline`.
  bool WaitForWindow(std::size_t started, std::size_t window,
                     std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, deadline,
                          [&] { return started < window + subscribed_ + closed() + failed_; });
  }
  bool WaitForAll(std::size_t n, std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return subscribed_ + closed() + failed_ >= n; });
  }

  std::size_t subscribed() const {
    std::lock_guard lock(mu_);
    return subscribed_;
  }
  // Sessions that ended without being cancelled by us.
  std::size_t closed() const { return counts_.ends.count(); }
  std::chrono::steady_clock::time_point last_subscribed() const {
    std::lock_guard lock(mu_);
    return last_subscribed_;
  }
  const PerThread<ConnectStats>& stats() const { return stats_; }

 private:
  std::vector<char> subscribed_flags_;  // per stream, that stream's callbacks only
  PerThread<ConnectStats> stats_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::size_t subscribed_ = 0;
  std::size_t failed_ = 0;  // answered the subscribe with an error
  std::chrono::steady_clock::time_point last_subscribed_{};
};

std::optional<std::uint64_t> Rss(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  return ReadRssKib(pid);
}

}  // namespace

int RunConnections(const CommonOptions& common, const ConnectionsOptions& options) {
  const std::string scenario = "connections";
  if (options.sessions == 0 || options.channels == 0 || options.connect_window == 0) {
    return SetupFailed(scenario, "--sessions, --channels and --connect-window must be positive");
  }
  if (common.server_pid > 0 && !ReadRssKib(common.server_pid)) {
    return SetupFailed(scenario, fmt::format("cannot read /proc/{}/status", common.server_pid));
  }
  const auto setup_start = std::chrono::steady_clock::now();
  auto users = RegisterUsers(common, "s", options.sessions);
  if (!users.ok()) return SetupFailed(scenario, users.error().message);
  const auto channel_of = [&](std::size_t i) {
    return fmt::format("{}-idle{}", common.prefix, i % options.channels);
  };
  if (auto joined = CreateAndJoin(common, *users, channel_of); !joined.ok()) {
    return SetupFailed(scenario, joined.error().message);
  }
  const double setup_s = SecondsSince(setup_start);

  Connections handler(options.sessions);
  const auto rss_before = Rss(common.server_pid);
  StreamGroup group(common.target, common.streams_per_connection, &handler, common.batches);
  for (std::size_t i = 0; i < users->size(); ++i) {
    group.Add((*users)[i].token).Subscribe(channel_of(i));
  }
  // Sessions connect at most `connect_window` at a time, as a crowd of clients would, rather than
  // all in the same instant.
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                    std::chrono::duration<double>(options.connect_timeout_s));
  bool in_time = true;
  for (std::size_t i = 0; i < group.size() && in_time; ++i) {
    in_time = handler.WaitForWindow(i, options.connect_window, deadline);
    if (in_time) group.Start(i);
  }
  in_time = in_time && handler.WaitForAll(group.size(), deadline);
  const std::size_t connected = handler.subscribed();
  const double connect_s =
      connected > 0 ? std::chrono::duration<double>(handler.last_subscribed() - start).count()
                    : SecondsSince(start);
  const auto rss_after = Rss(common.server_pid);

  // Idle hold: every session must stay open.
  const std::size_t closed_before_hold = handler.closed();
  const auto hold_start = std::chrono::steady_clock::now();
  const auto hold_end =
      hold_start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                       std::chrono::duration<double>(common.duration_s));
  PollUntil([&] { return handler.closed() >= group.size(); }, hold_end,
            std::chrono::milliseconds(50));
  const double hold_s = SecondsSince(hold_start);
  const std::size_t closed = handler.closed();
  const auto rss_end = Rss(common.server_pid);
  group.CancelAndWait(std::chrono::seconds(120));

  ScenarioReport report = StartReport(scenario, common, "sessions/s", "connect");
  report.params["sessions"] = options.sessions;
  report.params["channels"] = options.channels;
  report.params["server_pid"] = common.server_pid;
  report.params["connect_window"] = options.connect_window;
  report.duration_s = connect_s;
  report.count = connected;
  handler.stats().ForEach([&](const ConnectStats& s) { report.latency.Merge(s.connect); });
  report.extra["connected"] = connected;
  report.extra["connections"] = group.connections();
  report.extra["setup_s"] = setup_s;
  report.extra["hold_s"] = hold_s;
  report.extra["closed_before_hold"] = closed_before_hold;
  report.extra["closed_during_hold"] = closed - closed_before_hold;
  const FrameCounters& counts = handler.counts();
  report.extra["errors"] = counts.errors.ToJson();
  report.extra["unsubscribed"] = counts.cuts.load();
  report.extra["presence_frames"] = counts.presence.load();
  report.extra["other_frames"] = counts.other.load();
  if (rss_before && rss_after) {
    report.extra["server_rss_before_kib"] = *rss_before;
    report.extra["server_rss_after_kib"] = *rss_after;
    if (rss_end) report.extra["server_rss_end_kib"] = *rss_end;
    const double grown = static_cast<double>(*rss_after) - static_cast<double>(*rss_before);
    report.extra["server_rss_per_session_kib"] =
        connected > 0 ? grown / static_cast<double>(connected) : 0.0;
  }

  std::vector<std::string> problems;
  if (!in_time || connected < options.sessions) {
    problems.push_back(fmt::format("{} of {} sessions subscribed{}", connected, options.sessions,
                                   in_time ? "" : " before --connect-timeout"));
  }
  if (closed > 0) {
    problems.push_back(
        fmt::format("{} sessions closed by the server ({})", closed, counts.ends.first()));
  }
  if (counts.errors.total() > 0) {
    problems.push_back(
        fmt::format("{} error frames ({})", counts.errors.total(), counts.errors.first_message()));
  }
  if (counts.cuts.load() > 0) {
    problems.push_back(fmt::format("{} sessions unsubscribed by the server", counts.cuts.load()));
  }
  return Finish(report, std::move(problems));
}

}  // namespace infrachat::bench
