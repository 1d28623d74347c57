#include "fanout_module.h"

#include "fanout_service.h"
#include "infrachat/core/logging.h"

namespace infrachat {

namespace {

class FanoutModule final : public Module {
 public:
  std::string_view name() const override { return "fanout"; }

  void Start(ModuleContext& ctx) override {
    const DaemonConfig& config = ctx.config();
    fanout::FanoutOptions options;
    options.workers = config.fanout.workers;
    options.catchup_batch = static_cast<std::uint32_t>(config.fanout.catchup_batch);
    options.presence_max_subscribers =
        static_cast<std::size_t>(config.fanout.presence_max_subscribers);
    service_ = std::make_unique<fanout::FanoutService>(options, &ctx.bus(), &ctx.shard(),
                                                       ModuleLogger("fanout"));
    ctx.ProvideFanout(service_.get());
  }

  void Stop() override { service_.reset(); }

 private:
  std::unique_ptr<fanout::FanoutService> service_;
};

}  // namespace

std::unique_ptr<Module> MakeFanoutModule() { return std::make_unique<FanoutModule>(); }

}  // namespace infrachat
