// End-to-end: the same binary role-split into two processes (docs/adr/0009), on one database:
//   core  [auth, shard]            internal API on its own listener (ShardInternal,
//                                  AuthInternal, EventStream)
//   edge  [gateway, fanout, router] peers.auth and peers.shard point at the core; tokens are
//                                  verified locally with keys fetched from auth; channel events
//                                  arrive over the gRPC event stream, per watched channel.
// Clients talk only to the edge. The guarantees are those of the all-in-one process: ACK after
// COMMIT, one order per channel seen by everyone, resume without gap, and a core that is killed
// and restarted is recovered from without restarting the edge (sends get UNAVAILABLE and are
// resent with the same id; live delivery resumes by itself, repaired from the log).
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <set>
#include <string>
#include <vector>

#include "daemon_process.h"
#include "infrachat/client/chat_stream.h"
#include "infrachat/client/client.h"
#include "modules/router/placement.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using client::ChatStream;
using testing::CollectMessages;
using testing::DaemonProcess;
using testing::FullHistory;
using testing::NextMatching;
using testing::Range;
using testing::RegisterUser;
using testing::SendAndWait;
using testing::Seqs;
using testing::SubscribeAndWait;
using testing::TestDatabase;
using testing::WaitUntil;
namespace v1 = client::v1;

constexpr auto kWait = 15s;
constexpr const char* kGeneral = "general";

struct Split {
  Split()
      : core(db, {"roles=auth,shard", "grpc.internal_listen_address=127.0.0.1:0",
                  "grpc.shutdown_grace_s=1"}),
        edge(db, {"roles=gateway,fanout,router", "database.url=",
                  "peers.auth=" + core.internal_address(), "peers.shard=" + core.internal_address(),
                  "grpc.internal_call_timeout_ms=2000", "auth.revocation_check_interval_s=1"}) {
    REQUIRE_FALSE(core.internal_address().empty());
    alice = RegisterUser(edge.address(), "alice");
    bob = RegisterUser(edge.address(), "bob");
    REQUIRE(alice->CreateChannel(kGeneral).ok());
    REQUIRE(bob->JoinChannel(kGeneral).ok());
  }

  TestDatabase db;
  DaemonProcess core;
  DaemonProcess edge;
  std::shared_ptr<client::Client> alice;
  std::shared_ptr<client::Client> bob;
};

// Sends until a SendAck comes (the core may be restarting): the same id every time, so a send
// whose first attempt was stored comes back as a duplicate with the original seq.
v1::SendAck SendUntilAcked(client::Client& user, const std::string& body) {
  const std::string id = client::NewClientMsgId();
  std::optional<v1::SendAck> ack;
  REQUIRE(WaitUntil(
      [&] {
        auto stream = user.Connect();
        auto frame = SendAndWait(*stream, kGeneral, id, body, 3s);
        if (frame && frame->has_send_ack()) ack = frame->send_ack();
        return ack.has_value();
      },
      std::chrono::duration_cast<std::chrono::milliseconds>(kWait * 2)));
  return *ack;
}

// Sends on `stream` with `id` until a SendAck comes (the shard may be down or moving): the same
// id every time, so a first attempt that was stored after all comes back as a duplicate.
v1::SendAck ResendUntilAcked(ChatStream& stream, const std::string& channel, const std::string& id,
                             const std::string& body) {
  std::optional<v1::SendAck> ack;
  REQUIRE(WaitUntil(
      [&] {
        auto frame = SendAndWait(stream, channel, id, body, 3s);
        if (frame && frame->has_send_ack()) ack = frame->send_ack();
        return ack.has_value();
      },
      kWait));
  return *ack;
}

// Each of `ids` is stored exactly once in `history`.
void CheckStoredOnce(const std::vector<v1::ChatMessage>& history,
                     const std::vector<std::string>& ids) {
  std::map<std::string, int> stored;
  for (const auto& m : history) ++stored[m.client_msg_id()];
  for (const auto& id : ids) CHECK(stored[id] == 1);
}

// SIGSTOP, and waits until every thread of `pid` is stopped: kill() returns before the signal
// has taken effect, and a request sent in that window may still be answered (seen under load).
void StopProcess(pid_t pid) {
  REQUIRE(::kill(pid, SIGSTOP) == 0);
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  REQUIRE(WaitUntil(
      [&] {
        for (const auto& task : std::filesystem::directory_iterator(tasks)) {
          std::ifstream stat(task.path() / "stat");
          std::string line;
          std::getline(stat, line);
          const auto paren = line.rfind(')');
          if (paren == std::string::npos || paren + 2 >= line.size()) return false;
          if (line[paren + 2] != 'T' && line[paren + 2] != 't') return false;
        }
        return true;
      },
      5s));
}

TEST_CASE("role-split: users of an edge chat through a core in another process", "[e2e][cluster]") {
  Split s;
  auto a = s.alice->Connect();
  auto b = s.bob->Connect();
  REQUIRE(SubscribeAndWait(*a, kGeneral) == 0);
  REQUIRE(SubscribeAndWait(*b, kGeneral) == 0);

  // Both send, pipelined; both see every message once, in the one order of the log.
  for (int i = 0; i < 20; ++i) {
    REQUIRE_FALSE(a->Send(kGeneral, "from alice " + std::to_string(i)).empty());
    REQUIRE_FALSE(b->Send(kGeneral, "from bob " + std::to_string(i)).empty());
  }
  auto seen_by_a = CollectMessages(*a, kGeneral, 40, kWait);
  auto seen_by_b = CollectMessages(*b, kGeneral, 40, kWait);
  CHECK(Seqs(seen_by_a) == Range(1, 40));
  CHECK(Seqs(seen_by_b) == Range(1, 40));
  auto history = FullHistory(*s.alice, kGeneral);
  REQUIRE(history.size() == 40);
  for (std::size_t i = 0; i < history.size(); ++i) {
    CHECK(seen_by_a[i].body() == history[i].body());
    CHECK(seen_by_b[i].body() == history[i].body());
  }

  // Typing travels edge -> core's bus -> back to the edge's watchers.
  REQUIRE(a->Typing(kGeneral));
  auto typing = NextMatching(
      *b, [](const v1::ServerFrame& f) { return f.has_typing(); }, kWait);
  REQUIRE(typing.has_value());
  CHECK(typing->typing().username() == "alice");

  // Resume after a gap, through the remote log reader.
  auto late = s.bob->Connect();
  REQUIRE(SubscribeAndWait(*late, kGeneral, 35) == 40);
  CHECK(Seqs(CollectMessages(*late, kGeneral, 40, kWait)) == Range(36, 40));

  // Member lists carry display names from the remote auth.
  auto members = s.alice->ListMembers(kGeneral);
  REQUIRE(members.ok());
  REQUIRE(members->size() == 2);
  for (const auto& m : *members) CHECK(m.display_name() == m.username());

  // Authorization is the core's, answered through the edge.
  auto carol = RegisterUser(s.edge.address(), "carol");
  CHECK(carol->GetHistory(kGeneral).code() == Code::kPermissionDenied);
  // A revoked session ends its stream: the edge asks the core in one batch per sweep.
  REQUIRE(s.alice->Logout().ok());
  auto end = a->WaitForEnd(kWait);
  REQUIRE(end.has_value());
  CHECK(end->code == Code::kUnauthenticated);
  CHECK_FALSE(b->ended());  // bob's session is untouched
}

TEST_CASE(
    "role-split: kill -9 of the core loses nothing acknowledged, and the edge recovers "
    "without a restart",
    "[e2e][cluster]") {
  Split s;
  auto b = s.bob->Connect();
  REQUIRE(SubscribeAndWait(*b, kGeneral) == 0);
  std::vector<v1::SendAck> acks;
  for (int i = 0; i < 5; ++i)
    acks.push_back(SendUntilAcked(*s.alice, "before " + std::to_string(i)));
  CHECK(Seqs(CollectMessages(*b, kGeneral, 5, kWait)) == Range(1, 5));

  s.core.Restart(/*kill9=*/true);  // same database, same internal port

  // Sends fail without an ACK while it is down, then succeed: resent with the same id.
  for (int i = 0; i < 5; ++i)
    acks.push_back(SendUntilAcked(*s.alice, "after " + std::to_string(i)));
  // Live delivery to the subscriber that stayed connected to the edge resumes by itself: the
  // event stream is re-established and fanout repairs from the log.
  CHECK(Seqs(CollectMessages(*b, kGeneral, 10, kWait)) == Range(6, 10));
  auto history = FullHistory(*s.bob, kGeneral);
  CHECK(Seqs(history) == Range(1, 10));
  for (const auto& ack : acks) {
    REQUIRE(ack.seq() <= history.size());
    CHECK(history[ack.seq() - 1].client_msg_id() == ack.client_msg_id());
  }
}

// A core that stops answering (SIGSTOP: its connections stay open, nothing comes back) must
// cost each waiting call one internal timeout and no more: subscribes are asynchronous calls,
// so a gateway's four executor threads do not queue 16 streams' subscribes behind each other
// (blocking calls would need 4 rounds of the timeout). The error names the request's trace id,
// the one a client sent when it sent one.
TEST_CASE(
    "role-split: with the core stalled, every stream's subscribe is answered within about one "
    "call timeout, and errors name the trace id",
    "[e2e][cluster]") {
  TestDatabase db;
  DaemonProcess core(db, {"roles=auth,shard", "grpc.internal_listen_address=127.0.0.1:0",
                          "grpc.shutdown_grace_s=1"});
  DaemonProcess edge(
      db, {"roles=gateway,fanout,router", "database.url=", "peers.auth=" + core.internal_address(),
           "peers.shard=" + core.internal_address(), "grpc.internal_call_timeout_ms=1000"});
  auto alice = RegisterUser(edge.address(), "alice");
  REQUIRE(alice->CreateChannel(kGeneral).ok());
  constexpr int kStreams = 16;
  std::vector<std::unique_ptr<ChatStream>> streams;
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(alice->Connect());
    REQUIRE(streams.back()->Ping(1));  // connected before the core stops
    REQUIRE(NextMatching(
                *streams.back(), [](const v1::ServerFrame& f) { return f.has_pong(); }, kWait)
                .has_value());
  }

  StopProcess(core.pid());
  const auto started = std::chrono::steady_clock::now();
  for (auto& stream : streams) REQUIRE(stream->Subscribe(kGeneral));
  double slowest = 0;
  for (auto& stream : streams) {
    auto answer = NextMatching(
        *stream, [](const v1::ServerFrame& f) { return f.has_error() || f.has_subscribed(); },
        kWait);
    REQUIRE(answer.has_value());
    REQUIRE(answer->has_error());
    const auto code = static_cast<Code>(answer->error().code());
    CHECK((code == Code::kDeadlineExceeded || code == Code::kUnavailable));
    CHECK_THAT(answer->error().message(), Catch::Matchers::Contains("[trace "));
    slowest = std::max(
        slowest, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }
  INFO("the slowest of " << kStreams << " subscribes was answered after " << slowest << " s");
  CHECK(slowest < 2.8);  // one 1 s timeout plus slack; blocking calls would take about 4 s

  // A unary call carries the trace id its client sent.
  const std::string trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  auto stub = v1::ChannelService::NewStub(
      grpc::CreateChannel(edge.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer " + alice->access_token());
  context.AddMetadata("infrachat-trace-id", trace_id);
  v1::GetHistoryRequest request;
  request.set_channel(kGeneral);
  v1::GetHistoryResponse response;
  const grpc::Status status = stub->GetHistory(&context, request, &response);
  CHECK_FALSE(status.ok());
  CHECK_THAT(status.error_message(), Catch::Matchers::Contains(trace_id));

  REQUIRE(::kill(core.pid(), SIGCONT) == 0);
  auto again = alice->Connect();
  CHECK(SubscribeAndWait(*again, kGeneral) == 0);
}

// SIGTERM of a shard process that edges watch: its event streams never end by themselves, so
// the drain ends them (watchers repair from the log) instead of waiting out the whole grace.
TEST_CASE("role-split: a watched core stops on SIGTERM well inside its grace", "[e2e][cluster]") {
  TestDatabase db;
  DaemonProcess core(db, {"roles=auth,shard", "grpc.internal_listen_address=127.0.0.1:0",
                          "grpc.shutdown_grace_s=20"});
  DaemonProcess edge(
      db, {"roles=gateway,fanout,router", "database.url=", "peers.auth=" + core.internal_address(),
           "peers.shard=" + core.internal_address(), "grpc.internal_call_timeout_ms=2000"});
  auto alice = RegisterUser(edge.address(), "alice");
  REQUIRE(alice->CreateChannel(kGeneral).ok());
  auto stream = alice->Connect();
  REQUIRE(SubscribeAndWait(*stream, kGeneral) == 0);  // the edge watches the core's events

  const auto started = std::chrono::steady_clock::now();
  CHECK(core.Terminate(std::chrono::seconds(10)) == 0);  // -1: still running after 10 s
  INFO("stopped after "
       << std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()
       << " s");
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(10));
}

// `overrides` plus sub-second leases, so that a shard's absence shows within a second.
std::vector<std::string> WithFastLeases(std::vector<std::string> overrides) {
  for (const char* fast :
       {"shard.lease_heartbeat_ms=100", "shard.lease_ttl_ms=700", "grpc.shutdown_grace_s=1"}) {
    overrides.push_back(fast);
  }
  return overrides;
}

// The owner of `channel` among `addresses`, as every edge computes it (rendezvous hashing).
std::string OwnerOf(const std::string& channel, const std::vector<std::string>& addresses) {
  return *std::max_element(addresses.begin(), addresses.end(),
                           [&](const std::string& a, const std::string& b) {
                             return router::StableHash(a, channel) < router::StableHash(b, channel);
                           });
}

TEST_CASE(
    "role-split: two shard processes share the channels, and kill -9 of one moves its sends "
    "to the other and live delivery goes on",
    "[e2e][cluster]") {
  TestDatabase db;
  DaemonProcess core(db, {"roles=auth,shard", "shard.id=shard-a",
                          "grpc.internal_listen_address=127.0.0.1:0", "grpc.shutdown_grace_s=1"});
  DaemonProcess shard_b(
      db, {"roles=shard", "shard.id=shard-b", "grpc.internal_listen_address=127.0.0.1:0",
           "grpc.shutdown_grace_s=1"});
  const std::vector<std::string> shards = {core.internal_address(), shard_b.internal_address()};
  DaemonProcess edge(
      db, {"roles=gateway,fanout,router", "database.url=", "peers.auth=" + core.internal_address(),
           "peers.shard=" + shards[0] + "," + shards[1], "grpc.internal_call_timeout_ms=2000",
           "log.format=json"});
  auto alice = RegisterUser(edge.address(), "alice");
  auto bob = RegisterUser(edge.address(), "bob");
  // Channels until each shard owns some.
  std::vector<std::string> channels;
  std::map<std::string, int> owned;
  for (int i = 0; owned.size() < 2 || channels.size() < 6; ++i) {
    REQUIRE(i < 64);
    const std::string name = "room-" + std::to_string(i);
    REQUIRE(alice->CreateChannel(name).ok());
    REQUIRE(bob->JoinChannel(name).ok());
    channels.push_back(name);
    ++owned[OwnerOf(name, shards)];
  }
  auto b = bob->Connect();
  for (const auto& channel : channels) REQUIRE(SubscribeAndWait(*b, channel) == 0);

  auto a = alice->Connect();
  const auto send_round = [&](const std::string& tag) {
    for (const auto& channel : channels) {
      ResendUntilAcked(*a, channel, client::NewClientMsgId(), tag + " in " + channel);
    }
  };
  send_round("first");
  std::map<std::string, std::vector<std::uint64_t>> got;
  const auto collect = [&](std::uint64_t until) {
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    auto done = [&] {
      for (const auto& c : channels) {
        if (got[c].empty() || got[c].back() < until) return false;
      }
      return true;
    };
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      auto frame = b->Next(100ms);
      if (frame && frame->has_message())
        got[frame->message().channel()].push_back(frame->message().seq());
    }
  };
  collect(1);

  // The edge's log (module cluster): each peer it calls connected once, by address and role.
  const auto events = [&](const std::string& msg, std::map<std::string, std::string> where) {
    return testing::JsonLogEvents(edge.log_path(), msg, where);
  };
  const std::map<std::string, std::string> core_auth = {{"peer", shards[0]}, {"role", "auth"}};
  const std::map<std::string, std::string> core_shard = {{"peer", shards[0]}, {"role", "shard"}};
  const std::map<std::string, std::string> lost_shard = {{"peer", shards[1]}, {"role", "shard"}};
  for (const auto& peer : {core_auth, core_shard, lost_shard}) {
    INFO(peer.at("peer") << " " << peer.at("role"));
    REQUIRE(WaitUntil([&] { return events("peer connected", peer).size() == 1; }, kWait));
    CHECK(events("peer connected", peer)[0]["module"] == "cluster");
  }

  shard_b.Kill9();  // its channels' sends go to the core's shard now
  send_round("second");
  collect(2);
  for (const auto& channel : channels) {
    INFO(channel << " owned by " << OwnerOf(channel, shards));
    CHECK(got[channel] == Range(1, 2));
    CHECK(Seqs(FullHistory(*bob, channel)) == Range(1, 2));
  }

  // Its lease expires: placement moves its channels to the core's shard, logged once; the
  // killed shard is lost once, however often the edge tries to reconnect meanwhile.
  REQUIRE(WaitUntil(
      [&] {
        return !events("placement changed", {{"left", shards[1]}}).empty();
      },
      kWait));
  const auto moved = events("placement changed", {{"left", shards[1]}});
  REQUIRE(moved.size() == 1);
  CHECK(moved[0]["module"] == "router");
  CHECK(moved[0]["region"] == "local");
  CHECK(moved[0]["shards"] == shards[0]);
  CHECK(moved[0]["joined"] == "");
  CHECK(moved[0]["source"] == "leases");
  const auto lost = events("peer lost", lost_shard);
  REQUIRE(lost.size() == 1);
  CHECK(lost[0]["level"] == "warn");
  CHECK(lost[0]["ts"].get<std::string>() <= moved[0]["ts"].get<std::string>());
  CHECK(events("peer connected", lost_shard).size() == 1);  // not back
  CHECK(events("peer lost", core_shard).empty());
  CHECK(events("peer lost", core_auth).empty());
}

// Two regions, each with its own database and shard process; auth is global (in region a's
// database, in region a's core). An edge in each region. A channel lives in its home region (a
// function of its name); a client of either edge chats in channels of both regions and sees one
// order per channel. A region that is down takes only its own channels with it.
TEST_CASE("role-split: two regions, a client of either edge reaches channels homed in both",
          "[e2e][cluster]") {
  TestDatabase db_a, db_b;
  const std::vector<std::string> regions = {"a", "b"};
  const std::string cluster = "cluster.regions=a,b";
  DaemonProcess core_a(db_a,
                       {"roles=auth,shard", "region=a", cluster, "shard.id=a-0",
                        "grpc.internal_listen_address=127.0.0.1:0", "grpc.shutdown_grace_s=1"});
  DaemonProcess shard_b(db_b,
                        {"roles=shard", "region=b", cluster, "shard.id=b-0",
                         "grpc.internal_listen_address=127.0.0.1:0", "grpc.shutdown_grace_s=1"});
  const auto edge_in = [&](const std::string& region, const std::string& local,
                           const std::string& other_region, const std::string& other) {
    return std::vector<std::string>{"roles=gateway,fanout,router",
                                    "database.url=",
                                    "region=" + region,
                                    cluster,
                                    "peers.auth=" + core_a.internal_address(),
                                    "peers.shard=" + local,
                                    "peers.region_shards=" + other_region + "=" + other,
                                    "grpc.internal_call_timeout_ms=2000"};
  };
  DaemonProcess edge_a(db_a,
                       edge_in("a", core_a.internal_address(), "b", shard_b.internal_address()));
  DaemonProcess edge_b(db_b,
                       edge_in("b", shard_b.internal_address(), "a", core_a.internal_address()));

  auto alice = RegisterUser(edge_a.address(), "alice");  // registered in region a
  auto bob = RegisterUser(edge_b.address(), "bob");      // through region b's edge: auth is global

  // Channels until each region is home to some.
  std::vector<std::string> channels;
  std::map<std::string, std::vector<std::string>> homed;
  for (int i = 0; homed.size() < 2 || channels.size() < 4; ++i) {
    REQUIRE(i < 64);
    const std::string name = "place-" + std::to_string(i);
    REQUIRE(alice->CreateChannel(name).ok());
    REQUIRE(bob->JoinChannel(name).ok());
    channels.push_back(name);
    homed[OwnerOf(name, regions)].push_back(name);
    auto route = alice->Route(name);
    REQUIRE(route.ok());
    CHECK(route->region() == OwnerOf(name, regions));
  }
  // Listing spans regions.
  auto listed = bob->ListChannels();
  REQUIRE(listed.ok());
  std::vector<std::string> names;
  for (const auto& c : *listed) names.push_back(c.name());
  for (const auto& c : channels) CHECK(std::count(names.begin(), names.end(), c) == 1);

  auto a = alice->Connect();
  auto b = bob->Connect();
  for (const auto& c : channels) {
    REQUIRE(SubscribeAndWait(*a, c) == 0);
    REQUIRE(SubscribeAndWait(*b, c) == 0);
  }
  for (int i = 0; i < 3; ++i) {
    for (const auto& c : channels) {
      REQUIRE_FALSE(a->Send(c, "alice " + std::to_string(i)).empty());
      REQUIRE_FALSE(b->Send(c, "bob " + std::to_string(i)).empty());
    }
  }
  std::map<std::string, std::vector<v1::ChatMessage>> got_a, got_b;
  const auto collect = [&](ChatStream& stream, auto& got) {
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    auto done = [&] {
      for (const auto& c : channels) {
        if (got[c].size() < 6) return false;
      }
      return true;
    };
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      auto frame = stream.Next(100ms);
      if (frame && frame->has_message())
        got[frame->message().channel()].push_back(frame->message());
    }
  };
  collect(*a, got_a);
  collect(*b, got_b);
  for (const auto& c : channels) {
    INFO(c << " homed in " << OwnerOf(c, regions));
    const auto history = FullHistory(*alice, c);
    CHECK(Seqs(history) == Range(1, 6));
    CHECK(Seqs(got_a[c]) == Range(1, 6));
    CHECK(Seqs(got_b[c]) == Range(1, 6));
    for (std::size_t i = 0; i < std::min(history.size(), got_b[c].size()); ++i) {
      CHECK(got_a[c][i].body() == history[i].body());
      CHECK(got_b[c][i].body() == history[i].body());
    }
  }
  // A channel homed in b is in b's database only.
  {
    pqxx::connection conn_a(db_a.url()), conn_b(db_b.url());
    pqxx::nontransaction ta(conn_a), tb(conn_b);
    const std::string b_channel = homed["b"].front();
    CHECK(ta.exec_params("SELECT 1 FROM channels WHERE name = $1", b_channel).empty());
    CHECK(tb.exec_params("SELECT 1 FROM channels WHERE name = $1", b_channel).size() == 1);
  }

  // Region b goes down: its channels stop (no ACK), region a's keep working from both edges.
  shard_b.Kill9();
  for (const auto& c : homed["a"]) {
    auto ok = SendAndWait(*b, c, client::NewClientMsgId(), "a still works", kWait);
    REQUIRE(ok.has_value());
    CHECK(ok->has_send_ack());
  }
  auto down = SendAndWait(*a, homed["b"].front(), client::NewClientMsgId(), "b is down", kWait);
  REQUIRE(down.has_value());
  REQUIRE(down->has_error());
  CHECK(down->error().code() == static_cast<int>(Code::kUnavailable));
}

// Scale-out: a shard process that no edge lists in peers.shard is found by its lease, takes its
// share of the channels (rendezvous hashing over the live leases), and its events reach the
// edge's subscribers live: the edge watches it from the moment it is found.
TEST_CASE(
    "role-split: a shard process the edge does not list is found by its lease and serves its "
    "channels, live",
    "[e2e][cluster]") {
  TestDatabase db;
  DaemonProcess core(db, WithFastLeases({"roles=auth,shard", "shard.id=shard-a",
                                         "grpc.internal_listen_address=127.0.0.1:0"}));
  DaemonProcess edge(db, WithFastLeases({"roles=gateway,fanout,router",
                                         "database.url=", "peers.auth=" + core.internal_address(),
                                         "peers.shard=" + core.internal_address(),
                                         "grpc.internal_call_timeout_ms=1000"}));
  auto alice = RegisterUser(edge.address(), "alice");
  auto bob = RegisterUser(edge.address(), "bob");
  DaemonProcess added(db, WithFastLeases({"roles=shard", "shard.id=shard-b",
                                          "grpc.internal_listen_address=127.0.0.1:0"}));
  const std::vector<std::string> shards = {core.internal_address(), added.internal_address()};
  std::string channel;
  for (int i = 0; channel.empty(); ++i) {
    REQUIRE(i < 64);
    const std::string name = "grown-" + std::to_string(i);
    if (OwnerOf(name, shards) == added.internal_address()) channel = name;
  }
  REQUIRE(alice->CreateChannel(channel).ok());
  REQUIRE(bob->JoinChannel(channel).ok());
  // The edge finds shard-b in the lease table and places the channel there.
  REQUIRE(WaitUntil(
      [&] {
        auto route = alice->Route(channel);
        return route.ok() && route->shard_id() == "shard-b";
      },
      kWait));

  auto b = bob->Connect();
  REQUIRE(SubscribeAndWait(*b, channel) <= 1);
  auto a = alice->Connect();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(client::NewClientMsgId());
    auto ack = SendAndWait(*a, channel, ids.back(), "via the found shard " + std::to_string(i));
    REQUIRE(ack.has_value());
    REQUIRE(ack->has_send_ack());
  }
  // Delivered live: shard-b's events are watched (without that, nothing would reveal the gap).
  const auto history = FullHistory(*bob, channel);
  REQUIRE(history.size() >= 5);
  const auto live = CollectMessages(*b, channel, history.back().seq(), kWait);
  REQUIRE_FALSE(live.empty());
  CHECK(live.back().seq() == history.back().seq());
  CHECK(live.back().client_msg_id() == ids.back());
}

// Liveness comes from the database: a shard that stops renewing its lease (here SIGSTOP: alive
// but silent, the hardest case) leaves placement after lease_ttl_ms, its channels move to the
// next shard, and when it wakes up it takes them back. The database allocates every seq, so the
// two shards never fork a channel's order, and the sends the paused shard had queued are
// duplicates of their retries, never second copies.
TEST_CASE(
    "role-split: a paused shard loses its channels when its lease expires and gets them "
    "back when it wakes, with one order and no duplicate",
    "[e2e][cluster]") {
  TestDatabase db;
  DaemonProcess core(db, WithFastLeases({"roles=auth,shard", "shard.id=shard-a",
                                         "grpc.internal_listen_address=127.0.0.1:0"}));
  DaemonProcess other(db, WithFastLeases({"roles=shard", "shard.id=shard-b",
                                          "grpc.internal_listen_address=127.0.0.1:0"}));
  const std::vector<std::string> shards = {core.internal_address(), other.internal_address()};
  DaemonProcess edge(db, WithFastLeases({"roles=gateway,fanout,router",
                                         "database.url=", "peers.auth=" + core.internal_address(),
                                         "peers.shard=" + shards[0] + "," + shards[1],
                                         "grpc.internal_call_timeout_ms=1000"}));
  auto alice = RegisterUser(edge.address(), "alice");
  auto bob = RegisterUser(edge.address(), "bob");
  std::string channel;
  for (int i = 0; channel.empty(); ++i) {
    REQUIRE(i < 64);
    const std::string name = "paused-" + std::to_string(i);
    if (OwnerOf(name, shards) == other.internal_address()) channel = name;
  }
  REQUIRE(alice->CreateChannel(channel).ok());
  REQUIRE(bob->JoinChannel(channel).ok());
  auto b = bob->Connect();
  REQUIRE(SubscribeAndWait(*b, channel) == 0);

  auto a = alice->Connect();
  std::vector<std::string> ids;
  const auto send = [&](const std::string& body) {
    const std::string id = client::NewClientMsgId();
    ids.push_back(id);
    const auto started = std::chrono::steady_clock::now();
    ResendUntilAcked(*a, channel, id, body);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  };
  // Route names the shard that serves the channel now, by the leases the edge reads.
  const auto routed_to = [&](const std::string& shard_id) {
    return WaitUntil(
        [&] {
          auto route = alice->Route(channel);
          return route.ok() && route->shard_id() == shard_id;
        },
        kWait);
  };
  CHECK(routed_to("shard-b"));
  for (int i = 0; i < 3; ++i) send("before " + std::to_string(i));

  REQUIRE(::kill(other.pid(), SIGSTOP) == 0);
  double worst = 0;
  for (int i = 0; i < 3; ++i) worst = std::max(worst, send("paused " + std::to_string(i)));
  INFO("sends succeeded again after at most " << worst << " s");
  CHECK(worst < 10);
  CHECK(routed_to("shard-a"));  // its lease expired: out of placement
  REQUIRE(::kill(other.pid(), SIGCONT) == 0);
  CHECK(routed_to("shard-b"));  // renewed: back in
  for (int i = 0; i < 3; ++i) send("after " + std::to_string(i));

  CHECK(Seqs(CollectMessages(*b, channel, 9, kWait)) == Range(1, 9));
  const auto history = FullHistory(*bob, channel);
  REQUIRE(Seqs(history) == Range(1, 9));
  for (std::size_t i = 0; i < ids.size(); ++i) CHECK(history[i].client_msg_id() == ids[i]);
}

// ---------------------------------------------------------------------------------------------
// The send stream: an edge's sends to a shard process travel on one long-lived
// ShardInternal.SendStream call (RemoteShard), not one unary call each.
// ---------------------------------------------------------------------------------------------

// Reads `stream` until each of `ids` got its SendAck or Error (the first one counts; a second
// answer for an id is counted in `answers_seen`), or `timeout` passes.
struct Answers {
  std::map<std::string, v1::ServerFrame> first;
  std::map<std::string, int> answers_seen;
};
Answers CollectAnswers(ChatStream& stream, const std::vector<std::string>& ids,
                       std::chrono::milliseconds timeout, Answers answers = {}) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto all_answered = [&] {
    return std::all_of(ids.begin(), ids.end(),
                       [&](const std::string& id) { return answers.first.count(id) > 0; });
  };
  while (!all_answered() && std::chrono::steady_clock::now() < deadline) {
    auto frame = stream.Next(50ms);
    if (!frame) continue;
    std::string id;
    if (frame->has_send_ack()) id = frame->send_ack().client_msg_id();
    if (frame->has_error()) id = frame->error().client_msg_id();
    if (id.empty()) continue;
    ++answers.answers_seen[id];
    answers.first.emplace(id, *frame);
  }
  return answers;
}

// An edge that lets a client send as fast as it likes (the gateway's own limits are not under
// test here), with a 1 s internal call timeout.
std::vector<std::string> FastEdge(const DaemonProcess& core) {
  return {"roles=gateway,fanout,router",
          "database.url=",
          "peers.auth=" + core.internal_address(),
          "peers.shard=" + core.internal_address(),
          "grpc.internal_call_timeout_ms=1000",
          "limits.send_rate_per_s=100000",
          "limits.send_burst=100000"};
}

// A core [auth, shard] and a FastEdge in front of it, with alice registered on the edge.
struct FastPair {
  FastPair()
      : core(db, {"roles=auth,shard", "grpc.internal_listen_address=127.0.0.1:0",
                  "grpc.shutdown_grace_s=1"}),
        edge(db, FastEdge(core)),
        alice(RegisterUser(edge.address(), "alice")) {}

  TestDatabase db;
  DaemonProcess core;
  DaemonProcess edge;
  std::shared_ptr<client::Client> alice;
};

// A send that was in flight when the core stopped answering fails as retryable.
void CheckRetryable(const v1::ServerFrame& frame) {
  REQUIRE(frame.has_error());
  const auto code = static_cast<Code>(frame.error().code());
  CHECK((code == Code::kDeadlineExceeded || code == Code::kUnavailable));
}

TEST_CASE(
    "role-split send stream: 2000 pipelined sends from several streams are each ACKed once "
    "and stored once, in each stream's order",
    "[e2e][cluster]") {
  FastPair pair;
  auto& alice = pair.alice;
  constexpr int kStreams = 4;
  constexpr int kPerStream = 500;
  std::vector<std::unique_ptr<ChatStream>> streams;
  std::vector<std::string> channels;
  std::vector<std::vector<std::string>> ids(kStreams);
  for (int s = 0; s < kStreams; ++s) {
    channels.push_back("pipe-" + std::to_string(s));
    REQUIRE(alice->CreateChannel(channels.back()).ok());
    streams.push_back(alice->Connect());
  }
  // Interleaved across the streams, none waiting for an ACK: the edge's one send stream to the
  // core carries all of them at once.
  for (int i = 0; i < kPerStream; ++i) {
    for (int s = 0; s < kStreams; ++s) {
      ids[s].push_back(client::NewClientMsgId());
      REQUIRE(streams[s]->Send(channels[s], ids[s].back(), "m " + std::to_string(i)));
    }
  }
  for (int s = 0; s < kStreams; ++s) {
    INFO("stream " << s);
    const Answers answers = CollectAnswers(*streams[s], ids[s], 60s);
    REQUIRE(answers.first.size() == ids[s].size());
    std::set<std::uint64_t> seqs;
    for (const auto& id : ids[s]) {
      const auto& frame = answers.first.at(id);
      REQUIRE(frame.has_send_ack());
      CHECK_FALSE(frame.send_ack().duplicate());
      CHECK(answers.answers_seen.at(id) == 1);
      seqs.insert(frame.send_ack().seq());
    }
    CHECK(seqs.size() == ids[s].size());
    // Stored once each, in the order the stream sent them.
    const auto history = FullHistory(*alice, channels[s]);
    REQUIRE(history.size() == ids[s].size());
    for (std::size_t i = 0; i < history.size(); ++i) {
      CHECK(history[i].client_msg_id() == ids[s][i]);
      CHECK(history[i].seq() == i + 1);
    }
  }
}

TEST_CASE(
    "role-split send stream: with the core stopped, sends in flight fail within about one call "
    "timeout, and succeed again after it resumes, stored once",
    "[e2e][cluster]") {
  FastPair pair;
  auto& alice = pair.alice;
  DaemonProcess& core = pair.core;
  REQUIRE(alice->CreateChannel(kGeneral).ok());
  auto a = alice->Connect();
  // The send stream is open before the core stops: what follows waits on an open connection.
  auto warm = SendAndWait(*a, kGeneral, client::NewClientMsgId(), "warm up");
  REQUIRE(warm.has_value());
  REQUIRE(warm->has_send_ack());

  StopProcess(core.pid());
  std::vector<std::string> ids;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) {
    ids.push_back(client::NewClientMsgId());
    REQUIRE(a->Send(kGeneral, ids.back(), "stalled " + std::to_string(i)));
  }
  const Answers answers = CollectAnswers(*a, ids, 10s);
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  REQUIRE(::kill(core.pid(), SIGCONT) == 0);
  INFO("all " << ids.size() << " sends were answered after " << took << " s");
  REQUIRE(answers.first.size() == ids.size());
  for (const auto& id : ids) CheckRetryable(answers.first.at(id));
  CHECK(took < 5.0);

  // Resent with the same ids once the core is back: ACKed, and each stored once (the requests
  // the stopped core had read commit after all; their resends are duplicates).
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ResendUntilAcked(*a, kGeneral, ids[i], "stalled " + std::to_string(i));
  }
  const auto history = FullHistory(*alice, kGeneral);
  CHECK(history.size() == ids.size() + 1);
  CheckStoredOnce(history, ids);
}

TEST_CASE(
    "role-split send stream: kill -9 of the core answers every send in flight, and resends "
    "after its restart are stored once",
    "[e2e][cluster]") {
  FastPair pair;
  auto& alice = pair.alice;
  DaemonProcess& core = pair.core;
  REQUIRE(alice->CreateChannel(kGeneral).ok());
  auto a = alice->Connect();
  std::vector<std::string> ids;
  for (int i = 0; i < 300; ++i) {
    ids.push_back(client::NewClientMsgId());
    REQUIRE(a->Send(kGeneral, ids.back(), "inflight " + std::to_string(i)));
  }
  // Killed once the first ACK is back: the core is committing, the rest are in flight.
  Answers answers = CollectAnswers(*a, {ids.front()}, kWait);
  REQUIRE(answers.first.count(ids.front()) == 1);
  core.Restart(/*kill9=*/true);  // same database, same internal port
  // Every send is answered: ACKed before the kill, or an error (none hangs).
  answers = CollectAnswers(*a, ids, 20s, std::move(answers));
  REQUIRE(answers.first.size() == ids.size());
  int failed = 0;
  for (const auto& id : ids) {
    const auto& frame = answers.first.at(id);
    if (frame.has_send_ack()) continue;
    ++failed;
    CheckRetryable(frame);
  }
  WARN(failed << " of " << ids.size() << " sends failed");
  // Resent with the same ids: each one stored once.
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (answers.first.at(ids[i]).has_send_ack()) continue;
    ResendUntilAcked(*a, kGeneral, ids[i], "inflight " + std::to_string(i));
  }
  const auto history = FullHistory(*alice, kGeneral);
  CHECK(Seqs(history) == Range(1, ids.size()));
  CheckStoredOnce(history, ids);
}

}  // namespace
}  // namespace infrachat
