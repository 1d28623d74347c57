#include "infrachat/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <functional>
#include <map>
#include <mutex>
#include <string>

namespace infrachat {
namespace {

struct LoggingState {
  std::mutex mutex;
  LogConfig config;
  std::shared_ptr<spdlog::sinks::stderr_color_sink_mt> sink;
  std::map<std::string, std::shared_ptr<spdlog::logger>, std::less<>> loggers;
};

// Leaked on purpose: threads may still log while static destructors run at exit.
LoggingState& State() {
  static LoggingState* state = [] {
    auto* created = new LoggingState;
    created->sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    created->sink->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ [%n] [t%t] %v");
    return created;
  }();
  return *state;
}

spdlog::level::level_enum LevelFor(const LogConfig& config, std::string_view module) {
  const auto it = config.modules.find(std::string(module));
  return spdlog::level::from_str(it == config.modules.end() ? config.level : it->second);
}

}  // namespace

void ConfigureLogging(const LogConfig& config) {
  LoggingState& state = State();
  std::lock_guard lock(state.mutex);
  state.config = config;
  for (const auto& [name, logger] : state.loggers) logger->set_level(LevelFor(config, name));
}

std::shared_ptr<spdlog::logger> ModuleLogger(std::string_view module) {
  LoggingState& state = State();
  std::lock_guard lock(state.mutex);
  const auto it = state.loggers.find(module);
  if (it != state.loggers.end()) return it->second;
  auto logger = std::make_shared<spdlog::logger>(std::string(module), state.sink);
  logger->set_level(LevelFor(state.config, module));
  state.loggers.emplace(std::string(module), logger);
  return logger;
}

}  // namespace infrachat
