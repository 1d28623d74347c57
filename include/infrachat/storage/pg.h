// PostgreSQL access: a pool of libpqxx connections and versioned migrations.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "infrachat/core/call_context.h"
#include "infrachat/core/result.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace infrachat::pg {

// A fixed-size pool of connections to one database. Connections are opened lazily and replaced
// when broken, so the pool recovers by itself after the database comes back.
//
// Thread-safety: all methods may be called from any thread. A leased connection belongs to one
// thread until the lease ends (libpqxx connections are not thread-safe).
//
// Metrics (docs/adr/0010), summed over the pools of the process (the daemon has one):
//   infrachat_db_pool_connections_in_use, infrachat_db_pool_connections_max,
//   infrachat_db_pool_waiters (callers blocked for a free connection),
//   infrachat_db_pool_wait_seconds (histogram: time to get a connection, one per attempt),
//   infrachat_db_errors_total{error}: connect (cannot open a connection), connection_lost,
//   commit_unknown (lost during COMMIT), unavailable (server shutting down, 08/57P states),
//   conflict (serialization failure, deadlock), query (any other database error).
// Errors that `work` returns as values are the caller's business and are not counted.
class ConnectionPool {
 public:
  ConnectionPool(std::string url, int size);
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // Runs `work` with a connection, blocking until one is free. Translates database failures to
  // Error values: broken connection -> UNAVAILABLE (and the connection is replaced), commit with
  // unknown outcome -> UNAVAILABLE, others -> INTERNAL. `work` may return its own Errors.
  template <typename T>
  Result<T> With(const std::function<Result<T>(pqxx::connection&)>& work);
  // The same for a caller that may give up: nothing is done when `call` is Done() before or
  // after the wait for a free connection (CANCELLED or DEADLINE_EXCEEDED, see GaveUp).
  template <typename T>
  Result<T> With(const CallContext& call, const std::function<Result<T>(pqxx::connection&)>& work);

  const std::string& url() const { return url_; }

 private:
  class Lease;
  // `reused` tells whether the connection was idle in the pool (it may have died meanwhile).
  std::unique_ptr<pqxx::connection> Acquire(std::string* error, bool* reused);
  void Release(std::unique_ptr<pqxx::connection> conn);
  // The end of a lease that Acquire handed out: `conn` back to the pool, or null when dropped.
  void Return(std::unique_ptr<pqxx::connection> conn);
  void CountError(const std::exception& e);
  Error Translate(const std::exception& e) const;

  std::string url_;
  int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
  int leased_or_idle_ = 0;

  prometheus::Gauge* in_use_;
  prometheus::Gauge* max_;
  prometheus::Gauge* waiters_;
  prometheus::Histogram* wait_seconds_;
  prometheus::Counter* connect_errors_;
};

// Opens a connection, or UNAVAILABLE with the reason.
Result<std::unique_ptr<pqxx::connection>> Connect(const std::string& url);

// Maps a libpqxx / std exception to an Error (see ConnectionPool::With).
Error TranslateException(const std::exception& e);

// One schema step of one module. Versions of a module start at 1 and increase by 1.
struct Migration {
  int version;
  const char* description;
  const char* sql;
};

// Applies, in one transaction per step, the migrations of `module` that are not applied yet.
// Safe to run from several processes at once: a transaction-level advisory lock serializes them.
// Throws on failure (start-up path).
void Migrate(pqxx::connection& conn, const std::string& module,
             const std::vector<Migration>& migrations);

// Throws std::runtime_error unless fsync and synchronous_commit are on for new sessions.
void CheckDurability(pqxx::connection& conn);

// Encodes strings / integers as a PostgreSQL array literal for a `$n::text[]` / `$n::bigint[]`
// parameter (libpqxx 6 has no array parameters).
std::string ToArrayLiteral(const std::vector<std::string>& values);
std::string ToArrayLiteral(const std::vector<std::int64_t>& values);

// ---- template implementation ----

template <typename T>
Result<T> ConnectionPool::With(const std::function<Result<T>(pqxx::connection&)>& work) {
  for (int attempt = 0;; ++attempt) {
    std::string why;
    bool reused = false;
    std::unique_ptr<pqxx::connection> conn = Acquire(&why, &reused);
    if (!conn) return MakeError(Code::kUnavailable, "database unavailable: " + why);
    try {
      Result<T> result = work(*conn);
      Return(std::move(conn));
      return result;
    } catch (const std::exception& e) {
      CountError(e);
      Error error = TranslateException(e);
      // A broken connection is dropped; anything else leaves the connection usable.
      if (conn->is_open() && error.code != Code::kUnavailable) {
        Return(std::move(conn));
      } else {
        conn.reset();
        Return(nullptr);
      }
      // Idle connections may have died while the database was away (restart, outage). Unless a
      // COMMIT's outcome is unknown, nothing was committed on this one: run the work again
      // (each dead idle connection is dropped, then a fresh one is opened) instead of failing
      // requests after the database is back.
      if (reused && attempt < size_ && error.code == Code::kUnavailable &&
          dynamic_cast<const pqxx::in_doubt_error*>(&e) == nullptr) {
        continue;
      }
      return error;
    }
  }
}

template <typename T>
Result<T> ConnectionPool::With(const CallContext& call,
                               const std::function<Result<T>(pqxx::connection&)>& work) {
  if (auto gone = GaveUp(call)) return *gone;
  return With<T>([&](pqxx::connection& conn) -> Result<T> {
    if (auto gone = GaveUp(call)) return *gone;
    return work(conn);
  });
}

}  // namespace infrachat::pg
