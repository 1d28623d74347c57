// The scenarios of infrachat-bench (issue 3, docs/PERFORMANCE.md). Each runs once against
// CommonOptions::target, prints one JSON line on stdout and a table on stderr, and returns the
// process exit code: 0 clean, 1 the run was not clean (errors, gaps, closed streams, nothing
// counted), 2 setup failed.
//
// Thread-safety: call from the main thread, one scenario at a time.
#pragma once

#include <sys/types.h>

#include "run_support.h"

namespace infrachat::bench {

// S sender streams over C channels; closed loop with at most `window` unacknowledged sends per
// sender, or open loop at `rate` msg/s in total when rate > 0.
struct DurableSendOptions {
  std::size_t senders = 64;
  std::size_t channels = 64;
  std::size_t window = 32;
  double rate = 0;
};
int RunDurableSend(const CommonOptions& common, const DurableSendOptions& options);

// One channel, N subscribers, S senders; closed loop with at most `max_undelivered` messages not
// yet received by every subscriber, or open loop at `rate` msg/s in total when rate > 0.
struct FanoutOptions {
  std::size_t subscribers = 1000;
  std::size_t senders = 1;
  double rate = 0;
  std::size_t max_undelivered = 16;
};
int RunFanout(const CommonOptions& common, const FanoutOptions& options);

// `rooms` channels of `members` each; every member subscribes to its room and sends
// `rate_per_member` msg/s (open loop, jittered start).
struct RoomsOptions {
  std::size_t rooms = 200;
  std::size_t members = 5;
  double rate_per_member = 1;
};
int RunRooms(const CommonOptions& common, const RoomsOptions& options);

// `sessions` authenticated streams, each subscribed to one of `channels` channels, then idle for
// CommonOptions::duration_s. At most `connect_window` sessions connect at once.
struct ConnectionsOptions {
  std::size_t sessions = 10000;
  std::size_t channels = 10;  // the server's RSS is read when CommonOptions::server_pid is set
  std::size_t connect_window = 500;
  double connect_timeout_s = 300;
};
int RunConnections(const CommonOptions& common, const ConnectionsOptions& options);

// A channel filled with `messages` messages; a fresh stream subscribes with after_seq = head - K
// and is timed until all K arrived, `repeat` times.
struct ResumeOptions {
  std::size_t messages = 10000;
  std::size_t repeat = 5;
  std::size_t fill_window = 256;
};
int RunResume(const CommonOptions& common, const ResumeOptions& options);

}  // namespace infrachat::bench
