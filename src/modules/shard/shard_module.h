#pragma once

#include <memory>

#include "infrachat/core/module.h"

namespace infrachat {

// The `shard` role: applies the shard schema, checks that the database makes commits durable,
// runs the group committer and provides ShardApi.
std::unique_ptr<Module> MakeShardModule();

}  // namespace infrachat
