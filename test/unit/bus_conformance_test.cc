// EventBus conformance: the same cases against LocalEventBus and against GrpcEventBus talking
// over loopback gRPC to an EventStreamService (a "shard" process whose LocalEventBus the test
// publishes committed messages into). Plus the wire codec and gRPC-only cases: owner restart
// and a stalled watcher.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bus/grpc/bus_codec.h"
#include "bus/grpc/event_stream_service.h"
#include "bus/grpc/grpc_event_bus.h"
#include "bus/local/local_event_bus.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using bus_grpc::EventStreamOptions;
using bus_grpc::EventStreamService;
using bus_grpc::GrpcEventBus;
using bus_grpc::GrpcEventBusOptions;

constexpr auto kWait = 15s;  // an upper bound on any wait: a bug fails the test, never hangs it

v1::ChatMessage Msg(const std::string& channel, std::uint64_t seq) {
  v1::ChatMessage m;
  m.set_channel(channel);
  m.set_seq(seq);
  m.set_body("body " + std::to_string(seq));
  return m;
}

v1::TypingEvent Typing(const std::string& channel, std::uint64_t user_id) {
  v1::TypingEvent t;
  t.set_channel(channel);
  t.set_user_id(user_id);
  t.set_username("user" + std::to_string(user_id));
  return t;
}

// What a handler saw: the variant index, the channel and (for messages) the seq.
struct Seen {
  std::size_t kind = 0;
  std::string channel;
  std::uint64_t seq = 0;
};

// Records every event it sees; thread-safe; waits are bounded.
struct Recorder {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Seen> seen;

  EventBus::Handler Handler() {
    return [this](const BusEvent& e) {
      Seen s{e.index(), EventChannel(e), 0};
      if (const auto* m = std::get_if<v1::ChatMessage>(&e)) s.seq = m->seq();
      {
        std::lock_guard lock(mu);
        seen.push_back(std::move(s));
      }
      cv.notify_all();
    };
  }
  std::vector<Seen> Snapshot() {
    std::lock_guard lock(mu);
    return seen;
  }
  // Messages of `channel`, by seq, in arrival order.
  std::vector<std::uint64_t> Seqs(const std::string& channel) {
    std::lock_guard lock(mu);
    std::vector<std::uint64_t> out;
    for (const Seen& s : seen) {
      if (s.kind == 0 && s.channel == channel) out.push_back(s.seq);
    }
    return out;
  }
  std::size_t Count(const std::string& channel, std::size_t kind) {
    std::lock_guard lock(mu);
    std::size_t n = 0;
    for (const Seen& s : seen) n += (s.channel == channel && s.kind == kind) ? 1 : 0;
    return n;
  }
  // Waits until message `seq` of `channel` was seen.
  bool WaitForMsg(const std::string& channel, std::uint64_t seq) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kWait, [&] {
      for (const Seen& s : seen) {
        if (s.kind == 0 && s.channel == channel && s.seq == seq) return true;
      }
      return false;
    });
  }
  bool WaitForCount(const std::string& channel, std::size_t kind, std::size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kWait, [&] {
      std::size_t c = 0;
      for (const Seen& s : seen) c += (s.channel == channel && s.kind == kind) ? 1 : 0;
      return c >= n;
    });
  }
};

// Counts `ready` calls per channel.
struct ReadyLog {
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, int> calls;

  EventBus::Ready For(const std::string& channel) {
    return [this, channel] {
      {
        std::lock_guard lock(mu);
        ++calls[channel];
      }
      cv.notify_all();
    };
  }
  int Count(const std::string& channel) {
    std::lock_guard lock(mu);
    return calls[channel];
  }
  bool WaitFor(const std::string& channel, int n, std::chrono::milliseconds limit = kWait) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, limit, [&] { return calls[channel] >= n; });
  }
};

// A one-shot gate with a bounded wait.
struct Gate {
  std::promise<void> promise;
  std::shared_future<void> future = promise.get_future().share();
  std::once_flag once;
  void Open() {
    std::call_once(once, [this] { promise.set_value(); });
  }
  bool Wait(std::chrono::milliseconds limit = kWait) const {
    return future.wait_for(limit) == std::future_status::ready;
  }
};

// The owner process's listener: an EventStreamService over `bus` on 127.0.0.1:port (0: any).
class OwnerServer {
 public:
  OwnerServer(EventBus* bus, int port, EventStreamOptions options = {})
      : service_(std::make_unique<EventStreamService>(bus, options)) {
    grpc::ServerBuilder builder;
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
  }
  ~OwnerServer() { Stop(); }

  // Shutdown cancels the open Watch streams at once (deadline now), then the service goes.
  void Stop() {
    if (!server_) return;
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
    server_.reset();
    service_.reset();
  }
  bool started() const { return server_ != nullptr && port_ > 0; }
  int port() const { return port_; }
  EventStreamService& service() { return *service_; }

 private:
  std::unique_ptr<EventStreamService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

enum class Kind { kLocal, kGrpc };

// The bus under test (`bus()`, what an edge's modules use) and the owner's bus (`owner()`,
// where the shard publishes committed events). For the local kind they are the same bus.
struct Harness {
  explicit Harness(Kind k, EventStreamOptions server_options = {},
                   GrpcEventBusOptions client_options = {})
      : kind(k), owner_bus(std::make_unique<LocalEventBus>()) {
    if (kind == Kind::kLocal) return;
    server = std::make_unique<OwnerServer>(owner_bus.get(), 0, server_options);
    REQUIRE(server->started());
    port = server->port();
    auto channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                             grpc::InsecureChannelCredentials(),
                                             GrpcEventBus::ChannelArguments(client_options));
    grpc_bus = std::make_unique<GrpcEventBus>(channel, client_options);
  }
  ~Harness() {
    grpc_bus.reset();  // the edge first: cancels its stream
    server.reset();
    owner_bus.reset();
  }

  bool remote() const { return kind == Kind::kGrpc; }
  EventBus& bus() { return remote() ? static_cast<EventBus&>(*grpc_bus) : *owner_bus; }
  LocalEventBus& owner() { return *owner_bus; }
  const char* name() const { return remote() ? "GrpcEventBus" : "LocalEventBus"; }

  Kind kind;
  std::unique_ptr<LocalEventBus> owner_bus;
  std::unique_ptr<OwnerServer> server;
  std::unique_ptr<GrpcEventBus> grpc_bus;
  int port = 0;
};

// ---- the codec ------------------------------------------------------------------------------

TEST_CASE("bus codec: every event kind survives a round trip through the wire", "[bus][codec]") {
  v1::ChatMessage message = Msg("general", 42);
  message.set_sender_id(7);
  message.set_sender("alice");
  message.set_sent_at_unix_ms(1700000000123);
  message.set_client_msg_id("cmid-1");
  v1::Receipt receipt;
  receipt.set_channel("r");
  receipt.set_user_id(9);
  receipt.set_username("bob");
  receipt.set_seq(41);
  receipt.set_kind(v1::AckKind(1));
  const std::vector<BusEvent> events = {
      BusEvent(message),
      BusEvent(Typing("t", 3)),
      BusEvent(receipt),
      BusEvent(MembershipChanged{"j", 5, "carol", true}),
      BusEvent(PresenceChanged{"p", 6, "dave", true, 0xFFFFFFFFFFFFull}),
  };
  for (const BusEvent& event : events) {
    INFO("variant index " << event.index());
    std::string wire;
    REQUIRE(bus_grpc::ToProto(event).SerializeToString(&wire));
    internal::v1::BusEvent parsed;
    REQUIRE(parsed.ParseFromString(wire));
    std::optional<BusEvent> back = bus_grpc::FromProto(parsed);
    REQUIRE(back.has_value());
    REQUIRE(back->index() == event.index());
    std::visit(
        [&](const auto& original) {
          using T = std::decay_t<decltype(original)>;
          const T& got = std::get<T>(*back);
          if constexpr (std::is_same_v<T, MembershipChanged>) {
            CHECK(got.channel == original.channel);
            CHECK(got.user_id == original.user_id);
            CHECK(got.username == original.username);
            CHECK(got.joined == original.joined);
          } else if constexpr (std::is_same_v<T, PresenceChanged>) {
            CHECK(got.channel == original.channel);
            CHECK(got.user_id == original.user_id);
            CHECK(got.username == original.username);
            CHECK(got.online == original.online);
            CHECK(got.origin == original.origin);
          } else {
            CHECK(got.SerializeAsString() == original.SerializeAsString());
          }
        },
        event);
  }
  // The false values of the bools, too.
  auto left = bus_grpc::FromProto(bus_grpc::ToProto(MembershipChanged{"j", 5, "carol", false}));
  REQUIRE(left);
  CHECK_FALSE(std::get<MembershipChanged>(*left).joined);
  auto offline = bus_grpc::FromProto(bus_grpc::ToProto(PresenceChanged{"p", 6, "d", false, 1}));
  REQUIRE(offline);
  CHECK_FALSE(std::get<PresenceChanged>(*offline).online);
}

TEST_CASE("bus codec: an empty BusEvent is refused", "[bus][codec]") {
  CHECK_FALSE(bus_grpc::FromProto(internal::v1::BusEvent()).has_value());
}

// ---- conformance: every EventBus ------------------------------------------------------------

TEST_CASE("conformance: Watch's ready runs, and every event published after it arrives",
          "[bus][conformance]") {
  ReadyLog ready;
  Recorder rec;
  Harness h(GENERATE(Kind::kLocal, Kind::kGrpc));
  INFO(h.name());
  h.bus().Subscribe(rec.Handler());
  h.bus().Watch("c", ready.For("c"));
  REQUIRE(ready.WaitFor("c", 1));
  for (std::uint64_t i = 1; i <= 100; ++i) h.owner().Publish(Msg("c", i));
  REQUIRE(rec.WaitForMsg("c", 100));
  std::vector<std::uint64_t> expected(100);
  for (std::uint64_t i = 0; i < 100; ++i) expected[i] = i + 1;
  CHECK(rec.Seqs("c") == expected);
  CHECK(ready.Count("c") == 1);
}

TEST_CASE("conformance: per-channel publish order holds for every subscriber",
          "[bus][conformance]") {
  ReadyLog ready;
  Recorder a, b, c;
  Harness h(GENERATE(Kind::kLocal, Kind::kGrpc));
  INFO(h.name());
  for (Recorder* r : {&a, &b, &c}) h.bus().Subscribe(r->Handler());
  h.bus().Watch("x", ready.For("x"));
  h.bus().Watch("y", ready.For("y"));
  REQUIRE(ready.WaitFor("x", 1));
  REQUIRE(ready.WaitFor("y", 1));
  constexpr std::uint64_t kN = 1000;
  for (std::uint64_t i = 1; i <= kN; ++i) {
    h.owner().Publish(Msg("x", i));
    h.owner().Publish(Msg("y", i));
  }
  for (Recorder* r : {&a, &b, &c}) {
    REQUIRE(r->WaitForMsg("x", kN));
    REQUIRE(r->WaitForMsg("y", kN));
    for (const char* channel : {"x", "y"}) {
      auto seqs = r->Seqs(channel);
      REQUIRE(seqs.size() == kN);
      for (std::uint64_t i = 0; i < kN; ++i) REQUIRE(seqs[i] == i + 1);
    }
  }
}

TEST_CASE("conformance: events of unwatched channels (a bus may deliver more)",
          "[bus][conformance]") {
  // The contract: a bus delivers every event of a watched channel published after `ready`, and
  // MAY deliver more. The in-process bus delivers everything; the gRPC bus only what is
  // watched, which this case checks for it.
  ReadyLog ready;
  Recorder rec;
  Harness h(GENERATE(Kind::kLocal, Kind::kGrpc));
  INFO(h.name());
  h.bus().Subscribe(rec.Handler());
  h.bus().Watch("a", ready.For("a"));
  h.bus().Watch("b", ready.For("b"));
  REQUIRE(ready.WaitFor("a", 1));
  REQUIRE(ready.WaitFor("b", 1));
  for (std::uint64_t i = 1; i <= 50; ++i) h.owner().Publish(Msg("unwatched", i));
  h.owner().Publish(Msg("a", 1));  // a sentinel behind them: same owner bus, same FIFO
  REQUIRE(rec.WaitForMsg("a", 1));
  if (h.remote()) CHECK(rec.Seqs("unwatched").empty());

  // After Unwatch, the owner stops forwarding the channel (the remove travels ahead of the
  // sentinel on the same stream and is applied in order).
  h.bus().Unwatch("a");
  // A later Watch's ready proves the remove was applied (requests are handled in order).
  h.bus().Watch("c", ready.For("c"));
  REQUIRE(ready.WaitFor("c", 1));
  for (std::uint64_t i = 2; i <= 50; ++i) h.owner().Publish(Msg("a", i));
  h.owner().Publish(Msg("b", 1));
  REQUIRE(rec.WaitForMsg("b", 1));
  if (h.remote()) {
    CHECK(rec.Seqs("a") == std::vector<std::uint64_t>{1});
  } else {
    CHECK(rec.Seqs("a").size() == 50);
  }
}

TEST_CASE("conformance: Unsubscribe stops delivery to that handler only", "[bus][conformance]") {
  ReadyLog ready;
  Recorder gone, stays;
  Harness h(GENERATE(Kind::kLocal, Kind::kGrpc));
  INFO(h.name());
  const auto id = h.bus().Subscribe(gone.Handler());
  h.bus().Subscribe(stays.Handler());
  h.bus().Watch("c", ready.For("c"));
  REQUIRE(ready.WaitFor("c", 1));
  for (std::uint64_t i = 1; i <= 10; ++i) h.owner().Publish(Msg("c", i));
  REQUIRE(gone.WaitForMsg("c", 10));
  REQUIRE(stays.WaitForMsg("c", 10));
  h.bus().Unsubscribe(id);
  for (std::uint64_t i = 11; i <= 20; ++i) h.owner().Publish(Msg("c", i));
  REQUIRE(stays.WaitForMsg("c", 20));
  CHECK(gone.Seqs("c").size() == 10);
  CHECK(stays.Seqs("c").size() == 20);
}

TEST_CASE(
    "conformance: typing and presence published on the bus reach the owner and come back "
    "once to watchers",
    "[bus][conformance]") {
  ReadyLog ready;
  Recorder at_owner, at_edge;
  Harness h(GENERATE(Kind::kLocal, Kind::kGrpc));
  INFO(h.name());
  h.owner().Subscribe(at_owner.Handler());
  h.bus().Subscribe(at_edge.Handler());
  h.bus().Watch("c", ready.For("c"));
  REQUIRE(ready.WaitFor("c", 1));
  constexpr std::size_t kTyping = 1, kPresence = 4;
  h.bus().Publish(Typing("c", 7));
  h.bus().Publish(PresenceChanged{"c", 7, "user7", true, 42});
  REQUIRE(at_owner.WaitForCount("c", kPresence, 1));
  REQUIRE(at_edge.WaitForCount("c", kPresence, 1));
  // A committed message behind them: once it arrived, any duplicate would have too.
  h.owner().Publish(Msg("c", 1));
  REQUIRE(at_edge.WaitForMsg("c", 1));
  CHECK(at_owner.Count("c", kTyping) == 1);
  CHECK(at_edge.Count("c", kTyping) == 1);
  CHECK(at_edge.Count("c", kPresence) == 1);
  // One order: typing before presence everywhere.
  for (Recorder* r : {&at_owner, &at_edge}) {
    auto seen = r->Snapshot();
    REQUIRE(seen.size() >= 2);
    CHECK(seen[0].kind == kTyping);
    CHECK(seen[1].kind == kPresence);
  }
}

TEST_CASE("conformance: 10k events arrive in order, none duplicated", "[bus][conformance]") {
  // One burst, published faster than any stream writes. The owner's per-stream queue must hold
  // the burst (default 4096: a longer burst to one watcher ends its stream by design, see the
  // stalled-watcher case), so here it is sized for it.
  constexpr std::uint64_t kN = 10000;
  EventStreamOptions server_options;
  server_options.max_queued_events = 2 * kN;
  ReadyLog ready;
  Recorder rec;
  Harness h(GENERATE(Kind::kLocal, Kind::kGrpc), server_options);
  INFO(h.name());
  h.bus().Subscribe(rec.Handler());
  h.bus().Watch("c", ready.For("c"));
  REQUIRE(ready.WaitFor("c", 1));
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t i = 1; i <= kN + 1; ++i) h.owner().Publish(Msg("c", i));
  REQUIRE(rec.WaitForMsg("c", kN + 1));
  const auto took = std::chrono::steady_clock::now() - start;
  WARN(h.name() << ": " << kN << " events delivered in "
                << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
  if (h.remote()) CHECK(h.server->service().overflowed_streams() == 0);
  auto seqs = rec.Seqs("c");
  REQUIRE(seqs.size() == kN + 1);
  for (std::uint64_t i = 0; i < seqs.size(); ++i) REQUIRE(seqs[i] == i + 1);
}

TEST_CASE("conformance: Watch never calls ready inline and Unwatch never blocks",
          "[bus][conformance]") {
  // Everything the callbacks use is declared before the bus, so it outlives the bus's threads.
  ReadyLog ready;
  std::mutex caller_mu;
  std::atomic<bool> ran_inline{false};
  Gate entered, release;
  Harness h(GENERATE(Kind::kLocal, Kind::kGrpc));
  INFO(h.name());
  // The caller holds its lock across Watch/Unwatch; `ready` takes the same lock on another
  // thread (inline, it would deadlock on this non-recursive mutex).
  const auto caller = std::this_thread::get_id();
  {
    std::lock_guard lock(caller_mu);
    h.bus().Watch("c", [&] {
      if (std::this_thread::get_id() == caller) {
        ran_inline = true;
      } else {
        std::lock_guard ready_lock(caller_mu);
      }
      ready.For("c")();
    });
  }
  REQUIRE(ready.WaitFor("c", 1));
  CHECK_FALSE(ran_inline);
  {
    std::lock_guard lock(caller_mu);
    h.bus().Unwatch("c");
    h.bus().Unwatch("never-watched");
  }
  // Unwatch returns while that channel's `ready` is still running (it does not wait for it).
  h.bus().Watch("d", [&] {
    entered.Open();
    release.Wait();
  });
  REQUIRE(entered.Wait());
  auto unwatched = std::async(std::launch::async, [&] { h.bus().Unwatch("d"); });
  CHECK(unwatched.wait_for(kWait) == std::future_status::ready);
  release.Open();
}

// ---- gRPC only ------------------------------------------------------------------------------

TEST_CASE("grpc bus: after Unwatch returns, that watch's ready does not start", "[bus][grpc]") {
  ReadyLog ready;
  std::atomic<bool> unwatched{false};
  std::atomic<int> late{0};
  std::atomic<bool> replaced{false};
  std::atomic<int> old_late{0};
  Harness h(Kind::kGrpc);
  for (int round = 0; round < 20; ++round) {
    const std::string channel = "u" + std::to_string(round);
    unwatched = false;
    h.bus().Watch(channel, [&] {
      if (unwatched) ++late;
    });
    h.bus().Unwatch(channel);
    unwatched = true;
  }
  // A Watch after them is answered after every earlier request: any stale ready had its turn.
  h.bus().Watch("after", ready.For("after"));
  REQUIRE(ready.WaitFor("after", 1));
  CHECK(late == 0);

  // Watching again replaces the ready: the old one does not start once the new Watch returned.
  // (It may have run before: the owner may answer between the two calls.)
  h.bus().Watch("w", [&] {
    if (replaced) ++old_late;
  });
  h.bus().Watch("w", ready.For("w"));
  replaced = true;
  REQUIRE(ready.WaitFor("w", 1));
  CHECK(old_late == 0);
}

TEST_CASE(
    "grpc bus: the owner restarts on the same port: ready runs again and later events "
    "arrive",
    "[bus][grpc]") {
  ReadyLog ready;
  Recorder rec;
  Harness h(Kind::kGrpc);
  h.bus().Subscribe(rec.Handler());
  h.bus().Watch("c", ready.For("c"));
  h.bus().Watch("d", ready.For("d"));
  REQUIRE(ready.WaitFor("c", 1));
  REQUIRE(ready.WaitFor("d", 1));
  // Many more channels: re-adding them after the restart takes several requests.
  constexpr int kMany = 2500;
  for (int i = 0; i < kMany; ++i) {
    const std::string name = "m" + std::to_string(i);
    h.bus().Watch(name, ready.For(name));
  }
  REQUIRE(ready.WaitFor("m" + std::to_string(kMany - 1), 1));
  h.owner().Publish(Msg("c", 1));
  REQUIRE(rec.WaitForMsg("c", 1));

  // Stop: the stream is cancelled; the edge retries with backoff (gRPC's channel waits for the
  // listener, wait_for_ready). Restart a new service on the same port.
  h.server->Stop();
  h.server = std::make_unique<OwnerServer>(h.owner_bus.get(), h.port);
  REQUIRE(h.server->started());
  REQUIRE(ready.WaitFor("c", 2));
  REQUIRE(ready.WaitFor("d", 2));
  for (int i = 0; i < kMany; ++i) REQUIRE(ready.WaitFor("m" + std::to_string(i), 2));
  CHECK(h.grpc_bus->watch_streams_opened() >= 2);
  h.owner().Publish(Msg("c", 2));
  h.owner().Publish(Msg("d", 1));
  REQUIRE(rec.WaitForMsg("c", 2));
  REQUIRE(rec.WaitForMsg("d", 1));
  CHECK(rec.Seqs("c") == std::vector<std::uint64_t>{1, 2});
}

TEST_CASE("grpc bus: publishing while the owner is down drops, never blocks, then recovers",
          "[bus][grpc]") {
  ReadyLog ready;
  Recorder rec;
  Harness h(Kind::kGrpc);
  h.bus().Subscribe(rec.Handler());
  h.bus().Watch("c", ready.For("c"));
  REQUIRE(ready.WaitFor("c", 1));
  h.server->Stop();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 5000; ++i) h.bus().Publish(Typing("c", 1));
  CHECK(std::chrono::steady_clock::now() - start < 2s);  // generous: it only enqueues
  h.server = std::make_unique<OwnerServer>(h.owner_bus.get(), h.port);
  REQUIRE(h.server->started());
  REQUIRE(ready.WaitFor("c", 2));
  // Bounded queue: most of the 5000 were dropped, not buffered without limit.
  CHECK(h.grpc_bus->dropped_publishes() >= 5000 - GrpcEventBusOptions().max_queued_publishes - 1);
  h.bus().Publish(PresenceChanged{"c", 9, "u9", true, 1});
  REQUIRE(rec.WaitForCount("c", 4, 1));
}

TEST_CASE(
    "grpc bus: a stalled watcher makes the owner end the stream (RESOURCE_EXHAUSTED), "
    "the edge reconnects and ready runs again",
    "[bus][grpc]") {
  ReadyLog ready;
  Recorder rec;
  Gate entered, release;
  EventStreamOptions server_options;
  server_options.max_queued_events = 64;
  GrpcEventBusOptions client_options;
  client_options.max_pending_events = 128;
  std::atomic<bool> first{true};
  Harness h(Kind::kGrpc, server_options, client_options);
  h.bus().Subscribe([&](const BusEvent& e) {
    if (first.exchange(false)) {
      entered.Open();
      release.Wait(60s);
    }
    rec.Handler()(e);
  });
  h.bus().Watch("s", ready.For("s"));
  REQUIRE(ready.WaitFor("s", 1));

  std::uint64_t seq = 0;
  h.owner().Publish(Msg("s", ++seq));
  REQUIRE(entered.Wait());
  // The handler is blocked: the edge's queue fills, it stops reading, HTTP/2 flow control
  // stops the owner's writes, and the owner's per-stream queue overflows.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (h.server->service().overflowed_streams() == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 1000; ++i) h.owner().Publish(Msg("s", ++seq));
    h.owner().Drain();
  }
  INFO("published " << seq);
  REQUIRE(h.server->service().overflowed_streams() == 1);
  CHECK(h.owner().queued() == 0);  // the owner's bus thread never blocked on the stream
  release.Open();
  REQUIRE(ready.WaitFor("s", 2));
  const std::uint64_t after = seq + 1;
  h.owner().Publish(Msg("s", after));
  REQUIRE(rec.WaitForMsg("s", after));
  // What arrived is in order, without duplicates, with a gap where the stream was cut.
  auto seqs = rec.Seqs("s");
  for (std::size_t i = 1; i < seqs.size(); ++i) REQUIRE(seqs[i] > seqs[i - 1]);
  CHECK(seqs.size() < seq);
}

TEST_CASE("grpc bus: the owner refuses an empty event", "[bus][grpc]") {
  LocalEventBus bus;
  OwnerServer server(&bus, 0);
  REQUIRE(server.started());
  auto stub = internal::v1::EventStream::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server.port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kWait);
  internal::v1::Empty response;
  const grpc::Status status = stub->Publish(&context, internal::v1::BusEvent(), &response);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_CASE("grpc bus: destroying the bus with a stream open and the owner gone does not hang",
          "[bus][grpc]") {
  ReadyLog ready;
  auto h = std::make_unique<Harness>(Kind::kGrpc);
  h->bus().Watch("c", ready.For("c"));
  REQUIRE(ready.WaitFor("c", 1));
  h->server->Stop();  // the edge now retries, waiting for the listener
  for (int i = 0; i < 10; ++i) h->bus().Publish(Typing("c", 1));
  auto destroyed = std::async(std::launch::async, [&] { h.reset(); });
  CHECK(destroyed.wait_for(kWait) == std::future_status::ready);
}

}  // namespace
}  // namespace infrachat
