// Latency histogram for the benchmarks: HDR-style buckets (64 linear sub-buckets per power of
// two), so every recorded value is kept with a relative error under 1/64 (1.6%) from 1 ns to
// hours, in a fixed 30 KiB of counters. Percentiles are read from the counts, never averaged.
//
// Thread-safety: none. Record from one thread per histogram, then Merge() the per-thread
// histograms once the run is over.
#pragma once

#include <array>
#include <cstdint>

namespace infrachat::bench {

class Histogram {
 public:
  // Records one value in nanoseconds (negative values count as 0).
  void Record(std::int64_t value_ns);
  void Merge(const Histogram& other);
  void Reset();

  std::uint64_t count() const { return count_; }
  std::int64_t min() const { return count_ == 0 ? 0 : min_; }
  std::int64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / count_; }
  // The value at percentile `p` (0-100]: the upper edge of the bucket holding the p-th value,
  // never more than max(). 0 when empty.
  std::int64_t Percentile(double p) const;

  // Bucket layout, public for the unit test.
  static int BucketOf(std::int64_t value);
  static std::int64_t UpperEdge(int bucket);

 private:
  static constexpr int kSubBits = 6;             // 64 sub-buckets per power of two
  static constexpr int kLinear = 2 << kSubBits;  // values below 128 are exact
  static constexpr int kBuckets = kLinear + (63 - kSubBits - 1) * (1 << kSubBits);

  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::int64_t min_ = 0;
  std::int64_t max_ = 0;
  __int128 sum_ = 0;
};

}  // namespace infrachat::bench
