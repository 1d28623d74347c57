#pragma once

#include <memory>

#include "infrachat/core/module.h"

namespace infrachat {

// The `fanout` role: subscribes to the EventBus and delivers channel events to client streams.
// Must run in the same process as the gateway (edge tier `[gateway, fanout]`).
std::unique_ptr<Module> MakeFanoutModule();

}  // namespace infrachat
