#include "router_module.h"

#include <mutex>

#include "infrachat/api/router_api.h"
#include "infrachat/core/logging.h"
#include "infrachat/core/validation.h"
#include "placement.h"

namespace infrachat {

namespace {

class Router final : public RouterApi {
 public:
  // `placement`: the shard processes' placement when they run elsewhere (null: `shards`, the
  // shard ids of this process's region, decide).
  Router(std::vector<std::string> regions, std::vector<std::string> shards,
         const ShardPlacement* placement)
      : regions_(std::move(regions)), shards_(std::move(shards)), placement_(placement) {}

  Result<v1::RouteResponse> Route(std::string_view channel) override {
    auto name = NormalizeChannelName(channel);
    if (!name.ok()) return name.error();
    v1::RouteResponse response;
    response.set_channel(*name);
    response.set_region(router::PickShard(*name, regions_));  // the channel's home region
    response.set_shard_id(placement_ != nullptr ? placement_->OwnerOf(*name)
                                                : router::PickShard(*name, shards_));
    std::lock_guard lock(mu_);
    response.set_gateway_address(gateway_address_);
    return response;
  }

  void SetGatewayAddress(std::string address) {
    std::lock_guard lock(mu_);
    gateway_address_ = std::move(address);
  }

 private:
  const std::vector<std::string> regions_;
  const std::vector<std::string> shards_;
  const ShardPlacement* const placement_;
  std::mutex mu_;
  std::string gateway_address_;
};

class RouterModule final : public Module {
 public:
  std::string_view name() const override { return "router"; }

  void Start(ModuleContext& ctx) override {
    const DaemonConfig& config = ctx.config();
    std::vector<std::string> shards = config.router.shards;
    if (shards.empty()) shards.push_back(config.shard.id);
    router_ = std::make_unique<Router>(config.Regions(), std::move(shards), ctx.placement());
    advertise_ = config.grpc.advertise_address;
    ctx.ProvideRouter(router_.get());
  }

  void OnServing(const std::string& address) override {
    router_->SetGatewayAddress(advertise_.empty() ? address : advertise_);
  }

  void Stop() override { router_.reset(); }

 private:
  std::unique_ptr<Router> router_;
  std::string advertise_;
};

}  // namespace

std::unique_ptr<Module> MakeRouterModule() { return std::make_unique<RouterModule>(); }

}  // namespace infrachat
