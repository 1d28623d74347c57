#include "group_committer.h"

#include <fmt/format.h>
#include <prometheus/family.h>

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

// How often a batch is retried after a conflict with a concurrent writer (another process that
// briefly believes it owns the channel): a deadlock, or the same client_msg_id committed first.
constexpr int kConflictRetries = 5;

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

}  // namespace

GroupCommitter::GroupCommitter(GroupCommitterOptions options, EventBus* bus,
                               std::shared_ptr<spdlog::logger> logger)
    : options_(std::move(options)),
      bus_(bus),
      log_(std::move(logger)),
      batch_size_(BatchSizeHistogram()),
      commit_seconds_(CommitSecondsHistogram()),
      batches_failed_(&prometheus::BuildCounter()
                           .Name("infrachat_shard_batches_failed_total")
                           .Help("Group-commit batches that could not be stored (their sends "
                                 "were answered with an error)")
                           .Register(MetricsRegistry())
                           .Add({})) {
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
  for (int attempt = 0; attempt <= kConflictRetries && !done; ++attempt) {
    outcomes.clear();
    committed.clear();
    if (!conn_) {
      auto conn = pg::Connect(options_.database_url);
      if (!conn.ok()) {
        failure = MakeError(Code::kUnavailable, "database unavailable; retry");
        log_->warn("cannot connect to the database: {}", conn.error().message);
        break;
      }
      conn_ = std::move(conn).value();
    }
    bool cut = false;  // the deadline closed the connection
    for (Pending& p : batch) p.span.AddEvent("commit started");  // sampled sends only
    try {
      const auto started = std::chrono::steady_clock::now();
      {
        // Time-outs close the connection, never cancel the query (see the class comment).
        pg::ConnectionDeadline::Armed armed(deadline_, *conn_, options_.commit_timeout, &cut);
        CommitBatch(*conn_, batch, outcomes, committed);
      }
      // Cut just as the COMMIT returned: committed, but the connection is gone.
      if (cut) conn_.reset();
      commit_seconds_->Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      done = true;
    } catch (const pqxx::unique_violation&) {
      failure = MakeError(Code::kAborted, "conflicting concurrent send");  // retry: dedup finds it
    } catch (const std::exception& e) {
      failure = pg::TranslateException(e);
      if (cut) {
        conn_.reset();
        failure = MakeError(Code::kUnavailable,
                            "the database did not confirm the commit in time; outcome unknown, "
                            "retry with the same client_msg_id");
        log_->warn(
            "batch of {} sends not committed within {} ms: connection closed, sends answered "
            "UNAVAILABLE ({})",
            batch.size(), options_.commit_timeout.count(), e.what());
        break;
      }
      if (failure.code == Code::kUnavailable) {
        conn_.reset();
        log_->warn("batch of {} sends failed: {}", batch.size(), e.what());
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
    BatchTraces traces;
    for (Pending& p : batch) {
      traces.EndCommit(p.span, p.command, failure, batch.size(), *log_);
      p.done(failure);
    }
    return;
  }
  batch_size_->Observe(static_cast<double>(batch.size()));
  batches_committed_.fetch_add(1);
  messages_committed_.fetch_add(committed.size());
  BatchTraces traces;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    traces.EndCommit(batch[i].span, batch[i].command, outcomes[i], batch.size(), *log_);
    batch[i].done(std::move(outcomes[i]));
  }
  for (v1::ChatMessage& m : committed) traces.Publish(*bus_, std::move(m));
}

void GroupCommitter::CommitBatch(pqxx::connection& conn, std::vector<Pending>& batch,
                                 std::vector<Result<SendOutcome>>& outcomes,
                                 std::vector<v1::ChatMessage>& committed) {
  const std::size_t n = batch.size();
  outcomes.assign(n, MakeError(Code::kInternal, "not processed"));
  pqxx::work tx(conn);

  // 1. Channel ids and membership, checked inside the transaction that stores the message.
  std::vector<std::string> names;
  std::vector<std::int64_t> senders;
  for (const Pending& p : batch) {
    names.push_back(p.command.channel);
    senders.push_back(static_cast<std::int64_t>(p.command.sender_id));
  }
  auto resolved = tx.exec_params(
      "SELECT x.ord, c.id, m.user_id IS NOT NULL,"
      " c.visibility = 2 AND NOT EXISTS"
      "   (SELECT 1 FROM invites i WHERE i.channel_id = c.id AND i.user_id = x.sender)"
      " FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS x(name, sender, ord)"
      " LEFT JOIN channels c ON c.name = x.name"
      " LEFT JOIN memberships m ON m.channel_id = c.id AND m.user_id = x.sender",
      pg::ToArrayLiteral(names), pg::ToArrayLiteral(senders));
  std::vector<std::int64_t> channel_id(n, 0);
  for (const auto& row : resolved) {
    const auto i = row[0].as<std::size_t>() - 1;
    // A private channel that the sender is not in and not invited to answers as an unknown
    // one (docs/adr/0008-private-channel-names.md).
    const bool hidden = !row[1].is_null() && !row[2].as<bool>() && row[3].as<bool>();
    if (row[1].is_null() || hidden) {
      outcomes[i] = MakeError(Code::kNotFound, "no such channel: " + batch[i].command.channel);
    } else if (!row[2].as<bool>()) {
      outcomes[i] =
          MakeError(Code::kPermissionDenied, "not a member of channel " + batch[i].command.channel);
    } else {
      channel_id[i] = row[1].as<std::int64_t>();
    }
  }

  // 2. Duplicates: within the batch (the first occurrence wins) and against the log.
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
  if (!k_channel.empty()) {
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

      v1::ChatMessage m;
      m.set_channel(cmd.channel);
      m.set_seq(static_cast<std::uint64_t>(seq));
      m.set_sender_id(cmd.sender_id);
      m.set_sender(cmd.sender);
      m.set_body(cmd.body);
      m.set_sent_at_unix_ms(now_ms);
      m.set_client_msg_id(cmd.client_msg_id);
      committed.push_back(std::move(m));
    }
    tx.exec_params(
        "INSERT INTO messages (channel_id, seq, sender_id, sender, client_msg_id, body, sent_at_ms)"
        " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],"
        " $6::text[], $7::bigint[])",
        pg::ToArrayLiteral(c_ids), pg::ToArrayLiteral(seqs), pg::ToArrayLiteral(sender_ids),
        pg::ToArrayLiteral(sender_names), pg::ToArrayLiteral(msg_ids), pg::ToArrayLiteral(bodies),
        pg::ToArrayLiteral(times));
  }

  // 5. Durable from here on (synchronous_commit is forced on for this session).
  tx.commit();

  for (std::size_t i = 0; i < n; ++i) {
    if (copy_of[i] == n) continue;
    const auto& first = outcomes[copy_of[i]];
    if (first.ok()) {
      outcomes[i] = SendOutcome{first->seq, true, first->sent_at_unix_ms};
    } else {
      outcomes[i] = first.error();
    }
  }
}

}  // namespace infrachat::shard
