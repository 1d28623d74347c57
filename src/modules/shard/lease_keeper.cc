#include "lease_keeper.h"

#include <prometheus/family.h>

#include <pqxx/pqxx>

#include "infrachat/core/logging.h"
#include "infrachat/core/metrics.h"

namespace infrachat::shard {

namespace {

std::uint64_t Acquire(pqxx::connection& conn, const LeaseOptions& options) {
  pqxx::work tx(conn);
  auto row = tx.exec_params1(
      "INSERT INTO shard_leases (shard_id, address, epoch, expires_at)"
      " VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond')"
      " ON CONFLICT (shard_id) DO UPDATE SET address = EXCLUDED.address,"
      "   epoch = shard_leases.epoch + 1, expires_at = EXCLUDED.expires_at"
      " RETURNING epoch",
      options.shard_id, options.address, static_cast<std::int64_t>(options.ttl.count()));
  tx.commit();
  return row[0].as<std::uint64_t>();
}

bool Renew(pqxx::connection& conn, const LeaseOptions& options, std::uint64_t epoch) {
  pqxx::work tx(conn);
  auto result = tx.exec_params(
      "UPDATE shard_leases SET expires_at = now() + $3 * interval '1 millisecond'"
      " WHERE shard_id = $1 AND epoch = $2",
      options.shard_id, static_cast<std::int64_t>(epoch),
      static_cast<std::int64_t>(options.ttl.count()));
  tx.commit();
  return result.affected_rows() == 1;
}

}  // namespace

LeaseKeeper::Metrics::Metrics() {
  held = &prometheus::BuildGauge()
              .Name("infrachat_shard_lease_held")
              .Help("1 while this shard's last lease renewal succeeded, else 0")
              .Register(MetricsRegistry())
              .Add({});
  auto& changes = prometheus::BuildCounter()
                      .Name("infrachat_shard_lease_changes_total")
                      .Help(
                          "Lease events of this shard: acquired (a new epoch), lost (another "
                          "process took it), renewal_failed (database error)")
                      .Register(MetricsRegistry());
  acquired = &changes.Add({{"event", "acquired"}});
  lost = &changes.Add({{"event", "lost"}});
  renewal_failed = &changes.Add({{"event", "renewal_failed"}});
}

LeaseKeeper::LeaseKeeper(LeaseOptions options, std::shared_ptr<spdlog::logger> log)
    : options_(std::move(options)), log_(std::move(log)) {
  thread_ = std::thread([this] { Run(); });
}

LeaseKeeper::~LeaseKeeper() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void LeaseKeeper::Run() {
  std::unique_ptr<pqxx::connection> conn;
  for (;;) {
    try {
      if (!conn || !conn->is_open()) {
        conn = std::make_unique<pqxx::connection>(options_.database_url);
      }
      if (epoch_ != 0 && !Renew(*conn, options_, epoch_)) {
        LogEvent(log_, spdlog::level::warn, "lease lost",
                 {{"shard", options_.shard_id},
                  {"epoch", epoch_},
                  {"reason", "taken by another process; taking it back"}});
        metrics_.lost->Increment();
        metrics_.held->Set(0);
        epoch_ = 0;
      }
      if (epoch_ == 0) {
        epoch_ = Acquire(*conn, options_);
        metrics_.acquired->Increment();
        LogEvent(log_, spdlog::level::info, "lease acquired",
                 {{"shard", options_.shard_id}, {"address", options_.address}, {"epoch", epoch_}});
      }
      if (renew_failing_) {
        renew_failing_ = false;
        LogEvent(log_, spdlog::level::info, "lease renewal recovered",
                 {{"shard", options_.shard_id}});
      }
      metrics_.held->Set(1);
    } catch (const std::exception& e) {
      if (!renew_failing_) {  // the transition once, not every heartbeat of an outage
        renew_failing_ = true;
        LogEvent(log_, spdlog::level::warn, "lease renewal failing",
                 {{"shard", options_.shard_id}, {"epoch", epoch_}, {"error", e.what()}});
      }
      metrics_.renewal_failed->Increment();
      metrics_.held->Set(0);
      conn.reset();
    }
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, options_.heartbeat, [&] { return stopping_; })) break;
  }
  metrics_.held->Set(0);
  if (epoch_ == 0 || !conn) return;
  try {
    pqxx::work tx(*conn);
    // Expired rather than deleted: the row keeps its epoch, so the next holder's is higher and
    // a paused holder of this one can never renew it again.
    tx.exec_params("UPDATE shard_leases SET expires_at = now() WHERE shard_id = $1 AND epoch = $2",
                   options_.shard_id, static_cast<std::int64_t>(epoch_));
    tx.commit();
  } catch (const std::exception& e) {
    log_->warn("lease of {} not released (it expires by itself): {}", options_.shard_id, e.what());
  }
}

}  // namespace infrachat::shard
