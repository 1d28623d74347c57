// GroupCommitter: the shard's durable write path.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <spdlog/logger.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <pqxx/connection>
#include <string>
#include <thread>
#include <vector>

#include "infrachat/api/shard_api.h"
#include "infrachat/bus/event_bus.h"
#include "infrachat/core/availability_log.h"
#include "infrachat/core/executor.h"
#include "infrachat/core/tracing.h"
#include "infrachat/storage/pg.h"

namespace infrachat::shard {

struct GroupCommitterOptions {
  std::string database_url;
  std::size_t max_batch = 512;
  std::size_t max_queue = 65536;
  // A batch whose transaction has not committed by then is cut off: its connection is closed
  // (never cancelled, see Failure below) and its sends fail with UNAVAILABLE.
  std::chrono::milliseconds commit_timeout{10000};
};

// Commits queued sends in batches: every send queued while the previous transaction was
// committing goes into the next one, so a batch closes when the previous COMMIT returns, never
// on a timer (no added latency at low load). One transaction per batch:
// (A batch without a resend does steps 1-4 in one statement: StoreInOneStatement.)
//   1. resolve channel names and check the senders' membership (at commit time),
//   2. find client_msg_ids stored before (idempotent retry -> original seq, duplicate = true):
//      normally by the unique key itself (the INSERT fails, the batch runs again with a lookup
//      first), since resends are rare and the lookup costs as much as the insert,
//   3. advance each channel's head_seq by its number of new messages (row lock on the channel),
//   4. insert the messages, 5. COMMIT.
// Only then are the callbacks invoked (ACK = durability) and the messages published on the bus,
// in seq order per channel.
//
// Threading: one writer thread owns its own database connection. Submit may be called from any
// thread and never blocks. Callbacks and the bus publishes run on one completion thread, batch
// after batch in commit order (so per channel in seq order, and a stream's answers in the order
// of its sends), while the writer already runs the next batch; they must not block. At most
// two committed batches wait for that thread; then the writer waits.
// Failure: if the database is unreachable or the COMMIT outcome is unknown, every send of the
// batch fails with UNAVAILABLE (nothing acknowledged; the client retries with the same
// client_msg_id, which the unique key makes safe). The next batch reconnects; with a multi-host
// database.url and target_session_attrs=read-write that finds the current primary after a
// failover. A batch that overruns commit_timeout (a COMMIT waiting for a synchronous standby
// that does not answer, a lock held by such a COMMIT, a hung server) has its connection closed,
// never its query cancelled: a cancelled COMMIT that waits for the standby returns success
// with a WARNING although the standby does not have it, which would be a false ACK. Closed,
// the outcome is unknown and is answered as such (UNAVAILABLE); the resend settles it.
class GroupCommitter {
 public:
  GroupCommitter(GroupCommitterOptions options, EventBus* bus,
                 std::shared_ptr<spdlog::logger> logger);
  ~GroupCommitter();  // calls Stop()

  // `span`: the send's commit span (commit_tracing.h), ended when its batch's outcome is known;
  // a non-recording one for a send that is not sampled.
  void Submit(SendCommand command, SendCallback done, Span span = {});

  // Commits what is queued, then stops the writer. Later Submits fail with UNAVAILABLE.
  void Stop();

  // The timed steps of a batch's transaction (infrachat_shard_batch_step_seconds{step}).
  // The checked path has five steps; a batch without a resend has two: one_statement, commit.
  enum Step : std::size_t { kResolve, kDedup, kSequence, kInsert, kCommit, kOneStatement, kSteps };

  // Counters for tests and metrics.
  std::uint64_t batches_committed() const { return batches_committed_.load(); }
  std::uint64_t messages_committed() const { return messages_committed_.load(); }
  // Batches run again because their INSERT met the unique key (a resend, see step 2).
  std::uint64_t batch_reruns() const { return batch_reruns_count_.load(); }

 private:
  struct Pending {
    SendCommand command;
    SendCallback done;
    Span span;
  };

  // A batch whose outcome is known, on its way to the completion thread.
  struct Finished {
    std::vector<Pending> batch;
    std::vector<Result<SendOutcome>> outcomes;  // one per send of `batch`
    std::vector<v1::ChatMessage> committed;     // to publish, in seq order per channel
  };
  static constexpr int kMaxCompletingBatches = 2;

  void Run();
  void Process(std::vector<Pending>& batch);
  // Hands the batch's outcomes to the completion thread (moves from the three; they are left
  // empty). Waits while kMaxCompletingBatches are already waiting.
  void Complete(std::vector<Pending>& batch, std::vector<Result<SendOutcome>>& outcomes,
                std::vector<v1::ChatMessage>& committed);
  // Runs the transaction; fills one outcome per pending send. Throws on database failure.
  // The batch as one statement and a COMMIT (no lookup of client_msg_ids: a stored one makes
  // the statement throw pqxx::unique_violation, and nothing is stored).
  void StoreInOneStatement(pqxx::connection& conn, std::vector<Pending>& batch,
                           std::vector<Result<SendOutcome>>& outcomes,
                           std::vector<v1::ChatMessage>& committed);
  // check_duplicates: look the client_msg_ids up before inserting; without it a stored one
  // makes the INSERT throw pqxx::unique_violation (and the transaction is rolled back).
  void CommitBatch(pqxx::connection& conn, std::vector<Pending>& batch, bool check_duplicates,
                   std::vector<Result<SendOutcome>>& outcomes,
                   std::vector<v1::ChatMessage>& committed);

  GroupCommitterOptions options_;
  EventBus* bus_;
  std::shared_ptr<spdlog::logger> log_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool stopping_ = false;

  std::unique_ptr<pqxx::connection> conn_;  // writer thread only
  pg::ConnectionDeadline deadline_;         // cuts conn_ when a batch overruns commit_timeout
  // infrachat_shard_batch_size, infrachat_shard_commit_seconds (one observation per
  // committed batch), infrachat_shard_batches_failed_total: in MetricsRegistry().
  prometheus::Histogram* batch_size_;
  prometheus::Histogram* commit_seconds_;
  std::array<prometheus::Histogram*, kSteps> step_seconds_;
  prometheus::Counter* batch_reruns_;               // infrachat_shard_batch_reruns_total
  int checked_batches_left_ = 0;                    // writer thread only
  const pqxx::connection* prepared_for_ = nullptr;  // conn_ that has the statement prepared
  prometheus::Counter* batches_failed_;
  // "database unavailable" / "database available again", once per outage of the writer's
  // connection (component group_committer; the per-batch lines are at debug).
  AvailabilityLog availability_;
  std::atomic<std::uint64_t> batches_committed_{0};
  std::atomic<std::uint64_t> messages_committed_{0};
  std::atomic<std::uint64_t> batch_reruns_count_{0};
  std::mutex completing_mu_;
  std::condition_variable completing_cv_;
  int completing_ = 0;  // batches posted to completions_ and not yet completed
  // Declared before thread_: constructed before the writer starts, stopped after it joined.
  Executor completions_{1, "commit-done"};
  std::thread thread_;
};

}  // namespace infrachat::shard
