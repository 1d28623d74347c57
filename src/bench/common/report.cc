#include "bench/common/report.h"

#include <fmt/format.h>

#include <cstdio>

namespace infrachat::bench {

namespace {
double Ms(std::int64_t ns) { return static_cast<double>(ns) / 1e6; }
}  // namespace

nlohmann::json LatencyJson(const Histogram& histogram) {
  return {{"count", histogram.count()},
          {"p50", Ms(histogram.Percentile(50))},
          {"p90", Ms(histogram.Percentile(90))},
          {"p99", Ms(histogram.Percentile(99))},
          {"p99_9", Ms(histogram.Percentile(99.9))},
          {"max", Ms(histogram.max())},
          {"mean", histogram.mean() / 1e6}};
}

nlohmann::json ScenarioReport::ToJson() const {
  nlohmann::json out = {{"scenario", scenario}, {"params", params}, {"duration_s", duration_s},
                        {"count", count},       {"rate", rate()},   {"rate_unit", rate_unit}};
  if (!latency_name.empty()) {
    auto latency_json = LatencyJson(latency);
    latency_json["name"] = latency_name;
    latency_json["unit"] = "ms";
    out["latency"] = std::move(latency_json);
  }
  out["extra"] = extra;
  return out;
}

void PrintJsonLine(const ScenarioReport& report) {
  const std::string line = report.ToJson().dump();
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

std::string FormatTable(const std::vector<ScenarioReport>& reports) {
  std::string out = fmt::format("{:<28} {:>14} {:<14} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "scenario",
                                "rate", "unit", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms");
  for (const auto& r : reports) {
    if (r.latency_name.empty() || r.latency.count() == 0) {
      out += fmt::format("{:<28} {:>14.1f} {:<14} {:>9} {:>9} {:>9} {:>9} {:>9}\n", r.scenario,
                         r.rate(), r.rate_unit, "-", "-", "-", "-", "-");
      continue;
    }
    const Histogram& h = r.latency;
    out +=
        fmt::format("{:<28} {:>14.1f} {:<14} {:>9.3f} {:>9.3f} {:>9.3f} {:>9.3f} {:>9.3f}\n",
                    r.scenario, r.rate(), r.rate_unit, Ms(h.Percentile(50)), Ms(h.Percentile(90)),
                    Ms(h.Percentile(99)), Ms(h.Percentile(99.9)), Ms(h.max()));
  }
  return out;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::int64_t UnixNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace infrachat::bench
