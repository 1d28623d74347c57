#include "key_store.h"

#include <stdexcept>

namespace infrachat::auth {

namespace {
// Any constant shared by every auth process; distinct from the migration lock.
constexpr std::int64_t kKeyBootstrapLock = 0x1AF2A0750;
}  // namespace

std::vector<SigningKey> BootstrapSigningKeys(pqxx::connection& conn) {
  std::vector<SigningKey> keys;
  pqxx::work tx(conn);
  tx.exec_params("SELECT pg_advisory_xact_lock($1)", kKeyBootstrapLock);
  auto rows = tx.exec(
      "SELECT kid, private_pem, public_pem FROM signing_keys ORDER BY created_at DESC, kid DESC");
  if (rows.empty()) {
    auto key = GenerateSigningKey();
    if (!key.ok()) throw std::runtime_error("auth: " + key.error().message);
    tx.exec_params(
        "INSERT INTO signing_keys (kid, algorithm, private_pem, public_pem)"
        " VALUES ($1, 'ES256', $2, $3) ON CONFLICT (kid) DO NOTHING",
        key->kid, key->private_pem, key->public_pem);
    tx.commit();
    keys.push_back(std::move(key).value());
    return keys;
  }
  tx.commit();
  for (const auto& row : rows) {
    const std::string kid = row[0].as<std::string>();
    auto key = SigningKeyFromPrivatePem(row[1].as<std::string>());
    if (!key.ok() || key->kid != kid) {
      throw std::runtime_error(
          "auth: signing_keys row " + kid + " is not a valid EC P-256 key" +
          (key.ok() ? std::string(" (kid mismatch)") : ": " + key.error().message));
    }
    keys.push_back(std::move(key).value());
  }
  return keys;
}

KeySet ResolveSigningKeys(const DaemonConfig& config, pqxx::connection& conn) {
  const AuthConfig& auth = config.auth;
  const bool have_private = !auth.private_key_file.empty();
  const bool have_public = !auth.public_key_file.empty();
  if (have_private != have_public) {
    throw std::runtime_error(
        "auth: set both auth.private_key_file and auth.public_key_file, or neither");
  }
  KeySet set;
  if (have_private) {
    auto key = LoadSigningKeyFiles(auth.private_key_file, auth.public_key_file);
    if (!key.ok()) throw std::runtime_error("auth: " + key.error().message);
    set.signing = std::move(key).value();
    set.verification.push_back({set.signing.kid, set.signing.public_pem});
    return set;
  }
  if (config.mode != "development") {
    throw std::runtime_error(
        "auth: mode is '" + config.mode +
        "' but auth.private_key_file and auth.public_key_file are not set; generate an EC P-256 "
        "pair (openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt "
        "> jwt.key; openssl ec -in jwt.key -pubout > jwt.pub) and configure both files");
  }
  std::vector<SigningKey> keys = BootstrapSigningKeys(conn);
  set.signing = keys.front();
  for (const auto& key : keys) set.verification.push_back({key.kid, key.public_pem});
  return set;
}

}  // namespace infrachat::auth
