// A fresh, empty PostgreSQL database per test, on the private cluster that CTest starts
// (fixture `pg`, see test/CMakeLists.txt and pg_cluster.sh).
#pragma once

#include <string>

namespace infrachat::testing {

// Creates database t_<random> on construction, drops it (WITH FORCE) on destruction.
// The admin connection string comes from INFRACHAT_TEST_PG; without it the constructor throws,
// so a DB test run outside ctest fails loudly instead of passing vacuously.
class TestDatabase {
 public:
  TestDatabase();
  ~TestDatabase();
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  // libpq connection string of the new database.
  const std::string& url() const { return url_; }
  const std::string& name() const { return name_; }

  // Admin connection string (database `postgres`) of the cluster.
  static std::string AdminUrl();

 private:
  std::string name_;
  std::string url_;
};

// Runs one statement on the cluster's admin database (`postgres`).
void AdminExec(const std::string& sql);

// Takes `db` away from its clients while alive: `ALTER DATABASE ... ALLOW_CONNECTIONS false`
// (refuses new connections, superusers included) and pg_terminate_backend of every session on
// it, from an admin connection (TestDatabase::AdminUrl()). Restore() (or the destructor) gives it
// back with ALLOW_CONNECTIONS true. Only the test's own database is touched.
class DatabaseOutage {
 public:
  explicit DatabaseOutage(const TestDatabase& db);
  ~DatabaseOutage();
  DatabaseOutage(const DatabaseOutage&) = delete;
  DatabaseOutage& operator=(const DatabaseOutage&) = delete;

  void Restore();

 private:
  std::string name_;
  bool active_ = true;
};

}  // namespace infrachat::testing
