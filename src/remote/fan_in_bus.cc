#include "fan_in_bus.h"

#include "convert.h"
#include "peer_monitor.h"

namespace infrachat::remote {

FanInEventBus::FanInEventBus(const std::vector<std::string>& addresses,
                             std::shared_ptr<grpc::ChannelCredentials> credentials,
                             std::function<std::string(const std::string& channel)> owner_of)
    : credentials_(std::move(credentials)), owner_of_(std::move(owner_of)) {
  for (const auto& address : addresses) {
    if (buses_.count(address) == 0) buses_.emplace(address, MakeBus(address, address));
  }
}

// The buses stop (and join their threads) as the map is destroyed, after no caller is left.
FanInEventBus::~FanInEventBus() = default;

FanInEventBus::BusPtr FanInEventBus::MakeBus(const std::string& address,
                                             const std::string& peer) const {
  auto channel = MakeInternalChannel(address, credentials_, peer);
  PeerMonitor::Default().Watch(channel, address, "shard");
  return std::make_shared<bus_grpc::GrpcEventBus>(std::move(channel));
}

void FanInEventBus::AddShard(const std::string& address) {
  std::lock_guard lock(mu_);
  if (buses_.count(address) > 0) return;
  BusPtr bus = MakeBus(address, kDiscoveredPeer);  // not configured: no label of its own
  for (auto& [id, subscription] : subscriptions_) {
    subscription.per_bus.emplace_back(bus, bus->Subscribe(subscription.handler));
  }
  for (const auto& [channel, ready] : watched_) bus->Watch(channel, ready);
  buses_.emplace(address, std::move(bus));
}

void FanInEventBus::Publish(BusEvent event) {
  const std::string owner = owner_of_(EventChannel(event));
  BusPtr bus;
  {
    std::lock_guard lock(mu_);
    if (buses_.empty()) return;
    auto it = buses_.find(owner);
    bus = it == buses_.end() ? buses_.begin()->second : it->second;
  }
  bus->Publish(std::move(event));
}

EventBus::SubscriptionId FanInEventBus::Subscribe(Handler handler) {
  std::lock_guard lock(mu_);
  const SubscriptionId id = next_id_++;
  Subscription& subscription = subscriptions_[id];
  subscription.handler = handler;
  for (auto& [address, bus] : buses_) {
    subscription.per_bus.emplace_back(bus, bus->Subscribe(handler));
  }
  return id;
}

void FanInEventBus::Unsubscribe(SubscriptionId id) {
  Subscription subscription;
  {
    std::lock_guard lock(mu_);
    auto it = subscriptions_.find(id);
    if (it == subscriptions_.end()) return;
    subscription = std::move(it->second);
    subscriptions_.erase(it);
  }
  // Outside the lock: GrpcEventBus::Unsubscribe waits for a running handler.
  for (auto& [bus, bus_id] : subscription.per_bus) bus->Unsubscribe(bus_id);
}

void FanInEventBus::Watch(const std::string& channel, Ready ready) {
  std::lock_guard lock(mu_);
  watched_[channel] = ready;
  for (auto& [address, bus] : buses_) bus->Watch(channel, ready);
}

void FanInEventBus::Unwatch(const std::string& channel) {
  std::lock_guard lock(mu_);
  watched_.erase(channel);
  for (auto& [address, bus] : buses_) bus->Unwatch(channel);
}

}  // namespace infrachat::remote
