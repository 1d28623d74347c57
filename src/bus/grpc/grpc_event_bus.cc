#include "grpc_event_bus.h"

#include <prometheus/family.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "bus_codec.h"
#include "infrachat/core/logging.h"
#include "infrachat/core/metrics.h"

namespace infrachat::bus_grpc {

using internal::v1::WatchRequest;
using internal::v1::WatchResponse;

// The one Watch call to an owner. Owned by gRPC from creation until OnDone, which reports to
// the bus and deletes it. Its state is guarded by the bus's mu_ (client reactions never run
// inline, so starting operations under mu_ is safe).
class GrpcEventBus::WatchCall final : public grpc::ClientBidiReactor<WatchRequest, WatchResponse> {
 public:
  WatchCall(GrpcEventBus* bus, internal::v1::EventStream::Stub* stub) : bus_(bus) {
    // Wait for the owner to come back rather than failing at once; our own backoff is for
    // streams that end.
    context_.set_wait_for_ready(true);
    stub->async()->Watch(&context_, this);
  }

  // All below require the bus's mu_.
  void Start() {
    StartRead(&in);
    StartCall();
  }
  void Read() { StartRead(&in); }
  void Send(WatchRequest request) {
    if (broken_) return;  // OnDone follows; the reconnect re-adds everything
    out_.push_back(std::move(request));
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());  // a deque: the front stays put while requests are appended
    }
  }
  void Cancel() { context_.TryCancel(); }

  WatchResponse in;  // the one read in flight
  // token -> the watches it puts in place, for the owner's `ready` answer.
  std::map<std::uint64_t, std::vector<ReadyItem>> tokens;
  bool answered = false;  // the owner answered at least once

 private:
  void OnReadDone(bool ok) override { bus_->OnWatchResponse(this, ok); }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(bus_->mu_);
    out_.pop_front();
    if (!ok) {
      broken_ = true;
      out_.clear();
    }
    if (!out_.empty()) {
      StartWrite(&out_.front());
    } else {
      writing_ = false;
    }
  }

  void OnDone(const grpc::Status& status) override {
    GrpcEventBus* bus = bus_;
    bus->OnWatchDone(this, status);
    // The context holds a reference to the channel: it must go while the bus still holds its
    // own, so the channel is never destroyed on gRPC's callback thread (that tears down the
    // callback CQ from one of its own threads and aborts).
    delete this;
    bus->CallFinished();
  }

  GrpcEventBus* const bus_;
  grpc::ClientContext context_;
  std::deque<WatchRequest> out_;  // front is being written while writing_
  bool writing_ = false;
  bool broken_ = false;
};

struct GrpcEventBus::PublishCall {
  grpc::ClientContext context;
  internal::v1::BusEvent request;
  internal::v1::Empty response;
};

GrpcEventBus::Metrics::Metrics() {
  dropped = &prometheus::BuildCounter()
                 .Name("infrachat_bus_publishes_dropped_total")
                 .Help(
                     "Events (typing, presence) not delivered to the channel's owner process: "
                     "its queue was full or it could not be reached")
                 .Register(MetricsRegistry())
                 .Add({});
  streams_opened = &prometheus::BuildCounter()
                        .Name("infrachat_bus_watch_streams_opened_total")
                        .Help(
                            "Event streams opened to shard processes (one each, plus one per "
                            "reconnect)")
                        .Register(MetricsRegistry())
                        .Add({});
  // From the message's commit time at the shard to its arrival here: the hop's delay (plus
  // clock skew between the hosts).
  lag = &prometheus::BuildHistogram()
             .Name("infrachat_bus_event_lag_seconds")
             .Help("Age of committed messages arriving from a shard process's event stream")
             .Register(MetricsRegistry())
             .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025,
                                                              0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
}

GrpcEventBus::GrpcEventBus(std::shared_ptr<grpc::Channel> owner, GrpcEventBusOptions options)
    : options_(options), log_(ModuleLogger("bus")) {
  owner_.stub = internal::v1::EventStream::NewStub(std::move(owner));
  owner_.backoff = options_.reconnect_initial;
  dispatcher_ = std::thread([this] { RunDispatcher(); });
  control_ = std::thread([this] { RunControl(); });
}

GrpcEventBus::~GrpcEventBus() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    if (owner_.stream != nullptr) owner_.stream->Cancel();
    if (owner_.publishing != nullptr) owner_.publishing->context.TryCancel();
    owner_.publishes.clear();
    pending_.clear();
  }
  dispatch_cv_.notify_all();
  control_cv_.notify_all();
  control_.join();
  dispatcher_.join();
  std::unique_lock lock(mu_);
  calls_cv_.wait(lock, [&] { return live_calls_ == 0; });
}

grpc::ChannelArguments GrpcEventBus::ChannelArguments(const GrpcEventBusOptions& options) {
  grpc::ChannelArguments args;
  const int initial = static_cast<int>(options.reconnect_initial.count());
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, initial);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, initial);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(options.reconnect_max.count()));
  return args;
}

std::uint64_t GrpcEventBus::dropped_publishes() const {
  std::lock_guard lock(mu_);
  return dropped_publishes_;
}

std::uint64_t GrpcEventBus::watch_streams_opened() const {
  std::lock_guard lock(mu_);
  return streams_opened_;
}

// ---- EventBus -------------------------------------------------------------------------------

void GrpcEventBus::Publish(BusEvent event) {
  internal::v1::BusEvent proto = ToProto(event);
  if (const SpanContext& trace = CurrentSpan(); trace.sampled) {
    proto.set_traceparent(trace.TraceParent());
  }
  std::lock_guard lock(mu_);
  if (stopping_) return;
  Owner& owner = OwnerOfLocked(EventChannel(event));
  if (owner.publishes.size() >= options_.max_queued_publishes) {
    metrics_.dropped->Increment();
    if (dropped_publishes_++ % 1000 == 0) {
      log_->warn("event bus: {} events queued for the owner; dropping ({} dropped so far)",
                 owner.publishes.size(), dropped_publishes_);
    }
    return;
  }
  owner.publishes.push_back(std::move(proto));
  if (owner.publishing == nullptr) StartPublishLocked(owner);
}

EventBus::SubscriptionId GrpcEventBus::Subscribe(Handler handler) {
  std::unique_lock lock(handlers_mu_);
  const SubscriptionId id = next_id_++;
  handlers_.emplace(id, std::move(handler));
  return id;
}

void GrpcEventBus::Unsubscribe(SubscriptionId id) {
  std::unique_lock lock(handlers_mu_);  // waits for a running dispatch to finish
  handlers_.erase(id);
}

void GrpcEventBus::Watch(const std::string& channel, Ready ready) {
  std::lock_guard lock(mu_);
  if (stopping_) return;
  const std::uint64_t generation = next_generation_++;
  watched_[channel] = Watched{std::make_shared<const Ready>(std::move(ready)), generation};
  Owner& owner = OwnerOfLocked(channel);
  if (owner.stream == nullptr) {
    control_cv_.notify_one();  // the control thread opens it with every watched channel
    return;
  }
  WatchRequest request;
  request.add_add(channel);
  const std::uint64_t token = next_token_++;
  request.set_token(token);
  owner.stream->tokens[token].push_back(ReadyItem{channel, generation});
  owner.stream->Send(std::move(request));
}

void GrpcEventBus::Unwatch(const std::string& channel) {
  std::lock_guard lock(mu_);
  auto it = watched_.find(channel);
  if (it == watched_.end()) return;
  watched_.erase(it);  // from now on no `ready` of it starts (generation check)
  Owner& owner = OwnerOfLocked(channel);
  if (owner.stream == nullptr) return;
  WatchRequest request;
  request.add_remove(channel);  // token 0: nobody waits for this answer
  owner.stream->Send(std::move(request));
}

// ---- internals ------------------------------------------------------------------------------

GrpcEventBus::Owner& GrpcEventBus::OwnerOfLocked(const std::string& /*channel*/) { return owner_; }

void GrpcEventBus::EnqueueLocked(Item item) {
  pending_.push_back(std::move(item));
  dispatch_cv_.notify_one();
}

void GrpcEventBus::OpenStreamLocked(Owner& owner) {
  auto* call = new WatchCall(this, owner.stub.get());
  ++live_calls_;
  ++streams_opened_;
  metrics_.streams_opened->Increment();
  owner.stream = call;
  owner.read_paused = false;
  // Re-add every watched channel, in requests of bounded size (the owner's receive limit).
  constexpr int kMaxChannelsPerRequest = 1000;
  WatchRequest request;
  auto send = [&] {
    const std::uint64_t token = next_token_++;
    request.set_token(token);
    auto& items = call->tokens[token];
    for (const std::string& channel : request.add()) {
      items.push_back(ReadyItem{channel, watched_.at(channel).generation});
    }
    call->Send(std::move(request));
    request = WatchRequest();
  };
  for (const auto& [channel, watched] : watched_) {
    if (&OwnerOfLocked(channel) != &owner) continue;
    request.add_add(channel);
    if (request.add_size() >= kMaxChannelsPerRequest) send();
  }
  if (request.add_size() > 0) send();
  call->Start();
}

void GrpcEventBus::StartPublishLocked(Owner& owner) {
  auto* call = new PublishCall;
  call->request = std::move(owner.publishes.front());
  owner.publishes.pop_front();
  call->context.set_deadline(std::chrono::system_clock::now() + options_.publish_deadline);
  ++live_calls_;
  owner.publishing = call;
  owner.stub->async()->Publish(&call->context, &call->request, &call->response,
                               [this, call](grpc::Status status) { OnPublishDone(call, status); });
}

void GrpcEventBus::OnPublishDone(PublishCall* call, const grpc::Status& status) {
  {
    std::lock_guard lock(mu_);
    Owner& owner = owner_;
    if (!status.ok() && !stopping_) {
      metrics_.dropped->Increment();
      if (dropped_publishes_++ % 1000 == 0) {
        log_->warn("event bus: publishing to the owner failed ({} {}); event dropped ({} so far)",
                   static_cast<int>(status.error_code()), status.error_message(),
                   dropped_publishes_);
      }
    }
    owner.publishing = nullptr;
    if (!stopping_ && !owner.publishes.empty()) StartPublishLocked(owner);
  }
  delete call;  // before CallFinished: see WatchCall::OnDone
  CallFinished();
}

void GrpcEventBus::CallFinished() {
  std::lock_guard lock(mu_);
  --live_calls_;
  calls_cv_.notify_all();  // under mu_: the destructor may return as soon as it is released
}

void GrpcEventBus::OnWatchResponse(WatchCall* call, bool ok) {
  std::lock_guard lock(mu_);
  if (!ok) return;  // the stream ended; OnDone follows
  Owner& owner = owner_;
  const WatchResponse& response = call->in;
  if (response.has_event()) {
    if (response.event().has_message()) {
      const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
      const auto age_ms = now_ms - response.event().message().sent_at_unix_ms();
      metrics_.lag->Observe(static_cast<double>(std::max<std::int64_t>(age_ms, 0)) / 1000);
    }
    if (std::optional<BusEvent> event = FromProto(response.event())) {
      Span span;
      if (!response.event().traceparent().empty()) {
        if (auto parent = ParseTraceParent(response.event().traceparent())) {
          span = StartSpan("chat.messages receive", SpanKind::kConsumer, *parent);
          span.SetAttribute("messaging.system", "infrachat");
          span.SetAttribute("messaging.operation", "receive");
        }
      }
      EnqueueLocked(Received{std::move(*event), std::move(span)});
    }
  } else if (response.response_case() == WatchResponse::kReady) {
    call->answered = true;
    owner.backoff = options_.reconnect_initial;
    auto it = call->tokens.find(response.ready());
    if (it != call->tokens.end()) {
      for (ReadyItem& item : it->second) EnqueueLocked(std::move(item));
      call->tokens.erase(it);
    }
  }
  if (pending_.size() >= options_.max_pending_events) {
    owner.read_paused = true;  // the bus thread resumes reading once it caught up
  } else {
    call->Read();
  }
}

void GrpcEventBus::OnWatchDone(WatchCall* call, const grpc::Status& status) {
  std::lock_guard lock(mu_);
  Owner& owner = owner_;
  if (owner.stream == call) {
    owner.stream = nullptr;
    owner.read_paused = false;
    if (!stopping_) {
      const auto delay = owner.backoff;
      owner.backoff = std::min(delay * 2, options_.reconnect_max);
      owner.reconnect_at = std::chrono::steady_clock::now() + delay;
      // Once per stream that worked, not once per failed reopening while the owner is away
      // (the cluster log's "peer lost" / "peer connected" tell the outage).
      log_->log(call->answered ? spdlog::level::warn : spdlog::level::debug,
                "event bus: watch stream to the owner ended ({} {}); reopening in {} ms",
                static_cast<int>(status.error_code()), status.error_message(), delay.count());
      control_cv_.notify_one();
    }
  }
}

void GrpcEventBus::RunControl() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    Owner& owner = owner_;
    if (owner.stream != nullptr || watched_.empty()) {
      control_cv_.wait(lock);
      continue;
    }
    if (std::chrono::steady_clock::now() < owner.reconnect_at) {
      control_cv_.wait_until(lock, owner.reconnect_at);
      continue;
    }
    OpenStreamLocked(owner);
  }
}

void GrpcEventBus::RunDispatcher() {
  for (;;) {
    Item item;
    std::shared_ptr<const Ready> ready;
    {
      std::unique_lock lock(mu_);
      dispatch_cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (stopping_) return;
      item = std::move(pending_.front());
      pending_.pop_front();
      Owner& owner = owner_;
      if (owner.read_paused && owner.stream != nullptr &&
          pending_.size() <= options_.max_pending_events / 2) {
        owner.read_paused = false;
        owner.stream->Read();
      }
      if (auto* r = std::get_if<ReadyItem>(&item)) {
        // The generation check and the decision to run are one step under mu_: after Unwatch
        // (or a newer Watch) took mu_, this watch's `ready` does not start.
        auto it = watched_.find(r->channel);
        if (it == watched_.end() || it->second.generation != r->generation) continue;
        ready = it->second.ready;
      }
    }
    if (ready) {
      if (*ready) (*ready)();
      continue;
    }
    Received& received = std::get<Received>(item);
    {
      SpanScope scope(received.span.context());
      std::shared_lock lock(handlers_mu_);
      for (auto& [id, handler] : handlers_) handler(received.event);
    }
    received.span.End();
  }
}

}  // namespace infrachat::bus_grpc
