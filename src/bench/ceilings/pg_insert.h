// `infrachat-ceiling pg-insert`: the raw database ceiling for durable sends. It inserts the rows
// InfraChat's shard stores for a message (src/modules/shard/shard_schema.cc, table `messages`)
// the way the shard's group committer writes a batch (src/modules/shard/group_committer.cc: one
// multi-row INSERT ... SELECT FROM unnest() of array parameters, then COMMIT with
// synchronous_commit on), and nothing else: no channel lookup, no membership check, no duplicate
// lookup, no head_seq update. The rate is what this PostgreSQL can make durable; the shard's rate
// divided by it shows what the rest of a durable send costs.
//
// The table `<prefix>_messages` has the same columns, primary key and unique constraint as
// `messages` (created LIKE it, after applying the shard migrations; LIKE copies no foreign key). It
// is dropped and recreated at start, so runs are repeatable, and dropped at the end.
#pragma once

#include <string>

#include "bench/common/report.h"

namespace infrachat::bench {

struct PgInsertOptions {
  std::string url;        // libpq connection string or URI
  int connections = 1;    // one thread per connection
  int batch = 100;        // rows per transaction
  int body_bytes = 64;    // bytes of text per message body
  double duration_s = 5;  // measured phase
  double warmup_s = 1;    // before it, not counted
  std::string table_prefix = "ceiling";
};

// Checks the values a user can get wrong; returns an empty string when they are fine, else what
// is wrong.
std::string ValidatePgInsertOptions(const PgInsertOptions& options);

// Runs the whole benchmark on the calling thread plus `connections` worker threads it joins
// before returning. Returns the report of the measured phase: scenario "ceiling-pg-insert",
// params {connections, batch, body_bytes}, count = rows committed, rate_unit "rows/s",
// latency "commit" (each transaction: BEGIN, INSERT, COMMIT round trips), extra {transactions,
// transactions_per_s, fsync, synchronous_commit, table}.
// Throws std::runtime_error (with the database's message) when a connection or a statement
// fails; the table is dropped on a best-effort basis then too.
ScenarioReport RunPgInsert(const PgInsertOptions& options);

}  // namespace infrachat::bench
