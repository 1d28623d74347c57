// resume: a channel holds K messages (sent during setup); a fresh stream subscribes with
// after_seq = head - K, as a client back from being away, and is timed until all K arrived in
// order. Repeated; a warm-up run (when --warmup > 0) comes first and is not counted.
#include <fmt/format.h>

#include "bench_stream.h"
#include "scenarios.h"
#include "setup.h"

namespace infrachat::bench {

namespace {

constexpr auto kFillTimeout = std::chrono::seconds(600);
constexpr auto kRunTimeout = std::chrono::seconds(300);

// Sends `total` messages on one stream, at most `window` unacknowledged.
class Filler final : public StreamHandler {
 public:
  Filler(std::string channel, std::size_t total, std::size_t body_bytes)
      : channel_(std::move(channel)), total_(total), body_(body_bytes, 'x') {}

  void SendNext(BenchStream& stream) {
    const std::uint64_t n = sent_.fetch_add(1);
    if (n >= total_) return;
    stream.Send(channel_, fmt::format("fill-{}", n), body_);
  }

  void OnFrame(BenchStream& stream, v1::ServerFrame& frame) override {
    if (frame.has_send_ack()) {
      AtomicMax(head_, frame.send_ack().seq());
      if (frame.send_ack().duplicate()) errors_.Add(0, "duplicate ack");
    } else if (frame.has_error()) {
      errors_.Add(frame.error().code(), frame.error().message());
    } else {
      return;
    }
    done_.fetch_add(1);
    SendNext(stream);
  }

  void OnEnd(BenchStream& stream, const grpc::Status& status) override {
    if (!stream.cancelled())
      errors_.Add(static_cast<int>(status.error_code()), status.error_message());
  }

  std::uint64_t done() const { return done_.load(); }
  std::uint64_t head() const { return head_.load(); }
  const ErrorCounter& errors() const { return errors_; }

 private:
  const std::string channel_;
  const std::size_t total_;
  const std::string body_;
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> done_{0};  // acks and errors
  std::atomic<std::uint64_t> head_{0};
  ErrorCounter errors_;
};

// One catch-up: expects seqs first..last in order.
class CatchUp final : public StreamHandler {
 public:
  CatchUp(std::uint64_t first, std::uint64_t last) : next_(first), last_(last) {}

  void OnFrame(BenchStream& stream, v1::ServerFrame& frame) override {
    switch (frame.frame_case()) {
      case v1::ServerFrame::kMessage: {
        const std::uint64_t seq = frame.message().seq();
        if (seq != next_) {
          if (seq > next_) {
            gaps_ += seq - next_;
          } else {
            ++out_of_order_;
            return;
          }
        }
        next_ = seq + 1;
        ++received_;
        if (seq >= last_) Settle(true);
        return;
      }
      case v1::ServerFrame::kError:
        errors_.Add(frame.error().code(), frame.error().message());
        Settle(false);
        return;
      case v1::ServerFrame::kUnsubscribed:
        ++cuts_;
        Settle(false);
        return;
      default:
        return;
    }
  }

  void OnEnd(BenchStream& stream, const grpc::Status& status) override {
    if (stream.cancelled()) return;
    errors_.Add(static_cast<int>(status.error_code()), "stream ended: " + status.error_message());
    Settle(false);
  }

  // Waits for the end of the catch-up; the time it completed, or nullopt on failure/timeout.
  std::optional<std::chrono::steady_clock::time_point> Wait(
      std::chrono::steady_clock::duration timeout) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return settled_; }) || !complete_) return std::nullopt;
    return finished_at_;
  }

  // Read after the stream has ended.
  std::uint64_t received() const { return received_; }
  std::uint64_t gaps() const { return gaps_; }
  std::uint64_t out_of_order() const { return out_of_order_; }
  std::uint64_t cuts() const { return cuts_; }
  const ErrorCounter& errors() const { return errors_; }

 private:
  void Settle(bool complete) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mu_);
    if (settled_) return;
    settled_ = true;
    complete_ = complete;
    finished_at_ = now;
    cv_.notify_all();
  }

  std::uint64_t next_;
  const std::uint64_t last_;
  std::uint64_t received_ = 0;
  std::uint64_t gaps_ = 0;
  std::uint64_t out_of_order_ = 0;
  std::uint64_t cuts_ = 0;
  ErrorCounter errors_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool settled_ = false;
  bool complete_ = false;
  std::chrono::steady_clock::time_point finished_at_{};
};

}  // namespace

int RunResume(const CommonOptions& common, const ResumeOptions& options) {
  const std::string scenario = "resume";
  if (options.messages == 0 || options.repeat == 0 || options.fill_window == 0) {
    return SetupFailed(scenario, "--messages, --repeat and --fill-window must be positive");
  }
  auto users = RegisterUsers(common, "r", 1);
  if (!users.ok()) return SetupFailed(scenario, users.error().message);
  const std::string channel = common.prefix + "-resume";
  if (auto joined = CreateAndJoin(common, *users, [&](std::size_t) { return channel; });
      !joined.ok()) {
    return SetupFailed(scenario, joined.error().message);
  }
  const std::string& token = (*users)[0].token;

  // Fill the log (setup, not measured).
  const auto fill_start = std::chrono::steady_clock::now();
  std::uint64_t head = 0;
  {
    Filler filler(channel, options.messages, common.body_bytes);
    StreamGroup group(common.target, 1, &filler);
    BenchStream& stream = group.Add(token);
    for (std::size_t i = 0; i < options.fill_window; ++i) filler.SendNext(stream);
    group.StartAll();
    const auto deadline = fill_start + kFillTimeout;
    PollUntil([&] { return filler.done() >= options.messages || filler.errors().total() > 0; },
              deadline, std::chrono::milliseconds(5));
    if (filler.errors().total() > 0 || filler.done() < options.messages) {
      return SetupFailed(
          scenario, fmt::format("filling the channel: {} of {} messages acknowledged, errors {}",
                                filler.done(), options.messages, filler.errors().ToJson().dump()));
    }
    head = filler.head();
  }
  const double fill_s = SecondsSince(fill_start);
  const std::uint64_t first = head - options.messages + 1;

  ScenarioReport report = StartReport(scenario, common, "msg/s", "catch_up");
  report.params["messages"] = options.messages;
  report.params["repeat"] = options.repeat;
  std::vector<std::string> problems;
  nlohmann::json runs = nlohmann::json::array();
  std::uint64_t gaps = 0;
  std::uint64_t out_of_order = 0;
  std::uint64_t cuts = 0;
  std::uint64_t errors = 0;
  const std::size_t total_runs = options.repeat + (common.warmup_s > 0 ? 1 : 0);
  for (std::size_t run = 0; run < total_runs; ++run) {
    const bool warmup = common.warmup_s > 0 && run == 0;
    CatchUp catch_up(first, head);
    std::optional<std::chrono::steady_clock::time_point> finished;
    std::chrono::steady_clock::time_point started;
    {
      StreamGroup group(common.target, 1, &catch_up);
      group.Add(token).Subscribe(channel, head - options.messages);
      group.StartAll();
      started = group.at(0).started_at();
      finished = catch_up.Wait(kRunTimeout);
    }  // the stream is cancelled and has ended here
    gaps += catch_up.gaps();
    out_of_order += catch_up.out_of_order();
    cuts += catch_up.cuts();
    errors += catch_up.errors().total();
    if (!finished) {
      problems.push_back(fmt::format("run {}: {} of {} messages caught up ({})", run,
                                     catch_up.received(), options.messages,
                                     catch_up.errors().ToJson().dump()));
      break;
    }
    const double seconds = std::chrono::duration<double>(*finished - started).count();
    runs.push_back({{"seconds", seconds},
                    {"msg_per_s", static_cast<double>(options.messages) / seconds},
                    {"warmup", warmup}});
    if (warmup) continue;
    report.count += catch_up.received();
    report.duration_s += seconds;
    report.latency.Record(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds))
            .count());
  }
  report.extra["head_seq"] = head;
  report.extra["fill_s"] = fill_s;
  report.extra["fill_msg_per_s"] = static_cast<double>(options.messages) / fill_s;
  report.extra["runs"] = runs;
  report.extra["gaps"] = gaps;
  report.extra["out_of_order"] = out_of_order;
  report.extra["slow_consumer_cuts"] = cuts;
  report.extra["errors"] = errors;
  if (gaps > 0) problems.push_back(fmt::format("{} seqs missing (gaps)", gaps));
  if (out_of_order > 0)
    problems.push_back(fmt::format("{} seqs out of order or repeated", out_of_order));
  if (cuts > 0) problems.push_back(fmt::format("{} slow-consumer cuts", cuts));
  if (errors > 0) problems.push_back(fmt::format("{} errors", errors));
  return Finish(report, std::move(problems));
}

}  // namespace infrachat::bench
