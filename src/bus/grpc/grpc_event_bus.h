// GrpcEventBus: the EventBus of a process that does not own channels (an edge running
// [gateway, fanout]). Events of watched channels come from the owner's EventStreamService over
// one Watch stream; events that originate here (typing, presence) go to the owner with
// EventStream.Publish.
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <spdlog/logger.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <variant>

#include "infrachat/bus/event_bus.h"
#include "infrachat/core/tracing.h"
#include "infrachat/internal/v1/internal.grpc.pb.h"

namespace infrachat::bus_grpc {

struct GrpcEventBusOptions {
  // Delay before re-opening a broken Watch stream: doubles from `reconnect_initial` up to
  // `reconnect_max`; back to the initial delay once a stream was answered.
  std::chrono::milliseconds reconnect_initial{100};
  std::chrono::milliseconds reconnect_max{2000};
  // Deadline of each EventStream.Publish call.
  std::chrono::milliseconds publish_deadline{2000};
  // Locally published events waiting to be sent to the owner (one call in flight); beyond it
  // new events are dropped with a warning (the bus is at-most-once).
  std::size_t max_queued_publishes = 1024;
  // Received events waiting for the handlers. Beyond it the Watch stream stops reading, HTTP/2
  // flow control pushes back, and the owner ends the stream when its own queue is full (the
  // watchers then get `ready` again after the reconnect and repair from the log).
  std::size_t max_pending_events = 4096;
};

// Delivery: received events go to every subscriber on one dispatcher thread ("the bus
// thread"), in arrival order; `ready` callbacks run on the same thread in their place in that
// order. The owner writes a channel's events in its bus order, so per-channel (and
// per-publisher) order holds.
//
// Publish does NOT deliver to local subscribers: the event goes to the owner, which puts it on
// its bus, and comes back through the Watch stream if the channel is watched here. So every
// subscriber sees one order per channel (the owner's), whichever process published. Publish is
// asynchronous and never blocks; calls are sent one at a time, in publish order. An event that
// cannot be sent (owner unreachable, deadline, queue full) is dropped with a warning.
//
// Watch/Unwatch maintain the set of watched channels on ONE Watch stream to the owner, opened
// lazily on the control thread when the first channel is watched and kept (idle) when none is.
// Each add carries a token; the owner's `ready` answer for that token schedules the channel's
// `ready` on the bus thread (never inline, never under a lock). A broken stream is reopened
// with backoff and every watched channel re-added; each channel's `ready` then runs again.
// Every Watch gets a generation: a `ready` runs only if its generation is still the channel's
// current one, checked on the bus thread immediately before the call. So once Unwatch (or a
// new Watch of the channel) returned, the old `ready` is never started; one that had already
// started may still be running when Unwatch returns (Unwatch does not wait for it: callers
// hold their locks, and the `ready` may take them).
//
// Thread-safety: every method may be called from any thread; handlers and `ready` may call
// Publish/Watch/Unwatch/Subscribe, but not Unsubscribe (it waits for running handlers).
// Lifetime: the destructor cancels the calls, waits for gRPC to complete them and joins both
// threads; no handler or `ready` runs after it returns. Queued events are dropped. Destroy it
// from a thread of your own (not a handler, `ready` or gRPC callback). The bus keeps its
// channel reference until every call is deleted, so the channel is never destroyed on a gRPC
// callback thread (gRPC 1.51 aborts when its callback CQ is torn down from its own thread).
//
// Traces (docs/adr/0010): an event that carries a sampled publisher's traceparent gets a
// CONSUMER span "chat.messages receive" here, from its arrival until the handlers ran, and the
// handlers run inside it (SpanScope); Publish sends the caller's current span context along.
// Metrics (docs/adr/0010), per process: infrachat_bus_publishes_dropped_total,
// infrachat_bus_watch_streams_opened_total (reconnects show as its rate) and
// infrachat_bus_event_lag_seconds (commit time at the shard to arrival here, per message).
//
// While the owner is down the Watch stream waits for it (wait_for_ready) and is re-opened with
// backoff when it ends. Not yet: keepalive pings to detect a half-open connection (they need
// the internal listener to permit them, see PITFALLS), TLS (the caller makes the channel).
//
// The channel should be made with ChannelArguments() so gRPC's own reconnect backoff matches
// (its default grows to 120 s). One owner for now: the state per owner is grouped in `Owner`,
// so a per-channel owner lookup (channel -> address, one Owner per address) can replace the
// single one without changing the interface.
class GrpcEventBus final : public EventBus {
 public:
  GrpcEventBus(std::shared_ptr<grpc::Channel> owner, GrpcEventBusOptions options = {});
  ~GrpcEventBus() override;

  GrpcEventBus(const GrpcEventBus&) = delete;
  GrpcEventBus& operator=(const GrpcEventBus&) = delete;

  void Publish(BusEvent event) override;
  SubscriptionId Subscribe(Handler handler) override;
  void Unsubscribe(SubscriptionId id) override;
  void Watch(const std::string& channel, Ready ready) override;
  void Unwatch(const std::string& channel) override;

  // Channel arguments for the channel to the owner: gRPC's reconnect backoff as in `options`.
  static grpc::ChannelArguments ChannelArguments(const GrpcEventBusOptions& options = {});

  // Monitoring and tests.
  std::uint64_t dropped_publishes() const;
  std::uint64_t watch_streams_opened() const;

 private:
  class WatchCall;
  struct PublishCall;

  // One Watch's state. `generation` identifies it: a `ready` of another generation is stale.
  struct Watched {
    std::shared_ptr<const Ready> ready;
    std::uint64_t generation = 0;
  };
  // A `ready` scheduled on the bus thread, checked against watched_ there.
  struct ReadyItem {
    std::string channel;
    std::uint64_t generation = 0;
  };
  // A received event with its receive span (recording when the publisher's work is sampled).
  struct Received {
    BusEvent event;
    Span span;
  };
  using Item = std::variant<Received, ReadyItem>;

  // Everything about one owner process. Guarded by mu_.
  struct Owner {
    std::unique_ptr<internal::v1::EventStream::Stub> stub;
    WatchCall* stream = nullptr;  // the live Watch call, until its OnDone
    bool read_paused = false;     // stream has no read in flight because pending_ is full
    std::chrono::steady_clock::time_point reconnect_at{};
    std::chrono::milliseconds backoff{0};
    std::deque<internal::v1::BusEvent> publishes;  // waiting, in publish order
    PublishCall* publishing = nullptr;             // the call in flight
  };

  void RunDispatcher();
  void RunControl();

  // Require mu_.
  Owner& OwnerOfLocked(const std::string& channel);
  void OpenStreamLocked(Owner& owner);
  void StartPublishLocked(Owner& owner);
  void EnqueueLocked(Item item);

  // From gRPC's threads.
  void OnWatchResponse(WatchCall* call, bool ok);
  void OnWatchDone(WatchCall* call, const grpc::Status& status);
  void OnPublishDone(PublishCall* call, const grpc::Status& status);
  // The last thing a call does, after deleting itself (its context holds a channel reference).
  void CallFinished();

  const GrpcEventBusOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  struct Metrics {
    Metrics();
    prometheus::Counter* dropped;
    prometheus::Counter* streams_opened;
    prometheus::Histogram* lag;
  } const metrics_;

  mutable std::mutex mu_;
  std::condition_variable dispatch_cv_;
  std::condition_variable control_cv_;
  std::condition_variable calls_cv_;
  bool stopping_ = false;
  Owner owner_;
  std::map<std::string, Watched> watched_;
  std::uint64_t next_generation_ = 1;
  std::uint64_t next_token_ = 1;
  std::deque<Item> pending_;    // for the bus thread
  std::size_t live_calls_ = 0;  // gRPC calls not yet deleted
  std::uint64_t dropped_publishes_ = 0;
  std::uint64_t streams_opened_ = 0;

  std::shared_mutex handlers_mu_;  // held shared while handlers run
  std::map<SubscriptionId, Handler> handlers_;
  SubscriptionId next_id_ = 1;

  std::thread dispatcher_;
  std::thread control_;
};

}  // namespace infrachat::bus_grpc
