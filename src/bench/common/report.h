// What every benchmark program prints: one JSON object per scenario on stdout (one line, for
// scripts/bench.sh and jq) and a readable table on stderr.
//
//   {"scenario":"durable-send","params":{...},"duration_s":10.0,"count":512000,
//    "rate":51200.0,"rate_unit":"msg/s",
//    "latency":{"name":"ack","unit":"ms","count":512000,"p50":..,"p90":..,"p99":..,"p99_9":..,
//               "max":..,"mean":..},
//    "extra":{...}}
//
// Thread-safety: plain values; build a report on one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bench/common/histogram.h"

namespace infrachat::bench {

struct ScenarioReport {
  std::string scenario;                              // e.g. "durable-send", "ceiling-grpc-push"
  nlohmann::json params = nlohmann::json::object();  // the sizes the run used
  double duration_s = 0;                             // measured phase only (warm-up excluded)
  std::uint64_t count = 0;                           // operations counted in the measured phase
  std::string rate_unit;     // what count/duration_s means: "msg/s", "deliveries/s", ...
  std::string latency_name;  // "ack", "send_to_receive", "commit", ...; empty: no latency
  Histogram latency;         // nanoseconds
  nlohmann::json extra = nlohmann::json::object();  // scenario-specific figures

  double rate() const { return duration_s > 0 ? static_cast<double>(count) / duration_s : 0.0; }
  nlohmann::json ToJson() const;
};

// Percentiles of `histogram` in milliseconds: {"count","p50","p90","p99","p99_9","max","mean"}.
nlohmann::json LatencyJson(const Histogram& histogram);

// Prints report.ToJson() as one line on stdout and flushes.
void PrintJsonLine(const ScenarioReport& report);

// A fixed-width table of the reports (scenario, rate, latency percentiles in ms), one row each.
std::string FormatTable(const std::vector<ScenarioReport>& reports);

// Seconds since `start` as a double.
double SecondsSince(std::chrono::steady_clock::time_point start);

// Nanoseconds since the Unix epoch (system clock), for timestamps carried in message bodies
// between processes on the same machine.
std::int64_t UnixNanos();

}  // namespace infrachat::bench
