// The auth module's tables, applied with pg::Migrate(conn, "auth", AuthMigrations()).
#pragma once

#include <vector>

#include "infrachat/storage/pg.h"

namespace infrachat::auth {

// v1 users, v2 sessions and rotated refresh hashes, v3 signing_keys. Append only: never edit a
// released step, add a new one.
const std::vector<pg::Migration>& AuthMigrations();

}  // namespace infrachat::auth
