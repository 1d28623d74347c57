#pragma once

#include <vector>

#include "infrachat/storage/pg.h"

namespace infrachat::shard {

// The shard's tables: channels (with the per-channel head seq), memberships (with delivered/read
// positions), invites and the message log. Applied with pg::Migrate(conn, "shard", ...).
const std::vector<pg::Migration>& ShardMigrations();

}  // namespace infrachat::shard
