#include <fmt/format.h>

#include <stdexcept>

#include "infrachat/storage/pg.h"

namespace infrachat::pg {

namespace {
// Any constant shared by every process of the cluster; serializes concurrent migrations.
constexpr std::int64_t kMigrationLockKey = 0x1AF2AC4A7;
}  // namespace

void Migrate(pqxx::connection& conn, const std::string& module,
             const std::vector<Migration>& migrations) {
  for (std::size_t i = 0; i < migrations.size(); ++i) {
    if (migrations[i].version != static_cast<int>(i) + 1) {
      throw std::logic_error(fmt::format("migrations of {} must be numbered 1, 2, 3, ...", module));
    }
  }
  for (const Migration& m : migrations) {
    pqxx::work tx(conn);
    // Transaction-scoped: released at COMMIT/ROLLBACK, so a crashed migrator leaves no lock.
    tx.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLockKey);
    tx.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " module text NOT NULL, version int NOT NULL, description text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (module, version))");
    auto done = tx.exec_params("SELECT 1 FROM schema_migrations WHERE module = $1 AND version = $2",
                               module, m.version);
    if (!done.empty()) continue;  // the transaction rolls back at scope exit: nothing changed
    try {
      tx.exec(m.sql);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("migration {} v{} ({}) failed: {}", module, m.version,
                                           m.description, e.what()));
    }
    tx.exec_params(
        "INSERT INTO schema_migrations (module, version, description) VALUES ($1, $2, $3)", module,
        m.version, m.description);
    tx.commit();
  }
}

void CheckDurability(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  const std::string fsync = tx.exec("SHOW fsync")[0][0].c_str();
  // reset_val is what a new session starts with (server, database and role settings), which the
  // session value does not show: pg::Connect sessions always SET it on.
  const auto sync_commit =
      tx.exec("SELECT setting, reset_val FROM pg_settings WHERE name = 'synchronous_commit'")[0];
  const std::string session = sync_commit[0].c_str();
  const std::string for_new_sessions = sync_commit[1].c_str();
  std::string problems;
  if (fsync != "on") problems += " fsync is '" + fsync + "';";
  // 'remote_write', 'remote_apply' and 'on' all wait for the local WAL flush; 'local' too.
  if (session == "off" || for_new_sessions == "off") problems += " synchronous_commit is 'off';";
  if (!problems.empty()) {
    throw std::runtime_error(
        "the database cannot make acknowledged messages durable:" + problems +
        " fix postgresql.conf, or set database.require_durable: false to run anyway (unsafe)");
  }
}

}  // namespace infrachat::pg
