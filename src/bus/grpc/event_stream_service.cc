#include "event_stream_service.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>

#include <deque>
#include <utility>

#include "bus_codec.h"
#include "infrachat/core/logging.h"
#include "infrachat/core/metrics.h"
#include "infrachat/core/tracing.h"

namespace infrachat::bus_grpc {

using internal::v1::WatchRequest;
using internal::v1::WatchResponse;

// One Watch call. Owned by gRPC from Watch() until OnDone, which unregisters it from the
// service (after that no bus handler can reach it) and deletes it.
class EventStreamService::WatchStream final
    : public grpc::ServerBidiReactor<WatchRequest, WatchResponse> {
 public:
  WatchStream(EventStreamService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {}

  void Begin() { StartRead(&in_); }

  // Queues a response behind the write in flight. When the queue is full the stream ends with
  // RESOURCE_EXHAUSTED and its queue is freed. Never blocks. Called under the service's
  // index_mu_, so it is serialized with every other Offer.
  void Offer(const std::shared_ptr<const WatchResponse>& response) {
    std::lock_guard lock(mu_);
    if (finished_) return;
    const std::size_t queued = out_.size() - (writing_ ? 1 : 0);
    if (queued >= service_->options_.max_queued_events) {
      // Keep only the message gRPC is writing (it must stay alive until OnWriteDone).
      while (out_.size() > (writing_ ? 1u : 0u)) out_.pop_back();
      ++service_->overflowed_;
      service_->overflowed_metric_->Increment();
      service_->log_->warn("event stream {}: watcher fell behind ({} queued); ending the stream",
                           context_->peer(), queued);
      FinishLocked(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                "event stream fell behind; reconnect and repair from the log"));
      return;
    }
    out_.push_back(response);
    if (!writing_) {
      writing_ = true;
      StartWrite(out_.front().get());
    }
  }

  // Ends the stream with `status`, dropping what is queued (the watcher repairs from the log).
  // Called under the service's index_mu_.
  void End(const grpc::Status& status) {
    std::lock_guard lock(mu_);
    while (out_.size() > (writing_ ? 1u : 0u)) out_.pop_back();
    FinishLocked(status);
  }

  // The channels this stream watches; guarded by the service's index_mu_.
  std::unordered_set<std::string> channels;

 private:
  void OnReadDone(bool ok) override {
    if (ok) {
      service_->ApplyRequest(this, in_);
      std::lock_guard lock(mu_);
      if (!finished_) StartRead(&in_);
      return;
    }
    // The watcher half-closed, cancelled, or sent something unparsable: no more requests.
    std::lock_guard lock(mu_);
    if (context_->IsCancelled()) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled"));
    } else {
      FinishLocked(grpc::Status::OK);
    }
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    out_.pop_front();
    if (!ok) {
      out_.clear();
      writing_ = false;
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      return;
    }
    if (!out_.empty() && !finished_) {
      StartWrite(out_.front().get());
    } else {
      writing_ = false;
    }
  }

  void OnDone() override {
    service_->StreamDone(this);
    delete this;
  }

  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  EventStreamService* const service_;
  grpc::CallbackServerContext* const context_;
  WatchRequest in_;  // the one read in flight

  std::mutex mu_;
  // Front is the message being written while writing_. shared_ptr: one event, many streams.
  std::deque<std::shared_ptr<const WatchResponse>> out_;
  bool writing_ = false;
  bool finished_ = false;
};

EventStreamService::EventStreamService(EventBus* bus, EventStreamOptions options)
    : bus_(bus),
      options_(options),
      log_(ModuleLogger("bus")),
      overflowed_metric_(&prometheus::BuildCounter()
                              .Name("infrachat_bus_watch_streams_overflowed_total")
                              .Help("Event streams to other processes ended because the "
                                    "watcher fell behind (it repairs from the log)")
                              .Register(MetricsRegistry())
                              .Add({})) {
  subscription_ = bus_->Subscribe([this](const BusEvent& event) { OnBusEvent(event); });
}

EventStreamService::~EventStreamService() {
  bus_->Unsubscribe(subscription_);  // waits for a running OnBusEvent
  std::unique_lock lock(index_mu_);
  streams_cv_.wait(lock, [&] { return streams_.empty(); });
}

std::size_t EventStreamService::active_streams() const {
  std::lock_guard lock(index_mu_);
  return streams_.size();
}

grpc::ServerBidiReactor<WatchRequest, WatchResponse>* EventStreamService::Watch(
    grpc::CallbackServerContext* context) {
  auto* stream = new WatchStream(this, context);
  std::lock_guard lock(index_mu_);
  streams_.insert(stream);
  if (ending_) {
    stream->End(EndingStatus());
  } else {
    stream->Begin();
  }
  return stream;
}

grpc::ServerUnaryReactor* EventStreamService::Publish(grpc::CallbackServerContext* context,
                                                      const internal::v1::BusEvent* request,
                                                      internal::v1::Empty* /*response*/) {
  auto* reactor = context->DefaultReactor();
  std::optional<BusEvent> event = FromProto(*request);
  if (!event) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty BusEvent"));
  } else if (EventChannel(*event).empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "BusEvent without channel"));
  } else {
    const SpanContext trace = ParseTraceParent(request->traceparent()).value_or(SpanContext{});
    SpanScope scope(trace);
    bus_->Publish(std::move(*event));
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::Status EventStreamService::EndingStatus() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "this process is shutting down; watch the channel's new owner");
}

void EventStreamService::EndAll() {
  std::lock_guard lock(index_mu_);
  ending_ = true;
  for (WatchStream* stream : streams_) stream->End(EndingStatus());
}

void EventStreamService::ApplyRequest(WatchStream* stream, const WatchRequest& request) {
  std::lock_guard lock(index_mu_);
  for (const std::string& channel : request.add()) {
    if (stream->channels.insert(channel).second) watchers_[channel].insert(stream);
  }
  for (const std::string& channel : request.remove()) {
    if (stream->channels.erase(channel) == 0) continue;
    auto it = watchers_.find(channel);
    if (it == watchers_.end()) continue;
    it->second.erase(stream);
    if (it->second.empty()) watchers_.erase(it);
  }
  // Under index_mu_: every event the bus handler sees from now on passes the updated filter and
  // is queued behind this answer.
  auto response = std::make_shared<WatchResponse>();
  response->set_ready(request.token());
  stream->Offer(response);
}

void EventStreamService::OnBusEvent(const BusEvent& event) {
  std::lock_guard lock(index_mu_);
  auto it = watchers_.find(EventChannel(event));
  if (it == watchers_.end()) return;
  auto response = std::make_shared<WatchResponse>();
  *response->mutable_event() = ToProto(event);
  // The publisher's span (a sampled send's publish span), for the watchers' receive spans.
  if (const SpanContext& trace = CurrentSpan(); trace.sampled) {
    response->mutable_event()->set_traceparent(trace.TraceParent());
  }
  for (WatchStream* stream : it->second) stream->Offer(response);
}

void EventStreamService::StreamDone(WatchStream* stream) {
  std::lock_guard lock(index_mu_);
  for (const std::string& channel : stream->channels) {
    auto it = watchers_.find(channel);
    if (it == watchers_.end()) continue;
    it->second.erase(stream);
    if (it->second.empty()) watchers_.erase(it);
  }
  stream->channels.clear();
  streams_.erase(stream);
  streams_cv_.notify_all();
}

}  // namespace infrachat::bus_grpc
