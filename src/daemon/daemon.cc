#include "daemon.h"

#include <fmt/ranges.h>
#include <grpc/support/log.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "bus/grpc/event_stream_service.h"
#include "bus/grpc/grpc_event_bus.h"
#include "bus/local/local_event_bus.h"
#include "infrachat/core/executor.h"
#include "infrachat/core/grpc_metrics.h"
#include "infrachat/core/logging.h"
#include "infrachat/core/metrics.h"
#include "infrachat/core/module.h"
#include "infrachat/core/process_metrics.h"
#include "infrachat/core/tracing.h"
#include "infrachat/storage/pg.h"
#include "modules/auth/auth_module.h"
#include "modules/fanout/fanout_module.h"
#include "modules/gateway/gateway_module.h"
#include "modules/router/router_module.h"
#include "modules/shard/shard_module.h"
#include "reflection_v1.h"
#include "remote/auth_client.h"
#include "remote/auth_server.h"
#include "remote/convert.h"
#include "remote/fan_in_bus.h"
#include "remote/peer_monitor.h"
#include "remote/routed_shard.h"
#include "remote/shard_server.h"
#include "tls.h"

extern char** environ;

namespace infrachat {

namespace {

void LogGrpcMessage(gpr_log_func_args* args) {
  static const auto log = ModuleLogger("grpc");
  const auto level = args->severity == GPR_LOG_SEVERITY_ERROR  ? spdlog::level::err
                     : args->severity == GPR_LOG_SEVERITY_INFO ? spdlog::level::info
                                                               : spdlog::level::debug;
  LogEvent(log, level, args->message,
           {{"file", args->file != nullptr ? args->file : ""}, {"line", args->line}});
}

// The built-in modules, in start order (dependencies first). An explicit list: no static
// self-registration that a linker could drop.
std::unique_ptr<Module> MakeModule(const std::string& role) {
  if (role == "auth") return MakeAuthModule();
  if (role == "router") return MakeRouterModule();
  if (role == "shard") return MakeShardModule();
  if (role == "fanout") return MakeFanoutModule();
  if (role == "gateway") return MakeGatewayModule();
  throw std::logic_error("no module for role " + role);
}

// What each role needs from the others, and where it may come from: a module in this process,
// or (for auth and shard) a peer's internal listener (docs/adr/0009). Returns one message per
// unmet need.
std::vector<std::string> CheckPlacement(const DaemonConfig& config) {
  std::vector<std::string> errors;
  const auto local_or_peer = [&](const std::string& role, const std::string& need,
                                 const std::vector<std::string>& peers) {
    if (config.HasRole(role) && !config.HasRole(need) && peers.empty()) {
      errors.push_back(
          fmt::format("role '{}' needs role '{}': run it in this process or set "
                      "peers.{} to its internal address",
                      role, need, need));
    }
  };
  local_or_peer("gateway", "auth", config.peers.auth);
  local_or_peer("gateway", "shard", config.peers.shard);
  local_or_peer("fanout", "shard", config.peers.shard);
  // Fanout delivers to the gateway's streams, and the gateway routes with the router's
  // placement: both live beside a gateway (the edge tier is [gateway, fanout, router]).
  for (const char* need : {"fanout", "router"}) {
    if (config.HasRole("gateway") && !config.HasRole(need)) {
      errors.push_back(fmt::format("role 'gateway' needs role '{}' in the same process", need));
    }
  }
  // A process whose roles serve only other processes must be reachable by them.
  const bool serves_others = config.HasRole("auth") || config.HasRole("shard");
  if (serves_others && !config.HasRole("gateway") && config.grpc.internal_listen_address.empty()) {
    errors.push_back(
        "roles auth and shard serve other processes through the internal listener: set "
        "grpc.internal_listen_address");
  }
  return errors;
}

std::map<std::string, std::string> Environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    if (entry.rfind("INFRACHAT_", 0) != 0) continue;
    auto eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  return env;
}

void ApplyServerOptions(const GrpcConfig& g, grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(g.max_receive_message_bytes);
  builder.SetMaxSendMessageSize(g.max_send_message_bytes);
  // A second process on the same port must fail loudly, not share it silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, g.max_concurrent_streams);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, g.keepalive_time_s * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, g.keepalive_timeout_s * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             g.min_client_ping_interval_s * 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, g.handshake_timeout_s * 1000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, g.max_connection_idle_s * 1000);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, 16 * 1024);
  // grpc_server_* per method and code, on the public and the internal listener alike.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(MakeServerMetricsInterceptor());
  builder.experimental().SetInterceptorCreators(std::move(creators));
}

std::string HostOf(const std::string& address) {
  auto colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

void WriteReadyFile(const std::string& path, const std::string& address,
                    const std::string& internal_address, const std::string& metrics_address) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << "{\"address\":\"" << address << "\",\"internal_address\":\"" << internal_address
        << "\",\"metrics_address\":\"" << metrics_address << "\",\"pid\":" << getpid() << "}\n";
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("cannot write ready file " + path);
  }
}

}  // namespace

// Destroyed in reverse declaration order: servers first, then the services they call, the
// modules, the remote clients and the bus.
struct Daemon::State {
  explicit State(DaemonConfig config) : context(std::move(config)) {}
  ModuleContext context;
  std::unique_ptr<EventBus> bus;  // in process, or the gRPC bus to the shard's process
  std::unique_ptr<pg::ConnectionPool> pool;
  std::unique_ptr<remote::RemoteAuth> remote_auth;
  std::unique_ptr<remote::RoutedShard> remote_shard;
  std::vector<std::unique_ptr<Module>> started;
  std::unique_ptr<Executor> internal_executor;  // blocking work of internal calls
  std::vector<std::unique_ptr<grpc::Service>> internal_services;
  bus_grpc::EventStreamService* event_stream = nullptr;   // in internal_services
  remote::ShardInternalService* shard_service = nullptr;  // in internal_services
  std::unique_ptr<ReflectionV1Service> reflection_v1;     // declared before `server`: outlives it
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<grpc::Server> internal_server;
  std::shared_ptr<prometheus::Collectable> process_metrics;  // the exposer holds a weak_ptr
  std::unique_ptr<prometheus::Exposer> metrics;              // serves MetricsRegistry() over HTTP
  bool shut_down = false;
};

namespace {
// Every connection of every module (pool, group committer, leases) then gives up on a host that
// does not answer and, with a multi-host URL, tries the next (docs/HA.md).
DaemonConfig WithDatabaseTimeouts(DaemonConfig config) {
  config.database.url =
      pg::WithConnectTimeout(config.database.url, config.database.connect_timeout_s);
  return config;
}
}  // namespace

Daemon::Daemon(DaemonConfig config)
    : state_(std::make_unique<State>(WithDatabaseTimeouts(std::move(config)))) {}

Daemon::~Daemon() { Shutdown(); }

void Daemon::Start() {
  const DaemonConfig& config = state_->context.config();
  auto log = ModuleLogger("core");
  if (auto errors = CheckPlacement(config); !errors.empty()) {
    std::string all;
    for (const auto& e : errors) all += "\n  " + e;
    throw std::runtime_error("invalid role combination:" + all);
  }
  // One place decides, per API, the module in this process or a client of a peer's.
  const auto timeout = std::chrono::milliseconds(config.grpc.internal_call_timeout_ms);
  // Built once: every channel to a peer's internal listener is secured the same way.
  const auto internal_credentials = InternalChannelCredentials(config.tls);
  if (!config.HasRole("shard") && !config.peers.shard.empty()) {
    // Each channel's calls go to its owner among the region's shards; its events may come
    // from any of them, so every shard is watched (per watched channel).
    std::map<std::string, std::vector<std::string>> shards_by_region{
        {config.region, config.peers.shard}};
    for (const std::string& entry : config.peers.region_shards) {
      const std::size_t eq = entry.find('=');  // validated: region=host:port
      shards_by_region[entry.substr(0, eq)].push_back(entry.substr(eq + 1));
    }
    auto shards = std::make_unique<remote::RoutedShard>(
        std::move(shards_by_region), config.Regions(), internal_credentials, timeout,
        std::chrono::milliseconds(config.shard.lease_heartbeat_ms));
    auto bus = std::make_unique<remote::FanInEventBus>(
        shards->addresses(), internal_credentials,
        [routed = shards.get()](const std::string& channel) {
          const auto order = routed->Order(channel);
          return order.empty() ? std::string() : order.front();
        });
    // A shard process found by its lease (not in peers.*) is watched from then on too.
    shards->OnDiscovered([fan_in = bus.get(), log](const std::string& address) {
      log->info("shard process at {} found by its lease; watching its events", address);
      fan_in->AddShard(address);
    });
    state_->bus = std::move(bus);
    state_->remote_shard = std::move(shards);
    state_->context.ProvideShard(state_->remote_shard.get());
    state_->context.ProvidePlacement(state_->remote_shard.get());
    log->info("shard role at [{}] in region {}, other regions' shards [{}]; {}",
              fmt::join(config.peers.shard, ", "), config.region,
              fmt::join(config.peers.region_shards, ", "), DescribeInternalChannels(config.tls));
  } else {
    state_->bus = std::make_unique<LocalEventBus>();
  }
  state_->context.ProvideBus(state_->bus.get());
  if (!config.HasRole("auth") && !config.peers.auth.empty()) {
    auto auth_channel = remote::MakeInternalChannel(config.peers.auth.front(), internal_credentials,
                                                    config.peers.auth.front());
    remote::PeerMonitor::Default().Watch(auth_channel, config.peers.auth.front(), "auth");
    state_->remote_auth = std::make_unique<remote::RemoteAuth>(std::move(auth_channel), timeout);
    // Tokens are verified here with auth's public keys; auth may still be starting.
    state_->remote_auth->FetchKeys(std::chrono::steady_clock::now() + std::chrono::seconds(30));
    state_->context.ProvideAuth(state_->remote_auth.get());
    log->info("auth role at {}; verification keys fetched; {}", config.peers.auth.front(),
              DescribeInternalChannels(config.tls));
  }
  if (!config.database.url.empty()) {
    state_->pool =
        std::make_unique<pg::ConnectionPool>(config.database.url, config.database.pool_size);
    state_->context.ProvideDb(state_->pool.get());
  }
  try {
    for (const std::string& role : AllRoles()) {
      if (!config.HasRole(role)) continue;
      auto module = MakeModule(role);
      log->info("starting module {}", role);
      module->Start(state_->context);
      state_->started.push_back(std::move(module));
    }

    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    ApplyServerOptions(config.grpc, builder);
    int port = 0;
    const ListenerSecurity security = PublicListenerSecurity(config.tls);
    builder.AddListeningPort(config.grpc.listen_address, security.credentials, &port);
    std::vector<std::string> services;
    for (auto& module : state_->started) {
      for (auto& name : module->RegisterServices(builder)) services.push_back(std::move(name));
    }
    // Reflection v1 beside gRPC's v1alpha plugin (Debian's gRPC 1.51 has only v1alpha).
    std::vector<std::string> reflected = services;
    reflected.insert(reflected.end(),
                     {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                      "grpc.reflection.v1.ServerReflection"});
    state_->reflection_v1 = std::make_unique<ReflectionV1Service>(std::move(reflected));
    builder.RegisterService(state_->reflection_v1.get());
    state_->server = builder.BuildAndStart();
    if (!state_->server || port == 0) {
      throw std::runtime_error("cannot listen on " + config.grpc.listen_address +
                               " (address in use or invalid" +
                               (config.tls.public_port.enabled()
                                    ? ", or tls.public.* is not a matching certificate and key)"
                                    : ")"));
    }
    // Per service, as load balancers and Kubernetes probes ask ("" is the whole server).
    if (auto* health = state_->server->GetHealthCheckService()) {
      for (const auto& name : services) health->SetServingStatus(name, true);
    }
    address_ = HostOf(config.grpc.listen_address) + ":" + std::to_string(port);
    log->info("public listener on {}: {}", address_, security.description);
    if (!config.grpc.internal_listen_address.empty()) StartInternalServer();
    if (!config.metrics.listen_address.empty()) StartMetrics();
    if (!config.tracing.otlp_endpoint.empty()) StartTraceExport();
    state_->context.SetInternalAddress(internal_address_);
    for (auto& module : state_->started) module->OnServing(address_);
    const std::string roles = fmt::format("{}", fmt::join(config.roles, ","));
    LogEvent(log, spdlog::level::info, "serving",
             {{"address", address_},
              {"internal_address", internal_address_},
              {"roles", roles},
              {"region", config.region}});
  } catch (...) {
    Shutdown();
    throw;
  }
}

// Spans of sampled sends to an OTLP/HTTP collector (docs/adr/0010, "Traces"). The resource
// says which process sent them: the same binary runs every role.
void Daemon::StartTraceExport() {
  const DaemonConfig& config = state_->context.config();
  TracingOptions options;
  options.otlp_endpoint = config.tracing.otlp_endpoint;
  options.sample_ratio = config.tracing.sample_ratio;
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  options.resource = {{"service.name", "infrachatd"},
                      {"service.version", INFRACHAT_VERSION},
                      {"service.instance.id", fmt::format("{}/{}", host.data(), getpid())},
                      {"infrachat.roles", fmt::format("{}", fmt::join(config.roles, ","))},
                      {"infrachat.region", config.region}};
  StartTracing(options);
  LogEvent(
      ModuleLogger("core"), spdlog::level::info, "tracing on",
      {{"endpoint", config.tracing.otlp_endpoint}, {"sample_ratio", config.tracing.sample_ratio}});
}

// Prometheus's pull endpoint, GET /metrics, on its own HTTP listener (never a gRPC port), and
// infrachat_build_info: which build runs which roles.
void Daemon::StartMetrics() {
  const DaemonConfig& config = state_->context.config();
  std::string roles;
  for (const auto& role : config.roles) roles += (roles.empty() ? "" : ",") + role;
  prometheus::BuildGauge()
      .Name("infrachat_build_info")
      .Help("Always 1: the version of this build and the roles this process runs")
      .Register(MetricsRegistry())
      .Add({{"version", INFRACHAT_VERSION}, {"roles", roles}, {"region", config.region}})
      .Set(1);
  try {
    state_->metrics = std::make_unique<prometheus::Exposer>(config.metrics.listen_address);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot listen on " + config.metrics.listen_address +
                             " (metrics.listen_address): " + e.what());
  }
  state_->metrics->RegisterCollectable(SharedMetricsRegistry());
  state_->process_metrics = MakeProcessCollector();
  state_->metrics->RegisterCollectable(state_->process_metrics);
  const auto ports = state_->metrics->GetListeningPorts();
  metrics_address_ = HostOf(config.metrics.listen_address) + ":" +
                     std::to_string(ports.empty() ? 0 : ports.front());
  ModuleLogger("core")->info("metrics on http://{}/metrics", metrics_address_);
}

// The module-to-module API, on its own listener so that clients never reach it: the shard's
// calls and event stream, auth's accounts and keys, each where its role runs here.
void Daemon::StartInternalServer() {
  const DaemonConfig& config = state_->context.config();
  auto log = ModuleLogger("core");
  state_->internal_executor = std::make_unique<Executor>(8, "internal");
  grpc::ServerBuilder builder;
  ApplyServerOptions(config.grpc, builder);
  // Internal frames carry whole log batches; the public limits are for clients.
  builder.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  int port = 0;
  const ListenerSecurity security = InternalListenerSecurity(config.tls);
  builder.AddListeningPort(config.grpc.internal_listen_address, security.credentials, &port);
  std::vector<std::string> names;
  auto add = [&](std::unique_ptr<grpc::Service> service, const std::string& name) {
    builder.RegisterService(service.get());
    state_->internal_services.push_back(std::move(service));
    names.push_back(name);
  };
  if (config.HasRole("shard")) {
    auto shard = std::make_unique<remote::ShardInternalService>(&state_->context.shard(),
                                                                state_->internal_executor.get());
    state_->shard_service = shard.get();
    add(std::move(shard), internal::v1::ShardInternal::service_full_name());
    auto events = std::make_unique<bus_grpc::EventStreamService>(state_->bus.get());
    state_->event_stream = events.get();
    add(std::move(events), internal::v1::EventStream::service_full_name());
  }
  if (config.HasRole("auth")) {
    add(std::make_unique<remote::AuthInternalService>(&state_->context.auth(),
                                                      state_->internal_executor.get()),
        internal::v1::AuthInternal::service_full_name());
  }
  state_->internal_server = builder.BuildAndStart();
  if (!state_->internal_server || port == 0) {
    throw std::runtime_error("cannot listen on " + config.grpc.internal_listen_address +
                             " (grpc.internal_listen_address: address in use or invalid" +
                             (config.tls.internal.enabled()
                                  ? ", or tls.internal.* is not a matching certificate and key)"
                                  : ")"));
  }
  if (auto* health = state_->internal_server->GetHealthCheckService()) {
    for (const auto& name : names) health->SetServingStatus(name, true);
  }
  internal_address_ = HostOf(config.grpc.internal_listen_address) + ":" + std::to_string(port);
  if (config.tls.internal.enabled()) {
    log->info("internal listener on {}: {}", internal_address_, security.description);
  } else {
    log->warn("internal listener on {}: {}, unauthenticated: keep it on a private network",
              internal_address_, security.description);
  }
}

void Daemon::Shutdown() {
  if (state_->shut_down) return;
  state_->shut_down = true;
  auto log = ModuleLogger("core");
  auto& started = state_->started;
  // Readiness goes first: a load balancer stops sending new clients while streams drain.
  for (auto* server : {state_->server.get(), state_->internal_server.get()}) {
    if (server == nullptr) continue;
    if (auto* health = server->GetHealthCheckService()) health->Shutdown();
  }
  for (auto it = started.rbegin(); it != started.rend(); ++it) (*it)->BeginShutdown();
  if (state_->server) {
    const auto grace = std::chrono::seconds(state_->context.config().grpc.shutdown_grace_s);
    state_->server->Shutdown(std::chrono::system_clock::now() + grace);
    state_->server->Wait();
  }
  // Then the internal API: other processes' sends in flight are answered (their commits still
  // run), event streams end and their watchers reconnect elsewhere or repair from the log.
  if (state_->internal_server) {
    // Watch streams never end by themselves: end them now rather than after the grace.
    if (state_->event_stream != nullptr) state_->event_stream->EndAll();
    // So do edges' send streams: each answers what it handed to the shard, then ends.
    if (state_->shard_service != nullptr) state_->shard_service->EndSendStreams();
    const auto grace = std::chrono::seconds(state_->context.config().grpc.shutdown_grace_s);
    state_->internal_server->Shutdown(std::chrono::system_clock::now() + grace);
    state_->internal_server->Wait();
  }
  if (state_->internal_executor) state_->internal_executor->Stop();
  for (auto it = started.rbegin(); it != started.rend(); ++it) (*it)->Stop();
  started.clear();
  state_->metrics.reset();
  // After the servers: the spans of the last sends go out first.
  if (!state_->context.config().tracing.otlp_endpoint.empty()) StopTracing();
  state_->internal_server.reset();
  state_->internal_services.clear();
  state_->server.reset();
  state_->remote_shard.reset();  // its lease refresher feeds the bus: stop it first
  state_->bus.reset();
  state_->pool.reset();
  LogEvent(log, spdlog::level::info, "stopped");
}

namespace {

// Every client connection is a file descriptor, and the usual soft limit (1024) is far below
// limits.max_streams; servers raise the soft limit to the hard one, which needs no privilege.
// Warns when even the hard limit cannot hold max_streams connections.
void RaiseFileLimit(const DaemonConfig& config, const std::shared_ptr<spdlog::logger>& log) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) getrlimit(RLIMIT_NOFILE, &limit);
  }
  const auto wanted = static_cast<rlim_t>(config.limits.max_streams) + 256;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < wanted) {
    log->warn("open file limit {} is below limits.max_streams + 256 = {}; raise it (ulimit -n)",
              limit.rlim_cur, wanted);
  }
}

}  // namespace

int RunDaemon(int argc, char** argv) {
  CLI::App app{"infrachatd: InfraChat server (gateway, auth, router, shard, fanout roles)"};
  std::string config_file, check_file, ready_file;
  std::vector<std::string> overrides;
  auto* config_opt = app.add_option("--config", config_file, "YAML configuration file");
  auto* check_opt = app.add_option("--check-config", check_file,
                                   "validate a configuration file and exit (0 = valid)");
  config_opt->excludes(check_opt);
  app.add_option("--set", overrides, "override a key: --set key.path=value (repeatable)");
  app.add_option("--ready-file", ready_file,
                 "write {\"address\":...} to this file once serving (for scripts and tests)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  const std::string file = check_file.empty() ? config_file : check_file;
  if (file.empty()) {
    std::cerr << "infrachatd: --config FILE or --check-config FILE is required\n";
    return 2;
  }
  std::ifstream in(file);
  if (!in) {
    std::cerr << "infrachatd: cannot read " << file << "\n";
    return 2;
  }
  std::stringstream text;
  text << in.rdbuf();
  ConfigLoadResult loaded = LoadConfig(ConfigSources{text.str(), file, Environment(), overrides,
                                                     /*check_only=*/!check_file.empty()});
  if (loaded.ok()) {
    for (auto& e : CheckPlacement(loaded.config)) loaded.errors.push_back(e);
  }
  if (!loaded.ok()) {
    std::cerr << "infrachatd: invalid configuration (" << loaded.errors.size() << " errors):\n";
    for (const auto& e : loaded.errors) std::cerr << "  " << e << "\n";
    return 2;
  }
  if (!check_file.empty()) {
    std::cout << "configuration is valid\n";
    for (const auto& w : loaded.warnings) std::cout << "note: " << w << "\n";
    std::cout << DescribeConfig(loaded.config);
    return 0;
  }

  ConfigureLogging(loaded.config.log);
  // gRPC's own messages (errors by default, GRPC_VERBOSITY for more) go through the same sink,
  // so a JSON log stays one JSON object per line.
  gpr_set_log_function(&LogGrpcMessage);
  auto log = ModuleLogger("core");
  log->info("effective configuration:\n{}", DescribeConfig(loaded.config));
  for (const auto& warning : loaded.warnings) log->warn("{}", warning);
  RaiseFileLimit(loaded.config, log);
  Daemon daemon(loaded.config);
  try {
    daemon.Start();
    if (!ready_file.empty())
      WriteReadyFile(ready_file, daemon.address(), daemon.internal_address(),
                     daemon.metrics_address());
  } catch (const std::exception& e) {
    log->critical("start-up failed: {}", e.what());
    return 1;
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  LogEvent(log, spdlog::level::info, "shutting down",
           {{"signal", signal_number == SIGINT ? "SIGINT" : "SIGTERM"}});
  daemon.Shutdown();
  return 0;
}

}  // namespace infrachat
