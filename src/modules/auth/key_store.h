// Where the auth module's signing keys come from: configured PEM files, or (development mode
// only) the signing_keys table, bootstrapped on first start. Start-up path: throws.
#pragma once

#include <pqxx/pqxx>
#include <vector>

#include "infrachat/config/config.h"
#include "signing_keys.h"

namespace infrachat::auth {

// The key that signs new tokens and every key whose tokens are still accepted.
struct KeySet {
  SigningKey signing;
  std::vector<VerificationKey> verification;  // includes the signing key's public half
};

// Every row of signing_keys, newest first; if the table is empty, generates one P-256 key and
// inserts it first. A transaction-level advisory lock serializes concurrent callers (threads or
// processes), so simultaneous first starts agree on one key. Throws std::runtime_error.
std::vector<SigningKey> BootstrapSigningKeys(pqxx::connection& conn);

// From auth.private_key_file/public_key_file when set (any mode). Otherwise, in development
// mode, from BootstrapSigningKeys (newest signs, all verify). Otherwise throws: production
// needs configured keys. Throws std::runtime_error with a message naming the setting.
KeySet ResolveSigningKeys(const DaemonConfig& config, pqxx::connection& conn);

}  // namespace infrachat::auth
