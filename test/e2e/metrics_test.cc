// End-to-end: the Prometheus endpoint (metrics.listen_address, docs/adr/0010) of a real
// infrachatd, read over HTTP like Prometheus reads it, checked with the real `promtool`.

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>

#include "child_process.h"
#include "daemon_process.h"
#include "modules/router/placement.h"
#include "prometheus_text.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;
using testing::RegisterUser;
using testing::Sample;
using testing::SampleSum;
using testing::Scrape;
using testing::SendAndWait;
using testing::TestDatabase;

// The exposition is valid for Prometheus's own checker (names, help, types, units).
void CheckWithPromtool(const std::string& exposition) {
  const std::string dir = testing::MakeTempDir("metrics");
  { std::ofstream(dir + "/metrics.txt") << exposition; }
  testing::ChildProcess promtool(
      {"/bin/sh", "-c", "promtool check metrics < " + dir + "/metrics.txt"}, "promtool");
  const auto checked = promtool.Finish(30s);
  INFO(checked.Describe());
  CHECK(checked.exit_code == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("metrics: /metrics counts streams and sends by outcome, and promtool accepts it",
          "[e2e]") {
  TestDatabase db;
  DaemonProcess server(db, {"metrics.listen_address=127.0.0.1:0"});
  REQUIRE_FALSE(server.metrics_address().empty());
  auto alice = RegisterUser(server.address(), "alice");
  REQUIRE(alice->CreateChannel("general").ok());

  const std::string before = Scrape(server.metrics_address());
  REQUIRE_FALSE(before.empty());
  CHECK(Sample(before, "infrachat_gateway_streams_active") == 0);
  CHECK(Sample(before, "infrachat_gateway_sends_total{result=\"acked\"}") == 0);
  CHECK(std::regex_search(before, std::regex("infrachat_build_info\\{[^}]*roles=\"[^\"]*gateway")));

  auto watcher = alice->Connect();  // a subscriber; SendAndWait skips the frames of `stream`
  REQUIRE(testing::SubscribeAndWait(*watcher, "general") == 0);
  auto stream = alice->Connect();
  const std::string id = client::NewClientMsgId();
  for (int i = 0; i < 3; ++i) {
    auto ack = SendAndWait(*stream, "general", client::NewClientMsgId(), "hello");
    REQUIRE(ack.has_value());
    REQUIRE(ack->has_send_ack());
  }
  REQUIRE(SendAndWait(*stream, "general", id, "once")->has_send_ack());
  REQUIRE(SendAndWait(*stream, "general", id, "once")->send_ack().duplicate());
  auto refused = SendAndWait(*stream, "no-such-channel", client::NewClientMsgId(), "x");
  REQUIRE(refused.has_value());
  REQUIRE(refused->has_error());

  // Every stored message reaches the one subscriber (live, or from the log at the switch-over).
  REQUIRE(testing::CollectMessages(*watcher, "general", 4, 10s).size() == 4);

  const std::string during = Scrape(server.metrics_address());
  CHECK(Sample(during, "infrachat_fanout_deliveries_total{path=\"live\"}") +
            Sample(during, "infrachat_fanout_deliveries_total{path=\"log\"}") ==
        4);
  CHECK(Sample(during, "infrachat_fanout_log_reads_total") >= 1);  // the switch-over probe
  CHECK(Sample(during, "infrachat_fanout_slow_consumer_cuts_total") == 0);
  // Four stored sends in at least one batch, at most four; the duplicate is found inside one.
  const double batches = Sample(during, "infrachat_shard_batch_size_count");
  CHECK(batches >= 1);
  CHECK(Sample(during, "infrachat_shard_batch_size_sum") >= 4);
  CHECK(Sample(during, "infrachat_shard_commit_seconds_count") == batches);
  CHECK(Sample(during, "infrachat_shard_batches_failed_total") == 0);
  CHECK(Sample(during, "infrachat_gateway_streams_active") == 2);
  CHECK(Sample(during, "infrachat_gateway_sends_total{result=\"acked\"}") == 4);
  CHECK(Sample(during, "infrachat_gateway_sends_total{result=\"duplicate\"}") == 1);
  CHECK(Sample(during, "infrachat_gateway_sends_total{result=\"not_found\"}") == 1);
  // grpc_server_*: a stream is started when it opens and handled when it ends.
  const auto open_connects = [](const std::string& text) {
    const double handled =
        SampleSum(text, "grpc_server_handled_total", {"grpc_method=\"Connect\""});
    return SampleSum(text, "grpc_server_started_total",
                     {"grpc_service=\"infrachat.v1.ChatService\"", "grpc_method=\"Connect\"",
                      "grpc_type=\"bidi_stream\""}) -
           (handled < 0 ? 0 : handled);
  };
  CHECK(open_connects(during) == 2);

  CheckWithPromtool(during);

  stream.reset();  // the streams end: the gauge follows
  watcher.reset();
  CHECK(testing::WaitUntil(
      [&] {
        return Sample(Scrape(server.metrics_address()), "infrachat_gateway_streams_active") == 0;
      },
      10s));
  const std::string ended = Scrape(server.metrics_address());
  CHECK(open_connects(ended) == 0);
  CHECK(SampleSum(ended, "grpc_server_handling_seconds_count", {"grpc_method=\"Connect\""}) == 2);
}

// What auth decided, by result and reason; the gRPC per-method families; the database pool
// (through an outage); process_* from /proc.
TEST_CASE("metrics: auth results, token refusals, gRPC per method, database pool, process",
          "[e2e]") {
  TestDatabase db;
  DaemonProcess server(db, {"metrics.listen_address=127.0.0.1:0", "database.pool_size=4"});
  const std::string metrics = server.metrics_address();
  auto alice = RegisterUser(server.address(), "alice");
  const std::string before = Scrape(metrics);
  REQUIRE_FALSE(before.empty());
  const auto delta = [&](const std::string& after, const std::string& series) {
    const double was = Sample(before, series);
    return Sample(after, series) - (was < 0 ? 0 : was);
  };

  client::Client user(server.address());
  CHECK(user.Login("alice", "not the password").code() == Code::kUnauthenticated);
  CHECK(user.Login("nobody", testing::kTestPassword).code() == Code::kUnauthenticated);
  REQUIRE(user.Login("alice", testing::kTestPassword).ok());
  const std::string first = user.credentials().refresh_token;
  REQUIRE(user.Refresh().ok());
  CHECK(user.Refresh(first).code() == Code::kUnauthenticated);  // reused: the session ends
  CHECK(user.Refresh("not-a-refresh-token").code() == Code::kUnauthenticated);
  CHECK(client::Client(server.address()).Register("alice", testing::kTestPassword).code() ==
        Code::kAlreadyExists);
  // Access tokens refused by the gateway's verifier: not a JWT, and a JWT whose header names
  // HS256 ({"alg":"HS256"}; the signature is never looked at).
  alice->SetAccessToken("not-a-token");
  CHECK(alice->ListChannels().code() == Code::kUnauthenticated);
  alice->SetAccessToken("eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
  CHECK(alice->ListChannels().code() == Code::kUnauthenticated);

  const std::string after = Scrape(metrics);
  CHECK(delta(after, "infrachat_auth_logins_total{result=\"wrong_password\"}") == 1);
  CHECK(delta(after, "infrachat_auth_logins_total{result=\"unknown_user\"}") == 1);
  CHECK(delta(after, "infrachat_auth_logins_total{result=\"ok\"}") == 1);
  CHECK(delta(after, "infrachat_auth_registrations_total{result=\"username_taken\"}") == 1);
  CHECK(Sample(before, "infrachat_auth_registrations_total{result=\"ok\"}") == 1);
  CHECK(delta(after, "infrachat_auth_token_refreshes_total{result=\"ok\"}") == 1);
  CHECK(delta(after, "infrachat_auth_token_refreshes_total{result=\"reused\"}") == 1);
  CHECK(delta(after, "infrachat_auth_token_refreshes_total{result=\"invalid_token\"}") == 1);
  CHECK(delta(after, "infrachat_auth_token_verifications_failed_total{reason=\"malformed\"}") == 1);
  CHECK(delta(after, "infrachat_auth_token_verifications_failed_total{reason=\"algorithm\"}") == 1);
  CHECK(delta(after, "infrachat_auth_token_verifications_failed_total{reason=\"expired\"}") == 0);

  // grpc_server_*: Login three times, two of them refused; ListChannels refused twice.
  const auto sum_delta = [&](const std::string& after_text, const std::string& name,
                             const std::set<std::string>& matchers) {
    const double was = SampleSum(before, name, matchers);
    return SampleSum(after_text, name, matchers) - (was < 0 ? 0 : was);
  };
  const std::set<std::string> login = {
      "grpc_type=\"unary\"", "grpc_service=\"infrachat.v1.AuthService\"", "grpc_method=\"Login\""};
  const auto and_code = [&](const std::string& code) {
    auto matchers = login;
    matchers.insert("grpc_code=\"" + code + "\"");
    return matchers;
  };
  CHECK(sum_delta(after, "grpc_server_started_total", login) == 3);
  CHECK(sum_delta(after, "grpc_server_handled_total", and_code("Unauthenticated")) == 2);
  CHECK(sum_delta(after, "grpc_server_handled_total", and_code("OK")) == 1);
  CHECK(sum_delta(after, "grpc_server_handling_seconds_count", login) == 3);
  CHECK(SampleSum(after, "grpc_server_handled_total",
                  {"grpc_method=\"ListChannels\"", "grpc_code=\"Unauthenticated\""}) == 2);

  // The pool: its size, nothing leased between requests, every lease timed; no errors yet.
  CHECK(Sample(after, "infrachat_db_pool_connections_max") == 4);
  CHECK(Sample(after, "infrachat_db_pool_connections_in_use") == 0);
  CHECK(Sample(after, "infrachat_db_pool_waiters") == 0);
  CHECK(delta(after, "infrachat_db_pool_wait_seconds_count") >= 5);
  CHECK(SampleSum(after, "infrachat_db_errors_total") == 0);

  // process_*: this daemon's own numbers.
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  CHECK(Sample(after, "process_start_time_seconds") > now - 120);
  CHECK(Sample(after, "process_start_time_seconds") <= now + 1);
  CHECK(Sample(after, "process_cpu_seconds_total") > 0);
  CHECK(Sample(after, "process_open_fds") >= 10);  // listeners, database connections, logs
  CHECK(Sample(after, "process_max_fds") >= Sample(after, "process_open_fds"));
  CHECK(Sample(after, "process_resident_memory_bytes") > 1e6);
  CHECK(Sample(after, "process_virtual_memory_bytes") >=
        Sample(after, "process_resident_memory_bytes"));

  {
    // The database goes away: a login is answered UNAVAILABLE, and the pool says why.
    testing::DatabaseOutage outage(db);
    CHECK(user.Login("alice", testing::kTestPassword).code() == Code::kUnavailable);
    const std::string during = Scrape(metrics);
    // Connections that died are dropped (connection_lost), new ones cannot be made (connect).
    CHECK(SampleSum(during, "infrachat_db_errors_total") >= 1);
    CHECK(delta(during, "infrachat_auth_logins_total{result=\"unavailable\"}") == 1);
    CHECK(Sample(during, "infrachat_db_pool_connections_in_use") == 0);
  }
  CHECK(testing::WaitUntil([&] { return user.Login("alice", testing::kTestPassword).ok(); }, 10s));
}

// Owners of channels among the shard processes, as every edge computes them.
std::string OwnerOf(const std::string& channel, const std::vector<std::string>& addresses) {
  return *std::max_element(addresses.begin(), addresses.end(),
                           [&](const std::string& a, const std::string& b) {
                             return router::StableHash(a, channel) < router::StableHash(b, channel);
                           });
}

// The cluster's families, on a role-split cluster: two shard processes and an edge. Then kill -9
// of one shard: its sends fail over to the other, its lease expires and placement moves.
TEST_CASE("metrics: role-split: sends and calls per peer, leases, placement moves, event streams",
          "[e2e][cluster]") {
  TestDatabase db;
  const auto with = [](std::vector<std::string> overrides) {
    for (const char* common : {"metrics.listen_address=127.0.0.1:0", "shard.lease_heartbeat_ms=100",
                               "shard.lease_ttl_ms=3000", "grpc.shutdown_grace_s=1"}) {
      overrides.push_back(common);
    }
    return overrides;
  };
  DaemonProcess core(db, with({"roles=auth,shard", "shard.id=shard-a",
                               "grpc.internal_listen_address=127.0.0.1:0"}));
  DaemonProcess shard_b(
      db, with({"roles=shard", "shard.id=shard-b", "grpc.internal_listen_address=127.0.0.1:0"}));
  const std::vector<std::string> shards = {core.internal_address(), shard_b.internal_address()};
  DaemonProcess edge(
      db,
      with({"roles=gateway,fanout,router", "database.url=", "peers.auth=" + core.internal_address(),
            "peers.shard=" + shards[0] + "," + shards[1], "grpc.internal_call_timeout_ms=2000"}));
  const auto edge_metrics = [&] { return Scrape(edge.metrics_address()); };
  const auto peer = [](const std::string& address) { return "peer=\"" + address + "\""; };
  REQUIRE(testing::WaitUntil(
      [&] { return Sample(edge_metrics(), "infrachat_router_live_shards{region=\"local\"}") == 2; },
      15s));

  auto alice = RegisterUser(edge.address(), "alice");
  CHECK(client::Client(edge.address()).Login("alice", "not the password").code() ==
        Code::kUnauthenticated);
  std::map<std::string, std::string> channel_on;  // shard address -> a channel it owns
  for (int i = 0; channel_on.size() < 2; ++i) {
    REQUIRE(i < 64);
    const std::string name = "room-" + std::to_string(i);
    if (channel_on.count(OwnerOf(name, shards)) > 0) continue;
    REQUIRE(alice->CreateChannel(name).ok());
    channel_on[OwnerOf(name, shards)] = name;
  }
  const std::string on_a = channel_on[shards[0]];
  const std::string on_b = channel_on[shards[1]];
  auto watcher = alice->Connect();
  REQUIRE(testing::SubscribeAndWait(*watcher, on_a) == 0);
  REQUIRE(testing::SubscribeAndWait(*watcher, on_b) == 0);
  auto stream = alice->Connect();
  for (int i = 0; i < 3; ++i) {
    for (const auto& channel : {on_a, on_b}) {
      auto ack = SendAndWait(*stream, channel, client::NewClientMsgId(), "hello");
      REQUIRE(ack.has_value());
      REQUIRE(ack->has_send_ack());
    }
  }
  std::map<std::string, int> received;  // one stream carries both channels' messages
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((received[on_a] < 3 || received[on_b] < 3) &&
         std::chrono::steady_clock::now() < deadline) {
    auto frame = watcher->Next(100ms);
    if (frame && frame->has_message()) ++received[frame->message().channel()];
  }
  REQUIRE(received[on_a] == 3);
  REQUIRE(received[on_b] == 3);

  const std::string e = edge_metrics();
  for (const auto& address : shards) {
    INFO(address);
    CHECK(SampleSum(e, "infrachat_cluster_sends_total", {peer(address), "grpc_code=\"OK\""}) == 3);
    CHECK(SampleSum(e, "infrachat_cluster_send_seconds_count", {peer(address)}) == 3);
  }
  // Calls of the internal API, per configured peer: the refused login reached the core's auth.
  CHECK(SampleSum(e, "infrachat_cluster_client_handled_total",
                  {peer(shards[0]), "grpc_service=\"infrachat.internal.v1.AuthInternal\"",
                   "grpc_method=\"Login\"", "grpc_code=\"Unauthenticated\""}) == 1);
  CHECK(SampleSum(e, "infrachat_cluster_client_handling_seconds_count",
                  {peer(shards[0]), "grpc_method=\"Login\""}) == 1);
  CHECK(SampleSum(e, "infrachat_cluster_client_handled_total", {"peer=\"discovered\""}) == -1);
  // Six committed messages came over the event streams, one stream per shard.
  CHECK(Sample(e, "infrachat_bus_event_lag_seconds_count") >= 6);
  CHECK(Sample(e, "infrachat_bus_watch_streams_opened_total") >= 2);
  CHECK(Sample(e, "infrachat_bus_publishes_dropped_total") == 0);

  const std::string c = Scrape(core.metrics_address());
  CheckWithPromtool(e);  // the cluster's families pass Prometheus's checker too
  CheckWithPromtool(c);
  CHECK(Sample(c, "infrachat_shard_lease_held") == 1);
  CHECK(Sample(c, "infrachat_shard_lease_changes_total{event=\"acquired\"}") == 1);
  CHECK(Sample(c, "infrachat_shard_lease_changes_total{event=\"renewal_failed\"}") == 0);
  CHECK(SampleSum(c, "grpc_server_handled_total",
                  {"grpc_service=\"infrachat.internal.v1.AuthInternal\"", "grpc_method=\"Login\"",
                   "grpc_code=\"Unauthenticated\""}) == 1);
  CHECK(SampleSum(c, "grpc_server_started_total",
                  {"grpc_service=\"infrachat.internal.v1.ShardInternal\"",
                   "grpc_method=\"SendStream\""}) >= 1);

  // kill -9 of shard b. Until its lease expires it still owns on_b: the send finds it
  // unreachable and goes to the core instead (a failover). Then placement moves.
  const double changes = SampleSum(e, "infrachat_router_placement_changes_total");
  const double opened = Sample(e, "infrachat_bus_watch_streams_opened_total");
  shard_b.Kill9();
  auto ack = SendAndWait(*stream, on_b, client::NewClientMsgId(), "after the kill");
  REQUIRE(ack.has_value());
  REQUIRE(ack->has_send_ack());
  const std::string after = edge_metrics();
  CHECK(Sample(after, "infrachat_router_failovers_total") >= 1);
  CHECK(SampleSum(after, "infrachat_cluster_sends_total",
                  {peer(shards[1]), "grpc_code=\"Unavailable\""}) >= 1);
  CHECK(SampleSum(after, "infrachat_cluster_sends_total", {peer(shards[0]), "grpc_code=\"OK\""}) ==
        4);
  CHECK(testing::WaitUntil(
      [&] {
        const std::string now = edge_metrics();
        return Sample(now, "infrachat_router_live_shards{region=\"local\"}") == 1 &&
               SampleSum(now, "infrachat_router_placement_changes_total") > changes &&
               Sample(now, "infrachat_bus_watch_streams_opened_total") > opened;
      },
      15s));
}

TEST_CASE("metrics: without metrics.listen_address nothing listens for them", "[e2e]") {
  TestDatabase db;
  DaemonProcess server(db);
  CHECK(server.metrics_address().empty());
}

}  // namespace
}  // namespace infrachat
