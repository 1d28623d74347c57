// What the scenarios of infrachat-bench share while they run: the flags every scenario takes, the
// warm-up / measure / drain phases, per-thread statistics, the open-loop pacer, the timestamped
// message bodies, and the final report with its exit code.
//
// Thread-safety is stated per type below. Lifetime: everything here is owned by one scenario run
// on the main thread; threads it starts (Pacer) are joined before it returns.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/common/report.h"
#include "bench_stream.h"

namespace infrachat::bench {

// Flags of every scenario.
struct CommonOptions {
  std::string target = "127.0.0.1:7400";
  double duration_s = 10;
  double warmup_s = 2;
  std::size_t body_bytes = 64;
  std::string prefix;  // empty: DefaultPrefix()
  bool raw = false;    // durable-send and fanout only: a relay with no auth and no channels
  std::size_t streams_per_connection = 1;
  std::size_t setup_threads = 8;
  // Streams ask for FrameBatch (capability `batch`); --no-batches measures single frames.
  bool batches = true;
  // When set, the CPU seconds of the server and of PostgreSQL (the postmaster and its
  // children) over the measured phase are reported, with the count per server CPU-second.
  pid_t server_pid = 0;
  pid_t pg_pid = 0;
};

nlohmann::json CommonParams(const CommonOptions& options);

// Steady-clock nanoseconds (process-local), for latencies measured inside this process.
inline std::int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// CPU seconds (user + system) spent so far by the processes a benchmark watches, from
// /proc/PID/stat; negative when not watched or unreadable. PostgreSQL's figure is the postmaster
// and its live children (backends, WAL writer, checkpointer, ...).
struct CpuSample {
  double server = -1;
  double pg = -1;
  double client = -1;  // this process
};
CpuSample SampleCpu(pid_t server_pid, pid_t pg_pid);

// Warm-up, then the measured phase, then drain (no new work; outstanding work completes).
// Handlers count and record only while measuring(). Thread-safe.
//
// With CommonOptions' pids set, Run also samples their CPU at the start and the end of the
// measured phase; AddCpu puts the differences in a report.
class PhaseClock {
 public:
  enum Phase : int { kWarmup = 0, kMeasure = 1, kDrain = 2 };
  PhaseClock() = default;
  explicit PhaseClock(const CommonOptions& common)
      : server_pid_(common.server_pid), pg_pid_(common.pg_pid) {}

  bool measuring() const { return phase_.load(std::memory_order_relaxed) == kMeasure; }
  bool draining() const { return phase_.load(std::memory_order_relaxed) == kDrain; }
  Phase phase() const { return static_cast<Phase>(phase_.load(std::memory_order_relaxed)); }

  // Main thread: sleeps through warm-up and the measured phase (polling `stop` every 20 ms, which
  // ends the run early when it returns true), then switches to drain. Returns the measured time
  // in seconds.
  double Run(double warmup_s, double duration_s, const std::function<bool()>& stop);

  // After Run: extra.server_cpu_s, pg_cpu_s, client_cpu_s (those measured), and
  // extra.per_server_cpu_s = report.count / server_cpu_s (operations per server CPU-second: far
  // steadier than a rate on a machine whose cores the client shares).
  void AddCpu(ScenarioReport& report) const;

 private:
  std::atomic<int> phase_{kWarmup};
  const pid_t server_pid_ = 0;
  const pid_t pg_pid_ = 0;
  CpuSample cpu_start_, cpu_end_;  // written by Run
};

// One T per thread that calls Local(), read with ForEach() once every writer has stopped (after
// the streams have ended and the pacer has been joined). Local() is lock-free after a thread's
// first call. Thread-safe.
template <typename T>
class PerThread {
 public:
  PerThread() : id_(NextId()) {}
  PerThread(const PerThread&) = delete;
  PerThread& operator=(const PerThread&) = delete;

  T& Local() {
    thread_local std::vector<std::pair<std::uint64_t, T*>> cache;
    for (const auto& [id, slot] : cache) {
      if (id == id_) return *slot;
    }
    std::lock_guard lock(mu_);
    slots_.push_back(std::make_unique<T>());
    cache.emplace_back(id_, slots_.back().get());
    return *slots_.back();
  }

  template <typename F>
  void ForEach(F&& f) const {
    std::lock_guard lock(mu_);
    for (const auto& slot : slots_) f(*slot);
  }

 private:
  // Ids, not addresses, key the thread caches: a later PerThread may reuse a freed address.
  static std::uint64_t NextId() {
    static std::atomic<std::uint64_t> next{1};
    return next.fetch_add(1);
  }

  const std::uint64_t id_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<T>> slots_;
};

// Open-loop schedule: member j fires at start + phases[j] + k * period for k = 0, 1, ... until
// Stop(). A late pacer fires every due event at once; callers measure latency from the scheduled
// time, so a server that falls behind shows as latency instead of a lower send rate
// (no coordinated omission). fire(j, scheduled) runs on the pacer's own thread.
class Pacer {
 public:
  using Fire = std::function<void(std::size_t member, std::chrono::steady_clock::time_point)>;
  Pacer(std::vector<std::chrono::nanoseconds> phases, std::chrono::nanoseconds period, Fire fire);
  ~Pacer();  // Stop()

  void Stop();
  // Largest delay between an event's scheduled time and its firing.
  std::chrono::nanoseconds max_lag() const { return std::chrono::nanoseconds(max_lag_ns_.load()); }
  std::uint64_t fired() const { return fired_.load(); }

 private:
  void Main();

  std::vector<std::pair<std::chrono::nanoseconds, std::size_t>> order_;  // (phase, member)
  const std::chrono::nanoseconds period_;
  const Fire fire_;
  const std::chrono::steady_clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::atomic<std::int64_t> max_lag_ns_{0};
  std::atomic<std::uint64_t> fired_{0};
  std::thread thread_;
};

// A Pacer for `members` members sending `rate` times per second in total, evenly staggered:
// member j fires every members/rate seconds, the first time j/rate seconds after the start.
std::unique_ptr<Pacer> StaggeredPacer(std::size_t members, double rate, Pacer::Fire fire);

// Waits until `counter` has not changed for `quiet`, at most `timeout`; returns the seconds waited.
// Used after subscribing many streams: the server's presence notices of those subscriptions
// (one per subscriber to every other subscriber of the channel) must not be measured as traffic.
double WaitQuiet(const std::function<std::uint64_t()>& counter, std::chrono::milliseconds quiet,
                 std::chrono::milliseconds timeout);

// Bodies that carry their send time: "<unix_ns> <number> " padded with 'x' to `bytes` (longer
// when `bytes` is too small for the header). The time is UnixNanos()-based, so a reader in another
// process on the same machine can use it too.
std::string TimestampedBody(std::int64_t unix_ns, std::uint64_t number, std::size_t bytes);
struct BodyStamp {
  std::int64_t unix_ns = 0;
  std::uint64_t number = 0;
};
std::optional<BodyStamp> ParseBody(std::string_view body);
// Header size, for checking --body-bytes.
inline constexpr std::size_t kBodyHeaderBytes = 41;

// client_msg_id "<number>.<steady_ns>": the ack brings back the time the send was scheduled, so no
// table of in-flight sends is needed.
std::string StampedMsgId(std::uint64_t number, std::int64_t steady_ns);
std::optional<std::int64_t> ParseMsgIdTime(std::string_view client_msg_id);

// Converts a steady-clock time to Unix nanoseconds, using one offset measured at start.
std::int64_t ToUnixNanos(std::chrono::steady_clock::time_point t);

// The order check of one channel's messages on one stream: seqs must come as last + 1. Observe()
// and Baseline() run on that stream's callbacks only; last() may be read from any thread, the
// counters once the stream has ended.
class SeqTracker {
 public:
  // Live delivery starts after `head` (the Subscribed frame's head_seq).
  void Baseline(std::uint64_t head) {
    last_.store(head, std::memory_order_relaxed);
    known_ = true;
  }
  void Observe(std::uint64_t seq) {
    const std::uint64_t last = last_.load(std::memory_order_relaxed);
    if (!known_) {
      known_ = true;  // no head known (a relay): the first message sets the baseline
    } else if (seq <= last) {
      ++out_of_order_;
      return;
    } else if (seq > last + 1) {
      gaps_ += seq - last - 1;
    }
    last_.store(seq, std::memory_order_relaxed);
  }
  std::uint64_t last() const { return last_.load(std::memory_order_relaxed); }
  std::uint64_t gaps() const { return gaps_; }
  std::uint64_t out_of_order() const { return out_of_order_; }

 private:
  std::atomic<std::uint64_t> last_{0};
  bool known_ = false;
  std::uint64_t gaps_ = 0;          // seqs skipped
  std::uint64_t out_of_order_ = 0;  // seqs not above the last one (duplicates, reordering)
};

// Stores max(current, value) into `target`. Thread-safe.
inline void AtomicMax(std::atomic<std::uint64_t>& target, std::uint64_t value) {
  std::uint64_t current = target.load(std::memory_order_relaxed);
  while (current < value &&
         !target.compare_exchange_weak(current, value, std::memory_order_relaxed)) {
  }
}

// The totals of SeqTrackers of many streams; add them once the streams have ended.
struct SeqTotals {
  std::uint64_t gaps = 0;
  std::uint64_t out_of_order = 0;
  void Add(const SeqTracker& seqs) {
    gaps += seqs.gaps();
    out_of_order += seqs.out_of_order();
  }
};

// One subscriber stream of a delivery scenario (fanout, rooms): its order check, and whether its
// first Subscribed frame was counted. Touched by that stream's callbacks only.
struct SubscriberState {
  SeqTracker seqs;
  bool subscribed = false;
};

// The totals over subscribers' SeqTrackers; call once their streams have ended.
inline SeqTotals SumSeqs(const std::vector<SubscriberState>& subscribers) {
  SeqTotals totals;
  for (const auto& s : subscribers) totals.Add(s.seqs);
  return totals;
}

// Counts of error frames by gRPC code number, as JSON {"8": 3, ...}. Thread-safe.
class ErrorCounter {
 public:
  void Add(int code, const std::string& message);
  std::uint64_t total() const;
  // "code N: message" of the first error; empty when none.
  std::string first_message() const;
  nlohmann::json ToJson() const;  // {"total":..,"by_code":{..},"first_message":".."}

 private:
  mutable std::mutex mu_;
  std::uint64_t total_ = 0;
  std::vector<std::pair<int, std::uint64_t>> by_code_;
  std::string first_message_;
};

// Streams that ended without the benchmark cancelling them (closed by the server, or a broken
// connection), and how the first of them ended. Record() is called from StreamHandler::OnEnd on
// gRPC's callback threads, the readers from any thread. Thread-safe.
class StreamEndLog {
 public:
  // Counts the end of `stream` unless the benchmark cancelled it; returns whether it counted.
  bool Record(const BenchStream& stream, const grpc::Status& status);
  std::uint64_t count() const;
  // "code N: message" of the first counted end; empty when none.
  std::string first() const;

 private:
  mutable std::mutex mu_;
  std::uint64_t count_ = 0;
  std::string first_;
};

// What a scenario's handler counts besides its own figures, for the report and its problems. Each
// scenario counts the kinds it expects (a kind it does not expect goes to `other`). Added to from
// any stream's callbacks, read from any thread; owned by the handler. Thread-safe.
struct FrameCounters {
  ErrorCounter errors;
  StreamEndLog ends;
  std::atomic<std::uint64_t> duplicates{0};  // SendAcks marked duplicate
  std::atomic<std::uint64_t> cuts{0};        // Unsubscribed by the server (slow consumer)
  std::atomic<std::uint64_t> presence{0};    // Presence frames
  std::atomic<std::uint64_t> other{0};       // frames of kinds the scenario does not expect
};

// A StreamHandler that keeps FrameCounters: OnEnd() records the streams that end uncancelled;
// OnFrame() is the scenario's and counts into counts_. Thread-safe as FrameCounters is.
class CountingHandler : public StreamHandler {
 public:
  void OnEnd(BenchStream& stream, const grpc::Status& status) override {
    counts_.ends.Record(stream, status);
  }
  const FrameCounters& counts() const { return counts_; }

 protected:
  // Counts a frame the scenario does not handle itself: presence frames apart, the rest as other.
  void CountUnhandled(const v1::ServerFrame& frame) {
    (frame.has_presence() ? counts_.presence : counts_.other)
        .fetch_add(1, std::memory_order_relaxed);
  }

  FrameCounters counts_;
};

// Per-thread figures of a scenario whose subscribers receive timestamped messages (fanout, rooms).
struct DeliveryStats {
  Histogram delivery;                // send_to_receive, measured phase
  Histogram ack;                     // scheduled send -> SendAck, measured phase
  std::uint64_t deliveries = 0;      // measured phase
  std::uint64_t acked = 0;           // measured phase
  std::uint64_t deliveries_all = 0;  // every phase (fanout only)
};
// The sum of `stats` (read once every writer has stopped); its deliveries and their latency also
// go to report.count and report.latency.
DeliveryStats SumDeliveries(const PerThread<DeliveryStats>& stats, ScenarioReport& report);

// Counts a SendAck of a send stamped with StampedMsgId, received at steady time `now_ns`: a
// duplicate in `counts`; while `measuring`, the ack and its latency in the calling thread's
// `stats`. Called on the acking stream's callbacks.
void CountAck(const v1::SendAck& ack, std::int64_t now_ns, bool measuring, FrameCounters& counts,
              PerThread<DeliveryStats>& stats);

// Polls `done` every `interval` until it holds or `deadline` has passed; returns whether it held.
bool PollUntil(const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline,
               std::chrono::milliseconds interval);

// The drain after the measured phase (no new work): waits at most `timeout` while `pending()`
// holds and some stream of `group` is still open. Main thread, like the group.
void Drain(const StreamGroup& group, const std::function<bool()>& pending,
           std::chrono::steady_clock::duration timeout);

// The subscribe phase of a scenario whose streams subscribe before anything is measured.
struct SubscribePhase {
  bool all_subscribed = false;
  double subscribe_s = 0;            // StartAll until every stream got Subscribed (or gave up)
  double settle_s = 0;               // then until the presence notices stopped (all_subscribed)
  std::uint64_t presence_setup = 0;  // presence frames by then
};
// Starts every stream of `group` (each with its Subscribe queued) and waits, at most `timeout`,
// until subscribed() is `expected`, a stream ended or an error frame came; when all subscribed,
// then waits for counts.presence to stay quiet for `quiet` (WaitQuiet). Main thread.
SubscribePhase StartAndSubscribe(StreamGroup& group, const FrameCounters& counts,
                                 const std::function<std::size_t()>& subscribed,
                                 std::size_t expected, std::chrono::milliseconds quiet,
                                 std::chrono::milliseconds timeout);

// A report of `scenario` with CommonParams(common) as params; the caller adds its own.
ScenarioReport StartReport(const std::string& scenario, const CommonOptions& common,
                           std::string rate_unit, std::string latency_name);
// Writes into report.extra what every scenario with sending streams reports: "errors",
// "duplicates", "stream_ends", "other_frames" and "connections".
void ReportStreams(ScenarioReport& report, const FrameCounters& counts, const StreamGroup& group);
// Writes into report.extra what a scenario with subscribing streams reports: "subscribe_s",
// "settle_s", "presence_frames_setup", "presence_frames_total", "slow_consumer_cuts", "gaps" and
// "out_of_order".
void ReportSubscribers(ScenarioReport& report, const SubscribePhase& phase,
                       const FrameCounters& counts, const SeqTotals& seqs);
// Appends the problems of the streams, in this order: error frames, slow-consumer cuts, seqs
// missing, seqs out of order, duplicate acks, streams ended early (zero counts are none).
void CheckStreams(const FrameCounters& counts, const SeqTotals& seqs,
                  std::vector<std::string>& problems);

// Finishes a scenario: records `problems` in extra ("clean", "problems"; a zero count is one),
// prints the JSON line on stdout and the table and problems on stderr. Returns the exit code: 0
// when clean, 1 otherwise.
int Finish(ScenarioReport& report, std::vector<std::string> problems);

// Prints "infrachat-bench: <what>" on stderr and returns the exit code of a failed setup (2).
int SetupFailed(const std::string& scenario, const std::string& what);

}  // namespace infrachat::bench
