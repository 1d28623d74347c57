#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include <chrono>
#include <stdexcept>

#include "infrachat/core/availability_log.h"
#include "infrachat/core/logging.h"
#include "infrachat/core/metrics.h"
#include "infrachat/storage/pg.h"

namespace infrachat::pg {

namespace {

struct PoolFamilies {
  prometheus::Gauge& in_use = prometheus::BuildGauge()
                                  .Name("infrachat_db_pool_connections_in_use")
                                  .Help("Database connections leased to a caller")
                                  .Register(MetricsRegistry())
                                  .Add({});
  prometheus::Gauge& max = prometheus::BuildGauge()
                               .Name("infrachat_db_pool_connections_max")
                               .Help("Database connections the pools may open (database.pool_size)")
                               .Register(MetricsRegistry())
                               .Add({});
  prometheus::Gauge& waiters = prometheus::BuildGauge()
                                   .Name("infrachat_db_pool_waiters")
                                   .Help("Callers waiting for a free database connection")
                                   .Register(MetricsRegistry())
                                   .Add({});
  prometheus::Histogram& wait_seconds =
      prometheus::BuildHistogram()
          .Name("infrachat_db_pool_wait_seconds")
          .Help("Time to get a database connection from the pool")
          .Register(MetricsRegistry())
          .Add({}, prometheus::Histogram::BucketBoundaries{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05,
                                                           0.1, 0.5, 1, 5});
  prometheus::Family<prometheus::Counter>& errors =
      prometheus::BuildCounter()
          .Name("infrachat_db_errors_total")
          .Help(
              "Database failures by kind: connect, connection_lost, commit_unknown, "
              "unavailable, conflict, query")
          .Register(MetricsRegistry());
};

PoolFamilies& Families() {
  static PoolFamilies* families = new PoolFamilies();  // lives until exit, like the registry
  return *families;
}

}  // namespace

const char* ErrorClass(const std::exception& e) {
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) return "commit_unknown";
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) return "connection_lost";
  if (dynamic_cast<const pqxx::serialization_failure*>(&e) != nullptr ||
      dynamic_cast<const pqxx::deadlock_detected*>(&e) != nullptr) {
    return "conflict";
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string& state = sql->sqlstate();
    if (state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0) return "unavailable";
  }
  return "query";
}

bool IsUnreachable(std::string_view error_class) {
  return error_class == "connect" || error_class == "connection_lost" ||
         error_class == "commit_unknown" || error_class == "unavailable";
}

ConnectionPool::ConnectionPool(std::string url, int size)
    : url_(std::move(url)),
      size_(size),
      in_use_(&Families().in_use),
      max_(&Families().max),
      waiters_(&Families().waiters),
      wait_seconds_(&Families().wait_seconds),
      connect_errors_(&Families().errors.Add({{"error", "connect"}})),
      availability_(std::make_unique<AvailabilityLog>(
          ModuleLogger("storage"),
          AvailabilityLog::Messages{"database unavailable", "database available again"},
          AvailabilityLog::Fields{{"component", "pool"}})) {
  max_->Increment(size_);
  // Every kind shows (at 0) from the start, so rates and alerts have a series to work on.
  for (const char* kind :
       {"connection_lost", "commit_unknown", "unavailable", "conflict", "query"}) {
    Families().errors.Add({{"error", kind}});
  }
}

ConnectionPool::~ConnectionPool() { max_->Decrement(size_); }

std::unique_ptr<pqxx::connection> ConnectionPool::Acquire(std::string* error, bool* reused) {
  *reused = false;
  const auto start = std::chrono::steady_clock::now();
  {
    std::unique_lock lock(mu_);
    const auto free = [&] { return !idle_.empty() || leased_or_idle_ < size_; };
    if (!free()) {
      waiters_->Increment();
      cv_.wait(lock, free);
      waiters_->Decrement();
    }
    wait_seconds_->Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      *reused = true;
      in_use_->Increment();
      return conn;
    }
    ++leased_or_idle_;  // reserve a slot; the connection is opened outside the lock
  }
  auto conn = Connect(url_);
  if (!conn.ok()) {
    connect_errors_->Increment();
    availability_->Failed("connect", conn.error().message);
    *error = conn.error().message;
    Release(nullptr);
    return nullptr;
  }
  in_use_->Increment();
  return std::move(conn).value();
}

void ConnectionPool::Return(std::unique_ptr<pqxx::connection> conn) {
  in_use_->Decrement();
  Release(std::move(conn));
}

void ConnectionPool::CountError(const std::exception& e) {
  Families().errors.Add({{"error", ErrorClass(e)}}).Increment();
}

void ConnectionPool::NoteReached() { availability_->Succeeded(); }

void ConnectionPool::NoteFailed(const std::exception& e) {
  const char* error_class = ErrorClass(e);
  if (IsUnreachable(error_class)) availability_->Failed(error_class, e.what());
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
