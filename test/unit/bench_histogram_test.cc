// The benchmarks' latency histogram: every value within 1/64 of what was recorded, percentiles
// read from counts, merge equal to recording everything in one histogram.
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>

#include "bench/common/histogram.h"
#include "bench/common/report.h"

using infrachat::bench::Histogram;

TEST_CASE("small values are exact and large ones within 1/64", "[bench]") {
  for (std::int64_t v : {0, 1, 5, 127}) {
    CHECK(Histogram::UpperEdge(Histogram::BucketOf(v)) == v);
  }
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    const std::int64_t v = static_cast<std::int64_t>(rng() >> (rng() % 60 + 1));
    const std::int64_t edge = Histogram::UpperEdge(Histogram::BucketOf(v));
    REQUIRE(edge >= v);
    REQUIRE(static_cast<double>(edge - v) <= static_cast<double>(v) / 64.0 + 1.0);
  }
}

TEST_CASE("buckets are ordered: a larger value never lands in a lower bucket", "[bench]") {
  int previous = 0;
  for (std::int64_t v = 0; v < (1 << 20); v += 7) {
    const int bucket = Histogram::BucketOf(v);
    REQUIRE(bucket >= previous);
    previous = bucket;
  }
}

TEST_CASE("percentiles of 1..1000 microseconds", "[bench]") {
  Histogram h;
  for (int us = 1; us <= 1000; ++us) h.Record(us * 1000);
  CHECK(h.count() == 1000);
  CHECK(h.min() == 1000);
  CHECK(h.max() == 1000000);
  CHECK(h.mean() == Approx(500500.0));
  CHECK(h.Percentile(50) == Approx(500000).epsilon(1.0 / 64));
  CHECK(h.Percentile(99) == Approx(990000).epsilon(1.0 / 64));
  CHECK(h.Percentile(99.9) == Approx(999000).epsilon(1.0 / 64));
  CHECK(h.Percentile(100) == 1000000);
  CHECK(h.Percentile(50) <= h.Percentile(90));
}

TEST_CASE("one slow outlier shows at p99.9 and max, not at p50", "[bench]") {
  Histogram h;
  for (int i = 0; i < 999; ++i) h.Record(1000);
  h.Record(50'000'000);
  // Within the bucket's 1/64 of 1000 ns, far below the outlier.
  CHECK(h.Percentile(50) == Approx(1000).epsilon(1.0 / 64));
  CHECK(h.Percentile(99) == Approx(1000).epsilon(1.0 / 64));
  CHECK(h.Percentile(99.95) == 50'000'000);
  CHECK(h.max() == 50'000'000);
}

TEST_CASE("merging equals recording into one histogram", "[bench]") {
  Histogram a, b, all;
  std::mt19937_64 rng(11);
  for (int i = 0; i < 5000; ++i) {
    const auto v = static_cast<std::int64_t>(rng() % 10'000'000);
    (i % 2 ? a : b).Record(v);
    all.Record(v);
  }
  a.Merge(b);
  CHECK(a.count() == all.count());
  CHECK(a.min() == all.min());
  CHECK(a.max() == all.max());
  for (double p : {1.0, 50.0, 90.0, 99.0, 99.9}) CHECK(a.Percentile(p) == all.Percentile(p));
}

TEST_CASE("an empty histogram reports zeros and the report has every percentile", "[bench]") {
  Histogram h;
  CHECK(h.Percentile(99) == 0);
  CHECK(h.max() == 0);
  infrachat::bench::ScenarioReport report;
  report.scenario = "x";
  report.count = 10;
  report.duration_s = 2;
  report.rate_unit = "msg/s";
  report.latency_name = "ack";
  report.latency.Record(2'000'000);
  const auto json = report.ToJson();
  CHECK(json["rate"].get<double>() == 5.0);
  CHECK(json["latency"]["p99"].get<double>() == 2.0);
  CHECK(json["latency"]["max"].get<double>() == 2.0);
  for (const char* key : {"p50", "p90", "p99", "p99_9", "max", "mean", "count"}) {
    CHECK(json["latency"].contains(key));
  }
}
