// EventStreamService: the serving side of the event stream (internal.v1.EventStream), run in a
// process that owns channels (the shard role). It forwards events of watched channels from the
// process's own bus to the Watch streams of other processes, and puts events they Publish on it.
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <spdlog/logger.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "infrachat/bus/event_bus.h"
#include "infrachat/internal/v1/internal.grpc.pb.h"

namespace infrachat::bus_grpc {

struct EventStreamOptions {
  // Responses (events and ready answers) queued per Watch stream behind the one write in
  // flight. A stream that would exceed it is ended with RESOURCE_EXHAUSTED: its watcher
  // reconnects and repairs from the durable log.
  std::size_t max_queued_events = 4096;
};

// Threading: the bus handler runs on the bus's thread and only filters and enqueues (never
// blocks on a stream); stream reactions run on gRPC's threads. All public methods are
// thread-safe.
//
// Order: events of a channel are written to a stream in the order the bus delivered them (one
// handler, one FIFO per stream, one write in flight). A WatchRequest is answered with
// WatchResponse.ready = token once the filter is updated; every event the bus delivers after
// that point passes it, and is queued behind the ready answer (filter update and answer happen
// atomically with respect to the bus handler).
//
// Lifetime: the constructor subscribes to `bus`, the destructor unsubscribes. `bus` must
// outlive the service. Register the service with a grpc::Server and destroy the service only
// after Server::Shutdown() returned (Shutdown cancels the Watch streams; the destructor then
// waits for the streams gRPC has not completed yet, so it blocks if the server still runs).
class EventStreamService final : public internal::v1::EventStream::CallbackService {
 public:
  explicit EventStreamService(EventBus* bus, EventStreamOptions options = {});
  ~EventStreamService() override;

  EventStreamService(const EventStreamService&) = delete;
  EventStreamService& operator=(const EventStreamService&) = delete;

  grpc::ServerBidiReactor<internal::v1::WatchRequest, internal::v1::WatchResponse>* Watch(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Publish(grpc::CallbackServerContext* context,
                                    const internal::v1::BusEvent* request,
                                    internal::v1::Empty* response) override;

  // Ends every Watch stream with UNAVAILABLE, and every one that starts later at once: the
  // start of a shutdown, so that Server::Shutdown does not wait its whole grace for streams that
  // never end by themselves. Their watchers reconnect (to this channel's next owner) and repair
  // from the durable log, so nothing is lost; events published meanwhile are not forwarded.
  void EndAll();

  // Monitoring and tests.
  std::size_t active_streams() const;
  // Streams ended because their queue was full.
  std::uint64_t overflowed_streams() const { return overflowed_.load(); }

  class WatchStream;  // one Watch call; defined in the .cc

 private:
  friend class WatchStream;

  void OnBusEvent(const BusEvent& event);
  // Stream bookkeeping, called by WatchStream; both take index_mu_.
  void ApplyRequest(WatchStream* stream, const internal::v1::WatchRequest& request);
  void StreamDone(WatchStream* stream);
  static grpc::Status EndingStatus();

  EventBus* const bus_;
  const EventStreamOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  // infrachat_bus_watch_streams_overflowed_total (docs/adr/0010): overflowed_ for Prometheus.
  prometheus::Counter* const overflowed_metric_;

  // Lock order: index_mu_ before any stream's mutex.
  mutable std::mutex index_mu_;
  std::condition_variable streams_cv_;
  // channel -> the streams that watch it.
  std::unordered_map<std::string, std::unordered_set<WatchStream*>> watchers_;
  std::unordered_set<WatchStream*> streams_;  // live (not yet OnDone)
  bool ending_ = false;                       // EndAll was called
  std::atomic<std::uint64_t> overflowed_{0};

  EventBus::SubscriptionId subscription_ = 0;
};

}  // namespace infrachat::bus_grpc
