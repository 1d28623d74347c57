// Per-module logging: one named spdlog logger per module, all writing to one stderr sink.
//
// Module names: gateway, auth, router, shard, fanout (the roles) and core, bus, storage.
// A module's level is `log.modules[name]` if set, else `log.level`.
//
// Lifecycle: loggers may be fetched at any time, also before ConfigureLogging (static
// initialisation, tests); until then they log at "info". ConfigureLogging re-levels every logger
// already handed out, so callers may keep the shared_ptr for as long as they like.
//
// Thread-safety: ModuleLogger and ConfigureLogging may be called from any thread, concurrently.
// Logging through the returned loggers is thread-safe (spdlog's *_mt sink). The loggers and the
// sink are never destroyed, so threads still logging during process exit stay safe.
#pragma once

#include <spdlog/logger.h>

#include <memory>
#include <string_view>

#include "infrachat/config/config.h"

namespace infrachat {

// Applies `config` (levels assumed validated by LoadConfig; an unknown level name means "off")
// to every module logger, existing and future.
void ConfigureLogging(const LogConfig& config);

// The logger named `module`, created on first use. Always the same object for the same name.
// Names outside the list above are accepted and get the default level.
std::shared_ptr<spdlog::logger> ModuleLogger(std::string_view module);

}  // namespace infrachat
