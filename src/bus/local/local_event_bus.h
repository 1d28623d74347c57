// LocalEventBus: the in-process EventBus, for modules that share a process.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <variant>

#include "infrachat/bus/event_bus.h"
#include "infrachat/core/tracing.h"

namespace infrachat {

// One dispatcher thread delivers events to every subscriber in publish order (a single FIFO, so
// the per-publisher order holds across publishers too). Publish never blocks on subscribers.
// Handlers run inside a SpanScope of the span context current at Publish (event_bus.h).
//
// The queue is unbounded, which is safe because its consumers only enqueue into bounded
// per-session queues; `queued()` exposes its depth for monitoring.
// Lifetime: the destructor stops the thread; events still queued are dropped (the bus is
// at-most-once by contract). Unsubscribe must not be called from inside a handler.
class LocalEventBus final : public EventBus {
 public:
  LocalEventBus();
  ~LocalEventBus() override;

  void Publish(BusEvent event) override;
  SubscriptionId Subscribe(Handler handler) override;
  void Unsubscribe(SubscriptionId id) override;
  // Every event reaches every subscriber anyway: `ready` runs on the dispatcher thread after the
  // events published before the call.
  void Watch(const std::string& channel, Ready ready) override;
  void Unwatch(const std::string& channel) override;

  // Blocks until every event published before the call has been handled. For tests and for an
  // orderly shutdown.
  void Drain();
  std::size_t queued() const;

 private:
  void Run();

  mutable std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::condition_variable drained_cv_;
  // An event with the span context it was published in, or a Watch's `ready` to run in its
  // place in the order.
  struct Delivery {
    BusEvent event;
    SpanContext trace;
  };
  using Item = std::variant<Delivery, Ready>;
  std::deque<Item> queue_;
  std::uint64_t published_ = 0;
  std::uint64_t handled_ = 0;
  bool stopping_ = false;

  std::shared_mutex handlers_mu_;  // held shared while handlers run
  std::map<SubscriptionId, Handler> handlers_;
  SubscriptionId next_id_ = 1;

  std::thread thread_;
};

}  // namespace infrachat
