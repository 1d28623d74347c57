#pragma once

#include <memory>

#include "infrachat/core/module.h"

namespace infrachat {

// The `auth` role (the Gatekeeper): applies the auth schema, loads or (development mode only)
// creates the JWT signing keys, and provides AuthApi through ModuleContext::ProvideAuth.
// Registers no gRPC service: the gateway hosts the public AuthService and calls AuthApi.
// Start throws std::runtime_error with a readable message if the database is unreachable, a
// migration fails, or the signing keys are missing/unreadable/not EC P-256.
std::unique_ptr<Module> MakeAuthModule();

}  // namespace infrachat
