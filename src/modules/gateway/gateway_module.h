#pragma once

#include <memory>

#include "infrachat/core/module.h"

namespace infrachat {

// The `gateway` role (connection plane): hosts the public infrachat.v1 services, authenticates
// every call, enforces per-stream limits and backpressure, and ends streams whose token expired
// or whose session was revoked. Needs the auth, router, shard and fanout Apis.
std::unique_ptr<Module> MakeGatewayModule();

}  // namespace infrachat
