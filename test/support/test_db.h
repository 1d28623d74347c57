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

}  // namespace infrachat::testing
