#include "routed_shard.h"

#include <prometheus/family.h>

#include <algorithm>
#include <iterator>
#include <optional>
#include <set>

#include "convert.h"
#include "infrachat/core/logging.h"
#include "infrachat/core/metrics.h"
#include "infrachat/core/validation.h"
#include "modules/router/placement.h"
#include "peer_monitor.h"

namespace infrachat::remote {

namespace {

bool Unreachable(Code code) { return code == Code::kUnavailable; }

Error NoShard(std::string_view channel) {
  return MakeError(Code::kUnavailable,
                   "no shard process is configured for the home region of " + std::string(channel));
}

// Channel names as the shard keys them ("#general" is "general"); an invalid name still gets
// an owner, which answers INVALID_ARGUMENT.
std::string Key(std::string_view channel) {
  auto name = NormalizeChannelName(channel);
  return name.ok() ? *name : std::string(channel);
}

}  // namespace

RoutedShard::RoutedShard(std::map<std::string, std::vector<std::string>> shards_by_region,
                         std::vector<std::string> regions,
                         const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                         std::chrono::milliseconds timeout, std::chrono::milliseconds refresh)
    : shards_by_region_(std::move(shards_by_region)),
      regions_(std::move(regions)),
      credentials_(credentials),
      timeout_(timeout),
      log_(ModuleLogger("router")) {
  for (const auto& [region, addresses] : shards_by_region_) {
    for (const auto& address : addresses) {
      if (std::find(addresses_.begin(), addresses_.end(), address) == addresses_.end()) {
        addresses_.push_back(address);
      }
    }
  }
  auto& live = prometheus::BuildGauge()
                   .Name("infrachat_router_live_shards")
                   .Help("Shard processes of the region holding a live lease, as last read")
                   .Register(MetricsRegistry());
  auto& changes = prometheus::BuildCounter()
                      .Name("infrachat_router_placement_changes_total")
                      .Help("Changes of the set of shards channels are placed on (channels moved)")
                      .Register(MetricsRegistry());
  auto& failed = prometheus::BuildCounter()
                     .Name("infrachat_router_lease_reads_failed_total")
                     .Help("Lease table reads that no shard of the region answered")
                     .Register(MetricsRegistry());
  for (const auto& [region, addresses] : shards_by_region_) {
    region_metrics_[region] =
        RegionMetrics{&live.Add({{"region", region}}), &changes.Add({{"region", region}}),
                      &failed.Add({{"region", region}})};
  }
  failovers_ = &prometheus::BuildCounter()
                    .Name("infrachat_router_failovers_total")
                    .Help("Calls tried on the next shard because the owner was unreachable")
                    .Register(MetricsRegistry())
                    .Add({});
  if (refresh.count() > 0) refresher_ = std::thread([this, refresh] { RefreshLoop(refresh); });
}

void RoutedShard::OnDiscovered(std::function<void(const std::string& address)> listener) {
  std::vector<std::string> known;
  {
    std::lock_guard lock(mu_);
    on_discovered_ = listener;
    known = discovered_;
  }
  for (const auto& address : known) listener(address);
}

RoutedShard::~RoutedShard() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (refresher_.joinable()) refresher_.join();
}

void RoutedShard::RefreshLoop(std::chrono::milliseconds every) {
  for (;;) {
    RefreshOnce();
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, every, [&] { return stopping_; })) return;
  }
}

namespace {

// A lease whose address no other process can dial (a wildcard listen address without
// grpc.internal_advertise_address) is left out of placement rather than failing every call.
bool Dialable(const std::string& address) {
  return address.rfind("0.0.0.0:", 0) != 0 && address.rfind("[::]:", 0) != 0 &&
         address.rfind(":", 0) != 0 && !address.empty();
}

}  // namespace

void RoutedShard::RefreshOnce() {
  for (const auto& [region, configured] : shards_by_region_) {
    // Any shard of the region reads its lease table: the configured ones, then those found.
    std::vector<std::string> candidates = configured;
    {
      std::lock_guard lock(mu_);
      if (auto it = live_.find(region); it != live_.end()) {
        for (const auto& lease : it->second) candidates.push_back(lease.address);
      }
    }
    std::optional<std::vector<ShardLease>> live;
    for (const auto& address : candidates) {
      auto leases = At(address).LiveShards(CallContext::Background(timeout_));
      if (!leases.ok()) continue;
      live.emplace();
      for (auto& lease : *leases) {
        if (Dialable(lease.address)) live->push_back(std::move(lease));
      }
      break;
    }
    std::vector<std::string> found;
    std::function<void(const std::string&)> listener;
    std::optional<PlacementChange> change;
    const RegionMetrics& metrics = region_metrics_.at(region);
    if (live) {
      metrics.live_shards->Set(static_cast<double>(live->size()));
    } else {
      metrics.lease_reads_failed->Increment();
    }
    {
      std::lock_guard lock(mu_);
      const std::vector<std::string> placed_before = PlacedLocked(region);
      if (live && !live->empty()) {
        for (const auto& lease : *live) {
          const bool known =
              std::find(addresses_.begin(), addresses_.end(), lease.address) != addresses_.end() ||
              std::find(discovered_.begin(), discovered_.end(), lease.address) != discovered_.end();
          if (!known) {
            discovered_.push_back(lease.address);
            found.push_back(lease.address);
          }
        }
        live_[region] = std::move(*live);
      } else {
        live_.erase(region);  // unknown: every configured shard counts
      }
      const std::vector<std::string> placed = PlacedLocked(region);
      if (std::set(placed.begin(), placed.end()) !=
          std::set(placed_before.begin(), placed_before.end())) {
        metrics.placement_changes->Increment();
        change = PlacementChange{placed_before, placed, live_.count(region) > 0};
      }
      listener = on_discovered_;
    }
    if (change) LogPlacementChange(region, *change);
    // Outside the lock: the listener starts watching the new shard's events.
    if (listener) {
      for (const auto& address : found) listener(address);
    }
  }
}

namespace {

std::string Joined(const std::set<std::string>& addresses) {
  std::string out;
  for (const auto& address : addresses) out += (out.empty() ? "" : ",") + address;
  return out;
}

}  // namespace

void RoutedShard::LogPlacementChange(const std::string& region, const PlacementChange& change) {
  const std::set<std::string> before(change.before.begin(), change.before.end());
  const std::set<std::string> after(change.after.begin(), change.after.end());
  std::set<std::string> joined, left;
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                      std::inserter(joined, joined.end()));
  std::set_difference(before.begin(), before.end(), after.begin(), after.end(),
                      std::inserter(left, left.end()));
  // Once per change of the set (a refresh that reads the same set logs nothing). The channels
  // that move are those whose rendezvous owner joined or left: not listed, computable.
  LogEvent(log_, spdlog::level::info, "placement changed",
           {{"region", region},
            {"shards", Joined(after)},
            {"joined", Joined(joined)},
            {"left", Joined(left)},
            {"shard_count", static_cast<std::uint64_t>(after.size())},
            {"source", change.from_leases ? "leases" : "configuration"}});
}

Result<std::vector<ShardLease>> RoutedShard::LiveShards(const CallContext&) {
  std::lock_guard lock(mu_);
  std::vector<ShardLease> all;
  for (const auto& [region, leases] : live_) all.insert(all.end(), leases.begin(), leases.end());
  return all;
}

std::vector<std::string> RoutedShard::PlacedLocked(const std::string& region) const {
  // Health-aware: only shards holding a live lease, when that is known.
  if (auto live = live_.find(region); live != live_.end()) {
    std::vector<std::string> alive;
    for (const auto& lease : live->second) alive.push_back(lease.address);
    return alive;
  }
  const auto it = shards_by_region_.find(region);
  return it == shards_by_region_.end() ? std::vector<std::string>{} : it->second;
}

std::vector<std::string> RoutedShard::Order(std::string_view channel) const {
  const std::string key = Key(channel);
  const std::string& home = router::PickShard(key, regions_);
  std::vector<std::string> order;
  {
    std::lock_guard lock(mu_);
    order = PlacedLocked(home);
  }
  std::sort(order.begin(), order.end(), [&](const std::string& a, const std::string& b) {
    return router::StableHash(a, key) > router::StableHash(b, key);
  });
  return order;
}

std::string RoutedShard::OwnerOf(std::string_view channel) const {
  const auto order = Order(channel);
  if (order.empty()) return {};
  std::lock_guard lock(mu_);
  for (const auto& [region, leases] : live_) {
    for (const auto& lease : leases) {
      if (lease.address == order.front()) return lease.shard_id;
    }
  }
  return order.front();
}

ShardApi& RoutedShard::At(const std::string& address) const {
  std::lock_guard lock(mu_);
  auto& shard = shards_[address];
  if (!shard) {
    // Cheap and non-blocking: the channel connects on its first call. A shard found by its
    // lease shares one metrics label: its address is not configuration.
    const bool configured =
        std::find(addresses_.begin(), addresses_.end(), address) != addresses_.end();
    const std::string peer = configured ? address : kDiscoveredPeer;
    auto channel = MakeInternalChannel(address, credentials_, peer);
    PeerMonitor::Default().Watch(channel, address, "shard");
    shard = std::make_unique<RemoteShard>(std::move(channel), timeout_, peer);
  }
  return *shard;
}

template <typename Call>
auto RoutedShard::WithOwner(std::string_view channel, Call call)
    -> decltype(call(std::declval<ShardApi&>())) {
  const auto order = Order(channel);
  if (order.empty()) return NoShard(channel);
  auto result = call(At(order.front()));
  if (!result.ok() && Unreachable(result.code()) && order.size() > 1) {
    failovers_->Increment();
    result = call(At(order[1]));
  }
  return result;
}

template <typename T, typename Start>
void RoutedShard::WithOwnerAsync(std::string_view channel, Start start, Done<T> done) {
  const auto order = Order(channel);
  if (order.empty()) return done(NoShard(channel));
  if (order.size() == 1) return start(At(order.front()), std::move(done));
  ShardApi* next = &At(order[1]);
  start(At(order.front()),
        [next, start, failovers = failovers_, done = std::move(done)](Result<T> result) mutable {
          if (result.ok() || !Unreachable(result.code())) return done(std::move(result));
          failovers->Increment();
          start(*next, std::move(done));
        });
}

void RoutedShard::SendAsync(const CallContext& call, SendCommand command, SendCallback done) {
  // Once more on the next shard when the owner cannot be reached: the same client_msg_id, so
  // a first attempt that was stored after all is answered as a duplicate, never stored twice.
  // The command is kept for that retry; each attempt sends a copy of it.
  auto shared = std::make_shared<const SendCommand>(std::move(command));
  WithOwnerAsync<SendOutcome>(
      shared->channel,
      [call, shared](ShardApi& shard, SendCallback on_done) {
        shard.SendAsync(call, *shared, std::move(on_done));
      },
      std::move(done));
}

Result<v1::Channel> RoutedShard::CreateChannel(const CallContext& call, const Principal& caller,
                                               const v1::CreateChannelRequest& request) {
  return WithOwner(request.name(),
                   [&](ShardApi& shard) { return shard.CreateChannel(call, caller, request); });
}

Result<v1::Channel> RoutedShard::JoinChannel(const CallContext& call, const Principal& caller,
                                             std::string_view channel) {
  return WithOwner(channel,
                   [&](ShardApi& shard) { return shard.JoinChannel(call, caller, channel); });
}

Result<void> RoutedShard::LeaveChannel(const CallContext& call, const Principal& caller,
                                       std::string_view channel) {
  return WithOwner(channel,
                   [&](ShardApi& shard) { return shard.LeaveChannel(call, caller, channel); });
}

Result<void> RoutedShard::InviteMember(const CallContext& call, const Principal& caller,
                                       std::string_view channel, std::uint64_t invitee_id,
                                       std::string_view invitee_username) {
  return WithOwner(channel, [&](ShardApi& shard) {
    return shard.InviteMember(call, caller, channel, invitee_id, invitee_username);
  });
}

Result<std::vector<v1::Channel>> RoutedShard::ListChannels(const CallContext& call,
                                                           const Principal& caller) {
  // Every region holds its own channels: ask one shard of each (the next on UNAVAILABLE).
  std::map<std::string, v1::Channel> merged;
  std::optional<Error> failure;
  for (const auto& [region, addresses] : shards_by_region_) {
    Result<std::vector<v1::Channel>> listed = MakeError(Code::kUnavailable, "no shard");
    for (const auto& address : addresses) {
      listed = At(address).ListChannels(call, caller);
      if (listed.ok() || !Unreachable(listed.code())) break;
    }
    if (!listed.ok()) {
      failure = listed.error();
      continue;
    }
    for (auto& channel : *listed) merged.emplace(channel.name(), std::move(channel));
  }
  if (merged.empty() && failure) return *failure;
  std::vector<v1::Channel> out;
  for (auto& [name, channel] : merged) out.push_back(std::move(channel));
  return out;
}

Result<std::vector<v1::Member>> RoutedShard::ListMembers(const CallContext& call,
                                                         const Principal& caller,
                                                         std::string_view channel) {
  return WithOwner(channel,
                   [&](ShardApi& shard) { return shard.ListMembers(call, caller, channel); });
}

Result<v1::GetHistoryResponse> RoutedShard::GetHistory(const CallContext& call,
                                                       const Principal& caller,
                                                       const v1::GetHistoryRequest& request) {
  return WithOwner(request.channel(),
                   [&](ShardApi& shard) { return shard.GetHistory(call, caller, request); });
}

Result<std::uint64_t> RoutedShard::AuthorizeSubscribe(const CallContext& call,
                                                      const Principal& caller,
                                                      std::string_view channel) {
  return WithOwner(
      channel, [&](ShardApi& shard) { return shard.AuthorizeSubscribe(call, caller, channel); });
}

Result<bool> RoutedShard::RecordAck(const CallContext& call, const Principal& caller,
                                    std::string_view channel, std::uint64_t seq, v1::AckKind kind) {
  return WithOwner(
      channel, [&](ShardApi& shard) { return shard.RecordAck(call, caller, channel, seq, kind); });
}

Result<std::vector<v1::ChatMessage>> RoutedShard::ReadLog(const CallContext& call,
                                                          std::string_view channel,
                                                          std::uint64_t reader_id,
                                                          std::uint64_t after_seq,
                                                          std::uint32_t limit) {
  return WithOwner(channel, [&](ShardApi& shard) {
    return shard.ReadLog(call, channel, reader_id, after_seq, limit);
  });
}

void RoutedShard::AuthorizeSubscribeAsync(const CallContext& call, const Principal& caller,
                                          std::string channel, Done<std::uint64_t> done) {
  WithOwnerAsync<std::uint64_t>(
      channel,
      [call, caller, channel](ShardApi& shard, Done<std::uint64_t> on_done) {
        shard.AuthorizeSubscribeAsync(call, caller, channel, std::move(on_done));
      },
      std::move(done));
}

void RoutedShard::RecordAckAsync(const CallContext& call, const Principal& caller,
                                 std::string channel, std::uint64_t seq, v1::AckKind kind,
                                 Done<bool> done) {
  WithOwnerAsync<bool>(
      channel,
      [call, caller, channel, seq, kind](ShardApi& shard, Done<bool> on_done) {
        shard.RecordAckAsync(call, caller, channel, seq, kind, std::move(on_done));
      },
      std::move(done));
}

void RoutedShard::ReadLogAsync(const CallContext& call, std::string channel,
                               std::uint64_t reader_id, std::uint64_t after_seq,
                               std::uint32_t limit, Done<std::vector<v1::ChatMessage>> done) {
  WithOwnerAsync<std::vector<v1::ChatMessage>>(
      channel,
      [call, channel, reader_id, after_seq, limit](ShardApi& shard,
                                                   Done<std::vector<v1::ChatMessage>> on_done) {
        shard.ReadLogAsync(call, channel, reader_id, after_seq, limit, std::move(on_done));
      },
      std::move(done));
}

}  // namespace infrachat::remote
