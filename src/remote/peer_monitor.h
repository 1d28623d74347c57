// PeerMonitor: "peer connected" / "peer lost" log lines (module cluster) for the other
// InfraChat processes this one calls, once per transition of the connection, never per call.
#pragma once

#include <grpcpp/channel.h>
#include <spdlog/logger.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "infrachat/core/availability_log.h"

namespace infrachat::remote {

// Watches the connectivity state of internal channels (one per peer: the first channel
// watched for an address and role stands for it) every `every`, and asks each to connect:
//   READY              -> "peer connected" (info; `first: true` the first time, else with
//                         outage_ms and since of the outage it ends);
//   TRANSIENT_FAILURE  -> "peer lost" (warn; `first: true` when it was never reached);
//   IDLE, CONNECTING   -> no change (a connection closed for idleness or by a GOAWAY is
//                         reopened at once by the next poll; only a failed attempt is a loss).
// Fields: `peer` (the address dialled), `role` (shard, auth), then AvailabilityLog's. Because
// it asks idle channels to connect, a peer is found lost (and back) without traffic, and the
// first call after a quiet period does not pay for a new connection.
//
// Thread-safety: Watch from any thread. One thread per monitor polls while at least one
// watched channel is alive; it ends when none is and starts again with the next Watch.
// Lifetime: channels are held weakly (the monitor never keeps one alive beyond a poll). The
// destructor joins the thread. Default() is never destroyed (clients may be destroyed during
// exit); its thread ends by itself once their channels are gone.
class PeerMonitor {
 public:
  explicit PeerMonitor(std::shared_ptr<spdlog::logger> log,
                       std::chrono::milliseconds every = std::chrono::milliseconds(250));
  ~PeerMonitor();
  PeerMonitor(const PeerMonitor&) = delete;
  PeerMonitor& operator=(const PeerMonitor&) = delete;

  // Watches `channel` as the link to the process at `address` that serves `role`. While a
  // channel watched for the same address and role lives, another one is not watched: the
  // transitions are the peer's, whichever client dials it. The transitions carry over to a
  // later channel of the same peer.
  void Watch(const std::shared_ptr<grpc::Channel>& channel, const std::string& address,
             const std::string& role);

  // The monitor of the process's remote clients (logger "cluster").
  static PeerMonitor& Default();

 private:
  struct Peer {
    std::weak_ptr<grpc::Channel> channel;
    std::unique_ptr<AvailabilityLog> log;  // entries are never removed: stable while polled
  };

  void Run();

  const std::shared_ptr<spdlog::logger> log_;
  const std::chrono::milliseconds every_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool running_ = false;  // thread_ polls (it clears this, under mu_, as its last step)
  std::map<std::pair<std::string, std::string>, Peer> peers_;  // (address, role)
  std::thread thread_;
};

}  // namespace infrachat::remote
