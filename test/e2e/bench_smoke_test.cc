// Smoke test of `infrachat-bench` (src/bench/tool): every scenario runs for about a second with
// small sizes as a real child process against a real `infrachatd` (and durable-send and fanout
// with --raw against `infrachat-ceiling grpc-relay`), so the tool keeps working. It checks that a
// run reports, not how fast:
//
//   - exit 0 and exactly one JSON line on stdout, for the right scenario, with count > 0,
//     p50 <= p99 <= max, and no errors, gaps, cuts or closed streams in extra;
//   - connections with --server-pid reports the server's RSS per session;
//   - a failure is reported: an unreachable target or bad flags give a non-zero exit.
//
// The tools run as children through test/support's ChildProcess.
// Nothing sleeps as synchronization: waits poll a condition against a deadline.
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::ChildProcess;
using testing::CliResult;
using testing::DaemonProcess;
using testing::TestDatabase;
using Clock = std::chrono::steady_clock;

CliResult RunBench(const std::vector<std::string>& args, std::chrono::milliseconds timeout = 30s) {
  std::vector<std::string> argv = {INFRACHAT_BENCH_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return ChildProcess(std::move(argv), "bench-smoke").Finish(timeout);
}

// The one JSON line of a clean run of `scenario`, checked as every scenario's report must be.
json CheckCleanReport(const CliResult& run, const std::string& scenario) {
  INFO(run.Describe());
  REQUIRE(run.exit_code == 0);
  const std::vector<json> lines = run.JsonLines();
  REQUIRE(lines.size() == 1);
  const json& report = lines[0];
  CHECK(report.at("scenario") == scenario);
  CHECK(report.at("count").get<std::uint64_t>() > 0);
  CHECK(report.at("rate").get<double>() > 0);
  const json& latency = report.at("latency");
  CHECK(latency.at("count").get<std::uint64_t>() > 0);
  CHECK(latency.at("p50").get<double>() <= latency.at("p99").get<double>());
  CHECK(latency.at("p99").get<double>() <= latency.at("max").get<double>());
  const json& extra = report.at("extra");
  CHECK(extra.at("clean") == true);
  CHECK(extra.at("problems").empty());
  for (const char* zero : {"gaps", "out_of_order", "slow_consumer_cuts", "duplicates",
                           "stream_ends", "unacked_after_drain"}) {
    if (extra.contains(zero)) CHECK(extra.at(zero).get<std::int64_t>() == 0);
  }
  if (extra.contains("errors")) {
    const json& errors = extra.at("errors");
    CHECK((errors.is_object() ? errors.at("total") : errors).get<std::uint64_t>() == 0);
  }
  CHECK(run.err.find(scenario) != std::string::npos);  // the table on stderr
  return report;
}

const std::vector<std::string> kShortRun = {"--duration", "1", "--warmup", "0.3"};

std::vector<std::string> Args(std::vector<std::string> args,
                              const std::vector<std::string>& more = kShortRun) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

TEST_CASE("Every infrachat-bench scenario runs against infrachatd and reports a clean run",
          "[bench]") {
  TestDatabase db;
  // The per-stream rate limit would answer a benchmark's sends with RESOURCE_EXHAUSTED.
  DaemonProcess daemon(db, {"limits.send_rate_per_s=1000000", "limits.send_burst=1000000"});
  const std::string target = daemon.address();

  {
    const auto report =
        CheckCleanReport(RunBench(Args({"durable-send", "--target", target, "--senders", "4",
                                        "--channels", "2", "--window", "8"})),
                         "durable-send");
    CHECK(report.at("latency").at("name") == "ack");
    CHECK(report.at("params").at("senders") == 4);
  }
  {
    const auto report =
        CheckCleanReport(RunBench(Args({"durable-send", "--target", target, "--senders", "4",
                                        "--channels", "2", "--rate", "400"})),
                         "durable-send");
    CHECK(report.at("extra").at("mode") == "open");
  }
  {
    const auto report = CheckCleanReport(
        RunBench(Args({"fanout", "--target", target, "--subscribers", "20", "--senders", "2"})),
        "fanout");
    CHECK(report.at("latency").at("name") == "send_to_receive");
    CHECK(report.at("extra").at("subscribers_behind_after_drain") == 0);
  }
  {
    const auto report =
        CheckCleanReport(RunBench(Args({"rooms", "--target", target, "--rooms", "10", "--members",
                                        "3", "--rate-per-member", "20"})),
                         "rooms");
    CHECK(report.at("extra").at("ack_latency").at("count").get<std::uint64_t>() > 0);
    CHECK(report.at("extra").at("members_behind_after_drain") == 0);
  }
  {
    const auto report = CheckCleanReport(
        RunBench(Args({"connections", "--target", target, "--sessions", "50", "--channels", "5",
                       "--server-pid", std::to_string(daemon.pid())},
                      {"--duration", "0.5", "--warmup", "0"})),
        "connections");
    CHECK(report.at("count") == 50);
    CHECK(report.at("extra").at("closed_during_hold") == 0);
    CHECK(report.at("extra").at("server_rss_after_kib").get<std::uint64_t>() > 0);
    CHECK(report.at("extra").contains("server_rss_per_session_kib"));
  }
  {
    const auto report = CheckCleanReport(
        RunBench(Args({"resume", "--target", target, "--messages", "500", "--repeat", "2"},
                      {"--warmup", "1"})),
        "resume");
    CHECK(report.at("count") == 1000);
    CHECK(report.at("latency").at("count") == 2);
    CHECK(report.at("extra").at("runs").size() == 3);  // the warm-up run is listed, not counted
  }
}

TEST_CASE("infrachat-bench --raw drives the grpc-relay ceiling with the same client code",
          "[bench]") {
  // The old relay, and the relay with infrachatd's techniques (both kinds of batches).
  const bool shared = GENERATE(false, true);
  std::vector<std::string> relay_args = {INFRACHAT_CEILING_PATH, "grpc-relay", "--listen",
                                         "127.0.0.1:0"};
  if (shared) relay_args.push_back("--shared-frames");
  INFO("shared frames: " << shared);
  ChildProcess relay(relay_args, "bench-smoke");
  // The relay prints its address on stdout once it serves.
  std::string target;
  const auto deadline = Clock::now() + 15s;
  while (target.empty() && Clock::now() < deadline) {
    const std::string out = relay.out();
    if (const auto eol = out.find('\n'); eol != std::string::npos) target = out.substr(0, eol);
    if (target.empty()) {
      REQUIRE_FALSE(relay.Wait(0ms).has_value());
      std::this_thread::sleep_for(10ms);  // polls the relay's stdout against the deadline
    }
  }
  INFO(relay.err());
  REQUIRE_FALSE(target.empty());

  CheckCleanReport(RunBench(Args({"durable-send", "--raw", "--target", target, "--senders", "4",
                                  "--channels", "4"})),
                   "durable-send");
  const auto report = CheckCleanReport(
      RunBench(Args({"fanout", "--raw", "--target", target, "--subscribers", "20"})), "fanout");
  CHECK(report.at("params").at("raw") == true);
}

TEST_CASE("infrachat-bench reports a failed run with a non-zero exit", "[bench]") {
  // Nothing listens on port 1: setup (Register) fails at once with UNAVAILABLE.
  const auto unreachable = RunBench(Args({"durable-send", "--target", "127.0.0.1:1"}), 20s);
  INFO(unreachable.Describe());
  CHECK(unreachable.exit_code != 0);
  CHECK(unreachable.exit_code != -1);
  CHECK(unreachable.err.find("setup failed") != std::string::npos);

  // With --raw there is no setup: the streams themselves fail, and the run says so.
  const auto raw =
      RunBench(Args({"fanout", "--raw", "--target", "127.0.0.1:1", "--subscribers", "3"}), 20s);
  INFO(raw.Describe());
  CHECK(raw.exit_code != 0);
  CHECK(raw.exit_code != -1);

  const auto bad_flag = RunBench({"fanout", "--body-bytes", "8"});
  CHECK(bad_flag.exit_code == 2);
  const auto no_scenario = RunBench({});
  CHECK(no_scenario.exit_code != 0);
}

}  // namespace
}  // namespace infrachat
