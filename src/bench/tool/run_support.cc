#include "run_support.h"

#include <dirent.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace infrachat::bench {

nlohmann::json CommonParams(const CommonOptions& options) {
  return {{"target", options.target},
          {"duration_s", options.duration_s},
          {"warmup_s", options.warmup_s},
          {"body_bytes", options.body_bytes},
          {"prefix", options.prefix},
          {"raw", options.raw},
          {"streams_per_connection", options.streams_per_connection},
          {"batches", options.batches}};
}

namespace {

struct ProcStat {
  pid_t ppid = 0;
  double cpu_s = 0;  // utime + stime
};

// /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so the
// fields are counted from the last ')'. utime and stime are fields 14 and 15, in clock ticks.
std::optional<ProcStat> ReadProcStat(const std::string& pid) {
  std::ifstream file("/proc/" + pid + "/stat");
  std::string line;
  if (!std::getline(file, line)) return std::nullopt;
  const auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(line.substr(close + 2));
  std::string state;
  ProcStat stat;
  fields >> state >> stat.ppid;
  std::string skip;
  for (int field = 5; field <= 13; ++field) fields >> skip;  // pgrp .. cmajflt
  unsigned long long utime = 0, stime = 0;
  if (!(fields >> utime >> stime)) return std::nullopt;
  stat.cpu_s = static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  return stat;
}

double CpuOf(pid_t pid) {
  if (pid <= 0) return -1;
  auto stat = ReadProcStat(std::to_string(pid));
  return stat ? stat->cpu_s : -1;
}

// The process and its direct children (PostgreSQL's backends are the postmaster's children).
double CpuWithChildren(pid_t pid) {
  double total = CpuOf(pid);
  if (total < 0) return -1;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return total;
  while (const dirent* entry = ::readdir(proc)) {
    const std::string name = entry->d_name;
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (auto stat = ReadProcStat(name); stat && stat->ppid == pid) total += stat->cpu_s;
  }
  ::closedir(proc);
  return total;
}

}  // namespace

CpuSample SampleCpu(pid_t server_pid, pid_t pg_pid) {
  CpuSample sample;
  sample.server = CpuOf(server_pid);
  sample.pg = pg_pid > 0 ? CpuWithChildren(pg_pid) : -1;
  sample.client = CpuOf(::getpid());
  return sample;
}

void PhaseClock::AddCpu(ScenarioReport& report) const {
  const auto put = [&](const char* key, double start, double end) {
    if (start < 0 || end < 0) return -1.0;
    const double spent = end - start;
    report.extra[key] = spent;
    return spent;
  };
  const double server = put("server_cpu_s", cpu_start_.server, cpu_end_.server);
  put("pg_cpu_s", cpu_start_.pg, cpu_end_.pg);
  put("client_cpu_s", cpu_start_.client, cpu_end_.client);
  if (server > 0) report.extra["per_server_cpu_s"] = static_cast<double>(report.count) / server;
}

double PhaseClock::Run(double warmup_s, double duration_s, const std::function<bool()>& stop) {
  using Clock = std::chrono::steady_clock;
  const auto sleep_until = [&](Clock::time_point deadline) {
    while (Clock::now() < deadline) {
      if (stop && stop()) return false;
      std::this_thread::sleep_until(
          std::min(deadline, Clock::now() + std::chrono::milliseconds(20)));
    }
    return true;
  };
  const auto seconds = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  phase_.store(kWarmup);
  bool go_on = sleep_until(Clock::now() + seconds(warmup_s));
  cpu_start_ = SampleCpu(server_pid_, pg_pid_);
  const auto start = Clock::now();
  phase_.store(kMeasure);
  if (go_on) sleep_until(start + seconds(duration_s));
  phase_.store(kDrain);
  const double measured = SecondsSince(start);
  cpu_end_ = SampleCpu(server_pid_, pg_pid_);
  return measured;
}

Pacer::Pacer(std::vector<std::chrono::nanoseconds> phases, std::chrono::nanoseconds period,
             Fire fire)
    : period_(period), fire_(std::move(fire)), start_(std::chrono::steady_clock::now()) {
  for (std::size_t j = 0; j < phases.size(); ++j) order_.emplace_back(phases[j], j);
  std::sort(order_.begin(), order_.end());
  thread_ = std::thread([this] { Main(); });
}

Pacer::~Pacer() { Stop(); }

void Pacer::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void Pacer::Main() {
  for (std::uint64_t round = 0;; ++round) {
    const auto round_start = start_ + period_ * static_cast<std::int64_t>(round);
    for (const auto& [phase, member] : order_) {
      if (stop_.load(std::memory_order_relaxed)) return;
      const auto due = round_start + phase;
      auto now = std::chrono::steady_clock::now();
      if (now < due) {
        std::this_thread::sleep_until(due);
        now = std::chrono::steady_clock::now();
      }
      const std::int64_t lag = (now - due).count();
      if (lag > max_lag_ns_.load(std::memory_order_relaxed)) max_lag_ns_.store(lag);
      fire_(member, due);
      fired_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

std::unique_ptr<Pacer> StaggeredPacer(std::size_t members, double rate, Pacer::Fire fire) {
  const auto period = std::chrono::nanoseconds(
      static_cast<std::int64_t>(1e9 * static_cast<double>(members) / rate));
  std::vector<std::chrono::nanoseconds> phases;
  for (std::size_t j = 0; j < members; ++j) {
    phases.push_back(std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 * j / rate)));
  }
  return std::make_unique<Pacer>(std::move(phases), period, std::move(fire));
}

double WaitQuiet(const std::function<std::uint64_t()>& counter, std::chrono::milliseconds quiet,
                 std::chrono::milliseconds timeout) {
  const auto start = std::chrono::steady_clock::now();
  auto quiet_since = start;
  std::uint64_t last = counter();
  while (std::chrono::steady_clock::now() - quiet_since < quiet &&
         std::chrono::steady_clock::now() - start < timeout) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const std::uint64_t now = counter();
    if (now != last) {
      last = now;
      quiet_since = std::chrono::steady_clock::now();
    }
  }
  return SecondsSince(start);
}

std::string TimestampedBody(std::int64_t unix_ns, std::uint64_t number, std::size_t bytes) {
  std::string body = fmt::format("{:019} {:020} ", unix_ns, number);
  if (body.size() < bytes) body.append(bytes - body.size(), 'x');
  return body;
}

namespace {

template <typename T>
bool ParseNumber(std::string_view text, T& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::optional<BodyStamp> ParseBody(std::string_view body) {
  if (body.size() < kBodyHeaderBytes || body[19] != ' ' || body[40] != ' ') return std::nullopt;
  BodyStamp stamp;
  if (!ParseNumber(body.substr(0, 19), stamp.unix_ns)) return std::nullopt;
  if (!ParseNumber(body.substr(20, 20), stamp.number)) return std::nullopt;
  return stamp;
}

std::string StampedMsgId(std::uint64_t number, std::int64_t steady_ns) {
  return fmt::format("{}.{}", number, steady_ns);
}

std::optional<std::int64_t> ParseMsgIdTime(std::string_view client_msg_id) {
  const auto dot = client_msg_id.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  std::int64_t ns = 0;
  if (!ParseNumber(client_msg_id.substr(dot + 1), ns)) return std::nullopt;
  return ns;
}

std::int64_t ToUnixNanos(std::chrono::steady_clock::time_point t) {
  static const std::int64_t offset = UnixNanos() - SteadyNanos();
  return t.time_since_epoch().count() + offset;
}

void ErrorCounter::Add(int code, const std::string& message) {
  std::lock_guard lock(mu_);
  ++total_;
  if (first_message_.empty()) first_message_ = fmt::format("code {}: {}", code, message);
  for (auto& [c, n] : by_code_) {
    if (c == code) {
      ++n;
      return;
    }
  }
  by_code_.emplace_back(code, 1);
}

std::uint64_t ErrorCounter::total() const {
  std::lock_guard lock(mu_);
  return total_;
}

std::string ErrorCounter::first_message() const {
  std::lock_guard lock(mu_);
  return first_message_;
}

nlohmann::json ErrorCounter::ToJson() const {
  std::lock_guard lock(mu_);
  nlohmann::json by_code = nlohmann::json::object();
  for (const auto& [code, n] : by_code_) by_code[std::to_string(code)] = n;
  return {{"total", total_}, {"by_code", by_code}, {"first_message", first_message_}};
}

bool StreamEndLog::Record(const BenchStream& stream, const grpc::Status& status) {
  if (stream.cancelled()) return false;
  std::lock_guard lock(mu_);
  if (count_++ == 0) {
    first_ =
        fmt::format("code {}: {}", static_cast<int>(status.error_code()), status.error_message());
  }
  return true;
}

std::uint64_t StreamEndLog::count() const {
  std::lock_guard lock(mu_);
  return count_;
}

std::string StreamEndLog::first() const {
  std::lock_guard lock(mu_);
  return first_;
}

DeliveryStats SumDeliveries(const PerThread<DeliveryStats>& stats, ScenarioReport& report) {
  DeliveryStats sum;
  stats.ForEach([&](const DeliveryStats& s) {
    sum.delivery.Merge(s.delivery);
    sum.ack.Merge(s.ack);
    sum.deliveries += s.deliveries;
    sum.acked += s.acked;
    sum.deliveries_all += s.deliveries_all;
  });
  report.count += sum.deliveries;
  report.latency.Merge(sum.delivery);
  return sum;
}

void CountAck(const v1::SendAck& ack, std::int64_t now_ns, bool measuring, FrameCounters& counts,
              PerThread<DeliveryStats>& stats) {
  if (ack.duplicate()) counts.duplicates.fetch_add(1, std::memory_order_relaxed);
  if (!measuring) return;
  DeliveryStats& local = stats.Local();
  ++local.acked;
  if (auto sent = ParseMsgIdTime(ack.client_msg_id())) local.ack.Record(now_ns - *sent);
}

bool PollUntil(const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline,
               std::chrono::milliseconds interval) {
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);
  }
}

void Drain(const StreamGroup& group, const std::function<bool()>& pending,
           std::chrono::steady_clock::duration timeout) {
  PollUntil([&] { return !pending() || group.ended() >= group.size(); },
            std::chrono::steady_clock::now() + timeout, std::chrono::milliseconds(10));
}

SubscribePhase StartAndSubscribe(StreamGroup& group, const FrameCounters& counts,
                                 const std::function<std::size_t()>& subscribed,
                                 std::size_t expected, std::chrono::milliseconds quiet,
                                 std::chrono::milliseconds timeout) {
  SubscribePhase phase;
  const auto start = std::chrono::steady_clock::now();
  group.StartAll();
  PollUntil(
      [&] { return subscribed() >= expected || group.ended() != 0 || counts.errors.total() != 0; },
      start + timeout, std::chrono::milliseconds(5));
  phase.subscribe_s = SecondsSince(start);
  phase.all_subscribed = subscribed() == expected;
  if (phase.all_subscribed) {
    phase.settle_s = WaitQuiet([&] { return counts.presence.load(); }, quiet, timeout);
  }
  phase.presence_setup = counts.presence.load();
  return phase;
}

ScenarioReport StartReport(const std::string& scenario, const CommonOptions& common,
                           std::string rate_unit, std::string latency_name) {
  ScenarioReport report;
  report.scenario = scenario;
  report.params = CommonParams(common);
  report.rate_unit = std::move(rate_unit);
  report.latency_name = std::move(latency_name);
  return report;
}

void ReportStreams(ScenarioReport& report, const FrameCounters& counts, const StreamGroup& group) {
  report.extra["errors"] = counts.errors.ToJson();
  report.extra["duplicates"] = counts.duplicates.load();
  report.extra["stream_ends"] = counts.ends.count();
  report.extra["other_frames"] = counts.other.load();
  report.extra["connections"] = group.connections();
}

void ReportSubscribers(ScenarioReport& report, const SubscribePhase& phase,
                       const FrameCounters& counts, const SeqTotals& seqs) {
  report.extra["subscribe_s"] = phase.subscribe_s;
  report.extra["settle_s"] = phase.settle_s;
  report.extra["presence_frames_setup"] = phase.presence_setup;
  report.extra["presence_frames_total"] = counts.presence.load();
  report.extra["slow_consumer_cuts"] = counts.cuts.load();
  report.extra["gaps"] = seqs.gaps;
  report.extra["out_of_order"] = seqs.out_of_order;
}

void CheckStreams(const FrameCounters& counts, const SeqTotals& seqs,
                  std::vector<std::string>& problems) {
  if (const auto errors = counts.errors.total(); errors > 0) {
    problems.push_back(fmt::format("{} error frames ({})", errors, counts.errors.first_message()));
  }
  if (const auto cuts = counts.cuts.load(); cuts > 0) {
    problems.push_back(fmt::format("{} slow-consumer cuts", cuts));
  }
  if (seqs.gaps > 0) problems.push_back(fmt::format("{} seqs missing (gaps)", seqs.gaps));
  if (seqs.out_of_order > 0) {
    problems.push_back(fmt::format("{} seqs out of order or repeated", seqs.out_of_order));
  }
  if (const auto duplicates = counts.duplicates.load(); duplicates > 0) {
    problems.push_back(fmt::format("{} duplicate acks", duplicates));
  }
  if (const auto ends = counts.ends.count(); ends > 0) {
    problems.push_back(fmt::format("{} streams ended early ({})", ends, counts.ends.first()));
  }
}

int Finish(ScenarioReport& report, std::vector<std::string> problems) {
  if (report.count == 0) problems.insert(problems.begin(), "nothing was counted (count = 0)");
  report.extra["clean"] = problems.empty();
  report.extra["problems"] = problems;
  PrintJsonLine(report);
  std::fprintf(stderr, "%s", FormatTable({report}).c_str());
  for (const auto& problem : problems) {
    std::fprintf(stderr, "infrachat-bench: %s: %s\n", report.scenario.c_str(), problem.c_str());
  }
  std::fflush(stderr);
  return problems.empty() ? 0 : 1;
}

int SetupFailed(const std::string& scenario, const std::string& what) {
  std::fprintf(stderr, "infrachat-bench: %s: setup failed: %s\n", scenario.c_str(), what.c_str());
  std::fflush(stderr);
  return 2;
}

}  // namespace infrachat::bench
