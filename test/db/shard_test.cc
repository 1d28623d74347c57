// The shard (durability plane) against a real PostgreSQL: ACK = durability, gap-free per-channel
// sequences (also with two writers on one channel), idempotent sends, membership checks at the
// time of the request, validation, database outages, publication order, and group commit.
//
// Outages are simulated on the test's own database only (the cluster is shared):
// `ALTER DATABASE ... ALLOW_CONNECTIONS false` refuses every new connection (superusers too) and
// `pg_terminate_backend` kills the existing ones, which is what the shard sees when its server
// goes away; ALLOW_CONNECTIONS true is the server coming back.
//
// Several tests need a send to be *in* a transaction while others queue behind it. They hold the
// row lock of a channel from another connection (SELECT ... FOR UPDATE): the committer's UPDATE of
// head_seq waits on it, which pg_stat_activity shows as a Lock wait. That is observable state,
// not a sleep.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bus/local/local_event_bus.h"
#include "infrachat/core/logging.h"
#include "infrachat/storage/pg.h"
#include "modules/shard/group_committer.h"
#include "modules/shard/lease_keeper.h"
#include "modules/shard/shard_schema.h"
#include "modules/shard/shard_service.h"
#include "test_db.h"

namespace infrachat {
namespace {

// Tests wait as long as it takes: no deadline, never cancelled.
CallContext Call() { return CallContext::Unbounded(); }

using namespace std::chrono_literals;
using namespace std::string_literals;
using infrachat::testing::TestDatabase;

constexpr auto kWait = 30s;  // upper bound for anything a test waits for

const Principal kAlice{1, "alice", "", 0};
const Principal kBob{2, "bob", "", 0};
const Principal kCarol{3, "carol", "", 0};

// Everything published on the bus, for assertions after LocalEventBus::Drain().
struct BusLog {
  std::mutex mu;
  std::vector<v1::ChatMessage> messages;
  std::vector<MembershipChanged> memberships;
  std::vector<v1::Receipt> receipts;

  void Record(const BusEvent& e) {
    std::lock_guard lock(mu);
    if (const auto* m = std::get_if<v1::ChatMessage>(&e)) messages.push_back(*m);
    if (const auto* c = std::get_if<MembershipChanged>(&e)) memberships.push_back(*c);
    if (const auto* r = std::get_if<v1::Receipt>(&e)) receipts.push_back(*r);
  }
  std::vector<v1::ChatMessage> Messages() {
    std::lock_guard lock(mu);
    return messages;
  }
  int CountId(const std::string& client_msg_id) {
    std::lock_guard lock(mu);
    int n = 0;
    for (const auto& m : messages) n += m.client_msg_id() == client_msg_id;
    return n;
  }
};

// Collects send outcomes from any thread; waits for a number of them with a deadline.
struct Acks {
  struct Ack {
    SendCommand command;
    Result<SendOutcome> result;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Ack> acks;

  SendCallback Callback(SendCommand command) {
    return [this, command = std::move(command)](Result<SendOutcome> r) {
      // Notified under the lock: a waiter that sees the last ack may destroy this Acks (and
      // its cv) as soon as it can take the lock (found by TSan).
      std::lock_guard lock(mu);
      acks.push_back(Ack{command, std::move(r)});
      cv.notify_all();
    };
  }
  bool WaitFor(std::size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kWait, [&] { return acks.size() >= n; });
  }
  std::vector<Ack> Snapshot() {
    std::lock_guard lock(mu);
    return acks;
  }
};

SendCommand Cmd(const std::string& channel, const Principal& who, const std::string& id,
                std::string body = "hello") {
  return SendCommand{channel, who.user_id, who.username, id, std::move(body)};
}

// Sends through `api` and waits for the outcome.
Result<SendOutcome> SendVia(ShardApi& api, SendCommand command) {
  Acks acks;
  api.SendAsync(Call(), command, acks.Callback(command));
  if (!acks.WaitFor(1)) return MakeError(Code::kDeadlineExceeded, "no callback");
  return acks.Snapshot()[0].result;
}

Result<SendOutcome> SubmitVia(shard::GroupCommitter& committer, SendCommand command) {
  Acks acks;
  committer.Submit(command, acks.Callback(command));
  if (!acks.WaitFor(1)) return MakeError(Code::kDeadlineExceeded, "no callback");
  return acks.Snapshot()[0].result;
}

std::vector<std::uint64_t> Range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> out;
  for (std::uint64_t i = from; i <= to; ++i) out.push_back(i);
  return out;
}

struct ShardFixture {
  TestDatabase db;
  BusLog bus_log;  // before `bus`: outlives its subscription
  LocalEventBus bus;
  pg::ConnectionPool pool{db.url(), 4};
  std::unique_ptr<shard::GroupCommitter> committer;
  std::unique_ptr<shard::ShardService> service;

  explicit ShardFixture(shard::GroupCommitterOptions options = {}) {
    {
      pqxx::connection conn(db.url());
      pg::Migrate(conn, "shard", shard::ShardMigrations());
    }
    bus.Subscribe([this](const BusEvent& e) { bus_log.Record(e); });
    options.database_url = db.url();
    committer = NewCommitter(options);
    service = std::make_unique<shard::ShardService>(shard::ShardServiceOptions{}, &pool,
                                                    committer.get(), &bus);
  }
  ~ShardFixture() {
    service.reset();
    committer.reset();  // commits what is queued, then stops
    bus.Drain();
  }

  std::unique_ptr<shard::GroupCommitter> NewCommitter(shard::GroupCommitterOptions options = {}) {
    options.database_url = db.url();
    return std::make_unique<shard::GroupCommitter>(options, &bus, ModuleLogger("shard-test"));
  }

  void Create(const Principal& owner, const std::string& name,
              v1::Visibility visibility = v1::PUBLIC) {
    v1::CreateChannelRequest req;
    req.set_name(name);
    req.set_visibility(visibility);
    auto r = service->CreateChannel(Call(), owner, req);
    INFO((r.ok() ? "" : r.error().message));
    REQUIRE(r.ok());
  }
  void Join(const Principal& who, const std::string& name) {
    auto r = service->JoinChannel(Call(), who, name);
    INFO((r.ok() ? "" : r.error().message));
    REQUIRE(r.ok());
  }
  Result<SendOutcome> Send(const std::string& channel, const Principal& who, const std::string& id,
                           std::string body = "hello") {
    return SendVia(*service, Cmd(channel, who, id, std::move(body)));
  }

  std::int64_t Scalar(const std::string& sql) {
    pqxx::connection conn(db.url());
    pqxx::nontransaction tx(conn);
    return tx.exec(sql)[0][0].as<std::int64_t>();
  }
  std::vector<std::uint64_t> Seqs(const std::string& channel) {
    pqxx::connection conn(db.url());
    pqxx::nontransaction tx(conn);
    std::vector<std::uint64_t> out;
    for (const auto& row :
         tx.exec_params("SELECT m.seq FROM messages m JOIN channels c ON c.id = m.channel_id"
                        " WHERE c.name = $1 ORDER BY m.seq",
                        channel)) {
      out.push_back(row[0].as<std::uint64_t>());
    }
    return out;
  }
  std::uint64_t Head(const std::string& channel) {
    pqxx::connection conn(db.url());
    pqxx::nontransaction tx(conn);
    return tx.exec_params("SELECT head_seq FROM channels WHERE name = $1", channel)[0][0]
        .as<std::uint64_t>();
  }
  std::int64_t RowsWithId(const std::string& client_msg_id) {
    pqxx::connection conn(db.url());
    pqxx::nontransaction tx(conn);
    return tx
        .exec_params("SELECT count(*) FROM messages WHERE client_msg_id = $1", client_msg_id)[0][0]
        .as<std::int64_t>();
  }
};

// Holds the row lock of `channel` so that the committer's next transaction touching it waits.
class WriterBlocker {
 public:
  WriterBlocker(const std::string& url, const std::string& channel) : conn_(url), tx_(conn_) {
    tx_.exec_params("SELECT 1 FROM channels WHERE name = $1 FOR UPDATE", channel);
  }
  ~WriterBlocker() { Release(); }
  void Release() {
    if (!released_) tx_.commit();
    released_ = true;
  }

 private:
  pqxx::connection conn_;
  pqxx::work tx_;
  bool released_ = false;
};

// Waits until some session of `db` is waiting for a lock (the committer, stuck behind a
// WriterBlocker). Polls an observable state with a deadline.
bool WaitForLockWaiter(const std::string& db) {
  pqxx::connection conn(TestDatabase::AdminUrl());
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (std::chrono::steady_clock::now() < deadline) {
    pqxx::nontransaction tx(conn);
    auto n = tx.exec_params(
                   "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
                   " AND wait_event_type = 'Lock'",
                   db)[0][0]
                 .as<int>();
    if (n > 0) return true;
    std::this_thread::yield();
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// ACK = durability
// ---------------------------------------------------------------------------------------------

TEST_CASE("a SendAck's message is committed when the callback runs", "[db][shard][ack]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  f.Create(kAlice, "other");

  // Used only inside the callbacks, which all run on the committer's completion thread.
  pqxx::connection verify(f.db.url());
  std::atomic<int> visible{0}, invisible{0}, error_rows{0};
  auto check_committed = [&](const SendCommand& cmd, const Result<SendOutcome>& r) {
    pqxx::nontransaction tx(verify);
    auto rows = tx.exec_params(
        "SELECT m.seq, c.head_seq FROM messages m JOIN channels c ON c.id = m.channel_id"
        " WHERE c.name = $1 AND m.sender_id = $2 AND m.client_msg_id = $3",
        cmd.channel, static_cast<std::int64_t>(cmd.sender_id), cmd.client_msg_id);
    if (r.ok()) {
      const bool ok = rows.size() == 1 && rows[0][0].as<std::uint64_t>() == r->seq &&
                      rows[0][1].as<std::uint64_t>() >= r->seq;
      ++(ok ? visible : invisible);
    } else {
      error_rows += static_cast<int>(rows.size());
    }
  };

  // Also the bus: a published message is already in the log when it is handled.
  pqxx::connection bus_verify(f.db.url());  // bus thread only
  std::atomic<int> published_uncommitted{0};
  const auto sub = f.bus.Subscribe([&](const BusEvent& e) {
    const auto* m = std::get_if<v1::ChatMessage>(&e);
    if (!m) return;
    pqxx::nontransaction tx(bus_verify);
    auto n = tx.exec_params(
                   "SELECT count(*) FROM messages m JOIN channels c ON c.id = m.channel_id"
                   " WHERE c.name = $1 AND m.seq = $2",
                   m->channel(), static_cast<std::int64_t>(m->seq()))[0][0]
                 .as<int>();
    if (n != 1) ++published_uncommitted;
  });

  constexpr int kSends = 60;
  Acks acks;
  std::atomic<int> callbacks{0};
  for (int i = 0; i < kSends; ++i) {
    auto cmd = Cmd(i % 2 ? "general" : "other", kAlice, "ack-" + std::to_string(i));
    auto record = acks.Callback(cmd);
    f.service->SendAsync(Call(), cmd, [&, cmd, record](Result<SendOutcome> r) {
      ++callbacks;
      check_committed(cmd, r);
      record(std::move(r));
    });
  }
  // A send that fails (not a member) leaves no row, checked at callback time too.
  auto denied = Cmd("general", kBob, "denied-1");
  auto record_denied = acks.Callback(denied);
  f.service->SendAsync(Call(), denied, [&, denied, record_denied](Result<SendOutcome> r) {
    ++callbacks;
    check_committed(denied, r);
    record_denied(std::move(r));
  });

  REQUIRE(acks.WaitFor(kSends + 1));
  f.bus.Drain();
  f.bus.Unsubscribe(sub);
  CHECK(callbacks == kSends + 1);  // exactly once each
  CHECK(visible == kSends);
  CHECK(invisible == 0);
  CHECK(error_rows == 0);
  CHECK(published_uncommitted == 0);
  for (const auto& ack : acks.Snapshot()) {
    if (ack.command.client_msg_id == "denied-1") {
      CHECK(ack.result.code() == Code::kPermissionDenied);
    } else {
      CHECK(ack.result.ok());
    }
  }
  CHECK(f.RowsWithId("denied-1") == 0);
  CHECK(f.bus_log.CountId("denied-1") == 0);
}

// ---------------------------------------------------------------------------------------------
// Per-channel total order
// ---------------------------------------------------------------------------------------------

TEST_CASE("concurrent senders get gap-free, duplicate-free sequences per channel",
          "[db][shard][order]") {
  ShardFixture f;
  const std::vector<std::string> channels = {"c0", "c1", "c2"};
  constexpr int kThreads = 8;
  constexpr int kPerThread = 200;
  std::vector<Principal> users;
  for (int t = 0; t < kThreads; ++t) {
    users.push_back(
        Principal{100 + static_cast<std::uint64_t>(t), "user" + std::to_string(t), "", 0});
  }
  for (const auto& c : channels) f.Create(users[0], c);
  for (int t = 1; t < kThreads; ++t) {
    for (const auto& c : channels) f.Join(users[t], c);
  }

  Acks acks;
  std::atomic<int> start{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ++start;
      while (start < kThreads) std::this_thread::yield();
      for (int i = 0; i < kPerThread; ++i) {
        auto cmd =
            Cmd(channels[(t + i) % channels.size()], users[t],
                "t" + std::to_string(t) + "-" + std::to_string(i), "body " + std::to_string(i));
        f.service->SendAsync(Call(), cmd, acks.Callback(cmd));
      }
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE(acks.WaitFor(kThreads * kPerThread));
  f.bus.Drain();

  std::map<std::string, std::vector<std::uint64_t>> acked;
  std::map<std::string, std::uint64_t> seq_of;  // client_msg_id -> seq
  for (const auto& ack : acks.Snapshot()) {
    INFO((ack.result.ok() ? "" : ack.result.error().message));
    REQUIRE(ack.result.ok());
    CHECK_FALSE(ack.result->duplicate);
    acked[ack.command.channel].push_back(ack.result->seq);
    seq_of[ack.command.client_msg_id] = ack.result->seq;
  }
  std::size_t total = 0;
  for (const auto& c : channels) {
    auto seqs = acked[c];
    std::sort(seqs.begin(), seqs.end());
    const std::uint64_t n = seqs.size();
    total += n;
    INFO("channel " << c);
    CHECK(seqs == Range(1, n));       // the ACKs: 1..N, each once
    CHECK(f.Seqs(c) == Range(1, n));  // the log: the same
    CHECK(f.Head(c) == n);
  }
  CHECK(total == kThreads * kPerThread);

  // Every ACKed seq holds that very message.
  pqxx::connection conn(f.db.url());
  pqxx::nontransaction tx(conn);
  int mismatches = 0;
  for (const auto& row : tx.exec("SELECT client_msg_id, seq FROM messages")) {
    mismatches += seq_of.at(row[0].as<std::string>()) != row[1].as<std::uint64_t>();
  }
  CHECK(mismatches == 0);

  // Published once each, in seq order per channel, with the committed fields.
  std::map<std::string, std::uint64_t> last;
  auto published = f.bus_log.Messages();
  CHECK(published.size() == total);
  for (const auto& m : published) {
    INFO(m.channel() << " seq " << m.seq() << " after " << last[m.channel()]);
    REQUIRE(m.seq() == last[m.channel()] + 1);
    last[m.channel()] = m.seq();
    CHECK(seq_of.at(m.client_msg_id()) == m.seq());
  }

  // Group commit batched the concurrent sends.
  INFO("batches " << f.committer->batches_committed() << ", messages "
                  << f.committer->messages_committed());
  CHECK(f.committer->messages_committed() == total);
  CHECK(f.committer->batches_committed() < f.committer->messages_committed());
}

// Sends like a client: retries UNAVAILABLE with the same client_msg_id.
struct RetryingSender {
  std::atomic<int> retries{0};
  Result<SendOutcome> Send(shard::GroupCommitter& committer, const SendCommand& cmd) {
    for (int attempt = 0;; ++attempt) {
      auto r = SubmitVia(committer, cmd);
      if (r.code() != Code::kUnavailable || attempt == 20) return r;
      ++retries;
    }
  }
};

TEST_CASE("two committers writing one channel keep it gap-free", "[db][shard][order]") {
  // Two shards that briefly both believe they own the channel: the database decides the numbers.
  ShardFixture f;
  f.Create(kAlice, "shared");
  f.Join(kBob, "shared");
  auto second = f.NewCommitter();
  shard::GroupCommitter* committers[2] = {f.committer.get(), second.get()};

  constexpr int kThreads = 6;
  constexpr int kPerThread = 100;
  RetryingSender sender;
  std::mutex mu;
  std::vector<std::uint64_t> seqs;
  std::vector<std::string> failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Asynchronous bursts so that batches of both writers overlap.
      Acks acks;
      for (int i = 0; i < kPerThread; ++i) {
        auto cmd =
            Cmd("shared", t % 2 ? kAlice : kBob, "w" + std::to_string(t) + "-" + std::to_string(i));
        committers[(t + i) % 2]->Submit(cmd, acks.Callback(cmd));
      }
      const bool all = acks.WaitFor(kPerThread);
      std::lock_guard lock(mu);
      if (!all) failures.push_back("timeout");
      for (auto& ack : acks.Snapshot()) {
        auto r = ack.result;
        if (r.code() == Code::kUnavailable) {
          // The batch ran out of conflict retries: retry as a client would, same id.
          r = sender.Send(*committers[0], ack.command);
        }
        if (!r.ok()) {
          failures.push_back(r.error().message);
        } else {
          seqs.push_back(r->seq);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  INFO("client retries: " << sender.retries.load());
  CHECK(failures.empty());
  std::sort(seqs.begin(), seqs.end());
  constexpr std::uint64_t kTotal = kThreads * kPerThread;
  CHECK(seqs == Range(1, kTotal));
  CHECK(f.Seqs("shared") == Range(1, kTotal));
  CHECK(f.Head("shared") == kTotal);
  // Both writers did commit some of them.
  CHECK(f.committer->messages_committed() > 0);
  CHECK(second->messages_committed() > 0);
  CHECK(f.committer->messages_committed() + second->messages_committed() == kTotal);
}

// ---------------------------------------------------------------------------------------------
// Idempotent send
// ---------------------------------------------------------------------------------------------

TEST_CASE("a resent client_msg_id returns the original seq, stored and published once",
          "[db][shard][idempotency]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  f.Join(kBob, "general");
  f.Create(kAlice, "other");

  auto first = f.Send("general", kAlice, "m-1", "original body");
  REQUIRE(first.ok());
  CHECK(first->seq == 1);
  CHECK_FALSE(first->duplicate);
  REQUIRE(f.Send("general", kAlice, "m-2").ok());

  auto again = f.Send("general", kAlice, "m-1", "a different body");
  REQUIRE(again.ok());
  CHECK(again->seq == 1);
  CHECK(again->duplicate);
  CHECK(again->sent_at_unix_ms == first->sent_at_unix_ms);

  // The key is (channel, sender, client_msg_id): another sender or channel is a new message.
  auto bobs = f.Send("general", kBob, "m-1");
  REQUIRE(bobs.ok());
  CHECK(bobs->seq == 3);
  CHECK_FALSE(bobs->duplicate);
  auto elsewhere = f.Send("other", kAlice, "m-1");
  REQUIRE(elsewhere.ok());
  CHECK(elsewhere->seq == 1);
  CHECK_FALSE(elsewhere->duplicate);

  // Unique forever, not within a window: still a duplicate after many other messages.
  for (int i = 0; i < 20; ++i) REQUIRE(f.Send("general", kAlice, "fill-" + std::to_string(i)).ok());
  auto much_later = f.Send("general", kAlice, "m-1");
  REQUIRE(much_later.ok());
  CHECK(much_later->seq == 1);
  CHECK(much_later->duplicate);

  f.bus.Drain();
  CHECK(f.Seqs("general") == Range(1, 23));
  CHECK(f.Head("general") == 23);
  pqxx::connection conn(f.db.url());
  pqxx::nontransaction tx(conn);
  auto rows = tx.exec(
      "SELECT body FROM messages m JOIN channels c ON c.id = m.channel_id"
      " WHERE c.name = 'general' AND m.sender_id = 1 AND m.client_msg_id = 'm-1'");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][0].as<std::string>() == "original body");
  CHECK(f.bus_log.CountId("m-1") == 3);  // alice@general, bob@general, alice@other: once each
}

// Sends `batch` so that it forms one group-commit batch: a send to channel "plug" (which the
// caller created) holds the writer behind a row lock while these queue up, then the lock goes.
// Waits for every answer, the plug's included (acks then holds 1 + batch.size()).
void SendAsOneBatch(ShardFixture& f, Acks& acks, const std::vector<SendCommand>& batch) {
  std::optional<WriterBlocker> blocker;
  blocker.emplace(f.db.url(), "plug");
  auto plug = Cmd("plug", kAlice, "plug-1");
  f.service->SendAsync(Call(), plug, acks.Callback(plug));
  REQUIRE(WaitForLockWaiter(f.db.name()));  // the writer is inside the plug's transaction
  for (const auto& cmd : batch) f.service->SendAsync(Call(), cmd, acks.Callback(cmd));
  blocker->Release();
  REQUIRE(acks.WaitFor(1 + batch.size()));
}

TEST_CASE("duplicates inside one batch get the first one's seq", "[db][shard][idempotency]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  f.Create(kAlice, "plug");
  const auto batches_before = f.committer->batches_committed();

  Acks acks;
  const std::vector<SendCommand> batch = {
      Cmd("general", kAlice, "same", "first copy"), Cmd("general", kAlice, "other"),
      Cmd("general", kAlice, "same", "second copy"), Cmd("general", kAlice, "same", "third")};
  SendAsOneBatch(f, acks, batch);
  f.bus.Drain();

  CHECK(f.committer->batches_committed() - batches_before == 2);
  std::vector<Result<SendOutcome>> same;
  std::optional<std::uint64_t> other_seq;
  for (const auto& ack : acks.Snapshot()) {
    REQUIRE(ack.result.ok());
    if (ack.command.client_msg_id == "same") same.push_back(ack.result);
    if (ack.command.client_msg_id == "other") other_seq = ack.result->seq;
  }
  REQUIRE(same.size() == 3);
  // Callbacks come in submission order within the batch: the first copy is the original.
  CHECK_FALSE(same[0]->duplicate);
  CHECK(same[1]->duplicate);
  CHECK(same[2]->duplicate);
  CHECK(same[0]->seq == 1);
  CHECK(same[1]->seq == 1);
  CHECK(same[2]->seq == 1);
  CHECK(other_seq == 2u);
  CHECK(f.Seqs("general") == Range(1, 2));
  CHECK(f.Head("general") == 2);
  CHECK(f.RowsWithId("same") == 1);
  CHECK(f.bus_log.CountId("same") == 1);
}

TEST_CASE("a resend batched with new sends: the batch runs again, gap-free, the resend once",
          "[db][shard][idempotency]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  f.Create(kAlice, "plug");
  auto original = f.Send("general", kAlice, "m-1", "original body");
  REQUIRE(original.ok());
  REQUIRE(original->seq == 1);
  const auto reruns_before = f.committer->batch_reruns();

  // A batch of new sends around a resend of m-1: without a lookup its INSERT meets the unique
  // key, is rolled back whole (head_seq included) and runs again with the lookup.
  Acks acks;
  // A non-member's send and one to an unknown channel ride along: the checked path, which the
  // rerun takes, must refuse them as the one-statement path does.
  SendAsOneBatch(f, acks,
                 {Cmd("general", kAlice, "new-a"), Cmd("general", kBob, "not-member"),
                  Cmd("general", kAlice, "m-1", "resent body"), Cmd("nowhere", kAlice, "lost"),
                  Cmd("general", kAlice, "new-b")});
  CHECK(f.committer->batch_reruns() - reruns_before == 1);

  std::map<std::string, Result<SendOutcome>> by_id;
  for (const auto& ack : acks.Snapshot()) by_id.emplace(ack.command.client_msg_id, ack.result);
  CHECK(by_id.at("not-member").code() == Code::kPermissionDenied);
  CHECK(by_id.at("lost").code() == Code::kNotFound);
  REQUIRE(by_id.at("m-1").ok());
  CHECK(by_id.at("m-1")->duplicate);
  CHECK(by_id.at("m-1")->seq == 1);
  REQUIRE(by_id.at("new-a").ok());
  REQUIRE(by_id.at("new-b").ok());
  CHECK_FALSE(by_id.at("new-a")->duplicate);
  CHECK(by_id.at("new-a")->seq == 2);
  CHECK(by_id.at("new-b")->seq == 3);

  // The batches right after look client_msg_ids up first: another resend is found without a
  // failed INSERT.
  auto again = f.Send("general", kAlice, "new-a");
  REQUIRE(again.ok());
  CHECK(again->duplicate);
  CHECK(again->seq == 2);
  CHECK(f.committer->batch_reruns() - reruns_before == 1);

  f.bus.Drain();
  CHECK(f.Seqs("general") == Range(1, 3));
  CHECK(f.Head("general") == 3);
  CHECK(f.RowsWithId("m-1") == 1);
  CHECK(f.bus_log.CountId("m-1") == 1);
  CHECK(f.bus_log.CountId("new-a") == 1);
}

TEST_CASE("a send retried through a second committer is recognised", "[db][shard][idempotency]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  auto second = f.NewCommitter();

  SECTION("one after the other") {
    auto a = SubmitVia(*f.committer, Cmd("general", kAlice, "x-1"));
    auto b = SubmitVia(*second, Cmd("general", kAlice, "x-1"));
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK_FALSE(a->duplicate);
    CHECK(b->duplicate);
    CHECK(b->seq == a->seq);
    f.bus.Drain();
    CHECK(f.RowsWithId("x-1") == 1);
    CHECK(f.bus_log.CountId("x-1") == 1);
  }

  SECTION("both at once, many times") {
    // Each id goes to both committers at about the same time; one stores it, the other finds it
    // (directly, or after a unique violation and a retry of its batch).
    constexpr int kIds = 150;
    Acks acks;
    // Back to back from one thread, so both writers hold each id in their current batch.
    for (int i = 0; i < kIds; ++i) {
      auto cmd = Cmd("general", kAlice, "race-" + std::to_string(i));
      f.committer->Submit(cmd, acks.Callback(cmd));
      second->Submit(cmd, acks.Callback(cmd));
    }
    REQUIRE(acks.WaitFor(2 * kIds));
    // Retry what exhausted its conflict retries, as a client would.
    RetryingSender sender;
    std::map<std::string, std::vector<SendOutcome>> by_id;
    std::vector<std::string> failures;
    for (auto& ack : acks.Snapshot()) {
      auto r = ack.result;
      if (r.code() == Code::kUnavailable) r = sender.Send(*second, ack.command);
      if (!r.ok()) {
        failures.push_back(r.error().message);
      } else {
        by_id[ack.command.client_msg_id].push_back(*r);
      }
    }
    INFO("client retries: " << sender.retries.load());
    CHECK(failures.empty());
    REQUIRE(by_id.size() == kIds);
    int bad = 0;
    for (const auto& [id, outcomes] : by_id) {
      const bool same_seq = outcomes.size() == 2 && outcomes[0].seq == outcomes[1].seq;
      const int originals =
          !outcomes[0].duplicate + (outcomes.size() > 1 && !outcomes[1].duplicate);
      if (!same_seq || originals != 1) {
        UNSCOPED_INFO(id << ": " << outcomes.size() << " outcomes, " << originals << " originals");
        ++bad;
      }
    }
    CHECK(bad == 0);
    f.bus.Drain();
    CHECK(f.Seqs("general") == Range(1, kIds));
    CHECK(f.Head("general") == kIds);
    CHECK(f.bus_log.Messages().size() == static_cast<std::size_t>(kIds));
    std::set<std::string> published;
    for (const auto& m : f.bus_log.Messages()) published.insert(m.client_msg_id());
    CHECK(published.size() == static_cast<std::size_t>(kIds));
  }
}

// ---------------------------------------------------------------------------------------------
// Authorization at the time of the request
// ---------------------------------------------------------------------------------------------

TEST_CASE("a batch that overruns commit_timeout is answered UNAVAILABLE, never acknowledged",
          "[db][shard][ack]") {
  shard::GroupCommitterOptions options;
  options.commit_timeout = std::chrono::milliseconds(300);
  ShardFixture f(options);
  f.Create(kAlice, "general");
  REQUIRE(f.Send("general", kAlice, "before").ok());

  // The committer's transaction waits behind a lock until its deadline closes the connection.
  std::optional<WriterBlocker> blocker;
  blocker.emplace(f.db.url(), "general");
  const auto started = std::chrono::steady_clock::now();
  auto timed_out = SubmitVia(*f.committer, Cmd("general", kAlice, "held", "held body"));
  const auto took = std::chrono::steady_clock::now() - started;
  REQUIRE_FALSE(timed_out.ok());
  CHECK(timed_out.error().code == Code::kUnavailable);
  CHECK(timed_out.error().message.find("outcome unknown") != std::string::npos);
  CHECK(took >= std::chrono::milliseconds(300));
  CHECK(took < kWait);
  blocker->Release();

  // Nothing stored or published for it; the resend with the same id stores it once, as new.
  f.bus.Drain();
  CHECK(f.RowsWithId("held") == 0);
  CHECK(f.bus_log.CountId("held") == 0);
  auto resent = f.Send("general", kAlice, "held", "held body");
  REQUIRE(resent.ok());
  CHECK(resent->seq == 2);
  CHECK_FALSE(resent->duplicate);
  CHECK(f.RowsWithId("held") == 1);
  CHECK(f.Seqs("general") == Range(1, 2));
}

TEST_CASE("sends check membership when they are committed", "[db][shard][authz]") {
  ShardFixture f;
  f.Create(kAlice, "general");

  CHECK(f.Send("general", kBob, "b-1").code() == Code::kPermissionDenied);
  CHECK(f.Send("no-such-channel", kAlice, "a-1").code() == Code::kNotFound);
  f.Join(kBob, "general");
  auto ok = f.Send("general", kBob, "b-2");
  REQUIRE(ok.ok());
  CHECK(ok->seq == 1);
  REQUIRE(f.service->LeaveChannel(Call(), kBob, "general").ok());
  CHECK(f.Send("general", kBob, "b-3").code() == Code::kPermissionDenied);
  // The failed sends consumed no sequence number and left no row.
  auto next = f.Send("general", kAlice, "a-2");
  REQUIRE(next.ok());
  CHECK(next->seq == 2);
  CHECK(f.RowsWithId("b-1") == 0);
  CHECK(f.RowsWithId("b-3") == 0);
  CHECK(f.RowsWithId("a-1") == 0);

  // A batch mixing allowed and refused sends: each gets its own outcome.
  Acks acks;
  std::optional<WriterBlocker> blocker;
  f.Create(kAlice, "plug");
  blocker.emplace(f.db.url(), "plug");
  auto plug = Cmd("plug", kAlice, "plug");
  f.service->SendAsync(Call(), plug, acks.Callback(plug));
  REQUIRE(WaitForLockWaiter(f.db.name()));
  const std::vector<SendCommand> mixed = {
      Cmd("general", kAlice, "mix-1"), Cmd("general", kBob, "mix-2"),
      Cmd("nowhere", kAlice, "mix-3"), Cmd("general", kAlice, "mix-4")};
  for (const auto& cmd : mixed) f.service->SendAsync(Call(), cmd, acks.Callback(cmd));
  blocker->Release();
  REQUIRE(acks.WaitFor(5));
  std::map<std::string, Result<SendOutcome>> outcome;
  for (auto& ack : acks.Snapshot()) outcome.emplace(ack.command.client_msg_id, ack.result);
  REQUIRE(outcome.at("mix-1").ok());
  CHECK(outcome.at("mix-1")->seq == 3);
  CHECK(outcome.at("mix-2").code() == Code::kPermissionDenied);
  CHECK(outcome.at("mix-3").code() == Code::kNotFound);
  REQUIRE(outcome.at("mix-4").ok());
  CHECK(outcome.at("mix-4")->seq == 4);
  CHECK(f.Seqs("general") == Range(1, 4));
}

TEST_CASE("channels: create, join, leave, private channels and invites", "[db][shard][authz]") {
  ShardFixture f;

  SECTION("create") {
    v1::CreateChannelRequest req;
    req.set_name("#General-Chat");
    CHECK(f.service->CreateChannel(Call(), kAlice, req).code() == Code::kInvalidArgument);
    req.set_name("#general");
    req.set_topic("talk");
    auto c = f.service->CreateChannel(Call(), kAlice, req);
    REQUIRE(c.ok());
    CHECK(c->name() == "general");
    CHECK(c->topic() == "talk");
    CHECK(c->is_member());
    CHECK(c->member_count() == 1);
    CHECK(c->head_seq() == 0);
    CHECK(c->visibility() == v1::PUBLIC);
    CHECK(f.service->CreateChannel(Call(), kBob, req).code() == Code::kAlreadyExists);
    req.set_name("long-topic");
    req.set_topic(std::string(257, 'x'));
    CHECK(f.service->CreateChannel(Call(), kAlice, req).code() == Code::kInvalidArgument);
    req.set_topic("\xff");
    CHECK(f.service->CreateChannel(Call(), kAlice, req).code() == Code::kInvalidArgument);
  }

  SECTION("public channels: anyone may join; leaving ends every access") {
    f.Create(kAlice, "general");
    CHECK(f.service->JoinChannel(Call(), kBob, "nope").code() == Code::kNotFound);
    auto joined = f.service->JoinChannel(Call(), kBob, "general");
    REQUIRE(joined.ok());
    CHECK(joined->is_member());
    CHECK(joined->member_count() == 2);
    REQUIRE(f.service->JoinChannel(Call(), kBob, "general").ok());  // joining twice is harmless
    REQUIRE(f.Send("general", kBob, "hi").ok());
    CHECK(f.service->AuthorizeSubscribe(Call(), kBob, "general").ok());
    CHECK(f.service->ListMembers(Call(), kBob, "general").ok());

    REQUIRE(f.service->LeaveChannel(Call(), kBob, "general").ok());
    CHECK(f.Send("general", kBob, "hi-again").code() == Code::kPermissionDenied);
    v1::GetHistoryRequest history;
    history.set_channel("general");
    CHECK(f.service->GetHistory(Call(), kBob, history).code() == Code::kPermissionDenied);
    CHECK(f.service->AuthorizeSubscribe(Call(), kBob, "general").code() == Code::kPermissionDenied);
    CHECK(f.service->ListMembers(Call(), kBob, "general").code() == Code::kPermissionDenied);
    CHECK(f.service->RecordAck(Call(), kBob, "general", 1, v1::READ).code() ==
          Code::kPermissionDenied);
    CHECK(f.service->LeaveChannel(Call(), kBob, "nope").code() == Code::kNotFound);

    // Join and leave are published for fanout, a repeated join is not.
    f.bus.Drain();
    std::lock_guard lock(f.bus_log.mu);
    int bob_joins = 0, bob_leaves = 0;
    for (const auto& m : f.bus_log.memberships) {
      if (m.user_id != kBob.user_id) continue;
      CHECK(m.channel == "general");
      ++(m.joined ? bob_joins : bob_leaves);
    }
    CHECK(bob_joins == 1);
    CHECK(bob_leaves == 1);
  }

  SECTION("private channels need an invite from a member and are hidden from others") {
    f.Create(kAlice, "secret", v1::PRIVATE);
    // To someone neither in it nor invited, a private channel is an unknown name (ADR 8).
    const auto hidden = [&](const Principal& who) {
      CHECK(f.service->JoinChannel(Call(), who, "secret").code() == Code::kNotFound);
      CHECK(f.service->LeaveChannel(Call(), who, "secret").code() == Code::kNotFound);
      CHECK(f.service->AuthorizeSubscribe(Call(), who, "secret").code() == Code::kNotFound);
      CHECK(f.service->ListMembers(Call(), who, "secret").code() == Code::kNotFound);
      CHECK(f.service->RecordAck(Call(), who, "secret", 1, v1::READ).code() == Code::kNotFound);
      CHECK(f.service->InviteMember(Call(), who, "secret", kBob.user_id, kBob.username).code() ==
            Code::kNotFound);
      CHECK(f.service->ReadLog(Call(), "secret", who.user_id, 0, 5).code() == Code::kNotFound);
      v1::GetHistoryRequest req;
      req.set_channel("secret");
      auto history = f.service->GetHistory(Call(), who, req);
      CHECK(history.code() == Code::kNotFound);
      CHECK(history.error().message == "no such channel: secret");
      auto sent = f.Send("secret", who, "probe");
      CHECK(sent.code() == Code::kNotFound);
      CHECK(sent.error().message == "no such channel: secret");
    };
    hidden(kBob);
    // Not listed to outsiders.
    auto carol_sees = f.service->ListChannels(Call(), kCarol);
    REQUIRE(carol_sees.ok());
    for (const auto& c : *carol_sees) CHECK(c.name() != "secret");
    CHECK(f.service->InviteMember(Call(), kAlice, "nope", kBob.user_id, kBob.username).code() ==
          Code::kNotFound);
    REQUIRE(f.service->InviteMember(Call(), kAlice, "secret", kBob.user_id, kBob.username).ok());
    // Invited, bob knows of it: not a member yet.
    CHECK(f.service->AuthorizeSubscribe(Call(), kBob, "secret").code() == Code::kPermissionDenied);
    auto joined = f.service->JoinChannel(Call(), kBob, "secret");
    REQUIRE(joined.ok());
    CHECK(joined->visibility() == v1::PRIVATE);
    REQUIRE(f.Send("secret", kBob, "psst").ok());
    auto bob_sees = f.service->ListChannels(Call(), kBob);
    REQUIRE(bob_sees.ok());
    bool found = false;
    for (const auto& c : *bob_sees) found = found || c.name() == "secret";
    CHECK(found);
    // An invite does not make carol a member.
    REQUIRE(f.service->InviteMember(Call(), kBob, "secret", kCarol.user_id, kCarol.username).ok());
    CHECK(f.Send("secret", kCarol, "x").code() == Code::kPermissionDenied);
    // Leaving uses up the invite: coming back needs a new one, and the channel is hidden again.
    REQUIRE(f.service->LeaveChannel(Call(), kBob, "secret").ok());
    hidden(kBob);
  }

  SECTION("ListMembers lists the members with their positions") {
    f.Create(kAlice, "general");
    f.Join(kBob, "general");
    auto members = f.service->ListMembers(Call(), kAlice, "general");
    REQUIRE(members.ok());
    REQUIRE(members->size() == 2);
    CHECK((*members)[0].username() == "alice");
    CHECK((*members)[0].user_id() == kAlice.user_id);
    CHECK((*members)[1].username() == "bob");
    CHECK(f.service->ListMembers(Call(), kCarol, "general").code() == Code::kPermissionDenied);
    CHECK(f.service->ListMembers(Call(), kAlice, "nope").code() == Code::kNotFound);
  }
}

std::vector<std::uint64_t> HistorySeqs(const v1::GetHistoryResponse& r) {
  std::vector<std::uint64_t> out;
  for (const auto& m : r.messages()) out.push_back(m.seq());
  return out;
}

TEST_CASE("GetHistory: membership, windows and limits", "[db][shard][history]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  f.Join(kBob, "general");
  constexpr int kMessages = 25;
  std::map<std::uint64_t, SendOutcome> sent;
  for (int i = 1; i <= kMessages; ++i) {
    auto r = f.Send("general", i % 2 ? kAlice : kBob, "h-" + std::to_string(i),
                    "message " + std::to_string(i));
    REQUIRE(r.ok());
    sent[r->seq] = *r;
  }
  auto history = [&](std::uint64_t after, std::uint32_t limit,
                     std::optional<std::uint64_t> before = std::nullopt) {
    v1::GetHistoryRequest req;
    req.set_channel("general");
    req.set_after_seq(after);
    req.set_limit(limit);
    if (before) req.set_before_seq(*before);
    auto r = f.service->GetHistory(Call(), kBob, req);
    REQUIRE(r.ok());
    CHECK(r->head_seq() == kMessages);
    return *r;
  };

  auto all = history(0, 0);
  CHECK(HistorySeqs(all) == Range(1, kMessages));
  const auto& m7 = all.messages(6);
  CHECK(m7.channel() == "general");
  CHECK(m7.seq() == 7);
  CHECK(m7.body() == "message 7");
  CHECK(m7.sender() == "alice");
  CHECK(m7.sender_id() == kAlice.user_id);
  CHECK(m7.client_msg_id() == "h-7");
  CHECK(m7.sent_at_unix_ms() == sent[7].sent_at_unix_ms);

  CHECK(HistorySeqs(history(0, 10)) == Range(1, 10));
  CHECK(HistorySeqs(history(20, 0)) == Range(21, 25));
  CHECK(HistorySeqs(history(20, 2)) == Range(21, 22));
  CHECK(HistorySeqs(history(25, 0)).empty());
  CHECK(HistorySeqs(history(100, 0)).empty());
  // before_seq: the newest `limit` messages below it, oldest first.
  CHECK(HistorySeqs(history(0, 5, 11)) == Range(6, 10));
  CHECK(HistorySeqs(history(0, 5, 3)) == Range(1, 2));
  CHECK(HistorySeqs(history(0, 5, 6)) == Range(1, 5));
  CHECK(HistorySeqs(history(0, 0, 26)) == Range(1, 25));
  // Beyond the head: the newest messages (UINT64_MAX is how a client asks for "the latest").
  CHECK(HistorySeqs(history(0, 3, 1000)) == Range(23, 25));
  CHECK(HistorySeqs(history(0, 4, std::numeric_limits<std::uint64_t>::max())) == Range(22, 25));
  CHECK(HistorySeqs(history(0, 5, 1)).empty());
  CHECK(HistorySeqs(history(0, 5, 0)).empty());
  CHECK(HistorySeqs(history(5, 100, 9)) == Range(6, 8));
  CHECK(HistorySeqs(history(8, 100, 9)).empty());

  v1::GetHistoryRequest req;
  req.set_channel("general");
  CHECK(f.service->GetHistory(Call(), kCarol, req).code() == Code::kPermissionDenied);
  req.set_channel("nope");
  CHECK(f.service->GetHistory(Call(), kAlice, req).code() == Code::kNotFound);
  req.set_channel("Bad Name");
  CHECK(f.service->GetHistory(Call(), kAlice, req).code() == Code::kInvalidArgument);

  // ReadLog: the same log for fanout, for a reader who is a member at the time of the read.
  auto log = f.service->ReadLog(Call(), "general", kAlice.user_id, 10, 5);
  REQUIRE(log.ok());
  std::vector<std::uint64_t> log_seqs;
  for (const auto& m : *log) log_seqs.push_back(m.seq());
  CHECK(log_seqs == Range(11, 15));
  CHECK(f.service->ReadLog(Call(), "nope", kAlice.user_id, 0, 5).code() == Code::kNotFound);
  CHECK(f.service->ReadLog(Call(), "general", kCarol.user_id, 0, 5).code() ==
        Code::kPermissionDenied);
  // Once the reader has left, nothing more is read for them.
  REQUIRE(f.service->LeaveChannel(Call(), kAlice, "general").ok());
  CHECK(f.service->ReadLog(Call(), "general", kAlice.user_id, 10, 5).code() ==
        Code::kPermissionDenied);
}

TEST_CASE("GetHistory: default and maximum page size", "[db][shard][history]") {
  ShardFixture f;
  f.Create(kAlice, "busy");
  constexpr int kMessages = 1005;
  Acks acks;
  for (int i = 0; i < kMessages; ++i) {
    auto cmd = Cmd("busy", kAlice, "b-" + std::to_string(i));
    f.service->SendAsync(Call(), cmd, acks.Callback(cmd));
  }
  REQUIRE(acks.WaitFor(kMessages));
  v1::GetHistoryRequest req;
  req.set_channel("busy");
  auto page = f.service->GetHistory(Call(), kAlice, req);
  REQUIRE(page.ok());
  CHECK(HistorySeqs(*page) == Range(1, 100));  // limit 0 means the default, 100
  req.set_limit(5000);
  page = f.service->GetHistory(Call(), kAlice, req);
  REQUIRE(page.ok());
  CHECK(HistorySeqs(*page) == Range(1, 1000));  // capped at 1000
  auto log = f.service->ReadLog(Call(), "busy", kAlice.user_id, 0, 5000);
  REQUIRE(log.ok());
  CHECK(log->size() == 1000);
}

TEST_CASE("RecordAck only moves forward and only to stored messages", "[db][shard][ack-pos]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  f.Join(kBob, "general");
  for (int i = 1; i <= 5; ++i) REQUIRE(f.Send("general", kAlice, "r-" + std::to_string(i)).ok());

  auto position = [&] {
    auto members = f.service->ListMembers(Call(), kAlice, "general");
    REQUIRE(members.ok());
    for (const auto& m : *members) {
      if (m.user_id() == kBob.user_id) return std::make_pair(m.delivered_seq(), m.read_seq());
    }
    FAIL("bob is not listed");
    return std::make_pair<std::uint64_t, std::uint64_t>(0, 0);
  };

  CHECK(f.service->RecordAck(Call(), kBob, "general", 0, v1::DELIVERED).code() ==
        Code::kOutOfRange);
  CHECK(f.service->RecordAck(Call(), kBob, "general", 6, v1::DELIVERED).code() ==
        Code::kOutOfRange);
  CHECK(f.service->RecordAck(Call(), kBob, "general", 6, v1::READ).code() == Code::kOutOfRange);
  CHECK(f.service->RecordAck(Call(), kBob, "general", 3, static_cast<v1::AckKind>(0)).code() ==
        Code::kInvalidArgument);
  CHECK(f.service->RecordAck(Call(), kCarol, "general", 3, v1::READ).code() ==
        Code::kPermissionDenied);
  CHECK(f.service->RecordAck(Call(), kBob, "nope", 3, v1::READ).code() == Code::kNotFound);
  CHECK(position() == std::make_pair<std::uint64_t, std::uint64_t>(0, 0));

  auto moved = f.service->RecordAck(Call(), kBob, "general", 3, v1::DELIVERED);
  REQUIRE(moved.ok());
  CHECK(*moved);
  CHECK_FALSE(*f.service->RecordAck(Call(), kBob, "general", 3, v1::DELIVERED));
  CHECK_FALSE(*f.service->RecordAck(Call(), kBob, "general", 2, v1::DELIVERED));
  CHECK(position() == std::make_pair<std::uint64_t, std::uint64_t>(3, 0));
  CHECK(*f.service->RecordAck(Call(), kBob, "general", 2, v1::READ));
  CHECK(position() == std::make_pair<std::uint64_t, std::uint64_t>(3, 2));  // READ 2 < delivered
  CHECK_FALSE(*f.service->RecordAck(Call(), kBob, "general", 1, v1::READ));
  CHECK(*f.service->RecordAck(Call(), kBob, "general", 5, v1::READ));
  CHECK(position() ==
        std::make_pair<std::uint64_t, std::uint64_t>(5, 5));  // READ implies delivered

  // A receipt is published for each move, and only then.
  f.bus.Drain();
  std::lock_guard lock(f.bus_log.mu);
  REQUIRE(f.bus_log.receipts.size() == 3);
  CHECK(f.bus_log.receipts[0].seq() == 3);
  CHECK(f.bus_log.receipts[0].kind() == v1::DELIVERED);
  CHECK(f.bus_log.receipts[2].seq() == 5);
  CHECK(f.bus_log.receipts[2].kind() == v1::READ);
  CHECK(f.bus_log.receipts[2].user_id() == kBob.user_id);
}

TEST_CASE("AuthorizeSubscribe returns the head for members only", "[db][shard][authz]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  auto head = f.service->AuthorizeSubscribe(Call(), kAlice, "general");
  REQUIRE(head.ok());
  CHECK(*head == 0);
  for (int i = 0; i < 3; ++i) REQUIRE(f.Send("general", kAlice, "s-" + std::to_string(i)).ok());
  head = f.service->AuthorizeSubscribe(Call(), kAlice, "#general");
  REQUIRE(head.ok());
  CHECK(*head == 3);
  CHECK(f.service->AuthorizeSubscribe(Call(), kBob, "general").code() == Code::kPermissionDenied);
  CHECK(f.service->AuthorizeSubscribe(Call(), kAlice, "nope").code() == Code::kNotFound);
  CHECK(f.service->AuthorizeSubscribe(Call(), kAlice, "NOPE!").code() == Code::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

TEST_CASE("SendAsync rejects invalid input and stores nothing", "[db][shard][validation]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  const std::size_t max = shard::ShardServiceOptions{}.max_body_bytes;
  struct Case {
    const char* what;
    SendCommand command;
  };
  const std::vector<Case> cases = {
      {"channel with spaces", Cmd("bad name", kAlice, "v-1")},
      {"upper-case channel", Cmd("General", kAlice, "v-2")},
      {"empty channel", Cmd("", kAlice, "v-3")},
      {"channel too long", Cmd(std::string(65, 'a'), kAlice, "v-4")},
      {"empty body", Cmd("general", kAlice, "v-5", "")},
      {"oversized body", Cmd("general", kAlice, "v-6", std::string(max + 1, 'x'))},
      {"invalid UTF-8", Cmd("general", kAlice, "v-7", "caf\xC3")},
      {"overlong UTF-8", Cmd("general", kAlice, "v-8", "\xC0\xAF")},
      {"NUL in body", Cmd("general", kAlice, "v-9", "a\0b"s)},
      {"empty client_msg_id", Cmd("general", kAlice, "")},
      {"client_msg_id with a space", Cmd("general", kAlice, "a b")},
      {"client_msg_id too long", Cmd("general", kAlice, std::string(65, 'i'))},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    int calls = 0;
    Result<SendOutcome> outcome = MakeError(Code::kUnknown, "no callback");
    f.service->SendAsync(Call(), c.command, [&](Result<SendOutcome> r) {
      ++calls;
      outcome = std::move(r);
    });
    CHECK(calls == 1);  // rejected at once, before queuing
    CHECK(outcome.code() == Code::kInvalidArgument);
  }
  f.bus.Drain();
  CHECK(f.Scalar("SELECT count(*) FROM messages") == 0);
  CHECK(f.Head("general") == 0);
  CHECK(f.bus_log.Messages().empty());
  CHECK(f.committer->batches_committed() == 0);

  // The limits are inclusive, and a '#' prefix is accepted.
  auto at_limit = f.Send("#general", kAlice, "ok-1", std::string(max, 'x'));
  REQUIRE(at_limit.ok());
  CHECK(at_limit->seq == 1);
  auto unicode = f.Send("general", kAlice, std::string(64, 'i'), "caf\xC3\xA9 \xF0\x9F\x98\x80");
  REQUIRE(unicode.ok());
  CHECK(unicode->seq == 2);
  v1::GetHistoryRequest req;
  req.set_channel("general");
  auto history = f.service->GetHistory(Call(), kAlice, req);
  REQUIRE(history.ok());
  REQUIRE(history->messages_size() == 2);
  CHECK(history->messages(0).body() == std::string(max, 'x'));
  CHECK(history->messages(1).body() == "caf\xC3\xA9 \xF0\x9F\x98\x80");
}

TEST_CASE("message bodies with quotes, backslashes and braces are stored verbatim",
          "[db][shard][validation]") {
  // The committer passes bodies as array literals: escaping must not alter them.
  ShardFixture f;
  f.Create(kAlice, "general");
  const std::vector<std::string> bodies = {"\"quoted\"", "back\\slash", "{braces}", "a,b",
                                           "NULL",       " padded ",    "\\\"",     "}{"};
  Acks acks;
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    auto cmd = Cmd("general", kAlice, "q-" + std::to_string(i), bodies[i]);
    cmd.sender = "name \"with\" {quotes}\\";
    f.service->SendAsync(Call(), cmd, acks.Callback(cmd));
  }
  REQUIRE(acks.WaitFor(bodies.size()));
  auto log = f.service->ReadLog(Call(), "general", kAlice.user_id, 0, 100);
  REQUIRE(log.ok());
  std::map<std::string, std::string> stored;
  for (const auto& m : *log) {
    stored[m.client_msg_id()] = m.body();
    CHECK(m.sender() == "name \"with\" {quotes}\\");
  }
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    CHECK(stored["q-" + std::to_string(i)] == bodies[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Database outages
// ---------------------------------------------------------------------------------------------

TEST_CASE("database down: UNAVAILABLE and no ACK, sends work again when it is back",
          "[db][shard][outage]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  auto first = f.Send("general", kAlice, "before");
  REQUIRE(first.ok());  // the committer holds a live connection now
  CHECK(first->seq == 1);
  {
    testing::DatabaseOutage outage(f.db);
    // First the writer's connection turns out to be dead, then reconnecting is refused.
    for (int i = 0; i < 3; ++i) {
      auto r = f.Send("general", kAlice, "during-" + std::to_string(i));
      INFO("send " << i << ": " << (r.ok() ? "ok" : r.error().message));
      CHECK(r.code() == Code::kUnavailable);
    }
    // The blocking API fails the same way, without hanging.
    CHECK(f.service->AuthorizeSubscribe(Call(), kAlice, "general").code() == Code::kUnavailable);
  }
  // Same committer, no restart. The retried id is stored once, right after the last ACKed seq.
  auto retried = f.Send("general", kAlice, "during-0");
  REQUIRE(retried.ok());
  CHECK(retried->seq == 2);
  CHECK_FALSE(retried->duplicate);
  auto next = f.Send("general", kAlice, "after");
  REQUIRE(next.ok());
  CHECK(next->seq == 3);
  CHECK(f.service->AuthorizeSubscribe(Call(), kAlice, "general").ok());
  f.bus.Drain();
  CHECK(f.Seqs("general") == Range(1, 3));
  CHECK(f.RowsWithId("during-1") == 0);
  CHECK(f.RowsWithId("during-2") == 0);
  std::vector<std::string> published;
  for (const auto& m : f.bus_log.Messages()) published.push_back(m.client_msg_id());
  CHECK(published == std::vector<std::string>{"before", "during-0", "after"});
}

TEST_CASE("a committer that starts while the database is down recovers", "[db][shard][outage]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  std::unique_ptr<shard::GroupCommitter> committer;
  {
    testing::DatabaseOutage outage(f.db);
    committer = f.NewCommitter();
    CHECK(SubmitVia(*committer, Cmd("general", kAlice, "x")).code() == Code::kUnavailable);
  }
  auto r = SubmitVia(*committer, Cmd("general", kAlice, "x"));
  REQUIRE(r.ok());
  CHECK(r->seq == 1);
}

// ---------------------------------------------------------------------------------------------
// Group commit mechanics
// ---------------------------------------------------------------------------------------------

TEST_CASE("sends queued during a commit form the next batch, up to max_batch",
          "[db][shard][batch]") {
  shard::GroupCommitterOptions options;
  options.max_batch = 4;
  ShardFixture f(options);
  f.Create(kAlice, "general");
  f.Create(kAlice, "plug");

  Acks acks;
  std::optional<WriterBlocker> blocker;
  blocker.emplace(f.db.url(), "plug");
  auto plug = Cmd("plug", kAlice, "plug");
  f.service->SendAsync(Call(), plug, acks.Callback(plug));
  REQUIRE(WaitForLockWaiter(f.db.name()));
  constexpr int kQueued = 40;
  for (int i = 0; i < kQueued; ++i) {
    auto cmd = Cmd("general", kAlice, "g-" + std::to_string(i));
    f.service->SendAsync(Call(), cmd, acks.Callback(cmd));
  }
  // Nothing is acknowledged while the transaction in progress cannot commit.
  CHECK(acks.Snapshot().empty());
  blocker->Release();
  REQUIRE(acks.WaitFor(1 + kQueued));
  CHECK(f.committer->batches_committed() == 1 + kQueued / 4);
  CHECK(f.committer->messages_committed() == 1 + kQueued);
  // Callbacks follow the submission order.
  std::vector<std::uint64_t> seqs;
  for (const auto& ack : acks.Snapshot()) {
    REQUIRE(ack.result.ok());
    if (ack.command.channel == "general") seqs.push_back(ack.result->seq);
  }
  CHECK(seqs == Range(1, kQueued));
}

TEST_CASE("the next batch commits while the previous batch's callbacks run, in commit order",
          "[db][shard][batch]") {
  ShardFixture f;
  f.Create(kAlice, "general");
  std::promise<void> release_first;
  std::shared_future<void> released = release_first.get_future().share();
  std::mutex mu;
  std::vector<std::string> answered;  // client_msg_ids, in callback order
  std::atomic<bool> first_running{false};
  f.committer->Submit(Cmd("general", kAlice, "first"), [&](Result<SendOutcome> r) {
    first_running = true;
    released.wait_for(std::chrono::seconds(20));  // holds the completion thread
    std::lock_guard lock(mu);
    answered.push_back(r.ok() ? "first" : "first failed");
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!first_running && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(first_running);
  f.committer->Submit(Cmd("general", kAlice, "second"), [&](Result<SendOutcome> r) {
    std::lock_guard lock(mu);
    answered.push_back(r.ok() ? "second" : "second failed");
  });
  // The writer is not held by the first batch's callback: the second batch commits.
  while (f.committer->messages_committed() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(f.committer->messages_committed() == 2);
  CHECK(f.Seqs("general") == Range(1, 2));
  {
    std::lock_guard lock(mu);
    CHECK(answered.empty());  // but its answer waits for the first one's
  }
  release_first.set_value();
  f.committer->Stop();  // runs every finished batch's callbacks
  std::lock_guard lock(mu);
  CHECK(answered == std::vector<std::string>{"first", "second"});
}

TEST_CASE("a full queue refuses with RESOURCE_EXHAUSTED, Stop commits what is queued",
          "[db][shard][batch]") {
  shard::GroupCommitterOptions options;
  options.max_queue = 3;
  ShardFixture f(options);
  f.Create(kAlice, "general");
  f.Create(kAlice, "plug");

  Acks acks;
  std::optional<WriterBlocker> blocker;
  blocker.emplace(f.db.url(), "plug");
  auto plug = Cmd("plug", kAlice, "plug");
  f.committer->Submit(plug, acks.Callback(plug));
  REQUIRE(WaitForLockWaiter(f.db.name()));
  for (int i = 0; i < 3; ++i) {
    auto cmd = Cmd("general", kAlice, "q-" + std::to_string(i));
    f.committer->Submit(cmd, acks.Callback(cmd));
  }
  CHECK(acks.Snapshot().empty());
  auto refused = SubmitVia(*f.committer, Cmd("general", kAlice, "q-over"));  // answered at once
  CHECK(refused.code() == Code::kResourceExhausted);

  // Stop waits for the queue to be committed, which needs the lock to go away.
  std::thread stopper([&] { f.committer->Stop(); });
  blocker->Release();
  stopper.join();
  REQUIRE(acks.WaitFor(4));
  for (const auto& ack : acks.Snapshot()) CHECK(ack.result.ok());
  CHECK(f.Seqs("general") == Range(1, 3));
  CHECK(f.RowsWithId("q-over") == 0);

  // After Stop, sends fail at once.
  CHECK(SubmitVia(*f.committer, Cmd("general", kAlice, "late")).code() == Code::kUnavailable);
  f.committer->Stop();  // idempotent
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

TEST_CASE("shard migrations are idempotent and safe to run concurrently", "[db][shard][schema]") {
  TestDatabase db;
  std::mutex mu;
  std::vector<std::string> failures;
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&] {
      try {
        pqxx::connection conn(db.url());
        ++ready;
        while (ready < 2) std::this_thread::yield();
        pg::Migrate(conn, "shard", shard::ShardMigrations());
        pg::Migrate(conn, "shard", shard::ShardMigrations());
      } catch (const std::exception& e) {
        std::lock_guard lock(mu);
        failures.push_back(e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures.empty());
  pqxx::connection conn(db.url());
  pqxx::nontransaction tx(conn);
  CHECK(tx.exec("SELECT count(*) FROM schema_migrations WHERE module = 'shard'")[0][0].as<int>() ==
        static_cast<int>(shard::ShardMigrations().size()));
  for (const char* table : {"channels", "memberships", "invites", "messages"}) {
    INFO(table);
    CHECK(
        tx.exec_params("SELECT to_regclass($1) IS NOT NULL", std::string(table))[0][0].as<bool>());
  }
}

}  // namespace
}  // namespace infrachat

namespace infrachat {
namespace {

// Waits (bounded) until `pred` holds.
bool LeaseEventually(const std::function<bool()>& pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

TEST_CASE(
    "a shard's lease: taken with a new epoch per start, live while renewed, gone when "
    "released or expired",
    "[db][shard][lease]") {
  ShardFixture f;
  const auto live = [&] {
    auto leases = f.service->LiveShards(Call());
    REQUIRE(leases.ok());
    return *leases;
  };
  shard::LeaseOptions options{f.db.url(), "shard-x", "127.0.0.1:7001",
                              std::chrono::milliseconds(50), std::chrono::milliseconds(400)};
  auto first = std::make_unique<shard::LeaseKeeper>(options, ModuleLogger("shard-test"));
  REQUIRE(LeaseEventually([&] { return live().size() == 1; }));
  CHECK(live()[0].shard_id == "shard-x");
  CHECK(live()[0].address == "127.0.0.1:7001");
  const std::uint64_t epoch = live()[0].epoch;
  // Renewed: still live well past one ttl.
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  CHECK(live().size() == 1);

  // A restart of the same shard id supersedes the old epoch.
  first.reset();  // released
  CHECK(live().empty());
  options.address = "127.0.0.1:7002";
  auto second = std::make_unique<shard::LeaseKeeper>(options, ModuleLogger("shard-test"));
  REQUIRE(LeaseEventually([&] { return live().size() == 1; }));
  CHECK(live()[0].epoch > epoch);
  CHECK(live()[0].address == "127.0.0.1:7002");

  // A lease nobody renews expires by itself (a paused or killed process).
  {
    pqxx::connection conn(f.db.url());
    pqxx::work tx(conn);
    tx.exec(
        "INSERT INTO shard_leases VALUES ('shard-dead', '127.0.0.1:7003', 1,"
        " now() + interval '200 milliseconds')");
    tx.commit();
  }
  CHECK(live().size() == 2);
  REQUIRE(LeaseEventually([&] { return live().size() == 1; }));
  CHECK(live()[0].shard_id == "shard-x");
}

}  // namespace
}  // namespace infrachat
