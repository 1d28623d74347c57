#include <stdexcept>
#include <string>

#include "infrachat/core/module.h"

namespace infrachat {

namespace {
template <typename T>
T& Require(T* api, const char* role) {
  if (api == nullptr) {
    throw std::logic_error(std::string("this process does not run the '") + role +
                           "' role, which is needed here; add it to `roles`");
  }
  return *api;
}
}  // namespace

ModuleContext::ModuleContext(DaemonConfig config) : config_(std::move(config)) {}
ModuleContext::~ModuleContext() = default;

AuthApi& ModuleContext::auth() const { return Require(auth_, "auth"); }
RouterApi& ModuleContext::router() const { return Require(router_, "router"); }
ShardApi& ModuleContext::shard() const { return Require(shard_, "shard"); }
FanoutApi& ModuleContext::fanout() const { return Require(fanout_, "fanout"); }
EventBus& ModuleContext::bus() const { return Require(bus_, "event bus"); }
pg::ConnectionPool& ModuleContext::db() const { return Require(db_, "database"); }

}  // namespace infrachat
