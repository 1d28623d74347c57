// Modules and the context through which they find each other.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "infrachat/config/config.h"

namespace grpc {
class ServerBuilder;
}

namespace infrachat {

class AuthApi;
class RouterApi;
class ShardPlacement;
class ShardApi;
class FanoutApi;
class EventBus;
namespace pg {
class ConnectionPool;
}

// What a module may use of its surroundings. Owned by the daemon; outlives every module.
// The Api getters return the in-process implementation when that role runs in this process
// (provided by the module during Start); they throw std::logic_error naming the missing role
// otherwise. Thread-safety: Provide* only during start-up, getters from any thread afterwards.
class ModuleContext {
 public:
  explicit ModuleContext(DaemonConfig config);
  ~ModuleContext();

  const DaemonConfig& config() const { return config_; }

  AuthApi& auth() const;
  RouterApi& router() const;
  ShardApi& shard() const;
  FanoutApi& fanout() const;
  EventBus& bus() const;
  pg::ConnectionPool& db() const;

  void ProvideAuth(AuthApi* api) { auth_ = api; }
  void ProvideRouter(RouterApi* api) { router_ = api; }
  void ProvideShard(ShardApi* api) { shard_ = api; }
  void ProvideFanout(FanoutApi* api) { fanout_ = api; }
  void ProvideBus(EventBus* bus) { bus_ = bus; }
  void ProvideDb(pg::ConnectionPool* db) { db_ = db; }

  // Where the channels' shards are when the shard role runs in other processes; null when it
  // runs here (then this process's shard serves every channel of its region).
  const ShardPlacement* placement() const { return placement_; }
  void ProvidePlacement(const ShardPlacement* placement) { placement_ = placement; }

  // The internal listener's address once it listens (empty without one); set by the daemon
  // before OnServing.
  const std::string& internal_address() const { return internal_address_; }
  void SetInternalAddress(std::string address) { internal_address_ = std::move(address); }

 private:
  DaemonConfig config_;
  AuthApi* auth_ = nullptr;
  RouterApi* router_ = nullptr;
  ShardApi* shard_ = nullptr;
  FanoutApi* fanout_ = nullptr;
  EventBus* bus_ = nullptr;
  pg::ConnectionPool* db_ = nullptr;
  const ShardPlacement* placement_ = nullptr;
  std::string internal_address_;
};

// A role of infrachatd. Lifecycle, driven by the daemon on its main thread:
//   Start(ctx)              in dependency order (auth, router, shard, fanout, gateway); may throw
//                           std::exception to abort start-up with a message. Provides its Api.
//   RegisterServices(b)     after every Start, before the gRPC server is built. Returns the full
//                           names of the services registered ("infrachat.v1.ChatService"): the
//                           daemon reports each as SERVING on grpc.health.v1.Health while it
//                           serves, and NOT_SERVING from the start of a drain.
//   OnServing(address)      the gRPC server listens at `address`.
//   BeginShutdown()         in reverse order: stop taking new work, let in-flight work finish.
//   Stop()                  in reverse order, after the gRPC server stopped: release resources.
class Module {
 public:
  virtual ~Module() = default;
  virtual std::string_view name() const = 0;
  virtual void Start(ModuleContext& ctx) = 0;
  virtual std::vector<std::string> RegisterServices(grpc::ServerBuilder& /*builder*/) { return {}; }
  virtual void OnServing(const std::string& /*address*/) {}
  virtual void BeginShutdown() {}
  virtual void Stop() = 0;
};

}  // namespace infrachat
