#include "test_db.h"

#include <fmt/format.h>

#include <cstdlib>
#include <pqxx/pqxx>
#include <random>
#include <stdexcept>

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

}  // namespace infrachat::testing
