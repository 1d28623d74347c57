#include "group_committer.h"

#include <fmt/format.h>
#include <prometheus/family.h>

#include <array>
#include <map>
#include <pqxx/pqxx>
#include <tuple>

#include "commit_tracing.h"
#include "infrachat/core/metrics.h"
#include "infrachat/storage/pg.h"

namespace infrachat::shard {

namespace {

std::int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The message a stored send becomes, as published on the bus.
v1::ChatMessage CommittedMessage(const SendCommand& cmd, std::int64_t seq, std::int64_t now_ms) {
  v1::ChatMessage m;
  m.set_channel(cmd.channel);
  m.set_seq(static_cast<std::uint64_t>(seq));
  m.set_sender_id(cmd.sender_id);
  m.set_sender(cmd.sender);
  m.set_body(cmd.body);
  m.set_sent_at_unix_ms(now_ms);
  m.set_client_msg_id(cmd.client_msg_id);
  return m;
}

// The answer to a later copy of a send within the same batch: the first one's seq, as a
// duplicate, or the first one's error.
Result<SendOutcome> CopyOutcome(const Result<SendOutcome>& first) {
  if (!first.ok()) return first.error();
  return SendOutcome{first->seq, true, first->sent_at_unix_ms};
}

// The distinct (channel, sender) pairs of a batch, in order of first appearance: membership
// is resolved once per pair (a busy sender's sends share one).
struct SenderPairs {
  std::vector<std::string> names;     // pair -> channel
  std::vector<std::int64_t> senders;  // pair -> sender id
  std::vector<std::size_t> pair_of;   // send -> pair
};

template <typename Batch>
SenderPairs PairsOf(const Batch& batch) {
  SenderPairs out;
  out.pair_of.resize(batch.size());
  std::map<std::pair<std::string_view, std::uint64_t>, std::size_t> index;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const SendCommand& cmd = batch[i].command;
    auto [it, inserted] =
        index.emplace(std::pair{std::string_view(cmd.channel), cmd.sender_id}, out.names.size());
    if (inserted) {
      out.names.push_back(cmd.channel);
      out.senders.push_back(static_cast<std::int64_t>(cmd.sender_id));
    }
    out.pair_of[i] = it->second;
  }
  return out;
}

// How often a batch is retried after a conflict with a concurrent writer (another process that
// briefly believes it owns the channel): a deadlock, or the same client_msg_id committed first.
constexpr int kConflictRetries = 5;

// How many batches after one that met a duplicate look their client_msg_ids up before inserting.
constexpr int kCheckedBatches = 64;

prometheus::Histogram* BatchSizeHistogram() {
  return &prometheus::BuildHistogram()
              .Name("infrachat_shard_batch_size")
              .Help("Sends per committed group-commit batch")
              .Register(MetricsRegistry())
              .Add({},
                   prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512});
}

prometheus::Histogram* CommitSecondsHistogram() {
  return &prometheus::BuildHistogram()
              .Name("infrachat_shard_commit_seconds")
              .Help("Time to store one batch: its statements and COMMIT")
              .Register(MetricsRegistry())
              .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025,
                                                               0.05, 0.1, 0.25, 0.5, 1, 2.5});
}

// The steps of one batch's transaction, timed separately so that a slow batch says where its
// time went (infrachat_shard_batch_step_seconds{step}).
constexpr std::array<const char*, GroupCommitter::kSteps> kStepNames = {
    "resolve", "dedup", "sequence", "insert", "commit", "one_statement"};

std::array<prometheus::Histogram*, GroupCommitter::kSteps> StepHistograms() {
  auto& family = prometheus::BuildHistogram()
                     .Name("infrachat_shard_batch_step_seconds")
                     .Help(
                         "Time one group-commit batch spends in each step of its transaction: "
                         "resolve (channels and membership), dedup (earlier client_msg_ids), "
                         "sequence (head_seq update), insert, commit")
                     .Register(MetricsRegistry());
  std::array<prometheus::Histogram*, GroupCommitter::kSteps> out{};
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = &family.Add({{"step", kStepNames[i]}}, prometheus::Histogram::BucketBoundaries{
                                                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                        0.05, 0.1, 0.25, 0.5, 1, 2.5});
  }
  return out;
}

}  // namespace

GroupCommitter::GroupCommitter(GroupCommitterOptions options, EventBus* bus,
                               std::shared_ptr<spdlog::logger> logger)
    : options_(std::move(options)),
      bus_(bus),
      log_(std::move(logger)),
      batch_size_(BatchSizeHistogram()),
      commit_seconds_(CommitSecondsHistogram()),
      step_seconds_(StepHistograms()),
      batch_reruns_(&prometheus::BuildCounter()
                         .Name("infrachat_shard_batch_reruns_total")
                         .Help("Group-commit batches run again after their INSERT met the unique "
                               "key: a resend of a stored message (or a concurrent writer's)")
                         .Register(MetricsRegistry())
                         .Add({})),
      batches_failed_(&prometheus::BuildCounter()
                           .Name("infrachat_shard_batches_failed_total")
                           .Help("Group-commit batches that could not be stored (their sends "
                                 "were answered with an error)")
                           .Register(MetricsRegistry())
                           .Add({})),
      availability_(log_, {"database unavailable", "database available again"},
                    {{"component", "group_committer"}}) {
  thread_ = std::thread([this] { Run(); });
}

GroupCommitter::~GroupCommitter() { Stop(); }

void GroupCommitter::Submit(SendCommand command, SendCallback done, Span span) {
  std::unique_lock lock(mu_);
  if (stopping_) {
    lock.unlock();
    done(MakeError(Code::kUnavailable, "the shard is shutting down; retry"));
    return;
  }
  if (queue_.size() >= options_.max_queue) {
    lock.unlock();
    done(MakeError(Code::kResourceExhausted, "the shard's write queue is full; retry later"));
    return;
  }
  queue_.push_back(Pending{std::move(command), std::move(done), std::move(span)});
  lock.unlock();
  cv_.notify_one();
}

void GroupCommitter::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  completions_.Stop();  // runs the callbacks of every batch the writer finished
}

void GroupCommitter::Run() {
  std::vector<Pending> batch;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued has been committed
      while (!queue_.empty() && batch.size() < options_.max_batch) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    Process(batch);
    batch.clear();
  }
}

void GroupCommitter::Process(std::vector<Pending>& batch) {
  std::vector<Result<SendOutcome>> outcomes;
  std::vector<v1::ChatMessage> committed;
  Error failure;
  bool done = false;
  // Duplicates are rare (a client's resend after an unknown outcome), so a batch normally skips
  // the lookup of its client_msg_ids and lets the unique key find them; after a batch met one,
  // the next kCheckedBatches look them up first, so a client that keeps resending costs what
  // the lookup costs and not a failed transaction per batch.
  bool check_duplicates = checked_batches_left_ > 0;
  if (check_duplicates) --checked_batches_left_;
  for (int attempt = 0; attempt <= kConflictRetries && !done; ++attempt) {
    outcomes.clear();
    committed.clear();
    if (!conn_) {
      auto conn = pg::Connect(options_.database_url);
      if (!conn.ok()) {
        failure = MakeError(Code::kUnavailable, "database unavailable; retry");
        availability_.Failed("connect", conn.error().message);  // once per outage
        log_->debug("cannot connect to the database: {}", conn.error().message);
        break;
      }
      conn_ = std::move(conn).value();
      prepared_for_ = nullptr;  // a new connection may sit where the old one was
    }
    bool cut = false;  // the deadline closed the connection
    for (Pending& p : batch) p.span.AddEvent("commit started");  // sampled sends only
    try {
      const auto started = std::chrono::steady_clock::now();
      {
        // Time-outs close the connection, never cancel the query (see the class comment).
        pg::ConnectionDeadline::Armed armed(deadline_, *conn_, options_.commit_timeout, &cut);
        CommitBatch(*conn_, batch, check_duplicates, outcomes, committed);
      }
      // Cut just as the COMMIT returned: committed, but the connection is gone.
      if (cut) conn_.reset();
      commit_seconds_->Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      done = true;
    } catch (const pqxx::unique_violation&) {
      // A resend of a stored message, or a concurrent writer's: retry, looking duplicates up.
      failure = MakeError(Code::kAborted, "conflicting concurrent send");
      batch_reruns_->Increment();
      batch_reruns_count_.fetch_add(1);
      check_duplicates = true;
      checked_batches_left_ = kCheckedBatches;
    } catch (const std::exception& e) {
      failure = pg::TranslateException(e);
      if (cut) {
        conn_.reset();
        failure = MakeError(Code::kUnavailable,
                            "the database did not confirm the commit in time; outcome unknown, "
                            "retry with the same client_msg_id");
        availability_.Failed("commit_timeout", e.what());
        log_->debug(
            "batch of {} sends not committed within {} ms: connection closed, sends answered "
            "UNAVAILABLE ({})",
            batch.size(), options_.commit_timeout.count(), e.what());
        break;
      }
      if (failure.code == Code::kUnavailable) {
        conn_.reset();
        availability_.Failed(pg::ErrorClass(e), e.what());
        log_->debug("batch of {} sends failed: {}", batch.size(), e.what());
        break;  // unknown or failed commit: the clients retry with the same client_msg_id
      }
      if (failure.code != Code::kAborted) {
        log_->error("batch of {} sends failed: {}", batch.size(), e.what());
        break;
      }
    }
  }
  if (!done) {
    if (failure.code == Code::kAborted || failure.code == Code::kInternal) {
      failure = MakeError(Code::kUnavailable, "the message could not be stored; retry");
    }
    batches_failed_->Increment();
    outcomes.assign(batch.size(), failure);
    committed.clear();
  } else {
    availability_.Succeeded();
    batch_size_->Observe(static_cast<double>(batch.size()));
    batches_committed_.fetch_add(1);
    messages_committed_.fetch_add(committed.size());
  }
  Complete(batch, outcomes, committed);
}

void GroupCommitter::Complete(std::vector<Pending>& batch,
                              std::vector<Result<SendOutcome>>& outcomes,
                              std::vector<v1::ChatMessage>& committed) {
  // At most kMaxCompletingBatches wait for the completion thread: beyond, the writer waits
  // (its queue then fills, and Submit refuses with RESOURCE_EXHAUSTED as before).
  {
    std::unique_lock lock(completing_mu_);
    completing_cv_.wait(lock, [&] { return completing_ < kMaxCompletingBatches; });
    ++completing_;
  }
  auto finished = std::make_shared<Finished>(
      Finished{std::move(batch), std::move(outcomes), std::move(committed)});
  batch.clear();
  outcomes.clear();
  committed.clear();
  completions_.Post([this, finished] {
    BatchTraces traces;
    std::vector<Pending>& done = finished->batch;
    for (std::size_t i = 0; i < done.size(); ++i) {
      traces.EndCommit(done[i].span, done[i].command, finished->outcomes[i], done.size(), *log_);
      done[i].done(std::move(finished->outcomes[i]));
    }
    for (v1::ChatMessage& m : finished->committed) traces.Publish(*bus_, std::move(m));
    {
      std::lock_guard lock(completing_mu_);
      --completing_;
    }
    completing_cv_.notify_one();
  });
}

void GroupCommitter::CommitBatch(pqxx::connection& conn, std::vector<Pending>& batch,
                                 bool check_duplicates, std::vector<Result<SendOutcome>>& outcomes,
                                 std::vector<v1::ChatMessage>& committed) {
  if (!check_duplicates) {
    StoreInOneStatement(conn, batch, outcomes, committed);
    return;
  }
  const std::size_t n = batch.size();
  outcomes.assign(n, MakeError(Code::kInternal, "not processed"));
  auto step_started = std::chrono::steady_clock::now();
  auto step_done = [&](Step step) {
    const auto now = std::chrono::steady_clock::now();
    step_seconds_[step]->Observe(std::chrono::duration<double>(now - step_started).count());
    step_started = now;
  };
  pqxx::work tx(conn);

  // 1. Channel ids and membership, checked inside the transaction that stores the message;
  // once per distinct (channel, sender) pair of the batch.
  const auto [names, senders, pair_of] = PairsOf(batch);
  auto resolved = tx.exec_params(
      "SELECT x.ord, c.id, m.user_id IS NOT NULL,"
      " c.visibility = 2 AND NOT EXISTS"
      "   (SELECT 1 FROM invites i WHERE i.channel_id = c.id AND i.user_id = x.sender)"
      " FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS x(name, sender, ord)"
      " LEFT JOIN channels c ON c.name = x.name"
      " LEFT JOIN memberships m ON m.channel_id = c.id AND m.user_id = x.sender",
      pg::ToArrayLiteral(names), pg::ToArrayLiteral(senders));
  // Per pair: the channel id when the sender may post there, else 0 and the refusal.
  std::vector<std::int64_t> pair_channel(names.size(), 0);
  std::vector<Error> pair_refusal(names.size());
  for (const auto& row : resolved) {
    const auto k = row[0].as<std::size_t>() - 1;
    // A private channel that the sender is not in and not invited to answers as an unknown
    // one (docs/adr/0008-private-channel-names.md).
    const bool hidden = !row[1].is_null() && !row[2].as<bool>() && row[3].as<bool>();
    if (row[1].is_null() || hidden) {
      pair_refusal[k] = MakeError(Code::kNotFound, "no such channel: " + names[k]);
    } else if (!row[2].as<bool>()) {
      pair_refusal[k] = MakeError(Code::kPermissionDenied, "not a member of channel " + names[k]);
    } else {
      pair_channel[k] = row[1].as<std::int64_t>();
    }
  }
  std::vector<std::int64_t> channel_id(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    channel_id[i] = pair_channel[pair_of[i]];
    if (channel_id[i] == 0) outcomes[i] = pair_refusal[pair_of[i]];
  }

  step_done(kResolve);

  // 2. Duplicates: within the batch (the first occurrence wins) and, when check_duplicates,
  // against the log. Without the check a resend of a stored message makes the INSERT violate
  // the unique key, and Process retries the batch with it.
  using Key = std::tuple<std::int64_t, std::uint64_t, std::string>;
  std::map<Key, std::size_t> first_of;
  std::vector<std::size_t> copy_of(n, n);  // index of the first occurrence, or n
  std::vector<std::int64_t> k_channel, k_sender;
  std::vector<std::string> k_id;
  for (std::size_t i = 0; i < n; ++i) {
    if (channel_id[i] == 0) continue;
    Key key{channel_id[i], batch[i].command.sender_id, batch[i].command.client_msg_id};
    auto [it, inserted] = first_of.emplace(key, i);
    if (!inserted) {
      copy_of[i] = it->second;
      continue;
    }
    k_channel.push_back(channel_id[i]);
    k_sender.push_back(static_cast<std::int64_t>(batch[i].command.sender_id));
    k_id.push_back(batch[i].command.client_msg_id);
  }
  std::vector<bool> is_new(n, false);
  for (const auto& [key, i] : first_of) is_new[i] = true;
  if (check_duplicates && !k_channel.empty()) {
    auto existing = tx.exec_params(
        "SELECT m.channel_id, m.sender_id, m.client_msg_id, m.seq, m.sent_at_ms"
        " FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS k(channel_id, sender_id, id)"
        " JOIN messages m ON m.channel_id = k.channel_id AND m.sender_id = k.sender_id"
        "  AND m.client_msg_id = k.id",
        pg::ToArrayLiteral(k_channel), pg::ToArrayLiteral(k_sender), pg::ToArrayLiteral(k_id));
    for (const auto& row : existing) {
      Key key{row[0].as<std::int64_t>(), row[1].as<std::uint64_t>(), row[2].as<std::string>()};
      const std::size_t i = first_of.at(key);
      is_new[i] = false;
      outcomes[i] = SendOutcome{row[3].as<std::uint64_t>(), true, row[4].as<std::int64_t>()};
    }
  }

  step_done(kDedup);

  // 3. Sequence numbers: one UPDATE moves every touched channel's head by its count.
  std::map<std::int64_t, std::int64_t> count_per_channel;
  for (std::size_t i = 0; i < n; ++i) {
    if (is_new[i]) ++count_per_channel[channel_id[i]];
  }
  if (!count_per_channel.empty()) {
    std::vector<std::int64_t> ids, counts;
    for (const auto& [id, count] : count_per_channel) {
      ids.push_back(id);
      counts.push_back(count);
    }
    auto heads = tx.exec_params(
        "UPDATE channels SET head_seq = channels.head_seq + x.n"
        " FROM unnest($1::bigint[], $2::bigint[]) AS x(id, n)"
        " WHERE channels.id = x.id RETURNING channels.id, channels.head_seq",
        pg::ToArrayLiteral(ids), pg::ToArrayLiteral(counts));
    std::map<std::int64_t, std::int64_t> next_seq;  // first seq of this batch per channel
    for (const auto& row : heads) {
      const auto id = row[0].as<std::int64_t>();
      next_seq[id] = row[1].as<std::int64_t>() - count_per_channel.at(id) + 1;
    }

    step_done(kSequence);

    // 4. The messages themselves.
    const std::int64_t now_ms = NowUnixMs();
    std::vector<std::int64_t> c_ids, seqs, sender_ids, times;
    std::vector<std::string> sender_names, msg_ids, bodies;
    for (std::size_t i = 0; i < n; ++i) {
      if (!is_new[i]) continue;
      const SendCommand& cmd = batch[i].command;
      const std::int64_t seq = next_seq.at(channel_id[i])++;
      c_ids.push_back(channel_id[i]);
      seqs.push_back(seq);
      sender_ids.push_back(static_cast<std::int64_t>(cmd.sender_id));
      times.push_back(now_ms);
      sender_names.push_back(cmd.sender);
      msg_ids.push_back(cmd.client_msg_id);
      bodies.push_back(cmd.body);
      outcomes[i] = SendOutcome{static_cast<std::uint64_t>(seq), false, now_ms};
      committed.push_back(CommittedMessage(cmd, seq, now_ms));
    }
    tx.exec_params(
        "INSERT INTO messages (channel_id, seq, sender_id, sender, client_msg_id, body, sent_at_ms)"
        " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],"
        " $6::text[], $7::bigint[])",
        pg::ToArrayLiteral(c_ids), pg::ToArrayLiteral(seqs), pg::ToArrayLiteral(sender_ids),
        pg::ToArrayLiteral(sender_names), pg::ToArrayLiteral(msg_ids), pg::ToArrayLiteral(bodies),
        pg::ToArrayLiteral(times));
    step_done(kInsert);
  }

  // 5. Durable from here on (synchronous_commit is forced on for this session).
  tx.commit();
  step_done(kCommit);

  for (std::size_t i = 0; i < n; ++i) {
    if (copy_of[i] != n) outcomes[i] = CopyOutcome(outcomes[copy_of[i]]);
  }
}

// One statement in its own transaction: resolves each distinct (channel, sender) pair, advances the
// touched channels' head_seq under their row locks, inserts the sends that may be stored and
// returns per pair its channel, the verdict and the channel's first new seq. Three round trips
// (BEGIN, the statement, COMMIT) and one parse and plan per batch instead of five and three,
// which is most of what a small batch costs the database. Not autocommit: a statement whose
// connection the commit deadline closes must roll back, as it does inside a transaction whose
// COMMIT was never sent; in autocommit it would still commit once its lock wait ends, after its
// sends were answered UNAVAILABLE (and never published). The seqs are computed the same way on both
// sides: base + the send's rank among the batch's stored sends of its channel, in batch order.
// A resend of a stored client_msg_id violates the unique key: nothing is stored and Process
// runs the batch again through the checked path.
constexpr const char* kStoreBatchSql = R"sql(
WITH p AS MATERIALIZED (
  SELECT p.ord, c.id AS channel_id, m.user_id IS NOT NULL AS member,
         c.visibility = 2 AND NOT EXISTS
           (SELECT 1 FROM invites i WHERE i.channel_id = c.id AND i.user_id = p.sender) AS hidden
  FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS p(name, sender, ord)
  LEFT JOIN channels c ON c.name = p.name
  LEFT JOIN memberships m ON m.channel_id = c.id AND m.user_id = p.sender),
x AS MATERIALIZED (
  SELECT x.ord, p.channel_id, x.sender_id, x.sender, x.client_msg_id, x.body
  FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[])
       WITH ORDINALITY AS x(pair, sender_id, sender, client_msg_id, body, ord)
  JOIN p ON p.ord = x.pair AND p.member),
n AS (SELECT channel_id, count(*) AS n FROM x GROUP BY channel_id),
h AS (
  UPDATE channels c SET head_seq = c.head_seq + n.n FROM n WHERE c.id = n.channel_id
  RETURNING c.id, c.head_seq - n.n AS base),
ins AS (
  INSERT INTO messages (channel_id, seq, sender_id, sender, client_msg_id, body, sent_at_ms)
  SELECT x.channel_id, h.base + row_number() OVER (PARTITION BY x.channel_id ORDER BY x.ord),
         x.sender_id, x.sender, x.client_msg_id, x.body, $8::bigint
  FROM x JOIN h ON h.id = x.channel_id)
SELECT p.ord, p.channel_id, p.member, p.hidden, h.base FROM p LEFT JOIN h ON h.id = p.channel_id
)sql";

void GroupCommitter::StoreInOneStatement(pqxx::connection& conn, std::vector<Pending>& batch,
                                         std::vector<Result<SendOutcome>>& outcomes,
                                         std::vector<v1::ChatMessage>& committed) {
  const std::size_t n = batch.size();
  outcomes.assign(n, MakeError(Code::kInternal, "not processed"));
  const auto started = std::chrono::steady_clock::now();

  // Distinct (channel, sender) pairs, and the first occurrence of each (channel, sender,
  // client_msg_id) within the batch: later copies are answered with its outcome.
  const auto [names, senders, pair_of] = PairsOf(batch);
  std::vector<std::size_t> copy_of(n, n);
  {
    std::map<std::tuple<std::string_view, std::uint64_t, std::string_view>, std::size_t> first_of;
    for (std::size_t i = 0; i < n; ++i) {
      const SendCommand& cmd = batch[i].command;
      auto [first, is_first] =
          first_of.emplace(std::tuple{std::string_view(cmd.channel), cmd.sender_id,
                                      std::string_view(cmd.client_msg_id)},
                           i);
      if (!is_first) copy_of[i] = first->second;
    }
  }
  std::vector<std::int64_t> x_pair, x_sender;
  std::vector<std::string> x_name, x_id, x_body;
  for (std::size_t i = 0; i < n; ++i) {
    if (copy_of[i] != n) continue;
    const SendCommand& cmd = batch[i].command;
    x_pair.push_back(static_cast<std::int64_t>(pair_of[i] + 1));  // ordinality counts from 1
    x_sender.push_back(static_cast<std::int64_t>(cmd.sender_id));
    x_name.push_back(cmd.sender);
    x_id.push_back(cmd.client_msg_id);
    x_body.push_back(cmd.body);
  }
  const std::int64_t now_ms = NowUnixMs();

  if (prepared_for_ != &conn) {
    conn.prepare("infrachat_store_batch", kStoreBatchSql);
    prepared_for_ = &conn;
  }
  pqxx::work tx(conn);
  auto rows = tx.exec_prepared("infrachat_store_batch", pg::ToArrayLiteral(names),
                               pg::ToArrayLiteral(senders), pg::ToArrayLiteral(x_pair),
                               pg::ToArrayLiteral(x_sender), pg::ToArrayLiteral(x_name),
                               pg::ToArrayLiteral(x_id), pg::ToArrayLiteral(x_body), now_ms);
  const auto stored = std::chrono::steady_clock::now();
  step_seconds_[kOneStatement]->Observe(std::chrono::duration<double>(stored - started).count());
  // Durable from here on (synchronous_commit is forced on for this session).
  tx.commit();
  step_seconds_[kCommit]->Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stored).count());

  // Per pair: the verdict; per channel: the next seq to hand out, in batch order.
  std::vector<Error> refusal(names.size());
  std::vector<std::int64_t> pair_channel(names.size(), 0);
  std::map<std::int64_t, std::int64_t> next_seq;
  for (const auto& row : rows) {
    const auto k = row[0].as<std::size_t>() - 1;
    const bool known = !row[1].is_null();
    const bool member = row[2].as<bool>();
    if (!known || (!member && row[3].as<bool>())) {
      refusal[k] = MakeError(Code::kNotFound, "no such channel: " + names[k]);
    } else if (!member) {
      refusal[k] = MakeError(Code::kPermissionDenied, "not a member of channel " + names[k]);
    } else {
      pair_channel[k] = row[1].as<std::int64_t>();
      next_seq.emplace(pair_channel[k], row[4].as<std::int64_t>() + 1);
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (copy_of[i] != n) {
      outcomes[i] = CopyOutcome(outcomes[copy_of[i]]);
      continue;
    }
    const std::size_t k = pair_of[i];
    if (pair_channel[k] == 0) {
      outcomes[i] = refusal[k];
      continue;
    }
    const SendCommand& cmd = batch[i].command;
    const std::int64_t seq = next_seq.at(pair_channel[k])++;
    outcomes[i] = SendOutcome{static_cast<std::uint64_t>(seq), false, now_ms};
    committed.push_back(CommittedMessage(cmd, seq, now_ms));
  }
}

}  // namespace infrachat::shard
