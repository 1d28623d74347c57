#include "shard_module.h"

#include "group_committer.h"
#include "infrachat/core/logging.h"
#include "lease_keeper.h"
#include "modules/router/placement.h"
#include "shard_schema.h"
#include "shard_service.h"

namespace infrachat {

namespace {

class ShardModule final : public Module {
 public:
  std::string_view name() const override { return "shard"; }

  void Start(ModuleContext& ctx) override {
    auto log = ModuleLogger("shard");
    const DaemonConfig& config = ctx.config();
    auto conn = pg::Connect(config.database.url);
    if (!conn.ok())
      throw std::runtime_error("shard: cannot reach the database: " + conn.error().message);
    if (config.database.require_durable) {
      pg::CheckDurability(**conn);
    } else {
      log->warn("database.require_durable is false: acknowledged messages may be lost on a crash");
    }
    // ACK = "on two machines' disks" needs a synchronous standby (docs/HA.md).
    const pg::SyncReplication sync = pg::CheckSyncReplication(**conn);
    if (sync.commits_wait_for_standby) {
      log->info("database: {}", sync.Describe());
    } else if (config.database.require_sync_replica) {
      throw std::runtime_error("shard: database.require_sync_replica is true but " +
                               sync.Describe() +
                               "; run PostgreSQL with synchronous replication (docs/HA.md)");
    } else {
      log->warn("database: {} (set database.require_sync_replica: true to refuse this)",
                sync.Describe());
    }
    pg::Migrate(**conn, "shard", shard::ShardMigrations());

    committer_ = std::make_unique<shard::GroupCommitter>(
        shard::GroupCommitterOptions{config.database.url,
                                     static_cast<std::size_t>(config.shard.max_batch),
                                     static_cast<std::size_t>(config.shard.max_queue),
                                     std::chrono::milliseconds(config.shard.commit_timeout_ms)},
        &ctx.bus(), log);
    shard::ShardServiceOptions options;
    options.max_body_bytes = static_cast<std::size_t>(config.limits.max_body_bytes);
    if (config.Regions().size() > 1) {
      options.homed_here = [regions = config.Regions(),
                            region = config.region](const std::string& channel) {
        return router::PickShard(channel, regions) == region;
      };
    }
    service_ = std::make_unique<shard::ShardService>(std::move(options), &ctx.db(),
                                                     committer_.get(), &ctx.bus());
    ctx.ProvideShard(service_.get());
    ctx_ = &ctx;
    log->info("shard {} ready", config.shard.id);
  }

  // Shards that other processes reach (an internal listener) announce themselves with a lease
  // row; an all-in-one process has no one to announce to.
  void OnServing(const std::string& /*address*/) override {
    if (ctx_->internal_address().empty()) return;
    const DaemonConfig& config = ctx_->config();
    leases_ = std::make_unique<shard::LeaseKeeper>(
        shard::LeaseOptions{config.database.url, config.shard.id,
                            config.grpc.internal_advertise_address.empty()
                                ? ctx_->internal_address()
                                : config.grpc.internal_advertise_address,
                            std::chrono::milliseconds(config.shard.lease_heartbeat_ms),
                            std::chrono::milliseconds(config.shard.lease_ttl_ms)},
        ModuleLogger("shard"));
  }

  void BeginShutdown() override { leases_.reset(); }  // out of placement before draining

  void Stop() override {
    leases_.reset();
    // Commits (and acknowledges) whatever is still queued before the process goes away.
    if (committer_) committer_->Stop();
    service_.reset();
    committer_.reset();
  }

 private:
  ModuleContext* ctx_ = nullptr;
  std::unique_ptr<shard::LeaseKeeper> leases_;
  std::unique_ptr<shard::GroupCommitter> committer_;
  std::unique_ptr<shard::ShardService> service_;
};

}  // namespace

std::unique_ptr<Module> MakeShardModule() { return std::make_unique<ShardModule>(); }

}  // namespace infrachat
