#include "peer_monitor.h"

#include <vector>

#include "infrachat/core/logging.h"

namespace infrachat::remote {

PeerMonitor::PeerMonitor(std::shared_ptr<spdlog::logger> log, std::chrono::milliseconds every)
    : log_(std::move(log)), every_(every) {}

PeerMonitor::~PeerMonitor() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

PeerMonitor& PeerMonitor::Default() {
  static PeerMonitor* monitor = new PeerMonitor(ModuleLogger("cluster"));  // never destroyed
  return *monitor;
}

void PeerMonitor::Watch(const std::shared_ptr<grpc::Channel>& channel, const std::string& address,
                        const std::string& role) {
  std::lock_guard lock(mu_);
  if (stopping_) return;
  Peer& peer = peers_[{address, role}];
  if (!peer.log) {
    peer.log = std::make_unique<AvailabilityLog>(
        log_, AvailabilityLog::Messages{"peer lost", "peer connected"},
        AvailabilityLog::Fields{{"peer", address}, {"role", role}},
        AvailabilityLog::Initially::kUnknown);
  }
  if (!peer.channel.expired()) return;  // the peer is watched through another channel
  peer.channel = channel;
  if (running_) return;
  // The previous thread (if any) has cleared running_ as its last step under mu_: it is done.
  if (thread_.joinable()) thread_.join();
  running_ = true;
  thread_ = std::thread([this] { Run(); });
}

void PeerMonitor::Run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    std::vector<std::pair<std::shared_ptr<grpc::Channel>, AvailabilityLog*>> alive;
    for (auto& [key, peer] : peers_) {
      if (auto channel = peer.channel.lock())
        alive.emplace_back(std::move(channel), peer.log.get());
    }
    if (alive.empty()) break;
    lock.unlock();
    for (auto& [channel, log] : alive) {
      switch (channel->GetState(/*try_to_connect=*/true)) {
        case GRPC_CHANNEL_READY:
          log->Succeeded();
          break;
        case GRPC_CHANNEL_TRANSIENT_FAILURE:
          log->Failed("unreachable");
          break;
        default:
          break;
      }
    }
    alive.clear();  // the references go before the wait: a client's channel is its own again
    lock.lock();
    cv_.wait_for(lock, every_, [&] { return stopping_; });
  }
  running_ = false;
}

}  // namespace infrachat::remote
