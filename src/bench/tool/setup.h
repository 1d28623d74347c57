// Setup for infrachat-bench scenarios: users, channels and memberships made through the client
// library's unary calls on a few threads, before anything is measured; plus process-level helpers
// (file-descriptor limit, name prefix, server RSS).
//
// Thread-safety: every function is called from the main thread; the parallel helpers start and
// join their own threads before returning.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "infrachat/core/result.h"
#include "run_support.h"

namespace infrachat::bench {

// A benchmark user and its access token (empty in --raw mode, where nobody logs in).
struct BenchUser {
  std::string name;
  std::string token;
};

// Raises RLIMIT_NOFILE's soft limit to the hard limit (every stream's connection is a descriptor).
// Returns the soft limit now in force.
std::uint64_t RaiseFileLimit();

// A prefix unique per run (time and pid, base 36), so runs against one database never collide.
std::string DefaultPrefix();
// Names are [a-z0-9._-], starting with a letter or digit, short enough for a username.
Result<void> ValidatePrefix(const std::string& prefix);

// Runs fn(0..n-1) on `threads` threads; stops at the first error and returns it.
Result<void> ParallelFor(std::size_t n, std::size_t threads,
                         const std::function<Result<void>(std::size_t)>& fn);

// Registers users "<prefix>-<tag><i>" for i in [0, n). In raw mode only names are made.
Result<std::vector<BenchUser>> RegisterUsers(const CommonOptions& options, const std::string& tag,
                                             std::size_t n);

// Makes channel_of(i) a channel with users[i] as a member, for every i: the first user of each
// channel creates it (public), the others join. Nothing in raw mode.
Result<void> CreateAndJoin(const CommonOptions& options, const std::vector<BenchUser>& users,
                           const std::function<std::string(std::size_t)>& channel_of);

// VmRSS of process `pid` in KiB, from /proc/PID/status; nullopt when unreadable.
std::optional<std::uint64_t> ReadRssKib(pid_t pid);

}  // namespace infrachat::bench
