#include "fan_in_bus.h"

#include <algorithm>

#include "convert.h"

namespace infrachat::remote {

FanInEventBus::FanInEventBus(const std::vector<std::string>& addresses,
                             const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                             std::function<std::string(const std::string& channel)> owner_of)
    : addresses_(addresses), owner_of_(std::move(owner_of)) {
  for (const auto& address : addresses_) {
    buses_.push_back(
        std::make_unique<bus_grpc::GrpcEventBus>(MakeInternalChannel(address, credentials)));
  }
}

FanInEventBus::~FanInEventBus() = default;

void FanInEventBus::Publish(BusEvent event) {
  const std::string owner = owner_of_(EventChannel(event));
  const auto it = std::find(addresses_.begin(), addresses_.end(), owner);
  auto& bus = it == addresses_.end() ? buses_.front() : buses_[it - addresses_.begin()];
  bus->Publish(std::move(event));
}

EventBus::SubscriptionId FanInEventBus::Subscribe(Handler handler) {
  std::vector<SubscriptionId> ids;
  for (auto& bus : buses_) ids.push_back(bus->Subscribe(handler));
  std::lock_guard lock(mu_);
  const SubscriptionId id = next_id_++;
  subscriptions_.emplace(id, std::move(ids));
  return id;
}

void FanInEventBus::Unsubscribe(SubscriptionId id) {
  std::vector<SubscriptionId> ids;
  {
    std::lock_guard lock(mu_);
    auto it = subscriptions_.find(id);
    if (it == subscriptions_.end()) return;
    ids = std::move(it->second);
    subscriptions_.erase(it);
  }
  for (std::size_t i = 0; i < ids.size(); ++i) buses_[i]->Unsubscribe(ids[i]);
}

void FanInEventBus::Watch(const std::string& channel, Ready ready) {
  for (auto& bus : buses_) bus->Watch(channel, ready);
}

void FanInEventBus::Unwatch(const std::string& channel) {
  for (auto& bus : buses_) bus->Unwatch(channel);
}

}  // namespace infrachat::remote
