// Running on a highly available PostgreSQL (docs/HA.md): the synchronous-replication check,
// connect timeouts for multi-host URLs, and the deadline that cuts a connection instead of
// cancelling its COMMIT.
#include <fmt/format.h>
#include <sys/socket.h>

#include "infrachat/storage/pg.h"

namespace infrachat::pg {

std::string SyncReplication::Describe() const {
  const std::string connected = sync_standbys_connected < 0
                                    ? "not visible to this role"
                                    : std::to_string(sync_standbys_connected) + " connected";
  if (commits_wait_for_standby) {
    return fmt::format(
        "commits wait for a synchronous standby (synchronous_standby_names '{}', "
        "synchronous_commit '{}'; synchronous standbys: {})",
        standby_names, synchronous_commit, connected);
  }
  return fmt::format(
      "commits do NOT wait for a synchronous standby (synchronous_standby_names '{}', "
      "synchronous_commit '{}'): an acknowledged message is on this server's disk only",
      standby_names, synchronous_commit);
}

SyncReplication CheckSyncReplication(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  SyncReplication out;
  const auto row = tx.exec(
      "SELECT current_setting('synchronous_standby_names'), current_setting('synchronous_commit'),"
      " count(*) FILTER (WHERE sync_state IN ('sync', 'quorum')),"
      " count(*) FILTER (WHERE sync_state IS NULL) FROM pg_stat_replication")[0];
  out.standby_names = row[0].c_str();
  out.synchronous_commit = row[1].c_str();
  // Without pg_read_all_stats a role sees the rows but NULL states: then the count is unknown.
  const int sync = row[2].as<int>();
  out.sync_standbys_connected = sync == 0 && row[3].as<int>() > 0 ? -1 : sync;
  // 'local' and 'off' return before any standby has the WAL.
  const bool waits = out.synchronous_commit == "on" || out.synchronous_commit == "remote_write" ||
                     out.synchronous_commit == "remote_apply";
  out.commits_wait_for_standby = waits && !out.standby_names.empty();
  return out;
}

std::string WithConnectTimeout(const std::string& url, int seconds) {
  if (url.empty() || url.find("connect_timeout") != std::string::npos) return url;
  const bool uri = url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0;
  if (!uri) return url + " connect_timeout=" + std::to_string(seconds);
  const auto fragment = url.find('#');
  const std::string base = url.substr(0, fragment);
  const std::string rest = fragment == std::string::npos ? "" : url.substr(fragment);
  return base + (base.find('?') == std::string::npos ? "?" : "&") +
         "connect_timeout=" + std::to_string(seconds) + rest;
}

ConnectionDeadline::ConnectionDeadline() : thread_([this] { Run(); }) {}

ConnectionDeadline::~ConnectionDeadline() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void ConnectionDeadline::Arm(const pqxx::connection& conn,
                             std::chrono::steady_clock::time_point deadline) {
  {
    std::lock_guard lock(mu_);
    fd_ = conn.sock();
    deadline_ = deadline;
    fired_ = false;
  }
  cv_.notify_one();
}

bool ConnectionDeadline::Disarm() {
  std::lock_guard lock(mu_);
  fd_ = -1;
  return fired_;
}

std::uint64_t ConnectionDeadline::cuts() const {
  std::lock_guard lock(mu_);
  return cuts_;
}

void ConnectionDeadline::Run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    if (fd_ < 0) {
      cv_.wait(lock);
      continue;
    }
    const auto deadline = deadline_;
    if (cv_.wait_until(lock, deadline, [&] { return stop_ || fd_ < 0 || deadline_ != deadline; })) {
      continue;
    }
    // Under the lock: the owner cannot close the connection (and free the descriptor number for
    // reuse) before it has disarmed. shutdown, not close: the descriptor stays libpq's to close.
    ::shutdown(fd_, SHUT_RDWR);
    fd_ = -1;
    fired_ = true;
    ++cuts_;
  }
}

}  // namespace infrachat::pg
