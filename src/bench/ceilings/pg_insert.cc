#include "pg_insert.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "infrachat/storage/pg.h"
#include "modules/shard/shard_schema.h"

namespace infrachat::bench {

namespace {

using Clock = std::chrono::steady_clock;

// Each connection writes its own channels, as each InfraChat channel has one writer (its shard's
// committer): no two connections contend for a (channel_id, seq). A few per connection, so that a
// batch spans several channels as a busy shard's does.
constexpr int kChannelsPerConnection = 4;

// The shard's own `messages` table (columns, checks, primary key, unique constraint; it has no
// foreign key since shard migration 3, ADR 13). Taken from the live schema, so the ceiling cannot
// drift from what the shard writes.
constexpr const char* kCreateTable =
    "CREATE TABLE {} (LIKE messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)";

std::int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::unique_ptr<pqxx::connection> Connect(const std::string& url) {
  try {
    return std::make_unique<pqxx::connection>(url);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("cannot connect to the database: {}", e.what()));
  }
}

std::string Show(pqxx::connection& conn, const std::string& setting) {
  pqxx::nontransaction tx(conn);
  return tx.exec("SHOW " + setting)[0][0].c_str();
}

// Printable text of `bytes` bytes (what a chat body is); the letters vary so that it is not a
// single repeated byte.
std::string MakeBody(int bytes) {
  std::string body(static_cast<std::size_t>(bytes), ' ');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>('a' + i % 26);
  return body;
}

// What one worker measured in the measured phase.
struct WorkerResult {
  Histogram commit;
  std::uint64_t rows = 0;
  std::uint64_t transactions = 0;
};

struct Shared {
  const PgInsertOptions* options = nullptr;
  std::string insert_sql;
  std::string body;
  Clock::time_point measure_from;
  Clock::time_point measure_until;
  std::atomic<bool> stop{false};
  std::mutex error_mu;
  std::string error;  // the first failure

  void Fail(const std::string& what) {
    {
      std::lock_guard lock(error_mu);
      if (error.empty()) error = what;
    }
    stop.store(true);
  }
};

// One connection's loop: transactions of `batch` rows, back to back, until the measured phase
// ends. Each row gets the next seq of its channel and a fresh random client_msg_id (random, as
// real ids are, so the unique index takes inserts all over its key range).
void Worker(int index, pqxx::connection& conn, Shared& shared, WorkerResult& result) {
  const PgInsertOptions& options = *shared.options;
  std::mt19937_64 random(std::random_device{}());
  const std::int64_t sender_id = index + 1;
  const std::string sender = fmt::format("ceiling-{}", index);
  std::vector<std::int64_t> next_seq(kChannelsPerConnection, 1);
  std::uint64_t row_number = 0;

  const auto n = static_cast<std::size_t>(options.batch);
  std::vector<std::int64_t> channel_ids(n), seqs(n), sender_ids(n, sender_id), times(n);
  std::vector<std::string> senders(n, sender), msg_ids(n), bodies(n, shared.body);
  try {
    while (!shared.stop.load(std::memory_order_relaxed)) {
      const auto start = Clock::now();
      if (start >= shared.measure_until) break;
      const std::int64_t now_ms = NowUnixMs();
      for (std::size_t i = 0; i < n; ++i, ++row_number) {
        const auto channel = static_cast<int>(row_number % kChannelsPerConnection);
        channel_ids[i] = index * kChannelsPerConnection + channel + 1;
        seqs[i] = next_seq[channel]++;
        times[i] = now_ms;
        msg_ids[i] = fmt::format("{:016x}", random());
      }
      // Literals are built inside the timed region in the shard as well; here outside, so that
      // the figure is the database's alone.
      const std::string c = pg::ToArrayLiteral(channel_ids), s = pg::ToArrayLiteral(seqs),
                        si = pg::ToArrayLiteral(sender_ids), sn = pg::ToArrayLiteral(senders),
                        id = pg::ToArrayLiteral(msg_ids), b = pg::ToArrayLiteral(bodies),
                        t = pg::ToArrayLiteral(times);
      const auto begin = Clock::now();
      {
        pqxx::work tx(conn);
        tx.exec_params(shared.insert_sql, c, s, si, sn, id, b, t);
        tx.commit();
      }
      const auto end = Clock::now();
      if (end >= shared.measure_from && end < shared.measure_until) {
        result.commit.Record(
            std::chrono::duration_cast<std::chrono::nanoseconds>(end - begin).count());
        result.rows += n;
        result.transactions += 1;
      }
    }
  } catch (const std::exception& e) {
    shared.Fail(fmt::format("connection {}: {}", index, e.what()));
  }
}

bool ValidPrefix(const std::string& prefix) {
  if (prefix.empty() || prefix.size() > 40) return false;
  if (!(prefix[0] == '_' || (prefix[0] >= 'a' && prefix[0] <= 'z'))) return false;
  for (char ch : prefix) {
    if (!(ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))) return false;
  }
  return true;
}

void DropTable(pqxx::connection& conn, const std::string& table) {
  pqxx::nontransaction tx(conn);
  tx.exec("DROP TABLE IF EXISTS " + tx.quote_name(table));
}

}  // namespace

std::string ValidatePgInsertOptions(const PgInsertOptions& options) {
  if (options.url.empty()) return "--url must not be empty";
  if (options.connections < 1 || options.connections > 256) {
    return "--connections must be between 1 and 256";
  }
  if (options.batch < 1 || options.batch > 100000) return "--batch must be between 1 and 100000";
  if (options.body_bytes < 0 || options.body_bytes > 1024 * 1024) {
    return "--body-bytes must be between 0 and 1048576";
  }
  if (!(options.duration_s > 0)) return "--duration must be more than 0 seconds";
  if (!(options.warmup_s >= 0)) return "--warmup must be 0 or more seconds";
  if (!ValidPrefix(options.table_prefix)) {
    return "--table-prefix must be 1-40 characters of [a-z0-9_], not starting with a digit";
  }
  return {};
}

ScenarioReport RunPgInsert(const PgInsertOptions& options) {
  if (auto problem = ValidatePgInsertOptions(options); !problem.empty()) {
    throw std::invalid_argument(problem);
  }
  const std::string table = options.table_prefix + "_messages";
  auto admin = Connect(options.url);
  const std::string fsync = Show(*admin, "fsync");
  {
    // The shard's migrations (idempotent, as at every infrachatd start) provide `messages`.
    pg::Migrate(*admin, "shard", shard::ShardMigrations());
    pqxx::nontransaction tx(*admin);
    tx.exec("DROP TABLE IF EXISTS " + tx.quote_name(table));
    tx.exec(fmt::format(kCreateTable, tx.quote_name(table)));
  }

  ScenarioReport report;
  try {
    // Every connection explicitly asks for durable commits, whatever the server's default is,
    // and says what it got.
    std::vector<std::unique_ptr<pqxx::connection>> conns;
    std::string synchronous_commit;
    for (int i = 0; i < options.connections; ++i) {
      conns.push_back(Connect(options.url));
      conns.back()->set_variable("synchronous_commit", "on");
      const std::string value = Show(*conns.back(), "synchronous_commit");
      if (i > 0 && value != synchronous_commit) synchronous_commit = "mixed";
      if (i == 0) synchronous_commit = value;
    }

    Shared shared;
    shared.options = &options;
    shared.body = MakeBody(options.body_bytes);
    {
      pqxx::nontransaction tx(*admin);
      shared.insert_sql = fmt::format(
          "INSERT INTO {} (channel_id, seq, sender_id, sender, client_msg_id, body, sent_at_ms)"
          " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[],"
          " $5::text[], $6::text[], $7::bigint[])",
          tx.quote_name(table));
    }
    const auto to_duration = [](double seconds) {
      return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    };
    shared.measure_from = Clock::now() + to_duration(options.warmup_s);
    shared.measure_until = shared.measure_from + to_duration(options.duration_s);

    std::vector<WorkerResult> results(conns.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < conns.size(); ++i) {
      threads.emplace_back(Worker, static_cast<int>(i), std::ref(*conns[i]), std::ref(shared),
                           std::ref(results[i]));
    }
    for (auto& thread : threads) thread.join();
    if (!shared.error.empty()) throw std::runtime_error(shared.error);

    report.scenario = "ceiling-pg-insert";
    report.params = {{"connections", options.connections},
                     {"batch", options.batch},
                     {"body_bytes", options.body_bytes}};
    report.duration_s = options.duration_s;
    report.rate_unit = "rows/s";
    report.latency_name = "commit";
    std::uint64_t transactions = 0;
    for (const WorkerResult& r : results) {
      report.count += r.rows;
      transactions += r.transactions;
      report.latency.Merge(r.commit);
    }
    report.extra = {{"transactions", transactions},
                    {"transactions_per_s", static_cast<double>(transactions) / options.duration_s},
                    {"fsync", fsync},
                    {"synchronous_commit", synchronous_commit},
                    {"table", table},
                    {"channels", options.connections * kChannelsPerConnection}};
  } catch (...) {
    try {
      DropTable(*admin, table);
    } catch (...) {
      // Best effort: the next run drops and recreates it anyway.
    }
    throw;
  }
  DropTable(*admin, table);
  return report;
}

}  // namespace infrachat::bench
