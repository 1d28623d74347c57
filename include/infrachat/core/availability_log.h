// AvailabilityLog: one log line when something this process depends on (the database, a peer
// process) stops answering, and one when it answers again, however many attempts fail in
// between. Outages are otherwise logged per failed query or call, which buries the one fact
// an operator needs (when did it start, when did it end) under a line per retry.
//
//   AvailabilityLog db(ModuleLogger("storage"), {"database unavailable",
//                      "database available again"}, {{"component", "pool"}});
//   db.Failed("connect", "connection refused");  // logs the first time (warn)
//   db.Failed("connect", "connection refused");  // nothing: still the same outage
//   db.Succeeded();                              // logs "database available again" (info)
//
// Lines (docs/OPERATIONS.md "Logs"): the down message at warn with the fixed fields, `error`
// (a class from a bounded set, given by the caller), `detail` (the first failure's text, if
// any) and `since` (UTC, RFC 3339 with ms); the up message at info with the fixed fields,
// `error` and `since` of the outage, `outage_ms` and `failures` (attempts that failed during
// it).
// Callers pass error classes and details that carry no message body, password or token
// (libpq and gRPC error texts do not).
//
// Initial state: `Initially::kAvailable` (a database the daemon checked at start: the first
// success logs nothing) or `kUnknown` (a peer: the first success logs the up message with
// `first: true`, the first failure the down message, also with `first: true`).
//
// Thread-safety: every method may be called from any thread, concurrently. Succeeded() while
// available costs one atomic load, so callers may call it after every successful attempt.
// Lifetime: holds the logger; nothing else.
#pragma once

#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace infrachat {

class AvailabilityLog {
 public:
  enum class Initially { kAvailable, kUnknown };
  struct Messages {
    std::string down;  // e.g. "database unavailable", logged at warn
    std::string up;    // e.g. "database available again", logged at info
  };
  // Fields every line of this log carries (which pool, which peer): constant strings.
  using Fields = std::vector<std::pair<std::string, std::string>>;
  using Clock = std::chrono::steady_clock;

  AvailabilityLog(std::shared_ptr<spdlog::logger> logger, Messages messages, Fields fields,
                  Initially initially = Initially::kAvailable);
  // For tests: `now` replaces the steady clock (outage_ms); `since` still reads the wall clock.
  AvailabilityLog(std::shared_ptr<spdlog::logger> logger, Messages messages, Fields fields,
                  Initially initially, std::function<Clock::time_point()> now);

  // An attempt failed because the thing could not be reached. Logs the down message when it
  // was available (or unknown) until now; returns whether it logged.
  bool Failed(std::string_view error_class, std::string_view detail = {});
  // An attempt reached it. Logs the up message when it was unavailable (or unknown); returns
  // whether it logged.
  bool Succeeded();

  // False during an outage (and while unknown).
  bool available() const { return state_.load(std::memory_order_acquire) == kUp; }

 private:
  enum State : int { kUp, kDown, kUnknown };

  const std::shared_ptr<spdlog::logger> log_;
  const Messages messages_;
  const Fields fields_;
  const std::function<Clock::time_point()> now_;

  std::atomic<int> state_;
  std::mutex mu_;  // serializes transitions and the outage's details below
  Clock::time_point down_at_;
  std::string since_;        // wall-clock start of the outage, formatted
  std::string error_class_;  // of the first failure of the outage
  std::uint64_t failures_ = 0;
};

}  // namespace infrachat
