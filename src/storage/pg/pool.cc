#include <fmt/format.h>

#include <stdexcept>

#include "infrachat/storage/pg.h"

namespace infrachat::pg {

ConnectionPool::ConnectionPool(std::string url, int size) : url_(std::move(url)), size_(size) {}

ConnectionPool::~ConnectionPool() = default;

std::unique_ptr<pqxx::connection> ConnectionPool::Acquire(std::string* error, bool* reused) {
  *reused = false;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !idle_.empty() || leased_or_idle_ < size_; });
    if (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      *reused = true;
      return conn;
    }
    ++leased_or_idle_;  // reserve a slot; the connection is opened outside the lock
  }
  auto conn = Connect(url_);
  if (!conn.ok()) {
    *error = conn.error().message;
    Release(nullptr);
    return nullptr;
  }
  return std::move(conn).value();
}

void ConnectionPool::Release(std::unique_ptr<pqxx::connection> conn) {
  {
    std::lock_guard lock(mu_);
    if (conn) {
      idle_.push_back(std::move(conn));
    } else {
      --leased_or_idle_;
    }
  }
  cv_.notify_one();
}

Result<std::unique_ptr<pqxx::connection>> Connect(const std::string& url) {
  try {
    auto conn = std::make_unique<pqxx::connection>(url);
    // ACK = durability: a pooled session must never run with a weakened commit. set_variable,
    // not a raw SET: libpqxx 6 silently reconnects a broken connection when it is used again,
    // and only re-applies the variables it knows about (a raw SET would be lost).
    conn->set_variable("synchronous_commit", "on");
    return conn;
  } catch (const std::exception& e) {
    return MakeError(Code::kUnavailable, e.what());
  }
}

Error TranslateException(const std::exception& e) {
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) {
    return MakeError(Code::kUnavailable, "database connection lost during commit; outcome unknown");
  }
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) {
    return MakeError(Code::kUnavailable, "database connection lost");
  }
  if (dynamic_cast<const pqxx::serialization_failure*>(&e) != nullptr ||
      dynamic_cast<const pqxx::deadlock_detected*>(&e) != nullptr) {
    return MakeError(Code::kAborted, e.what());
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    // Class 08 (connection exception) and 57P0x (admin/crash shutdown) mean the server went away.
    const std::string& state = sql->sqlstate();
    if (state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0) {
      return MakeError(Code::kUnavailable, "database unavailable");
    }
    return MakeError(Code::kInternal, fmt::format("database error {}", state));
  }
  return MakeError(Code::kInternal, e.what());
}

std::string ToArrayLiteral(const std::vector<std::string>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

std::string ToArrayLiteral(const std::vector<std::int64_t>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(values[i]);
  }
  out += '}';
  return out;
}

}  // namespace infrachat::pg
