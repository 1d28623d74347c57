#include "gateway_module.h"

#include <prometheus/family.h>

#include <chrono>
#include <set>
#include <unordered_map>

#include "chat_stream.h"
#include "infrachat/api/router_api.h"
#include "infrachat/core/logging.h"
#include "infrachat/core/metrics.h"
#include "unary_services.h"

namespace infrachat {

namespace {

// Connect in its raw form: the stream parses ClientFrames itself and writes frames encoded once
// for all their streams (see ChatStream). The wire contract is the same.
class ChatServiceImpl final
    : public v1::ChatService::WithRawCallbackMethod_Connect<v1::ChatService::Service> {
 public:
  explicit ChatServiceImpl(gateway::StreamDeps deps) : deps_(std::move(deps)) {}
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Connect(
      grpc::CallbackServerContext* context) override {
    return gateway::ChatStream::Open(context, deps_);
  }

 private:
  const gateway::StreamDeps deps_;
};

class GatewayModule final : public Module {
 public:
  std::string_view name() const override { return "gateway"; }

  void Start(ModuleContext& ctx) override {
    const DaemonConfig& config = ctx.config();
    log_ = ModuleLogger("gateway");
    auth_ = &ctx.auth();
    check_interval_ = std::chrono::seconds(config.auth.revocation_check_interval_s);
    grace_ = std::chrono::seconds(config.grpc.shutdown_grace_s);
    executor_ = std::make_unique<Executor>(4, "gateway");
    writes_ = std::make_unique<WriteScheduler>();

    gateway::StreamDeps deps;
    deps.auth = auth_;
    deps.shard = &ctx.shard();
    deps.fanout = &ctx.fanout();
    deps.bus = &ctx.bus();
    deps.executor = executor_.get();
    deps.writes = writes_.get();
    deps.registry = &registry_;
    deps.sends = &send_counters_;
    deps.write_queue = &prometheus::BuildHistogram()
                            .Name("infrachat_gateway_write_queue_frames")
                            .Help(
                                "Frames queued on a stream when a write starts: above 1, the "
                                "client is behind or the stream is busy (batches form)")
                            .Register(MetricsRegistry())
                            .Add({}, prometheus::Histogram::BucketBoundaries{
                                         1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048});
    deps.log = log_;
    const LimitsConfig& limits = config.limits;
    deps.limits.queue_frames = static_cast<std::size_t>(limits.session_queue_frames);
    deps.limits.max_inflight_sends = static_cast<std::size_t>(limits.max_inflight_sends);
    deps.limits.send_rate_per_s = limits.send_rate_per_s;
    deps.limits.send_burst = limits.send_burst;
    deps.limits.max_subscriptions = static_cast<std::size_t>(limits.max_subscriptions_per_stream);
    deps.limits.max_body_bytes = static_cast<std::size_t>(limits.max_body_bytes);
    deps.limits.max_streams = static_cast<std::size_t>(limits.max_streams);
    deps.limits.max_frame_bytes = static_cast<std::size_t>(config.grpc.max_receive_message_bytes);

    auth_service_ = std::make_unique<gateway::AuthServiceImpl>(auth_);
    router_service_ = std::make_unique<gateway::RouterServiceImpl>(auth_, &ctx.router());
    channel_service_ =
        std::make_unique<gateway::ChannelServiceImpl>(auth_, &ctx.shard(), deps.fanout);
    chat_service_ = std::make_unique<ChatServiceImpl>(deps);
    ScheduleSweep();
  }

  std::vector<std::string> RegisterServices(grpc::ServerBuilder& builder) override {
    builder.RegisterService(auth_service_.get());
    builder.RegisterService(router_service_.get());
    builder.RegisterService(channel_service_.get());
    builder.RegisterService(chat_service_.get());
    return {v1::AuthService::service_full_name(), v1::RouterService::service_full_name(),
            v1::ChannelService::service_full_name(), v1::ChatService::service_full_name()};
  }

  void BeginShutdown() override {
    const auto streams = registry_.Snapshot();
    log_->info("draining {} streams", streams.size());
    for (const auto& stream : streams) stream->BeginDrain();
    // Server::Shutdown (next) sends GOAWAY and closes each connection as soon as its last call
    // ends, while a client may still be writing: the reset then discards final acks the client
    // had not read yet. Streams that end before it are read to their status by the clients.
    if (!registry_.WaitUntilEmpty(std::chrono::steady_clock::now() + grace_)) {
      log_->warn("{} streams still draining after {} s", registry_.size(), grace_.count());
    }
  }

  void Stop() override {
    executor_->Stop();
    writes_->Stop();  // later frames (none are expected) are written inline
  }

 private:
  void ScheduleSweep() {
    executor_->PostAfter(check_interval_, [this] {
      Sweep();
      ScheduleSweep();
    });
  }

  // Ends streams whose access token expired or whose session was revoked (logout, token reuse).
  // One batched check for all distinct sessions per interval, however many streams they have
  // (one round trip when auth runs in another process).
  void Sweep() {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    std::vector<std::shared_ptr<gateway::ChatStream>> live;
    std::set<std::string> sessions;
    for (auto& stream : registry_.Snapshot()) {
      if (stream->principal().expires_at_unix <= now) {
        stream->End(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                 "access token expired; refresh it and reconnect"));
        continue;
      }
      sessions.insert(stream->principal().session_id);
      live.push_back(std::move(stream));
    }
    if (live.empty()) return;
    auto active = auth_->ActiveSessions(CallContext::Background(check_interval_),
                                        {sessions.begin(), sessions.end()});
    // When auth cannot answer, streams stay up: expiry still bounds them.
    if (!active.ok()) {
      log_->warn("session check failed, streams stay up: {}", active.error().message);
      return;
    }
    const std::set<std::string> still(active->begin(), active->end());
    for (const auto& stream : live) {
      if (still.count(stream->principal().session_id) == 0) {
        stream->End(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "session revoked"));
      }
    }
  }

  std::shared_ptr<spdlog::logger> log_;
  AuthApi* auth_ = nullptr;
  std::chrono::seconds check_interval_{5};
  std::chrono::seconds grace_{10};
  // Families are registered once per process (a second gateway module in one process, as in
  // tests, shares them: prometheus-cpp returns the existing family for the same name).
  gateway::SendCounters send_counters_{MetricsRegistry()};
  gateway::StreamRegistry registry_{&prometheus::BuildGauge()
                                         .Name("infrachat_gateway_streams_active")
                                         .Help("Open ChatService.Connect streams")
                                         .Register(MetricsRegistry())
                                         .Add({})};
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<WriteScheduler> writes_;
  std::unique_ptr<gateway::AuthServiceImpl> auth_service_;
  std::unique_ptr<gateway::RouterServiceImpl> router_service_;
  std::unique_ptr<gateway::ChannelServiceImpl> channel_service_;
  std::unique_ptr<ChatServiceImpl> chat_service_;
};

}  // namespace

std::unique_ptr<Module> MakeGatewayModule() { return std::make_unique<GatewayModule>(); }

}  // namespace infrachat
