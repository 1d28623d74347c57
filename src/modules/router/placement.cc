#include "placement.h"

namespace infrachat::router {

std::uint64_t StableHash(std::string_view a, std::string_view b) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 0x100000001b3ULL;
    }
  };
  mix(a);
  h ^= 0xff;  // separator, so ("ab","c") and ("a","bc") differ
  h *= 0x100000001b3ULL;
  mix(b);
  h += 0x9e3779b97f4a7c15ULL;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

const std::string& PickShard(std::string_view channel, const std::vector<std::string>& shards) {
  const std::string* best = &shards.front();
  std::uint64_t best_weight = 0;
  for (const std::string& shard : shards) {
    const std::uint64_t w = StableHash(shard, channel);
    if (w > best_weight || (w == best_weight && shard < *best)) {
      best = &shard;
      best_weight = w;
    }
  }
  return *best;
}

}  // namespace infrachat::router
