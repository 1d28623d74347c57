// RoutedShard: the ShardApi of the cluster's shard processes, as seen from a process that runs
// none of them. A channel's calls go to its home region (rendezvous hashing of its name over
// the regions), and there to its owner, chosen by rendezvous hashing over the region's shards
// that hold a live lease (the configured addresses, peers.shard for this region and
// peers.region_shards for the others, while the lease table cannot be read); a send that finds
// its owner unreachable is tried once more on the next shard in the channel's hash order, with
// the same client_msg_id.
#pragma once

#include <grpcpp/security/credentials.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <spdlog/logger.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "infrachat/api/router_api.h"
#include "infrachat/api/shard_api.h"
#include "shard_client.h"

namespace infrachat::remote {

// Correctness never depends on which shard of the home region serves a channel: every shard
// process works on the region's database, which allocates each seq (docs/adr/0009). Placement
// spreads load and keeps a channel's sends in one group committer. ListChannels asks every
// region and merges the answers; a region that cannot answer is left out (the others' channels
// are still listed) unless none can.
// Metrics (docs/adr/0010), labelled by configured region only:
//   infrachat_router_live_shards{region}            shards holding a live lease, as last read
//   infrachat_router_placement_changes_total{region} the set of shards placement uses changed
//                                                    (a shard joined or left: channels moved)
//   infrachat_router_lease_reads_failed_total{region} no shard of the region answered LiveShards
//   infrachat_router_failovers_total                 calls tried on the next shard because the
//                                                    owner was unreachable
// Logs: "placement changed" (module router) once per change of a region's placed set, with
// the shards that joined and left; the channels to each shard log "peer connected" / "peer
// lost" (module cluster, PeerMonitor).
// Internal calls themselves are counted per peer by the channels (MakeInternalChannel): a
// configured address is its own label, a shard found by its lease is "discovered".
// Thread-safety: as ShardApi. Lifetime: owns one RemoteShard per address.
class RoutedShard final : public ShardApi, public ShardPlacement {
 public:
  // `shards_by_region`: every region's shard addresses; `regions`: all regions of the cluster,
  // in any order (the home of a region without addresses answers UNAVAILABLE).
  // Every `refresh` (0: never) it asks each region's shards which of them hold a live lease,
  // and places channels only on those (health-aware placement), including shard processes the
  // configuration does not list (scale-out: a new shard is found by its lease); while a
  // region's live set is unknown, all its configured shards count.
  // `credentials`: of the channel to each shard (MakeInternalChannel).
  RoutedShard(std::map<std::string, std::vector<std::string>> shards_by_region,
              std::vector<std::string> regions,
              const std::shared_ptr<grpc::ChannelCredentials>& credentials,
              std::chrono::milliseconds timeout,
              std::chrono::milliseconds refresh = std::chrono::milliseconds(0));
  ~RoutedShard() override;

  // The home region's addresses in `channel`'s rendezvous order: the owner first.
  std::vector<std::string> Order(std::string_view channel) const;
  // The owner's shard id by its lease (its address until the lease is known).
  std::string OwnerOf(std::string_view channel) const override;
  // The configured shard addresses of every region.
  const std::vector<std::string>& addresses() const { return addresses_; }
  // `listener(address)` runs for every shard process found by its lease that the configuration
  // does not list: now for those found so far, later on the refresh thread (never under a lock).
  void OnDiscovered(std::function<void(const std::string& address)> listener);

  void SendAsync(const CallContext& call, SendCommand command, SendCallback done) override;
  Result<v1::Channel> CreateChannel(const CallContext& call, const Principal& caller,
                                    const v1::CreateChannelRequest& request) override;
  Result<v1::Channel> JoinChannel(const CallContext& call, const Principal& caller,
                                  std::string_view channel) override;
  Result<void> LeaveChannel(const CallContext& call, const Principal& caller,
                            std::string_view channel) override;
  Result<void> InviteMember(const CallContext& call, const Principal& caller,
                            std::string_view channel, std::uint64_t invitee_id,
                            std::string_view invitee_username) override;
  Result<std::vector<v1::Channel>> ListChannels(const CallContext& call,
                                                const Principal& caller) override;
  Result<std::vector<v1::Member>> ListMembers(const CallContext& call, const Principal& caller,
                                              std::string_view channel) override;
  Result<v1::GetHistoryResponse> GetHistory(const CallContext& call, const Principal& caller,
                                            const v1::GetHistoryRequest& request) override;
  Result<std::uint64_t> AuthorizeSubscribe(const CallContext& call, const Principal& caller,
                                           std::string_view channel) override;
  Result<bool> RecordAck(const CallContext& call, const Principal& caller, std::string_view channel,
                         std::uint64_t seq, v1::AckKind kind) override;
  Result<std::vector<v1::ChatMessage>> ReadLog(const CallContext& call, std::string_view channel,
                                               std::uint64_t reader_id, std::uint64_t after_seq,
                                               std::uint32_t limit) override;
  void AuthorizeSubscribeAsync(const CallContext& call, const Principal& caller,
                               std::string channel, Done<std::uint64_t> done) override;
  void RecordAckAsync(const CallContext& call, const Principal& caller, std::string channel,
                      std::uint64_t seq, v1::AckKind kind, Done<bool> done) override;
  void ReadLogAsync(const CallContext& call, std::string channel, std::uint64_t reader_id,
                    std::uint64_t after_seq, std::uint32_t limit,
                    Done<std::vector<v1::ChatMessage>> done) override;
  // The live shards of this process's view, all regions together.
  Result<std::vector<ShardLease>> LiveShards(const CallContext& call) override;

 private:
  void RefreshLoop(std::chrono::milliseconds every);
  void RefreshOnce();
  // The channel's owner, or, when it is unreachable, the next in its order: blocking calls
  // are safe to repeat elsewhere (reads, idempotent writes).
  template <typename Call>
  auto WithOwner(std::string_view channel, Call call) -> decltype(call(std::declval<ShardApi&>()));
  // The same for an asynchronous call: `start(shard, done)` begins it on a shard; on UNAVAILABLE
  // from the owner it is begun once more on the next shard, then `done` gets the outcome.
  template <typename T, typename Start>
  void WithOwnerAsync(std::string_view channel, Start start, Done<T> done);
  ShardApi& At(const std::string& address) const;
  // The addresses placement uses in `region`: the live ones when known, else the configured.
  std::vector<std::string> PlacedLocked(const std::string& region) const;

  // The set of shards a region's channels are placed on, before and after a refresh.
  struct PlacementChange {
    std::vector<std::string> before;
    std::vector<std::string> after;
    bool from_leases = false;  // else the configured addresses (the lease table is unreadable)
  };
  // "placement changed" (module router, info): region, shards, joined, left, shard_count,
  // source (leases | configuration). Called without mu_.
  void LogPlacementChange(const std::string& region, const PlacementChange& change);

  struct RegionMetrics {
    prometheus::Gauge* live_shards = nullptr;
    prometheus::Counter* placement_changes = nullptr;
    prometheus::Counter* lease_reads_failed = nullptr;
  };

  std::map<std::string, std::vector<std::string>> shards_by_region_;
  std::vector<std::string> regions_;
  std::vector<std::string> addresses_;  // configured, every region
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  const std::chrono::milliseconds timeout_;
  std::map<std::string, RegionMetrics> region_metrics_;  // per region of shards_by_region_
  prometheus::Counter* failovers_ = nullptr;
  std::shared_ptr<spdlog::logger> log_;  // "router": placement changes

  mutable std::mutex mu_;
  // One client per address ever used; entries are never removed (references stay valid).
  mutable std::map<std::string, std::unique_ptr<RemoteShard>> shards_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::map<std::string, std::vector<ShardLease>> live_;  // region -> its shards' live leases
  std::vector<std::string> discovered_;                  // by lease, not configured
  std::function<void(const std::string&)> on_discovered_;
  std::thread refresher_;
};

}  // namespace infrachat::remote
