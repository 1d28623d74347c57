// PeerMonitor on a real gRPC server and an internal channel (MakeInternalChannel): one "peer
// connected" when it is reached, one "peer lost" when the server goes away (however many
// reconnection attempts fail), one "peer connected" when it is back; a second channel to the
// same peer adds no lines.
#include "remote/peer_monitor.h"

#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <functional>
#include <thread>

#include "captured_log.h"
#include "infrachat/internal/v1/internal.grpc.pb.h"
#include "remote/convert.h"

namespace infrachat::remote {
namespace {

using namespace std::chrono_literals;

using testing::CapturedLog;

bool Eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 10s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

// A server with one service (every method UNIMPLEMENTED): only its connections matter here.
std::unique_ptr<grpc::Server> StartServer(const std::string& address, int* port) {
  static internal::v1::AuthInternal::CallbackService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), port);
  builder.RegisterService(&service);
  return builder.BuildAndStart();
}

TEST_CASE("peer monitor: connected, lost and connected again, once per transition",
          "[peer_monitor]") {
  CapturedLog log("cluster");
  int port = 0;
  auto server = StartServer("127.0.0.1:0", &port);
  REQUIRE(server);
  const std::string address = "127.0.0.1:" + std::to_string(port);

  PeerMonitor monitor(log.logger(), 20ms);
  auto channel = MakeInternalChannel(address, grpc::InsecureChannelCredentials(), address);
  monitor.Watch(channel, address, "shard");
  // The monitor connects the channel itself: no call is needed.
  REQUIRE(Eventually([&] { return log.Json("peer connected").size() == 1; }));
  auto connected = log.Json("peer connected");
  CHECK(connected[0]["module"] == "cluster");
  CHECK(connected[0]["level"] == "info");
  CHECK(connected[0]["peer"] == address);
  CHECK(connected[0]["role"] == "shard");
  CHECK(connected[0]["first"] == true);

  // Another client's channel to the same peer: the peer is already watched.
  auto second = MakeInternalChannel(address, grpc::InsecureChannelCredentials(), address);
  monitor.Watch(second, address, "shard");

  server->Shutdown(std::chrono::system_clock::now());
  server.reset();
  REQUIRE(Eventually([&] { return log.Json("peer lost").size() == 1; }));
  // Reconnection attempts go on (100 ms to 2 s apart): still one line.
  std::this_thread::sleep_for(600ms);
  auto lost = log.Json("peer lost");
  REQUIRE(lost.size() == 1);
  CHECK(lost[0]["level"] == "warn");
  CHECK(lost[0]["peer"] == address);
  CHECK(lost[0]["role"] == "shard");
  CHECK(lost[0]["error"] == "unreachable");
  CHECK_FALSE(lost[0].contains("first"));

  int same_port = 0;
  server = StartServer(address, &same_port);
  REQUIRE(server);
  REQUIRE(same_port == port);
  REQUIRE(Eventually([&] { return log.Json("peer connected").size() == 2; }));
  std::this_thread::sleep_for(100ms);
  connected = log.Json("peer connected");
  REQUIRE(connected.size() == 2);
  CHECK(connected[1]["outage_ms"].get<std::int64_t>() >= 0);
  CHECK(connected[1]["failures"].get<std::uint64_t>() >= 1);
  CHECK(connected[1]["since"] == lost[0]["since"]);
  CHECK(log.Json("peer lost").size() == 1);
  server->Shutdown(std::chrono::system_clock::now());
}

TEST_CASE("peer monitor: a peer never reached is lost once, and its channel is not kept alive",
          "[peer_monitor]") {
  CapturedLog log("cluster");
  // A port nobody listens on: bind one, note it, close it.
  int port = 0;
  StartServer("127.0.0.1:0", &port)->Shutdown(std::chrono::system_clock::now());
  const std::string address = "127.0.0.1:" + std::to_string(port);

  PeerMonitor monitor(log.logger(), 20ms);
  auto channel = MakeInternalChannel(address, grpc::InsecureChannelCredentials(), address);
  std::weak_ptr<grpc::Channel> watched = channel;
  monitor.Watch(channel, address, "auth");
  REQUIRE(Eventually([&] { return log.Json("peer lost").size() == 1; }));
  const auto lost = log.Json("peer lost");
  CHECK(lost[0]["first"] == true);
  CHECK(lost[0]["role"] == "auth");
  channel.reset();
  CHECK(Eventually([&] { return watched.expired(); }, 2s));
  CHECK(log.Json("peer connected").empty());
}

}  // namespace
}  // namespace infrachat::remote
