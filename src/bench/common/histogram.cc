#include "bench/common/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

namespace infrachat::bench {

int Histogram::BucketOf(std::int64_t value) {
  if (value < kLinear) return static_cast<int>(std::max<std::int64_t>(value, 0));
  const auto v = static_cast<std::uint64_t>(value);
  const int exponent = 63 - std::countl_zero(v);  // >= kSubBits + 1
  const int shift = exponent - kSubBits;
  const int mantissa = static_cast<int>(v >> shift);  // in [64, 128)
  return kLinear + (exponent - kSubBits - 1) * (1 << kSubBits) + (mantissa - (1 << kSubBits));
}

std::int64_t Histogram::UpperEdge(int bucket) {
  if (bucket < kLinear) return bucket;
  const int offset = bucket - kLinear;
  const int exponent = offset / (1 << kSubBits) + kSubBits + 1;
  const int mantissa = offset % (1 << kSubBits) + (1 << kSubBits);
  const int shift = exponent - kSubBits;
  // The top buckets' edges pass 2^63: computed in 128 bits and clamped (UBSan found the overflow).
  const __int128 edge = (static_cast<__int128>(mantissa) + 1) << shift;
  return edge > std::numeric_limits<std::int64_t>::max() ? std::numeric_limits<std::int64_t>::max()
                                                         : static_cast<std::int64_t>(edge - 1);
}

void Histogram::Record(std::int64_t value_ns) {
  value_ns = std::max<std::int64_t>(value_ns, 0);
  ++counts_[BucketOf(value_ns)];
  min_ = count_ == 0 ? value_ns : std::min(min_, value_ns);
  max_ = std::max(max_, value_ns);
  sum_ += value_ns;
  ++count_;
}

void Histogram::Merge(const Histogram& other) {
  if (other.count_ == 0) return;
  for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  sum_ += other.sum_;
  count_ += other.count_;
}

void Histogram::Reset() { *this = Histogram(); }

std::int64_t Histogram::Percentile(double p) const {
  if (count_ == 0) return 0;
  p = std::clamp(p, 0.0, 100.0);
  // The rank of the p-th value, 1-based: the smallest rank with at least p% of values at or
  // below it.
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(p / 100.0 * static_cast<double>(count_))));
  std::uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) return std::min(UpperEdge(i), max_);
  }
  return max_;
}

}  // namespace infrachat::bench
