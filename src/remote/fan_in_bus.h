// FanInEventBus: the EventBus of a process that runs no shard, over every shard process of the
// cluster: a channel's events may come from any shard that committed to it (an owner change, a
// send retried on the next shard), so each is watched, and each one's readiness counts.
#pragma once

#include <grpcpp/security/credentials.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bus/grpc/grpc_event_bus.h"
#include "infrachat/bus/event_bus.h"

namespace infrachat::remote {

// - Subscribe: the handler receives the events of every shard (from one bus thread per shard,
//   so concurrently across shards; in each shard's order within it). Fanout's handler is
//   thread-safe and orders by seq.
// - Watch(channel, ready): the channel is watched on every shard, and `ready` runs each time
//   any of them says the interest is in place: first for the earliest, then again for each
//   other and after every reconnect. A shard that is down does not hold anything back; when it
//   comes back, its `ready` makes the watcher repair from the log (ADR 3's rule, per shard).
// - Publish (typing, presence): to the channel's owner, `owner_of(channel)`, which puts it on
//   its bus and so on every watcher's stream.
// - AddShard: a shard process found later (a lease in the region's table that the
//   configuration does not list) is watched from then on like the others: every handler is
//   subscribed to it and every watched channel watched on it (its `ready` repairs from the log).
// Thread-safety: every method from any thread. Lifetime: owns the per-shard buses; the
// destructor stops them (no handler or ready runs after it returns).
class FanInEventBus final : public EventBus {
 public:
  // `credentials`: of the channel to each shard (MakeInternalChannel).
  FanInEventBus(const std::vector<std::string>& addresses,
                std::shared_ptr<grpc::ChannelCredentials> credentials,
                std::function<std::string(const std::string& channel)> owner_of);
  ~FanInEventBus() override;

  void Publish(BusEvent event) override;
  SubscriptionId Subscribe(Handler handler) override;
  void Unsubscribe(SubscriptionId id) override;
  void Watch(const std::string& channel, Ready ready) override;
  void Unwatch(const std::string& channel) override;

  // Starts watching the shard process at `address` too (no-op when it is watched already).
  void AddShard(const std::string& address);

 private:
  using BusPtr = std::shared_ptr<bus_grpc::GrpcEventBus>;
  struct Subscription {
    Handler handler;
    std::vector<std::pair<BusPtr, SubscriptionId>> per_bus;
  };
  // `peer`: the metrics label of its channel (MakeInternalChannel).
  BusPtr MakeBus(const std::string& address, const std::string& peer) const;

  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  const std::function<std::string(const std::string&)> owner_of_;
  // Guards everything below. Watch, Unwatch and Subscribe of a GrpcEventBus never block nor run
  // callbacks inline, so they are called under it: a shard added concurrently with a Watch
  // sees the channel, or the Watch sees the shard.
  std::mutex mu_;
  std::map<std::string, BusPtr> buses_;  // address -> bus; never shrinks
  std::map<SubscriptionId, Subscription> subscriptions_;
  std::map<std::string, Ready> watched_;  // channel -> its latest ready
  SubscriptionId next_id_ = 1;
};

}  // namespace infrachat::remote
