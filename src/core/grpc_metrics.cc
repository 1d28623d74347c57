#include "infrachat/core/grpc_metrics.h"

#include <google/protobuf/descriptor.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>

#include <array>
#include <atomic>
#include <chrono>
#include <mutex>
#include <unordered_map>

#include "infrachat/core/metrics.h"

namespace infrachat {

namespace {

using grpc::experimental::InterceptionHookPoints;
using Clock = std::chrono::steady_clock;

constexpr std::array<std::string_view, 17> kCodeNames = {
    "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated"};

// go-grpc-prometheus's default buckets (prometheus.DefBuckets), in seconds.
const prometheus::Histogram::BucketBoundaries& DefaultBuckets() {
  static const prometheus::Histogram::BucketBoundaries buckets = {
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return buckets;
}

std::string_view TypeName(grpc::internal::RpcMethod::RpcType type) {
  switch (type) {
    case grpc::internal::RpcMethod::NORMAL_RPC:
      return "unary";
    case grpc::internal::RpcMethod::CLIENT_STREAMING:
      return "client_stream";
    case grpc::internal::RpcMethod::SERVER_STREAMING:
      return "server_stream";
    case grpc::internal::RpcMethod::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unknown";
}

struct MethodName {
  std::string service = "unknown";
  std::string method = "unknown";
};

// "/pkg.Service/Method" as labels, when it names a method this build serves or calls. gRPC's
// default health service is not in the generated pool (it is built on upb), hence the extra
// case; anything else a client may have typed is "unknown", so labels stay a bounded set.
MethodName ParseMethod(const char* full) {
  MethodName name;
  if (full == nullptr) return name;
  const std::string_view text(full);
  const auto slash = text.rfind('/');
  if (text.size() < 4 || text.front() != '/' || slash == 0 || slash == std::string_view::npos) {
    return name;
  }
  const std::string service(text.substr(1, slash - 1));
  const std::string method(text.substr(slash + 1));
  bool known = false;
  if (service == "grpc.health.v1.Health") {
    known = method == "Check" || method == "Watch";
  } else if (const auto* descriptor =
                 google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service)) {
    known = descriptor->FindMethodByName(method) != nullptr;
  }
  if (known) name = MethodName{service, method};
  return name;
}

// The metrics of one method of one side (and one peer, for clients), resolved once: a call
// then costs a map lookup and atomic increments, never a family's label-hashing lookup.
struct MethodMetrics {
  prometheus::Family<prometheus::Counter>* handled_family = nullptr;
  prometheus::Labels labels;                  // of handled, without grpc_code
  prometheus::Counter* started = nullptr;     // server side only
  prometheus::Histogram* handling = nullptr;  // null: not observed (client streams)
  std::array<std::atomic<prometheus::Counter*>, kCodeNames.size()> handled{};

  void Handled(int code, Clock::time_point start) {
    const std::size_t index =
        code >= 0 && static_cast<std::size_t>(code) < kCodeNames.size() ? code : 2;
    prometheus::Counter* counter = handled[index].load(std::memory_order_acquire);
    if (counter == nullptr) {
      prometheus::Labels with_code = labels;
      with_code.emplace("grpc_code", std::string(kCodeNames[index]));
      counter = &handled_family->Add(with_code);  // idempotent: a race adds the same counter
      handled[index].store(counter, std::memory_order_release);
    }
    counter->Increment();
    if (handling != nullptr) {
      handling->Observe(std::chrono::duration<double>(Clock::now() - start).count());
    }
  }
};

// Keyed by everything that makes a label set; entries are never removed (a bounded set).
class MethodTable {
 public:
  template <typename Make>
  MethodMetrics* Get(const std::string& key, Make make) {
    std::lock_guard lock(mu_);
    auto& entry = table_[key];
    if (!entry) entry = make();
    return entry.get();
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<MethodMetrics>> table_;
};

struct ServerFamilies {
  prometheus::Family<prometheus::Counter>& started = prometheus::BuildCounter()
                                                         .Name("grpc_server_started_total")
                                                         .Help("RPCs started on the server")
                                                         .Register(MetricsRegistry());
  prometheus::Family<prometheus::Counter>& handled =
      prometheus::BuildCounter()
          .Name("grpc_server_handled_total")
          .Help("RPCs completed on the server, by status code (streams when they end)")
          .Register(MetricsRegistry());
  prometheus::Family<prometheus::Histogram>& handling =
      prometheus::BuildHistogram()
          .Name("grpc_server_handling_seconds")
          .Help("Time from the start of an RPC to its status on the server (a stream's life)")
          .Register(MetricsRegistry());
  MethodTable methods;
};

struct ClientFamilies {
  prometheus::Family<prometheus::Counter>& handled =
      prometheus::BuildCounter()
          .Name("infrachat_cluster_client_handled_total")
          .Help(
              "Calls to another InfraChat process's internal listener, by peer and status "
              "code (streams when they end)")
          .Register(MetricsRegistry());
  prometheus::Family<prometheus::Histogram>& handling =
      prometheus::BuildHistogram()
          .Name("infrachat_cluster_client_handling_seconds")
          .Help("Latency of unary calls to another InfraChat process, by peer and method")
          .Register(MetricsRegistry());
  MethodTable methods;
};

ServerFamilies& Server() {
  static ServerFamilies* families = new ServerFamilies();  // lives until exit, like the registry
  return *families;
}

ClientFamilies& Client() {
  static ClientFamilies* families = new ClientFamilies();
  return *families;
}

// Counts one call at its status; a call that ends without one (torn down) counts as Canceled,
// so that started and handled always agree.
class CallInterceptor final : public grpc::experimental::Interceptor {
 public:
  CallInterceptor(MethodMetrics* metrics, InterceptionHookPoints status_point)
      : metrics_(metrics), status_point_(status_point), start_(Clock::now()) {}

  ~CallInterceptor() override {
    if (!counted_) metrics_->Handled(grpc::StatusCode::CANCELLED, start_);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (!counted_ && methods->QueryInterceptionHookPoint(status_point_)) {
      int code = grpc::StatusCode::UNKNOWN;
      if (status_point_ == InterceptionHookPoints::PRE_SEND_STATUS) {
        code = methods->GetSendStatus().error_code();
      } else if (const grpc::Status* status = methods->GetRecvStatus()) {
        code = status->error_code();
      }
      counted_ = true;
      metrics_->Handled(code, start_);
    }
    methods->Proceed();
  }

 private:
  MethodMetrics* const metrics_;
  const InterceptionHookPoints status_point_;
  const Clock::time_point start_;
  bool counted_ = false;  // batches of one call are intercepted one at a time
};

class ServerFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const auto type = static_cast<grpc::internal::RpcMethod::RpcType>(info->type());
    const char* full = info->method();
    const std::string key = std::string(TypeName(type)) + ' ' + (full ? full : "");
    ServerFamilies& families = Server();
    MethodMetrics* metrics = families.methods.Get(key, [&] {
      const MethodName name = ParseMethod(full);
      auto m = std::make_unique<MethodMetrics>();
      m->labels = {{"grpc_type", std::string(TypeName(type))},
                   {"grpc_service", name.service},
                   {"grpc_method", name.method}};
      m->handled_family = &families.handled;
      m->started = &families.started.Add(m->labels);
      m->handling = &families.handling.Add(m->labels, DefaultBuckets());
      return m;
    });
    metrics->started->Increment();
    return new CallInterceptor(metrics, InterceptionHookPoints::PRE_SEND_STATUS);
  }
};

class ClientFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit ClientFactory(std::string peer) : peer_(std::move(peer)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    if (info->type() == grpc::experimental::ClientRpcInfo::Type::UNKNOWN) return nullptr;
    const auto type = static_cast<grpc::internal::RpcMethod::RpcType>(info->type());
    const char* full = info->method();
    const std::string key = peer_ + ' ' + std::string(TypeName(type)) + ' ' + (full ? full : "");
    ClientFamilies& families = Client();
    MethodMetrics* metrics = families.methods.Get(key, [&] {
      const MethodName name = ParseMethod(full);
      auto m = std::make_unique<MethodMetrics>();
      m->labels = {{"peer", peer_},
                   {"grpc_type", std::string(TypeName(type))},
                   {"grpc_service", name.service},
                   {"grpc_method", name.method}};
      m->handled_family = &families.handled;
      // A stream's life says nothing about the peer's latency: only unary calls are timed.
      if (type == grpc::internal::RpcMethod::NORMAL_RPC) {
        m->handling = &families.handling.Add(
            {{"peer", peer_}, {"grpc_service", name.service}, {"grpc_method", name.method}},
            DefaultBuckets());
      }
      return m;
    });
    return new CallInterceptor(metrics, InterceptionHookPoints::POST_RECV_STATUS);
  }

 private:
  const std::string peer_;
};

}  // namespace

std::string_view GrpcCodeName(int code) {
  if (code < 0 || static_cast<std::size_t>(code) >= kCodeNames.size()) return "Unknown";
  return kCodeNames[code];
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerMetricsInterceptor() {
  return std::make_unique<ServerFactory>();
}

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface> MakeClientMetricsInterceptor(
    std::string peer) {
  return std::make_unique<ClientFactory>(std::move(peer));
}

}  // namespace infrachat
