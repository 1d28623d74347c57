// AvailabilityLog: one line per transition (not per failed attempt), with the outage's fields,
// on a JSON logger of the test's own and an injected steady clock.
#include "infrachat/core/availability_log.h"

#include <catch2/catch.hpp>
#include <thread>

#include "captured_log.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;

using testing::CapturedLog;

const AvailabilityLog::Messages kDatabase{"database unavailable", "database available again"};

TEST_CASE("availability log: one line when it fails, one when it is back, not one per attempt",
          "[availability_log]") {
  CapturedLog log("storage");
  AvailabilityLog::Clock::time_point now{};
  AvailabilityLog db(log.logger(), kDatabase, {{"component", "pool"}},
                     AvailabilityLog::Initially::kAvailable, [&] { return now; });
  CHECK(db.available());
  CHECK_FALSE(db.Succeeded());  // available from the start: nothing to say
  CHECK(log.Json().empty());

  CHECK(db.Failed("connect", "connection refused"));
  now += 700ms;
  CHECK_FALSE(db.Failed("connection_lost", "server closed the connection"));
  now += 800ms;
  CHECK_FALSE(db.Failed("connect", "connection refused"));
  CHECK_FALSE(db.available());
  CHECK(db.Succeeded());
  CHECK_FALSE(db.Succeeded());
  CHECK(db.available());

  auto lines = log.Json();
  REQUIRE(lines.size() == 2);
  INFO(lines[0].dump() << "\n" << lines[1].dump());
  CHECK(lines[0]["msg"] == "database unavailable");
  CHECK(lines[0]["level"] == "warn");
  CHECK(lines[0]["module"] == "storage");
  CHECK(lines[0]["component"] == "pool");
  CHECK(lines[0]["error"] == "connect");  // the first failure's class and text
  CHECK(lines[0]["detail"] == "connection refused");
  CHECK(lines[0]["since"].get<std::string>().size() == 24);  // 2026-12-03T10:00:00.123Z
  CHECK_FALSE(lines[0].contains("first"));
  CHECK(lines[1]["msg"] == "database available again");
  CHECK(lines[1]["level"] == "info");
  CHECK(lines[1]["component"] == "pool");
  CHECK(lines[1]["error"] == "connect");
  CHECK(lines[1]["since"] == lines[0]["since"]);
  CHECK(lines[1]["outage_ms"] == 1500);
  CHECK(lines[1]["failures"] == 3);

  // The next outage is a new pair, counted from its own start.
  CHECK(db.Failed("unavailable", "the database system is shutting down"));
  now += 20ms;
  CHECK(db.Succeeded());
  lines = log.Json();
  REQUIRE(lines.size() == 4);
  CHECK(lines[2]["error"] == "unavailable");
  CHECK(lines[3]["outage_ms"] == 20);
  CHECK(lines[3]["failures"] == 1);
}

TEST_CASE("availability log: an unknown start logs the first state either way",
          "[availability_log]") {
  const AvailabilityLog::Messages kPeer{"peer lost", "peer connected"};
  CapturedLog log("storage");
  AvailabilityLog reached(log.logger(), kPeer, {{"peer", "10.0.0.1:7001"}, {"role", "shard"}},
                          AvailabilityLog::Initially::kUnknown);
  CHECK_FALSE(reached.available());
  CHECK(reached.Succeeded());
  AvailabilityLog never(log.logger(), kPeer, {{"peer", "10.0.0.2:7001"}, {"role", "auth"}},
                        AvailabilityLog::Initially::kUnknown);
  CHECK(never.Failed("transient_failure"));
  CHECK_FALSE(never.Failed("transient_failure"));
  const auto lines = log.Json();
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["msg"] == "peer connected");
  CHECK(lines[0]["peer"] == "10.0.0.1:7001");
  CHECK(lines[0]["role"] == "shard");
  CHECK(lines[0]["first"] == true);
  CHECK_FALSE(lines[0].contains("outage_ms"));  // there was no outage
  CHECK(lines[1]["msg"] == "peer lost");
  CHECK(lines[1]["role"] == "auth");
  CHECK(lines[1]["first"] == true);
  CHECK_FALSE(lines[1].contains("detail"));  // none given
}

TEST_CASE("availability log: concurrent attempts log each transition once, alternating",
          "[availability_log]") {
  CapturedLog log("storage");
  AvailabilityLog db(log.logger(), kDatabase, {{"component", "committer"}});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&db, t] {
      for (int i = 0; i < 2000; ++i) {
        // Each thread sees outages and recoveries at its own pace.
        if ((i / 100 + t) % 2 == 0) {
          db.Failed("connect");
        } else {
          db.Succeeded();
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  db.Succeeded();
  const auto lines = log.Json();
  REQUIRE(lines.size() >= 2);
  REQUIRE(lines.size() % 2 == 0);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    CHECK(lines[i]["msg"] == (i % 2 == 0 ? "database unavailable" : "database available again"));
  }
}

}  // namespace
}  // namespace infrachat
