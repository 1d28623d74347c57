#include "test_db.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <pqxx/pqxx>
#include <random>
#include <stdexcept>
#include <thread>

namespace infrachat::testing {

std::string TestDatabase::AdminUrl() {
  const char* url = std::getenv("INFRACHAT_TEST_PG");
  if (url == nullptr || *url == '\0') {
    throw std::runtime_error(
        "INFRACHAT_TEST_PG is not set: run database tests through ctest, which starts a private "
        "PostgreSQL cluster (fixture `pg`)");
  }
  return url;
}

TestDatabase::TestDatabase() {
  std::random_device rd;
  name_ = fmt::format("t_{:016x}", (static_cast<std::uint64_t>(rd()) << 32) | rd());
  pqxx::connection admin(AdminUrl());
  pqxx::nontransaction tx(admin);
  tx.exec("CREATE DATABASE " + name_);
  std::string admin_url = AdminUrl();
  auto pos = admin_url.find("dbname=postgres");
  if (pos == std::string::npos)
    throw std::runtime_error("INFRACHAT_TEST_PG must name dbname=postgres");
  url_ = admin_url.replace(pos, std::string("dbname=postgres").size(), "dbname=" + name_);
}

TestDatabase::~TestDatabase() {
  try {
    pqxx::connection admin(AdminUrl());
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  } catch (...) {
    // Best effort: the whole cluster is removed at the end of the run anyway.
  }
}

void AdminExec(const std::string& sql) {
  pqxx::connection admin(TestDatabase::AdminUrl());
  pqxx::nontransaction tx(admin);
  tx.exec(sql);
}

// ---- DatabaseOutage -----------------------------------------------------------------------------

DatabaseOutage::DatabaseOutage(const TestDatabase& db) : name_(db.name()) {
  pqxx::connection admin(TestDatabase::AdminUrl());
  pqxx::nontransaction tx(admin);
  tx.exec("ALTER DATABASE " + tx.quote_name(name_) + " ALLOW_CONNECTIONS false");
  tx.exec_params(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
      " WHERE datname = $1 AND pid <> pg_backend_pid()",
      name_);
  // pg_terminate_backend only signals: wait until the sessions are really gone.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (tx.exec_params("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name_)[0][0]
             .as<int>() > 0) {
    if (std::chrono::steady_clock::now() >= deadline)
      throw std::runtime_error("sessions of " + name_ + " linger");
    std::this_thread::sleep_for(
        std::chrono::milliseconds(10));  // polling pg_stat_activity against a deadline
  }
}

DatabaseOutage::~DatabaseOutage() {
  try {
    Restore();
  } catch (const std::exception& e) {
    std::cerr << "DatabaseOutage: cannot restore " << name_ << ": " << e.what() << "\n";
  }
}

void DatabaseOutage::Restore() {
  if (!active_) return;
  pqxx::connection admin(TestDatabase::AdminUrl());
  pqxx::nontransaction tx(admin);
  tx.exec("ALTER DATABASE " + tx.quote_name(name_) + " ALLOW_CONNECTIONS true");
  active_ = false;
}

}  // namespace infrachat::testing
