// The conventional process_* metrics of Prometheus client libraries (prometheus-cpp has no
// process collector), read from /proc when Prometheus scrapes (docs/adr/0010-observability.md):
//   process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
//   process_open_fds, process_max_fds, process_start_time_seconds.
#pragma once

#include <prometheus/collectable.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace infrachat {

struct ProcessStats {
  double cpu_seconds = 0;         // user + system
  double start_time_seconds = 0;  // since the Unix epoch
  std::uint64_t virtual_bytes = 0;
  std::uint64_t resident_bytes = 0;
  std::uint64_t open_fds = 0;
  std::uint64_t max_fds = 0;  // the soft limit; 0 when unlimited or unknown
};

// Reads `proc_self` (a /proc/<pid> directory) and /proc/stat's boot time; nullopt when
// the stat file cannot be read or parsed. Linux only.
std::optional<ProcessStats> ReadProcessStats(const std::string& proc_self = "/proc/self");

// A Collectable for prometheus::Exposer::RegisterCollectable: one read of /proc per scrape.
// Thread-safe (stateless); a scrape where /proc cannot be read yields no process_* samples.
std::shared_ptr<prometheus::Collectable> MakeProcessCollector();

}  // namespace infrachat
