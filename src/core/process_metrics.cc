#include "infrachat/core/process_metrics.h"

#include <dirent.h>
#include <prometheus/metric_family.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

namespace infrachat {

namespace {

// /proc/stat's btime: the boot time, in seconds since the epoch (0 when unknown).
double BootTime() {
  std::ifstream in("/proc/stat");
  std::string key;
  while (in >> key) {
    if (key == "btime") {
      double value = 0;
      in >> value;
      return value;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

std::uint64_t CountEntries(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  std::uint64_t n = 0;
  while (const dirent* entry = ::readdir(d)) {
    if (entry->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

std::uint64_t SoftFileLimit(const std::string& proc_self) {
  std::ifstream in(proc_self + "/limits");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Max open files", 0) != 0) continue;
    std::istringstream fields(line.substr(sizeof("Max open files") - 1));
    std::string soft;
    fields >> soft;
    try {
      return soft == "unlimited" ? 0 : std::stoull(soft);
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  family.metric.emplace_back();
  if (type == prometheus::MetricType::Counter) {
    family.metric.back().counter.value = value;
  } else {
    family.metric.back().gauge.value = value;
  }
  return family;
}

class ProcessCollector final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    const auto stats = ReadProcessStats();
    if (!stats) return {};
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> out;
    out.push_back(Family("process_cpu_seconds_total", "Total user and system CPU time spent",
                         MetricType::Counter, stats->cpu_seconds));
    out.push_back(Family("process_resident_memory_bytes", "Resident memory size", MetricType::Gauge,
                         static_cast<double>(stats->resident_bytes)));
    out.push_back(Family("process_virtual_memory_bytes", "Virtual memory size", MetricType::Gauge,
                         static_cast<double>(stats->virtual_bytes)));
    out.push_back(Family("process_open_fds", "Open file descriptors", MetricType::Gauge,
                         static_cast<double>(stats->open_fds)));
    if (stats->max_fds > 0) {
      out.push_back(Family("process_max_fds", "Maximum open file descriptors (soft limit)",
                           MetricType::Gauge, static_cast<double>(stats->max_fds)));
    }
    out.push_back(Family("process_start_time_seconds",
                         "Start time of the process since the Unix epoch", MetricType::Gauge,
                         stats->start_time_seconds));
    return out;
  }
};

}  // namespace

std::optional<ProcessStats> ReadProcessStats(const std::string& proc_self) {
  std::ifstream in(proc_self + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields are counted
  // from the last ')'. After it, field 3 (state) is the first.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(line.substr(close + 1));
  std::vector<std::string> f;
  for (std::string field; fields >> field;) f.push_back(field);
  // f[0] is field 3; utime 14, stime 15, starttime 22, vsize 23, rss 24.
  if (f.size() < 22) return std::nullopt;
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  ProcessStats stats;
  try {
    stats.cpu_seconds = (std::stod(f[14 - 3]) + std::stod(f[15 - 3])) / ticks;
    stats.start_time_seconds = BootTime() + std::stod(f[22 - 3]) / ticks;
    stats.virtual_bytes = std::stoull(f[23 - 3]);
    stats.resident_bytes = static_cast<std::uint64_t>(std::stod(f[24 - 3]) * page);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  stats.open_fds = CountEntries(proc_self + "/fd");
  // Reading our own fd directory holds one descriptor more than the process has otherwise.
  if (proc_self == "/proc/self" && stats.open_fds > 0) --stats.open_fds;
  stats.max_fds = SoftFileLimit(proc_self);
  return stats;
}

std::shared_ptr<prometheus::Collectable> MakeProcessCollector() {
  return std::make_shared<ProcessCollector>();
}

}  // namespace infrachat
