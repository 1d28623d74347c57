// Channel placement (rendezvous hashing): deterministic, balanced, minimal movement.
#include <catch2/catch.hpp>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "modules/router/placement.h"

namespace infrachat::router {
namespace {

std::vector<std::string> ChannelNames(int n) {
  std::vector<std::string> names;
  names.reserve(n);
  for (int i = 0; i < n; ++i) names.push_back("channel-" + std::to_string(i));
  return names;
}

const std::vector<std::string> kFourShards = {"shard-0", "shard-1", "shard-2", "shard-3"};

TEST_CASE("PickShard is deterministic and independent of the list order", "[router]") {
  const std::vector<std::string> reversed(kFourShards.rbegin(), kFourShards.rend());
  const std::vector<std::string> copy = kFourShards;  // different objects, same names
  for (const std::string& channel : ChannelNames(2000)) {
    const std::string& a = PickShard(channel, kFourShards);
    CHECK(PickShard(channel, kFourShards) == a);
    CHECK(PickShard(channel, copy) == a);
    CHECK(PickShard(channel, reversed) == a);
  }
}

TEST_CASE("PickShard returns a reference into the given list", "[router]") {
  const std::string& picked = PickShard("general", kFourShards);
  bool found = false;
  for (const std::string& s : kFourShards) found = found || (&s == &picked);
  CHECK(found);
  const std::vector<std::string> one = {"only"};
  CHECK(PickShard("anything", one) == "only");
}

TEST_CASE("StableHash and PickShard are stable across builds: pinned values", "[router]") {
  // Routers of different builds and platforms must agree, or channels move. These values were
  // computed independently (a few lines of Python) from the documented definition: 64-bit FNV-1a
  // over a, a 0xff separator, b, then the SplitMix64 finalizer.
  CHECK(StableHash("shard-0", "general") == 0x73200ef38f6208b4ULL);
  CHECK(StableHash("", "") == 0x01df27c8adb0f2d1ULL);
  CHECK(StableHash("shard-1", "random") == 0x41dc2b10d914bbaaULL);
  CHECK(PickShard("general", kFourShards) == "shard-1");
  CHECK(PickShard("random", kFourShards) == "shard-0");
  CHECK(PickShard("ops", kFourShards) == "shard-0");
  CHECK(PickShard("channel-42", kFourShards) == "shard-3");
}

TEST_CASE("PickShard spreads channels evenly over 4 shards", "[router]") {
  const auto names = ChannelNames(10000);
  std::map<std::string, int> per_shard;
  for (const std::string& channel : names) ++per_shard[PickShard(channel, kFourShards)];
  REQUIRE(per_shard.size() == kFourShards.size());
  const double mean = static_cast<double>(names.size()) / kFourShards.size();
  for (const auto& [shard, count] : per_shard) {
    INFO(shard << " got " << count << " channels (mean " << mean << ")");
    CHECK(count >= mean * 0.85);
    CHECK(count <= mean * 1.15);
  }
}

TEST_CASE("removing a shard moves only that shard's channels", "[router]") {
  const auto names = ChannelNames(10000);
  for (std::size_t removed = 0; removed < kFourShards.size(); ++removed) {
    std::vector<std::string> remaining;
    for (std::size_t i = 0; i < kFourShards.size(); ++i) {
      if (i != removed) remaining.push_back(kFourShards[i]);
    }
    std::map<std::string, int> moved_to;
    int moved = 0;
    for (const std::string& channel : names) {
      const std::string before = PickShard(channel, kFourShards);
      const std::string after = PickShard(channel, remaining);
      if (before != kFourShards[removed]) {
        INFO(channel << " moved from a shard that stayed");
        REQUIRE(after == before);
      } else {
        ++moved;
        ++moved_to[after];
      }
    }
    // The orphaned channels spread over all the remaining shards, not onto one neighbour.
    CHECK(moved > 0);
    CHECK(moved_to.size() == remaining.size());
    for (const auto& [shard, count] : moved_to) {
      INFO(shard << " took " << count << " of " << moved);
      CHECK(count >= moved / 3 * 0.7);
    }
  }
}

TEST_CASE("adding a shard moves channels only onto the new shard", "[router]") {
  const auto names = ChannelNames(5000);
  std::vector<std::string> five = kFourShards;
  five.push_back("shard-4");
  int moved = 0;
  for (const std::string& channel : names) {
    const std::string before = PickShard(channel, kFourShards);
    const std::string after = PickShard(channel, five);
    if (after != before) {
      CHECK(after == "shard-4");
      ++moved;
    }
  }
  // Roughly a fifth of the channels go to the new shard.
  CHECK(moved > 5000 / 5 * 0.8);
  CHECK(moved < 5000 / 5 * 1.2);
}

TEST_CASE("StableHash is order-sensitive and keeps the two parts apart", "[router]") {
  CHECK(StableHash("a", "b") != StableHash("b", "a"));
  CHECK(StableHash("shard-1", "general") != StableHash("general", "shard-1"));
  // Without a separator these would hash the same concatenation "abc".
  CHECK(StableHash("ab", "c") != StableHash("a", "bc"));
  CHECK(StableHash("abc", "") != StableHash("", "abc"));
  CHECK(StableHash("", "") != StableHash("a", ""));
  // Deterministic.
  CHECK(StableHash("shard-1", "general") == StableHash("shard-1", "general"));
}

TEST_CASE("StableHash is well mixed: no collisions among many similar keys", "[router]") {
  std::set<std::uint64_t> seen;
  const auto names = ChannelNames(20000);
  for (const std::string& channel : names) seen.insert(StableHash("shard-0", channel));
  CHECK(seen.size() == names.size());
  // Neighbouring keys differ in about half of their bits (avalanche), on average.
  double total_bits = 0;
  for (std::size_t i = 1; i < names.size(); ++i) {
    total_bits += __builtin_popcountll(StableHash("s", names[i]) ^ StableHash("s", names[i - 1]));
  }
  const double mean_bits = total_bits / static_cast<double>(names.size() - 1);
  CHECK(mean_bits > 28);
  CHECK(mean_bits < 36);
}

}  // namespace
}  // namespace infrachat::router
