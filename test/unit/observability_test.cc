// The gRPC metrics interceptors (a real server and channel on loopback, port 0) and the
// process_* collector (the real /proc, and a fake one for the parsing corner cases).
#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <prometheus/metric_family.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>

#include "infrachat/core/grpc_metrics.h"
#include "infrachat/core/metrics.h"
#include "infrachat/core/process_metrics.h"
#include "infrachat/v1/infrachat.grpc.pb.h"

namespace infrachat {
namespace {

// Route answers OK for channel "ok" and NOT_FOUND otherwise.
class FakeRouter final : public v1::RouterService::CallbackService {
  grpc::ServerUnaryReactor* Route(grpc::CallbackServerContext* context,
                                  const v1::RouteRequest* request,
                                  v1::RouteResponse* /*response*/) override {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(request->channel() == "ok" ? grpc::Status::OK
                                               : grpc::Status(grpc::StatusCode::NOT_FOUND, "no"));
    return reactor;
  }
};

// The value of the sample of `name` whose labels include all of `labels`; -1 when none. For a
// histogram, its count.
double Value(const std::string& name, const std::map<std::string, std::string>& labels) {
  for (const auto& family : MetricsRegistry().Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      bool all = true;
      for (const auto& [key, value] : labels) {
        bool found = false;
        for (const auto& label : metric.label) found |= label.name == key && label.value == value;
        all &= found;
      }
      if (!all) continue;
      if (family.type == prometheus::MetricType::Histogram) {
        return static_cast<double>(metric.histogram.sample_count);
      }
      return family.type == prometheus::MetricType::Counter ? metric.counter.value
                                                            : metric.gauge.value;
    }
  }
  return -1;
}

double Zero(double v) { return v < 0 ? 0 : v; }  // a series not made yet counts as 0

TEST_CASE("grpc metrics: server and client interceptors count calls by method and code", "[unit]") {
  FakeRouter service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> server_side;
  server_side.push_back(MakeServerMetricsInterceptor());
  builder.experimental().SetInterceptorCreators(std::move(server_side));
  auto server = builder.BuildAndStart();
  REQUIRE(server);
  REQUIRE(port != 0);

  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> client_side;
  client_side.push_back(MakeClientMetricsInterceptor("peer-a"));
  auto channel = grpc::experimental::CreateCustomChannelWithInterceptors(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials(),
      grpc::ChannelArguments(), std::move(client_side));
  auto stub = v1::RouterService::NewStub(channel);

  const std::map<std::string, std::string> route = {{"grpc_service", "infrachat.v1.RouterService"},
                                                    {"grpc_method", "Route"}};
  auto with = [](std::map<std::string, std::string> labels,
                 std::map<std::string, std::string> more) {
    labels.insert(more.begin(), more.end());
    return labels;
  };
  const double started = Zero(Value("grpc_server_started_total", route));
  const double ok = Zero(Value("grpc_server_handled_total", with(route, {{"grpc_code", "OK"}})));
  const double not_found =
      Zero(Value("grpc_server_handled_total", with(route, {{"grpc_code", "NotFound"}})));
  const double client_not_found = Zero(
      Value("infrachat_cluster_client_handled_total",
            with(route, {{"peer", "peer-a"}, {"grpc_code", "NotFound"}, {"grpc_type", "unary"}})));
  const double unknown = Zero(Value("grpc_server_started_total", {{"grpc_service", "unknown"}}));

  for (const char* name : {"ok", "ok", "missing"}) {
    grpc::ClientContext context;
    v1::RouteRequest request;
    request.set_channel(name);
    v1::RouteResponse response;
    stub->Route(&context, request, &response);
  }
  // A method nobody serves, named by the caller: never a label value of its own.
  grpc::GenericStub generic(channel);
  grpc::ClientContext context;
  grpc::Slice empty("");
  grpc::ByteBuffer out(&empty, 1);  // an empty message (a default ByteBuffer is not one)
  grpc::ByteBuffer in;
  grpc::Status status;
  bool finished = false;
  std::mutex mu;
  std::condition_variable cv;
  generic.UnaryCall(&context, "/evil.Service/DropTables", grpc::StubOptions(), &out, &in,
                    [&](grpc::Status s) {
                      std::lock_guard lock(mu);
                      status = s;
                      finished = true;
                      cv.notify_all();
                    });
  {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return finished; }));
  }
  CHECK(status.error_code() == grpc::StatusCode::UNIMPLEMENTED);

  CHECK(Value("grpc_server_started_total", with(route, {{"grpc_type", "unary"}})) == started + 3);
  CHECK(Value("grpc_server_handled_total", with(route, {{"grpc_code", "OK"}})) == ok + 2);
  CHECK(Value("grpc_server_handled_total", with(route, {{"grpc_code", "NotFound"}})) ==
        not_found + 1);
  CHECK(Value("grpc_server_handling_seconds", route) >= 3);
  CHECK(Value("infrachat_cluster_client_handled_total",
              with(route, {{"peer", "peer-a"}, {"grpc_code", "NotFound"}})) ==
        client_not_found + 1);
  CHECK(Value("infrachat_cluster_client_handling_seconds", with(route, {{"peer", "peer-a"}})) >= 3);
  // Whether or not gRPC runs interceptors for an unimplemented method, no label names it.
  CHECK(Zero(Value("grpc_server_started_total", {{"grpc_service", "unknown"}})) >= unknown);
  CHECK(Value("grpc_server_started_total", {{"grpc_service", "evil.Service"}}) == -1);
  CHECK(Value("infrachat_cluster_client_handled_total", {{"grpc_service", "evil.Service"}}) == -1);
  CHECK(Value("infrachat_cluster_client_handled_total",
              {{"peer", "peer-a"}, {"grpc_service", "unknown"}, {"grpc_code", "Unimplemented"}}) ==
        1);
  server->Shutdown();
}

TEST_CASE("grpc metrics: code names are Go's", "[unit]") {
  CHECK(GrpcCodeName(0) == "OK");
  CHECK(GrpcCodeName(1) == "Canceled");
  CHECK(GrpcCodeName(4) == "DeadlineExceeded");
  CHECK(GrpcCodeName(14) == "Unavailable");
  CHECK(GrpcCodeName(16) == "Unauthenticated");
  CHECK(GrpcCodeName(17) == "Unknown");
  CHECK(GrpcCodeName(-1) == "Unknown");
}

TEST_CASE("process metrics: read from this process's /proc", "[unit]") {
  auto before = ReadProcessStats();
  REQUIRE(before.has_value());
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  // Burn a little CPU so that the counter moves (10 ms ticks).
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(60);
  volatile std::uint64_t spin = 0;
  while (std::chrono::steady_clock::now() < until) spin = spin + 1;
  auto after = ReadProcessStats();
  ::close(fd);
  REQUIRE(after.has_value());
  CHECK(after->open_fds == before->open_fds + 1);
  CHECK(after->cpu_seconds > before->cpu_seconds);
  CHECK(after->resident_bytes > 1024 * 1024);
  CHECK(after->virtual_bytes >= after->resident_bytes);
  CHECK(after->max_fds >= after->open_fds);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  CHECK(after->start_time_seconds <= now + 1);
  CHECK(after->start_time_seconds > now - 3600);  // this test binary started just now

  // The collector serves the same, under the conventional names.
  auto collector = MakeProcessCollector();
  std::map<std::string, prometheus::MetricType> names;
  for (const auto& family : collector->Collect()) names[family.name] = family.type;
  CHECK(names["process_cpu_seconds_total"] == prometheus::MetricType::Counter);
  for (const char* gauge : {"process_resident_memory_bytes", "process_virtual_memory_bytes",
                            "process_open_fds", "process_max_fds", "process_start_time_seconds"}) {
    INFO(gauge);
    CHECK(names.count(gauge) == 1);
    CHECK(names[gauge] == prometheus::MetricType::Gauge);
  }
}

TEST_CASE("process metrics: a command name with spaces and parentheses, and bad input", "[unit]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("infrachat-proc-" + std::to_string(getpid()));
  fs::create_directories(dir / "fd");
  for (const char* fd : {"0", "1", "2", "7"}) std::ofstream(dir / "fd" / fd) << "";
  const long ticks = ::sysconf(_SC_CLK_TCK);
  // Fields from 3 (state) on: utime (14) = 2 s, stime (15) = 1 s, starttime (22) = 5 s after
  // boot, vsize (23) = 4096000, rss (24) = 10 pages.
  std::ofstream(dir / "stat") << "42 (my (odd) name) S 1 1 1 0 -1 0 0 0 0 0 " << 2 * ticks << " "
                              << ticks << " 0 0 20 0 1 0 " << 5 * ticks << " 4096000 10 0\n";
  std::ofstream(dir / "limits")
      << "Limit                     Soft Limit           Hard Limit\n"
         "Max open files            1024                 4096       files\n";
  auto stats = ReadProcessStats(dir.string());
  REQUIRE(stats.has_value());
  CHECK(stats->cpu_seconds == Approx(3.0));
  CHECK(stats->virtual_bytes == 4096000);
  CHECK(stats->resident_bytes == 10 * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)));
  CHECK(stats->open_fds == 4);
  CHECK(stats->max_fds == 1024);
  CHECK(stats->start_time_seconds > 5);  // boot time + 5 s

  std::ofstream(dir / "stat") << "42 (truncated) S 1 2 3\n";
  CHECK_FALSE(ReadProcessStats(dir.string()).has_value());
  CHECK_FALSE(ReadProcessStats((dir / "missing").string()).has_value());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace infrachat
