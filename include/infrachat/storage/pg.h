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
#include <string_view>
#include <thread>
#include <vector>

#include "infrachat/core/call_context.h"
#include "infrachat/core/result.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace infrachat {
class AvailabilityLog;
}  // namespace infrachat

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
//
// Logs (module storage, docs/OPERATIONS.md "Logs"): "database unavailable" (warn) when a
// connection cannot be opened, or a call fails because the server went away, for the first
// time since the pool last reached the database; "database available again" (info, with
// outage_ms) on the next call that reaches it. One pair per outage, however many calls fail
// (AvailabilityLog). An idle connection found dead and replaced on the spot is not an outage.
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
  // The outcome of a call for the availability log: the database answered, or `e` ended the
  // call (logged when it means the server could not be reached).
  void NoteReached();
  void NoteFailed(const std::exception& e);

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
  std::unique_ptr<AvailabilityLog> availability_;
};

// Opens a connection, or UNAVAILABLE with the reason.
Result<std::unique_ptr<pqxx::connection>> Connect(const std::string& url);

// Maps a libpqxx / std exception to an Error (see ConnectionPool::With).
Error TranslateException(const std::exception& e);

// The class of a database failure, a bounded set (the `error` label of
// infrachat_db_errors_total and of the outage log lines): commit_unknown (connection lost
// during COMMIT), connection_lost, conflict (serialization failure, deadlock), unavailable
// (server shutting down or gone: SQLSTATE 08xxx, 57Pxx), query (anything else).
const char* ErrorClass(const std::exception& e);
// Whether a failure of that class means the database could not be reached (an outage), as
// opposed to a query the database answered with an error.
bool IsUnreachable(std::string_view error_class);

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

// Whether a COMMIT on `conn`'s server waits for a synchronous standby (docs/HA.md): the
// session's synchronous_commit waits for a standby ('on', 'remote_write', 'remote_apply') and
// synchronous_standby_names names one. Read on the server the connection reached (with a
// multi-host URL and target_session_attrs=read-write, the primary).
struct SyncReplication {
  bool commits_wait_for_standby = false;
  std::string standby_names;         // synchronous_standby_names ('' = none)
  std::string synchronous_commit;    // this session's
  int sync_standbys_connected = -1;  // in pg_stat_replication; -1 when not visible to this role
  // One line for the start-up log.
  std::string Describe() const;
};
SyncReplication CheckSyncReplication(pqxx::connection& conn);

// `url` with libpq's connect_timeout set to `seconds` unless it sets one already (a keyword
// string or a postgres:// URI). libpq waits forever by default, and with a multi-host URL the
// timeout is what lets a connection attempt move past a host that accepts TCP but never
// answers (a stopped or hung server) to the next one.
std::string WithConnectTimeout(const std::string& url, int seconds);

// Cuts a connection whose work overruns a deadline, by shutdown(2) of its socket: libpq's
// blocked read fails at once and libpqxx throws broken_connection, or in_doubt_error during
// COMMIT. Never a query cancel: a COMMIT that waits for a synchronous standby and is cancelled
// returns success with a WARNING although the standby does not have it (a false ACK); a closed
// connection leaves the outcome unknown instead, which the caller answers as such. The server
// side keeps running (a waiting COMMIT still completes or not), so the connection must not be
// used again.
//
// Thread-safety: Arm and Disarm from one thread (the connection's owner); one internal thread
// does the cutting. The connection must stay open between Arm and Disarm (use Armed).
class ConnectionDeadline {
 public:
  ConnectionDeadline();
  ~ConnectionDeadline();
  ConnectionDeadline(const ConnectionDeadline&) = delete;
  ConnectionDeadline& operator=(const ConnectionDeadline&) = delete;

  // Arms for `conn`'s current socket until `deadline` (replaces an earlier arming).
  void Arm(const pqxx::connection& conn, std::chrono::steady_clock::time_point deadline);
  // Disarms; returns whether the deadline passed and the socket was cut.
  bool Disarm();

  // Arms on construction, disarms on destruction (also during unwinding, before a catch block
  // can close the connection).
  class Armed {
   public:
    // `cut`, when given, receives Disarm()'s answer.
    Armed(ConnectionDeadline& deadline, const pqxx::connection& conn,
          std::chrono::steady_clock::duration timeout, bool* cut = nullptr)
        : deadline_(deadline), cut_(cut) {
      deadline_.Arm(conn, std::chrono::steady_clock::now() + timeout);
    }
    ~Armed() {
      const bool cut = deadline_.Disarm();
      if (cut_ != nullptr) *cut_ = cut;
    }
    Armed(const Armed&) = delete;
    Armed& operator=(const Armed&) = delete;

   private:
    ConnectionDeadline& deadline_;
    bool* cut_;
  };

  // How many connections were cut so far.
  std::uint64_t cuts() const;

 private:
  void Run();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  int fd_ = -1;  // armed when >= 0
  std::chrono::steady_clock::time_point deadline_;
  bool fired_ = false;
  bool stop_ = false;
  std::uint64_t cuts_ = 0;
  std::thread thread_;
};

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
      NoteReached();
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
      NoteFailed(e);
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
