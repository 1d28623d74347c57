// LeaseKeeper: this shard process's lease row in the region's database (docs/adr/0009).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <spdlog/logger.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace infrachat::shard {

struct LeaseOptions {
  std::string database_url;
  std::string shard_id;
  std::string address;  // the internal listener others reach this process at
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds ttl{5000};
};

// On start it takes the lease row of `shard_id` with a new epoch (a restart supersedes the old
// process), then renews it every heartbeat on its own thread and connection. A renewal names
// the epoch it holds: if another process took the row meanwhile, the renewal changes nothing
// and the keeper takes the row back with a newer epoch (placement is about load; correctness
// never depends on exclusivity, the database allocates every seq). A paused process (SIGSTOP)
// simply stops renewing: its lease expires and routers stop choosing it; when it wakes it
// renews again. The destructor expires the row (a clean stop leaves placement at once); rows
// are never deleted, so epochs only grow.
// Database errors are logged and retried every heartbeat: the lease then expires by itself.
// Metrics (docs/adr/0010): infrachat_shard_lease_held (1 while the last renewal succeeded) and
// infrachat_shard_lease_changes_total{event="acquired"|"lost"|"renewal_failed"}.
// Thread-safety: construct and destroy from one thread; nothing else is public.
class LeaseKeeper {
 public:
  LeaseKeeper(LeaseOptions options, std::shared_ptr<spdlog::logger> log);
  ~LeaseKeeper();
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

 private:
  void Run();

  const LeaseOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  struct Metrics {
    Metrics();
    prometheus::Gauge* held;
    prometheus::Counter* acquired;
    prometheus::Counter* lost;
    prometheus::Counter* renewal_failed;
  } const metrics_;  // before thread_, which uses it
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::uint64_t epoch_ = 0;     // 0: not held
  bool renew_failing_ = false;  // a renewal failed; logged once until one succeeds (Run only)
  std::thread thread_;
};

}  // namespace infrachat::shard
