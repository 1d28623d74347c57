#pragma once

#include <memory>

#include "infrachat/core/module.h"

namespace infrachat {

// The `router` role (the Switchboard): answers where a channel lives. Single region for now:
// the region's shards come from `router.shards` (default: this process's `shard.id`).
std::unique_ptr<Module> MakeRouterModule();

}  // namespace infrachat
