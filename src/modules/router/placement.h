// Channel placement by rendezvous (highest random weight) hashing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace infrachat::router {

// The shard that owns `channel` among `shards`: the one with the highest hash of (shard, channel).
// Deterministic across processes and platforms; when a shard leaves, only its channels move, each
// to the next shard in its own hash order. `shards` must not be empty. Pure; thread-safe.
const std::string& PickShard(std::string_view channel, const std::vector<std::string>& shards);

// 64-bit FNV-1a followed by a SplitMix64 finalizer: stable, well mixed, no dependency.
std::uint64_t StableHash(std::string_view a, std::string_view b);

}  // namespace infrachat::router
