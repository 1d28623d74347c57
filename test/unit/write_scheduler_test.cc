// WriteScheduler: every scheduled stream is flushed, on the scheduler's thread, and nothing
// scheduled is lost at or after Stop.
#include "infrachat/core/write_scheduler.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace infrachat {
namespace {

using namespace std::chrono_literals;

class Counting final : public Flushable {
 public:
  void Flush() override {
    last_thread = std::this_thread::get_id();  // before the count: a reader that saw the count
    flushes.fetch_add(1);                      // sees this write too
  }
  std::atomic<int> flushes{0};
  std::thread::id last_thread;
};

bool WaitFor(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST_CASE("scheduled streams are flushed on the scheduler's thread, once per schedule",
          "[unit][write_scheduler]") {
  WriteScheduler scheduler;
  std::vector<std::shared_ptr<Counting>> streams;
  for (int i = 0; i < 100; ++i) streams.push_back(std::make_shared<Counting>());
  std::vector<std::thread> publishers;
  for (int t = 0; t < 4; ++t) {
    publishers.emplace_back([&] {
      for (int round = 0; round < 50; ++round) {
        for (const auto& s : streams) scheduler.Schedule(s);
      }
    });
  }
  for (auto& t : publishers) t.join();
  REQUIRE(WaitFor([&] {
    int total = 0;
    for (const auto& s : streams) total += s->flushes.load();
    return total == 4 * 50 * 100;
  }));
  for (const auto& s : streams) {
    CHECK(s->flushes.load() == 200);
    CHECK(s->last_thread != std::this_thread::get_id());
  }
}

TEST_CASE("Stop flushes what is scheduled, and later schedules flush inline",
          "[unit][write_scheduler]") {
  WriteScheduler scheduler;
  auto before = std::make_shared<Counting>();
  for (int i = 0; i < 1000; ++i) scheduler.Schedule(before);
  scheduler.Stop();
  CHECK(before->flushes.load() == 1000);
  auto after = std::make_shared<Counting>();
  scheduler.Schedule(after);
  CHECK(after->flushes.load() == 1);
  CHECK(after->last_thread == std::this_thread::get_id());
}

// A stream that blocks its Flush until released, and records the order of flushes.
class Recording final : public Flushable {
 public:
  Recording(int id, std::vector<int>* order, std::mutex* mu) : id_(id), order_(order), mu_(mu) {}
  void Flush() override {
    std::lock_guard lock(*mu_);
    order_->push_back(id_);
  }

 private:
  const int id_;
  std::vector<int>* order_;
  std::mutex* mu_;
};

class Gate final : public Flushable {
 public:
  void Flush() override {
    entered.store(true);
    while (!open.load()) std::this_thread::sleep_for(1ms);
  }
  std::atomic<bool> entered{false};
  std::atomic<bool> open{false};
};

TEST_CASE("urgent streams are flushed before the streams that wait for deliveries",
          "[unit][write_scheduler]") {
  WriteScheduler scheduler;
  std::mutex mu;
  std::vector<int> order;
  // Hold the thread in a flush while the queues fill up.
  auto gate = std::make_shared<Gate>();
  scheduler.Schedule(gate);
  REQUIRE(WaitFor([&] { return gate->entered.load(); }));
  std::vector<std::shared_ptr<Recording>> streams;
  for (int i = 0; i < 500; ++i) {
    streams.push_back(std::make_shared<Recording>(i, &order, &mu));
    scheduler.Schedule(streams.back());
  }
  auto ack = std::make_shared<Recording>(-1, &order, &mu);
  scheduler.Schedule(ack, /*urgent=*/true);
  gate->open.store(true);
  REQUIRE(WaitFor([&] {
    std::lock_guard lock(mu);
    return order.size() == 501;
  }));
  std::lock_guard lock(mu);
  CHECK(order.front() == -1);  // ahead of all 500, not after them
  for (std::size_t i = 1; i < order.size(); ++i) CHECK(order[i] == static_cast<int>(i - 1));
}

}  // namespace
}  // namespace infrachat
