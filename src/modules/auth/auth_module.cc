#include "auth_module.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "auth_schema.h"
#include "auth_service.h"
#include "infrachat/core/logging.h"
#include "infrachat/storage/pg.h"
#include "key_store.h"

namespace infrachat {

namespace {

class AuthModule final : public Module {
 public:
  std::string_view name() const override { return "auth"; }

  void Start(ModuleContext& ctx) override {
    auto log = ModuleLogger("auth");
    const DaemonConfig& config = ctx.config();
    auto conn = pg::Connect(config.database.url);
    if (!conn.ok()) {
      throw std::runtime_error("auth: cannot reach the database: " + conn.error().message);
    }
    pg::Migrate(**conn, "auth", auth::AuthMigrations());
    auth::KeySet keys = auth::ResolveSigningKeys(config, **conn);
    const std::string kid = keys.signing.kid;
    const bool from_files = !config.auth.private_key_file.empty();
    service_ = std::make_unique<auth::AuthService>(&ctx.db(), config.auth, std::move(keys));
    ctx_ = &ctx;
    ctx.ProvideAuth(service_.get());
    log->info(
        "auth ready: signing key {} ({})", kid,
        from_files ? "from auth.private_key_file" : "development key from the signing_keys table");
  }

  void Stop() override {
    // Auth starts first and stops last: no other module uses the API any more.
    if (ctx_ != nullptr) ctx_->ProvideAuth(nullptr);
    ctx_ = nullptr;
    service_.reset();
  }

 private:
  ModuleContext* ctx_ = nullptr;
  std::unique_ptr<auth::AuthService> service_;
};

}  // namespace

std::unique_ptr<Module> MakeAuthModule() { return std::make_unique<AuthModule>(); }

}  // namespace infrachat
