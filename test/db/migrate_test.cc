// The PostgreSQL storage layer against a real server: versioned migrations, the durability
// check, array literals, and the connection pool's failure and recovery behaviour.
//
// Outages are simulated per database, not for the whole cluster (other tests share it):
// `ALTER DATABASE ... ALLOW_CONNECTIONS false` refuses every new connection (superusers too) and
// `pg_terminate_backend` kills the existing ones, which is what a client sees when its server
// goes away; setting ALLOW_CONNECTIONS back to true is the server coming back.
#include <atomic>
#include <catch2/catch.hpp>
#include <limits>
#include <mutex>
#include <pqxx/pqxx>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "infrachat/storage/pg.h"
#include "test_db.h"

namespace infrachat {
namespace {

using infrachat::testing::TestDatabase;

std::int64_t Count(const std::string& url, const std::string& sql) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  return tx.exec(sql)[0][0].as<std::int64_t>();
}

bool TableExists(const std::string& url, const std::string& table) {
  return Count(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = '" +
                        table + "'") == 1;
}

std::vector<int> Applied(const std::string& url, const std::string& module) {
  if (!TableExists(url, "schema_migrations")) return {};
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  std::vector<int> out;
  for (const auto& row : tx.exec_params(
           "SELECT version FROM schema_migrations WHERE module = $1 ORDER BY version", module)) {
    out.push_back(row[0].as<int>());
  }
  return out;
}

// v2 and v3 only work after the previous ones, so applying out of order fails.
const std::vector<pg::Migration> kThree = {
    {1, "table t", "CREATE TABLE t (id int PRIMARY KEY)"},
    {2, "column name", "ALTER TABLE t ADD COLUMN name text; INSERT INTO t VALUES (1, 'one')"},
    {3, "log", "CREATE TABLE log (t_id int REFERENCES t (id)); INSERT INTO log VALUES (1)"},
};

TEST_CASE("Migrate applies every step in order and records it", "[db][migrate]") {
  TestDatabase db;
  pqxx::connection conn(db.url());
  pg::Migrate(conn, "demo", kThree);
  CHECK(Applied(db.url(), "demo") == std::vector<int>{1, 2, 3});
  CHECK(Count(db.url(), "SELECT count(*) FROM t WHERE name = 'one'") == 1);
  CHECK(Count(db.url(), "SELECT count(*) FROM log") == 1);
  pqxx::nontransaction tx(conn);
  auto rows =
      tx.exec("SELECT description FROM schema_migrations WHERE module = 'demo' AND version = 2");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][0].as<std::string>() == "column name");
}

TEST_CASE("Migrate skips applied steps and applies only new ones", "[db][migrate]") {
  TestDatabase db;
  pqxx::connection conn(db.url());
  const std::vector<pg::Migration> first_two(kThree.begin(), kThree.begin() + 2);
  pg::Migrate(conn, "demo", first_two);
  CHECK(Applied(db.url(), "demo") == std::vector<int>{1, 2});
  // Re-running would fail (CREATE TABLE t exists) or duplicate rows if it did not skip.
  pg::Migrate(conn, "demo", first_two);
  pg::Migrate(conn, "demo", kThree);
  pg::Migrate(conn, "demo", kThree);
  CHECK(Applied(db.url(), "demo") == std::vector<int>{1, 2, 3});
  CHECK(Count(db.url(), "SELECT count(*) FROM t") == 1);
  CHECK(Count(db.url(), "SELECT count(*) FROM log") == 1);
  // Another module's versions are its own.
  pg::Migrate(conn, "other", {{1, "other table", "CREATE TABLE other_t (x int)"}});
  CHECK(Applied(db.url(), "other") == std::vector<int>{1});
  CHECK(Applied(db.url(), "demo") == std::vector<int>{1, 2, 3});
}

TEST_CASE("Migrate rejects mis-numbered lists before changing anything", "[db][migrate]") {
  TestDatabase db;
  pqxx::connection conn(db.url());
  const std::vector<std::vector<pg::Migration>> bad = {
      {{2, "starts at 2", "CREATE TABLE a (x int)"}},
      {{0, "starts at 0", "CREATE TABLE a (x int)"}},
      {{1, "one", "CREATE TABLE a (x int)"}, {3, "gap", "CREATE TABLE b (x int)"}},
      {{1, "one", "CREATE TABLE a (x int)"}, {1, "twice", "CREATE TABLE b (x int)"}},
      {{2, "two", "CREATE TABLE a (x int)"}, {1, "one", "CREATE TABLE b (x int)"}},
  };
  for (const auto& list : bad) {
    INFO("first description: " << list.front().description);
    CHECK_THROWS_AS(pg::Migrate(conn, "demo", list), std::logic_error);
    CHECK_FALSE(TableExists(db.url(), "a"));
    CHECK(Applied(db.url(), "demo").empty());
  }
  // An empty list is valid and does nothing.
  pg::Migrate(conn, "demo", {});
  CHECK(Applied(db.url(), "demo").empty());
}

TEST_CASE("a failing migration is rolled back and reported", "[db][migrate]") {
  TestDatabase db;
  pqxx::connection conn(db.url());
  const std::vector<pg::Migration> broken = {
      kThree[0],
      {2, "half done",
       "CREATE TABLE half (x int); INSERT INTO t VALUES (7); SELECT no_such_column FROM t"},
      kThree[2],
  };
  try {
    pg::Migrate(conn, "demo", broken);
    FAIL("Migrate did not throw");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find("demo") != std::string::npos);
    CHECK(what.find("v2") != std::string::npos);
    CHECK(what.find("half done") != std::string::npos);
    CHECK(what.find("no_such_column") != std::string::npos);  // the server's reason
  }
  // Step 1 stays; step 2 left nothing behind; step 3 was not attempted.
  CHECK(Applied(db.url(), "demo") == std::vector<int>{1});
  CHECK(TableExists(db.url(), "t"));
  CHECK_FALSE(TableExists(db.url(), "half"));
  CHECK(Count(db.url(), "SELECT count(*) FROM t") == 0);
  CHECK_FALSE(TableExists(db.url(), "log"));
  // The connection is still usable, and the fixed list finishes the job.
  pg::Migrate(conn, "demo", kThree);
  CHECK(Applied(db.url(), "demo") == std::vector<int>{1, 2, 3});
}

TEST_CASE("concurrent migrators of a fresh database apply each step exactly once",
          "[db][migrate]") {
  // Step 2 is not idempotent (an INSERT): applied twice it would leave two rows, and two
  // concurrent CREATE TABLEs would fail without the advisory lock.
  for (int round = 0; round < 3; ++round) {
    TestDatabase db;
    constexpr int kThreads = 4;
    std::vector<std::thread> threads;
    std::mutex mu;
    std::vector<std::string> failures;  // Catch2 assertions are not thread-safe: collect
    std::atomic<int> ready{0};
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&] {
        try {
          pqxx::connection conn(db.url());
          ++ready;
          while (ready < kThreads) std::this_thread::yield();  // start together
          pg::Migrate(conn, "demo", kThree);
        } catch (const std::exception& e) {
          std::lock_guard lock(mu);
          failures.push_back(e.what());
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK(failures.empty());
    CHECK(Applied(db.url(), "demo") == std::vector<int>{1, 2, 3});
    CHECK(Count(db.url(), "SELECT count(*) FROM t") == 1);
    CHECK(Count(db.url(), "SELECT count(*) FROM log") == 1);
  }
}

TEST_CASE("CheckDurability passes on the test cluster", "[db][durability]") {
  TestDatabase db;
  auto conn = pg::Connect(db.url());
  REQUIRE(conn.ok());
  CHECK_NOTHROW(pg::CheckDurability(**conn));
  pqxx::connection raw(db.url());
  CHECK_NOTHROW(pg::CheckDurability(raw));
}

TEST_CASE("CheckDurability refuses a database whose sessions default to asynchronous commit",
          "[db][durability]") {
  TestDatabase db;
  testing::AdminExec("ALTER DATABASE " + db.name() + " SET synchronous_commit = off");
  SECTION("on a plain connection") {
    pqxx::connection raw(db.url());
    CHECK_THROWS_WITH(pg::CheckDurability(raw), Catch::Contains("synchronous_commit"));
  }
  SECTION("on a pg::Connect session, which forces it on for itself") {
    // The start-up check runs on such a session: it must still see the database's default.
    auto conn = pg::Connect(db.url());
    REQUIRE(conn.ok());
    CHECK_THROWS_WITH(pg::CheckDurability(**conn), Catch::Contains("synchronous_commit"));
  }
}

std::string SessionSyncCommit(pqxx::connection& conn) {
  pqxx::work tx(conn);
  auto value = tx.exec("SHOW synchronous_commit")[0][0].as<std::string>();
  tx.commit();
  return value;
}

TEST_CASE("pg::Connect sessions commit synchronously whatever the database default",
          "[db][durability]") {
  TestDatabase db;
  testing::AdminExec("ALTER DATABASE " + db.name() + " SET synchronous_commit = off");
  auto conn = pg::Connect(db.url());
  REQUIRE(conn.ok());
  CHECK(SessionSyncCommit(**conn) == "on");

  // libpqxx 6 reconnects a broken connection by itself when it is used again; the new session
  // must not fall back to the database default.
  testing::AdminExec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" +
                     db.name() + "'");
  std::string after;
  for (int attempt = 0; attempt < 5 && after.empty(); ++attempt) {
    try {
      after = SessionSyncCommit(**conn);
    } catch (const pqxx::broken_connection&) {
      // the first uses report the break; a later one reconnects
    }
  }
  REQUIRE_FALSE(after.empty());
  CHECK(after == "on");
}

std::vector<std::string> RoundTrip(pqxx::connection& conn, const std::vector<std::string>& in) {
  pqxx::nontransaction tx(conn);
  std::vector<std::string> out;
  for (const auto& row : tx.exec_params("SELECT v, v IS NULL FROM unnest($1::text[])"
                                        " WITH ORDINALITY AS x(v, i) ORDER BY i",
                                        pg::ToArrayLiteral(in))) {
    REQUIRE_FALSE(row[1].as<bool>());  // nothing turns into NULL
    out.push_back(row[0].as<std::string>());
  }
  return out;
}

TEST_CASE("ToArrayLiteral round-trips awkward strings through text[]", "[db][array]") {
  TestDatabase db;
  pqxx::connection conn(db.url());
  const std::vector<std::vector<std::string>> cases = {
      {},
      {""},
      {"", "", ""},
      {"plain"},
      {"with \"double\" quotes", "'single'", "\""},
      {"back\\slash", "\\", "\\\\", "ends with \\", "\\\""},
      {"a,b", ",", "{braces}", "{", "}", "{}", "{\"a\",\"b\"}"},
      {"NULL", "null", " NULL "},
      {" leading", "trailing ", "  ", "tab\there", "new\nline", "cr\rlf"},
      {"caf\xC3\xA9", "\xE2\x82\xAC 5", "\xF0\x9F\x98\x80", "\xE4\xB8\xAD\xE6\x96\x87"},
      {"$1", "::text", "ARRAY[1]", "(1,2)"},
  };
  for (const auto& in : cases) {
    INFO("literal: " << pg::ToArrayLiteral(in));
    CHECK(RoundTrip(conn, in) == in);
  }
  // A large array keeps its order and size.
  std::vector<std::string> many;
  for (int i = 0; i < 5000; ++i) many.push_back(std::to_string(i) + (i % 3 ? "\"," : "\\}"));
  CHECK(RoundTrip(conn, many) == many);
}

TEST_CASE("ToArrayLiteral round-trips integers through bigint[]", "[db][array]") {
  TestDatabase db;
  pqxx::connection conn(db.url());
  const std::vector<std::int64_t> in = {0,
                                        1,
                                        -1,
                                        42,
                                        std::numeric_limits<std::int64_t>::max(),
                                        std::numeric_limits<std::int64_t>::min()};
  pqxx::nontransaction tx(conn);
  std::vector<std::int64_t> out;
  for (const auto& row :
       tx.exec_params("SELECT v FROM unnest($1::bigint[]) WITH ORDINALITY AS x(v, i) ORDER BY i",
                      pg::ToArrayLiteral(in))) {
    out.push_back(row[0].as<std::int64_t>());
  }
  CHECK(out == in);
  const std::string empty = pg::ToArrayLiteral(std::vector<std::int64_t>{});
  CHECK(tx.exec_params("SELECT cardinality($1::bigint[])", empty)[0][0].as<int>() == 0);
}

TEST_CASE("TranslateException maps database failures to codes", "[db][pool]") {
  CHECK(pg::TranslateException(pqxx::in_doubt_error("lost")).code == Code::kUnavailable);
  CHECK(pg::TranslateException(pqxx::broken_connection("gone")).code == Code::kUnavailable);
  CHECK(pg::TranslateException(pqxx::deadlock_detected("dl")).code == Code::kAborted);
  CHECK(pg::TranslateException(pqxx::serialization_failure("sf")).code == Code::kAborted);
  CHECK(pg::TranslateException(pqxx::sql_error("x", "q", "08006")).code == Code::kUnavailable);
  CHECK(pg::TranslateException(pqxx::sql_error("x", "q", "57P01")).code == Code::kUnavailable);
  CHECK(pg::TranslateException(pqxx::sql_error("x", "q", "42703")).code == Code::kInternal);
  CHECK(pg::TranslateException(std::runtime_error("?")).code == Code::kInternal);
}

TEST_CASE("ConnectionPool: UNAVAILABLE when the server cannot be reached", "[db][pool]") {
  pg::ConnectionPool pool("host=/nonexistent-infrachat-socket-dir port=5432 dbname=x user=x", 2);
  // More calls than slots: a failed connect must give its slot back, or this would block.
  for (int i = 0; i < 5; ++i) {
    auto r = pool.With<int>([](pqxx::connection&) -> Result<int> { return 1; });
    REQUIRE_FALSE(r.ok());
    CHECK(r.code() == Code::kUnavailable);
  }
  auto conn = pg::Connect("host=/nonexistent-infrachat-socket-dir port=5432 dbname=x user=x");
  REQUIRE_FALSE(conn.ok());
  CHECK(conn.error().code == Code::kUnavailable);
}

Result<int> Backend(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  return tx.exec("SELECT pg_backend_pid()")[0][0].as<int>();
}

TEST_CASE("ConnectionPool recovers by itself when the database comes back", "[db][pool]") {
  TestDatabase db;
  pg::ConnectionPool pool(db.url(), 2);
  auto before = pool.With<int>(Backend);
  REQUIRE(before.ok());
  {
    testing::DatabaseOutage outage(db);
    // The idle connection is dead, and no new one can be opened: every call fails cleanly, more
    // calls than the pool has slots (a leaked slot would block here).
    for (int i = 0; i < 6; ++i) {
      auto r = pool.With<int>(Backend);
      REQUIRE_FALSE(r.ok());
      CHECK(r.code() == Code::kUnavailable);
    }
  }
  auto after = pool.With<int>(Backend);
  REQUIRE(after.ok());
  CHECK(*after != *before);
  // And the session it opened is a durable one.
  auto sync = pool.With<std::string>([](pqxx::connection& c) -> Result<std::string> {
    pqxx::nontransaction tx(c);
    return tx.exec("SHOW synchronous_commit")[0][0].as<std::string>();
  });
  REQUIRE(sync.ok());
  CHECK(*sync == "on");
}

TEST_CASE("ConnectionPool: errors of the work pass through, the connection is reused",
          "[db][pool]") {
  TestDatabase db;
  pg::ConnectionPool pool(db.url(), 1);
  auto first = pool.With<int>(Backend);
  REQUIRE(first.ok());
  auto own = pool.With<int>(
      [](pqxx::connection&) -> Result<int> { return MakeError(Code::kNotFound, "mine"); });
  CHECK(own.code() == Code::kNotFound);
  CHECK(own.error().message == "mine");
  auto sql = pool.With<int>([](pqxx::connection& c) -> Result<int> {
    pqxx::work tx(c);
    tx.exec("SELECT no_such_column FROM pg_class");
    return 0;
  });
  CHECK(sql.code() == Code::kInternal);
  auto thrown = pool.With<int>(
      [](pqxx::connection&) -> Result<int> { throw std::runtime_error("bug in the work"); });
  CHECK(thrown.code() == Code::kInternal);
  // The same session served all of it: a plain error does not cost a reconnect.
  auto again = pool.With<int>(Backend);
  REQUIRE(again.ok());
  CHECK(*again == *first);
}

TEST_CASE("ConnectionPool never opens more than its size", "[db][pool]") {
  TestDatabase db;
  constexpr int kSize = 3;
  pg::ConnectionPool pool(db.url(), kSize);
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  std::mutex mu;
  std::set<int> backends;
  int failures = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        auto r = pool.With<int>([&](pqxx::connection& c) -> Result<int> {
          const int now = ++inside;
          int seen = most.load();
          while (now > seen && !most.compare_exchange_weak(seen, now)) {
          }
          pqxx::nontransaction tx(c);
          const int pid = tx.exec("SELECT pg_backend_pid() FROM pg_sleep(0.002)")[0][0].as<int>();
          --inside;
          return pid;
        });
        std::lock_guard lock(mu);
        if (r.ok()) {
          backends.insert(*r);
        } else {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  CHECK(most <= kSize);
  CHECK(most >= 2);  // the calls did overlap
  CHECK(backends.size() <= static_cast<std::size_t>(kSize));
}

}  // namespace
}  // namespace infrachat
