// LocalEventBus: per-publisher order, fan-out to every subscriber, Unsubscribe semantics,
// concurrent publishers and Drain.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "bus/local/local_event_bus.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;

v1::ChatMessage Msg(const std::string& channel, std::uint64_t seq) {
  v1::ChatMessage m;
  m.set_channel(channel);
  m.set_seq(seq);
  return m;
}

// Records (channel, seq) of every ChatMessage it sees; thread-safe.
struct Recorder {
  std::mutex mu;
  std::vector<std::pair<std::string, std::uint64_t>> seen;

  EventBus::Handler Handler() {
    return [this](const BusEvent& e) {
      if (const auto* m = std::get_if<v1::ChatMessage>(&e)) {
        std::lock_guard lock(mu);
        seen.emplace_back(m->channel(), m->seq());
      }
    };
  }
  std::vector<std::pair<std::string, std::uint64_t>> Snapshot() {
    std::lock_guard lock(mu);
    return seen;
  }
};

// A one-shot gate a handler can wait on, with a bounded wait so a bug cannot hang the test.
struct Gate {
  std::promise<void> promise;
  std::shared_future<void> future = promise.get_future().share();
  std::once_flag once;
  void Open() {
    std::call_once(once, [this] { promise.set_value(); });
  }
  bool Wait(std::chrono::milliseconds limit = 10s) const {
    return future.wait_for(limit) == std::future_status::ready;
  }
};

TEST_CASE("EventChannel names the channel of every event type", "[bus]") {
  v1::TypingEvent typing;
  typing.set_channel("t");
  v1::Receipt receipt;
  receipt.set_channel("r");
  CHECK(EventChannel(BusEvent(Msg("m", 1))) == "m");
  CHECK(EventChannel(BusEvent(typing)) == "t");
  CHECK(EventChannel(BusEvent(receipt)) == "r");
  CHECK(EventChannel(BusEvent(MembershipChanged{"j", 7, "alice", true})) == "j");
  CHECK(EventChannel(BusEvent(PresenceChanged{"p", 7, "alice", true, 42})) == "p");
}

TEST_CASE("events of one publisher arrive in publish order", "[bus]") {
  LocalEventBus bus;
  Recorder rec;
  bus.Subscribe(rec.Handler());
  constexpr std::uint64_t kN = 20000;
  for (std::uint64_t i = 1; i <= kN; ++i) bus.Publish(Msg("c", i));
  bus.Drain();
  auto seen = rec.Snapshot();
  REQUIRE(seen.size() == kN);
  for (std::uint64_t i = 0; i < kN; ++i) REQUIRE(seen[i].second == i + 1);
  CHECK(bus.queued() == 0);
}

TEST_CASE("every subscriber sees every event, each in order", "[bus]") {
  LocalEventBus bus;
  Recorder a, b, c;
  bus.Subscribe(a.Handler());
  bus.Subscribe(b.Handler());
  bus.Subscribe(c.Handler());
  // The other event types pass through as well.
  std::atomic<int> others{0};
  bus.Subscribe([&](const BusEvent& e) {
    if (!std::holds_alternative<v1::ChatMessage>(e)) ++others;
  });
  for (std::uint64_t i = 1; i <= 1000; ++i) bus.Publish(Msg("c", i));
  bus.Publish(v1::TypingEvent());
  bus.Publish(v1::Receipt());
  bus.Publish(MembershipChanged{"c", 1, "u", false});
  bus.Drain();
  for (Recorder* r : {&a, &b, &c}) {
    auto seen = r->Snapshot();
    REQUIRE(seen.size() == 1000);
    for (std::uint64_t i = 0; i < seen.size(); ++i) REQUIRE(seen[i].second == i + 1);
  }
  CHECK(others == 3);
}

TEST_CASE("a handler is never run concurrently with itself", "[bus]") {
  LocalEventBus bus;
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> calls{0};
  bus.Subscribe([&](const BusEvent&) {
    if (inside.fetch_add(1) != 0) ++overlaps;
    ++calls;
    inside.fetch_sub(1);
  });
  std::vector<std::thread> publishers;
  for (int t = 0; t < 4; ++t) {
    publishers.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) bus.Publish(Msg("c", 1));
    });
  }
  for (auto& t : publishers) t.join();
  bus.Drain();
  CHECK(calls == 8000);
  CHECK(overlaps == 0);
}

TEST_CASE("concurrent publishers: nothing lost, each publisher's order kept", "[bus]") {
  LocalEventBus bus;
  Recorder rec;
  bus.Subscribe(rec.Handler());
  constexpr int kPublishers = 6;
  constexpr std::uint64_t kEach = 5000;
  std::vector<std::thread> publishers;
  for (int p = 0; p < kPublishers; ++p) {
    publishers.emplace_back([&bus, p] {
      const std::string channel = "p" + std::to_string(p);
      for (std::uint64_t i = 1; i <= kEach; ++i) bus.Publish(Msg(channel, i));
    });
  }
  for (auto& t : publishers) t.join();
  bus.Drain();
  std::map<std::string, std::uint64_t> last;
  auto seen = rec.Snapshot();
  REQUIRE(seen.size() == kPublishers * kEach);
  for (const auto& [channel, seq] : seen) {
    INFO(channel << " seq " << seq << " after " << last[channel]);
    REQUIRE(seq == last[channel] + 1);
    last[channel] = seq;
  }
  for (const auto& [channel, seq] : last) CHECK(seq == kEach);
}

TEST_CASE("Drain waits for every event published before it", "[bus]") {
  LocalEventBus bus;
  SECTION("with no events it returns at once") { bus.Drain(); }
  SECTION("events published before Drain are all handled when it returns") {
    std::atomic<int> handled{0};
    bus.Subscribe([&](const BusEvent&) { ++handled; });
    for (int round = 1; round <= 20; ++round) {
      for (int i = 0; i < 100; ++i) bus.Publish(Msg("c", i));
      bus.Drain();
      REQUIRE(handled == round * 100);
    }
  }
  SECTION("Drain blocks while a handler still runs") {
    Gate entered, release;
    bus.Subscribe([&](const BusEvent&) {
      entered.Open();
      release.Wait();
    });
    bus.Publish(Msg("c", 1));
    REQUIRE(entered.Wait());
    auto drained = std::async(std::launch::async, [&] { bus.Drain(); });
    // Not a synchronization: a bounded check that Drain did not return early.
    CHECK(drained.wait_for(50ms) == std::future_status::timeout);
    release.Open();
    CHECK(drained.wait_for(10s) == std::future_status::ready);
  }
  SECTION("concurrent Drains from several threads") {
    std::atomic<int> handled{0};
    bus.Subscribe([&](const BusEvent&) { ++handled; });
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 500; ++i) bus.Publish(Msg("c", 1));
        bus.Drain();
      });
    }
    for (auto& t : threads) t.join();
    bus.Drain();
    CHECK(handled == 2000);
  }
}

TEST_CASE("queued() reports events not yet dispatched", "[bus]") {
  LocalEventBus bus;
  Gate entered, release;
  bus.Subscribe([&](const BusEvent&) {
    entered.Open();
    release.Wait();
  });
  bus.Publish(Msg("c", 1));
  REQUIRE(entered.Wait());  // the first event is being handled, so it left the queue
  for (int i = 2; i <= 4; ++i) bus.Publish(Msg("c", i));
  CHECK(bus.queued() == 3);
  release.Open();
  bus.Drain();
  CHECK(bus.queued() == 0);
}

TEST_CASE("Unsubscribe: after it returns the handler is not running and never runs again",
          "[bus]") {
  SECTION("it waits for a handler that is running") {
    LocalEventBus bus;
    Gate entered, release;
    std::atomic<bool> unsubscribed{false};
    std::atomic<int> late_calls{0};
    std::atomic<int> calls{0};
    const auto id = bus.Subscribe([&](const BusEvent&) {
      if (unsubscribed) ++late_calls;
      ++calls;
      entered.Open();
      release.Wait();
      if (unsubscribed) ++late_calls;  // still running when Unsubscribe returned
    });
    Recorder other;
    bus.Subscribe(other.Handler());
    bus.Publish(Msg("c", 1));
    REQUIRE(entered.Wait());
    auto done = std::async(std::launch::async, [&] {
      bus.Unsubscribe(id);
      unsubscribed = true;
    });
    CHECK(done.wait_for(50ms) == std::future_status::timeout);
    release.Open();
    REQUIRE(done.wait_for(10s) == std::future_status::ready);
    for (std::uint64_t i = 2; i <= 100; ++i) bus.Publish(Msg("c", i));
    bus.Drain();
    CHECK(late_calls == 0);
    CHECK(calls == 1);
    CHECK(other.Snapshot().size() == 100);  // the other subscriber is unaffected
  }
  SECTION("under a continuous stream of events") {
    LocalEventBus bus;
    std::atomic<bool> unsubscribed{false};
    std::atomic<int> late_calls{0};
    std::atomic<int> calls{0};
    const auto id = bus.Subscribe([&](const BusEvent&) {
      if (unsubscribed) ++late_calls;
      ++calls;
    });
    std::atomic<bool> stop{false};
    std::thread publisher([&] {
      while (!stop) bus.Publish(Msg("c", 1));
    });
    // Let some events through first, bounded by a deadline.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (calls < 1000 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    REQUIRE(calls >= 1000);
    bus.Unsubscribe(id);
    unsubscribed = true;
    const int at_unsubscribe = calls;
    for (int i = 0; i < 1000; ++i) bus.Publish(Msg("c", 2));
    stop = true;
    publisher.join();
    bus.Drain();
    CHECK(late_calls == 0);
    CHECK(calls == at_unsubscribe);
  }
  SECTION("unknown or repeated ids are harmless") {
    LocalEventBus bus;
    Recorder rec;
    const auto id = bus.Subscribe(rec.Handler());
    bus.Unsubscribe(id + 100);
    bus.Publish(Msg("c", 1));
    bus.Drain();
    bus.Unsubscribe(id);
    bus.Unsubscribe(id);
    bus.Publish(Msg("c", 2));
    bus.Drain();
    CHECK(rec.Snapshot().size() == 1);
  }
}

TEST_CASE("subscription ids are distinct, a late subscriber gets later events", "[bus]") {
  LocalEventBus bus;
  Recorder early, late;
  const auto a = bus.Subscribe(early.Handler());
  bus.Publish(Msg("c", 1));
  bus.Drain();
  const auto b = bus.Subscribe(late.Handler());
  CHECK(a != b);
  bus.Publish(Msg("c", 2));
  bus.Drain();
  CHECK(early.Snapshot().size() == 2);
  REQUIRE(late.Snapshot().size() == 1);
  CHECK(late.Snapshot()[0].second == 2);
}

TEST_CASE("destroying the bus with events still queued does not hang", "[bus]") {
  Gate entered, release;
  auto bus = std::make_unique<LocalEventBus>();
  bus->Subscribe([&](const BusEvent&) {
    entered.Open();
    release.Wait();
  });
  bus->Publish(Msg("c", 1));
  REQUIRE(entered.Wait());
  for (int i = 0; i < 1000; ++i) bus->Publish(Msg("c", 2));
  auto destroyed = std::async(std::launch::async, [&] { bus.reset(); });
  release.Open();
  CHECK(destroyed.wait_for(10s) == std::future_status::ready);
}

}  // namespace
}  // namespace infrachat
