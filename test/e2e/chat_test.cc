// End-to-end: the guarantees of ARCHITECTURE.md through the public API, against a real
// `infrachatd` process (all roles) on a private PostgreSQL database, driven by the client library.
//
//   - both users of a channel see the same messages in the same order;
//   - a SendAck is sent only for a message that another user can already read from the history;
//   - per-channel seqs are 1..N without gap under concurrent senders, and every subscriber
//     receives exactly 1..N in order;
//   - a retried client_msg_id returns the original seq with duplicate = true, once delivered;
//   - subscribe with after_seq gives exactly the missed messages, then live ones, also while
//     messages are being sent during the catch-up; without after_seq only new ones;
//   - membership is checked on history, subscribe and send; private channels need an invite;
//     leaving stops live delivery (Unsubscribed);
//   - a subscriber that does not read is cut off (Unsubscribed with resume_after_seq), resumes
//     from the log with every message, and the others are unaffected;
//   - DELIVERED / READ acks are stored per member;
//   - presence: another member's first subscription is online, the end of their last stream is
//     offline; typing reaches the other subscribers, and is refused with the reason
//     (PERMISSION_DENIED, NOT_FOUND, FAILED_PRECONDITION) where one may not type;
//   - gRPC health checking says SERVING and server reflection describes the public services.
//
// Each test case has its own database and daemon. Waits are bounded (kWait); nothing sleeps.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"
#include "grpc_wire.h"
#include "infrachat/client/chat_stream.h"
#include "infrachat/client/client.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using client::ChatStream;
using client::Client;
using testing::CallStreamOnce;
using testing::CallUnary;
using testing::CollectMessages;
using testing::DaemonProcess;
using testing::Encode;
using testing::Field;
using testing::FullHistory;
using testing::NextMatching;
using testing::Range;
using testing::RegisterUser;
using testing::SendAndWait;
using testing::Seqs;
using testing::SubscribeAndWait;
using testing::TestDatabase;
using testing::WaitUntil;
namespace v1 = client::v1;

constexpr auto kWait = 15s;  // upper bound for anything a test waits for
constexpr const char* kGeneral = "general";

// A daemon on a fresh database; alice created #general and bob joined it.
struct Chat {
  explicit Chat(std::vector<std::string> overrides = {}) : daemon(db, std::move(overrides)) {
    alice = RegisterUser(daemon.address(), "alice");
    bob = RegisterUser(daemon.address(), "bob");
    REQUIRE(alice->CreateChannel(kGeneral).ok());
    REQUIRE(bob->JoinChannel(kGeneral).ok());
  }
  std::shared_ptr<Client> User(const std::string& name, bool join = true) {
    auto user = RegisterUser(daemon.address(), name);
    if (join) REQUIRE(user->JoinChannel(kGeneral).ok());
    return user;
  }

  TestDatabase db;
  DaemonProcess daemon;
  std::shared_ptr<Client> alice;
  std::shared_ptr<Client> bob;
};

// Sends `bodies` pipelined (without waiting in between) with fresh ids, then waits for every
// SendAck. Other frames on the stream are dropped, so use a stream that only sends.
std::vector<v1::SendAck> SendMany(ChatStream& stream, const std::string& channel,
                                  const std::vector<std::string>& bodies) {
  std::vector<std::string> ids;
  for (const auto& body : bodies) {
    ids.push_back(stream.Send(channel, body));
    REQUIRE_FALSE(ids.back().empty());
  }
  std::map<std::string, v1::SendAck> acks;
  while (acks.size() < ids.size()) {
    auto frame = NextMatching(
        stream, [](const v1::ServerFrame& f) { return f.has_send_ack() || f.has_error(); }, kWait);
    REQUIRE(frame.has_value());
    INFO(frame->DebugString());
    REQUIRE(frame->has_send_ack());
    acks[frame->send_ack().client_msg_id()] = frame->send_ack();
  }
  std::vector<v1::SendAck> out;
  for (const auto& id : ids) {
    REQUIRE(acks.count(id) == 1);
    out.push_back(acks.at(id));
  }
  return out;
}

std::vector<std::string> Bodies(const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(prefix + "-" + std::to_string(i));
  return out;
}

// What one stream received: messages of a channel, own acks and errors.
struct Received {
  std::vector<v1::ChatMessage> messages;
  std::map<std::string, v1::SendAck> acks;
  std::vector<v1::ServerFrame> unexpected;  // errors, unsubscribed
};

// Reads until `messages` seqs reach `until_seq` and `acks` has `want_acks` entries, or kWait.
void Drain(ChatStream& stream, const std::string& channel, std::uint64_t until_seq,
           std::size_t want_acks, Received& out) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while ((out.messages.empty() ? 0 : out.messages.back().seq()) < until_seq ||
         out.acks.size() < want_acks) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return;
    auto frame = stream.Next(left);
    if (!frame) return;
    if (frame->has_message() && frame->message().channel() == channel) {
      out.messages.push_back(frame->message());
    } else if (frame->has_send_ack()) {
      out.acks[frame->send_ack().client_msg_id()] = frame->send_ack();
    } else if (frame->has_error() || frame->has_unsubscribed()) {
      out.unexpected.push_back(*frame);
    }
  }
}

std::string Describe(const std::vector<v1::ServerFrame>& frames) {
  std::string out;
  for (const auto& f : frames) out += f.ShortDebugString() + "\n";
  return out;
}

// The bodies of messages from `sender`, in order.
std::vector<std::string> BodiesFrom(const std::vector<v1::ChatMessage>& messages,
                                    const std::string& sender) {
  std::vector<std::string> out;
  for (const auto& m : messages) {
    if (m.sender() == sender) out.push_back(m.body());
  }
  return out;
}

// Messages compare by everything a reader sees.
bool SameMessages(const std::vector<v1::ChatMessage>& a, const std::vector<v1::ChatMessage>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].SerializeAsString() != b[i].SerializeAsString()) return false;
  }
  return true;
}

// Waits for the Pong of a Ping on `stream` and returns the frames that came before it: a barrier
// for "nothing was queued for this stream".
std::vector<v1::ServerFrame> FramesBeforePong(ChatStream& stream, std::uint64_t nonce) {
  std::vector<v1::ServerFrame> before;
  REQUIRE(stream.Ping(nonce));
  auto pong = NextMatching(
      stream, [&](const v1::ServerFrame& f) { return f.has_pong() && f.pong().nonce() == nonce; },
      kWait, &before);
  REQUIRE(pong.has_value());
  return before;
}

TEST_CASE("two users chat in general and both see the same messages in the same order",
          "[e2e][chat]") {
  Chat chat;
  auto a = chat.alice->Connect();
  auto b = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*a, kGeneral) == 0);
  REQUIRE(SubscribeAndWait(*b, kGeneral) == 0);

  // Bodies a careless encoder would mangle: quotes, backslashes, array-literal syntax, NULL,
  // non-ASCII, a newline.
  const std::vector<std::string> tricky = {"he said \"hi\"", "back\\slash",  "{a,b}",
                                           "NULL",           "héllo 🌍 世界", "two\nlines"};
  std::vector<std::string> alice_bodies = Bodies("alice", 10);
  alice_bodies.insert(alice_bodies.end(), tricky.begin(), tricky.end());
  const std::vector<std::string> bob_bodies = Bodies("bob", 16);
  const std::uint64_t total = alice_bodies.size() + bob_bodies.size();

  // Both write at the same time, each without waiting for acks.
  std::thread alice_writer([&] {
    for (const auto& body : alice_bodies) a->Send(kGeneral, body);
  });
  std::thread bob_writer([&] {
    for (const auto& body : bob_bodies) b->Send(kGeneral, body);
  });
  alice_writer.join();
  bob_writer.join();

  Received at_alice, at_bob;
  Drain(*a, kGeneral, total, alice_bodies.size(), at_alice);
  Drain(*b, kGeneral, total, bob_bodies.size(), at_bob);
  INFO(Describe(at_alice.unexpected) << Describe(at_bob.unexpected));
  CHECK(at_alice.unexpected.empty());
  CHECK(at_bob.unexpected.empty());

  CHECK(Seqs(at_alice.messages) == Range(1, total));
  CHECK(SameMessages(at_alice.messages, at_bob.messages));
  // Each sender's messages keep the order they were written in, bodies byte for byte.
  CHECK(BodiesFrom(at_bob.messages, "alice") == alice_bodies);
  CHECK(BodiesFrom(at_alice.messages, "bob") == bob_bodies);
  // Every ack names the seq under which the message was delivered.
  REQUIRE(at_alice.acks.size() == alice_bodies.size());
  REQUIRE(at_bob.acks.size() == bob_bodies.size());
  for (const auto& m : at_alice.messages) {
    const auto& acks = m.sender() == "alice" ? at_alice.acks : at_bob.acks;
    REQUIRE(acks.count(m.client_msg_id()) == 1);
    CHECK(acks.at(m.client_msg_id()).seq() == m.seq());
    CHECK_FALSE(acks.at(m.client_msg_id()).duplicate());
  }
  // And the stored log is what was delivered.
  CHECK(SameMessages(FullHistory(*chat.bob, kGeneral), at_alice.messages));
}

TEST_CASE("a SendAck is sent only for a message that is already stored", "[e2e][chat]") {
  Chat chat({"limits.send_rate_per_s=1000", "limits.send_burst=1000"});
  auto a = chat.alice->Connect();
  const std::vector<std::string> bodies = Bodies("durable", 60);
  std::map<std::string, std::string> body_of;
  std::mutex body_mu;

  // A writer keeps sends in flight while the main thread checks each ack the moment it arrives,
  // reading the history as another user.
  std::thread writer([&] {
    for (const auto& body : bodies) {
      const std::string id = client::NewClientMsgId();
      {
        std::lock_guard lock(body_mu);
        body_of[id] = body;
      }
      a->Send(kGeneral, id, body);
    }
  });
  std::size_t checked = 0;
  while (checked < bodies.size()) {
    auto frame = NextMatching(
        *a, [](const v1::ServerFrame& f) { return f.has_send_ack() || f.has_error(); }, kWait);
    REQUIRE(frame.has_value());
    INFO(frame->ShortDebugString());
    REQUIRE(frame->has_send_ack());
    const v1::SendAck& ack = frame->send_ack();
    auto page = chat.bob->GetHistory(kGeneral, ack.seq() - 1, 1);
    REQUIRE(page.ok());
    REQUIRE(page->messages_size() == 1);
    const v1::ChatMessage& stored = page->messages(0);
    CHECK(stored.seq() == ack.seq());
    CHECK(stored.client_msg_id() == ack.client_msg_id());
    CHECK(stored.sent_at_unix_ms() == ack.sent_at_unix_ms());
    {
      std::lock_guard lock(body_mu);
      CHECK(stored.body() == body_of.at(ack.client_msg_id()));
    }
    CHECK(page->head_seq() >= ack.seq());
    ++checked;
  }
  writer.join();
  CHECK(Seqs(FullHistory(*chat.bob, kGeneral)) == Range(1, bodies.size()));

  // Now hold a COMMIT open: a deferred constraint trigger on messages (it runs inside COMMIT)
  // waits for an advisory lock the test holds. While the daemon's transaction sits in COMMIT,
  // no SendAck may reach the client and no reader may see the message.
  pqxx::connection test_conn(chat.db.url());
  {
    pqxx::work ddl(test_conn);
    ddl.exec(
        "CREATE FUNCTION e2e_hold_commit() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_advisory_xact_lock(424242); RETURN NULL; END $$");
    ddl.exec(
        "CREATE CONSTRAINT TRIGGER e2e_hold_commit AFTER INSERT ON messages"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION e2e_hold_commit()");
    ddl.commit();
  }
  pqxx::connection holder_conn(chat.db.url());
  auto hold = std::make_unique<pqxx::work>(holder_conn);
  hold->exec("SELECT pg_advisory_xact_lock(424242)");
  REQUIRE(a->Send(kGeneral, "held", "committed later"));
  auto in_commit = [&] {
    pqxx::nontransaction q(test_conn);
    return q.exec_params(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
                " AND wait_event = 'advisory' AND query ILIKE 'COMMIT%'",
                chat.db.name())[0][0]
               .as<int>() == 1;
  };
  REQUIRE(WaitUntil(in_commit, kWait));
  for (const auto& frame : FramesBeforePong(*a, 7)) {
    INFO(frame.ShortDebugString());
    CHECK_FALSE(frame.has_send_ack());
  }
  auto before = chat.bob->GetHistory(kGeneral, bodies.size(), 10);
  REQUIRE(before.ok());
  CHECK(before->messages_size() == 0);
  CHECK(before->head_seq() == bodies.size());
  hold->commit();  // releases the lock: the COMMIT completes, then the ack goes out
  auto ack = NextMatching(
      *a, [](const v1::ServerFrame& f) { return f.has_send_ack() || f.has_error(); }, kWait);
  REQUIRE(ack.has_value());
  REQUIRE(ack->has_send_ack());
  CHECK(ack->send_ack().client_msg_id() == "held");
  auto after = chat.bob->GetHistory(kGeneral, bodies.size(), 10);
  REQUIRE(after.ok());
  REQUIRE(after->messages_size() == 1);
  CHECK(after->messages(0).seq() == ack->send_ack().seq());
  CHECK(after->messages(0).body() == "committed later");
}

TEST_CASE(
    "seqs are 1..N without gap under concurrent senders and every subscriber gets 1..N in order",
    "[e2e][chat]") {
  Chat chat;  // 50 sends per stream fit in the default burst of 100
  constexpr int kSenders = 4;
  constexpr int kPerSender = 50;
  constexpr std::uint64_t kTotal = kSenders * kPerSender;
  std::vector<std::shared_ptr<Client>> users = {chat.alice, chat.bob, chat.User("carol"),
                                                chat.User("dave")};
  std::vector<std::unique_ptr<ChatStream>> streams;
  for (auto& user : users) {
    streams.push_back(user->Connect());
    REQUIRE(SubscribeAndWait(*streams.back(), kGeneral) == 0);
  }
  auto observer = chat.bob->Connect();  // a second stream of bob that only listens
  REQUIRE(SubscribeAndWait(*observer, kGeneral) == 0);

  std::vector<Received> received(kSenders + 1);
  std::vector<std::thread> threads;
  for (int s = 0; s < kSenders; ++s) {
    threads.emplace_back([&, s] {
      for (const auto& body : Bodies("s" + std::to_string(s), kPerSender)) {
        streams[s]->Send(kGeneral, body);
      }
      Drain(*streams[s], kGeneral, kTotal, kPerSender, received[s]);
    });
  }
  threads.emplace_back([&] { Drain(*observer, kGeneral, kTotal, 0, received[kSenders]); });
  for (auto& t : threads) t.join();

  // The acks: 200 distinct seqs, exactly 1..200.
  std::map<std::uint64_t, std::string> id_of_seq;
  for (int s = 0; s < kSenders; ++s) {
    INFO("sender " << s << ": " << Describe(received[s].unexpected));
    CHECK(received[s].unexpected.empty());
    REQUIRE(received[s].acks.size() == kPerSender);
    for (const auto& [id, ack] : received[s].acks) {
      CHECK_FALSE(ack.duplicate());
      CHECK(id_of_seq.emplace(ack.seq(), id).second);
    }
  }
  std::vector<std::uint64_t> acked;
  for (const auto& [seq, id] : id_of_seq) acked.push_back(seq);
  CHECK(acked == Range(1, kTotal));

  // Every subscriber: exactly 1..200, in order, the same messages.
  for (std::size_t r = 0; r < received.size(); ++r) {
    INFO("subscriber " << r);
    CHECK(Seqs(received[r].messages) == Range(1, kTotal));
    CHECK(SameMessages(received[r].messages, received[0].messages));
  }
  for (const auto& m : received[0].messages) {
    REQUIRE(id_of_seq.count(m.seq()) == 1);
    CHECK(id_of_seq.at(m.seq()) == m.client_msg_id());
  }
  // The log agrees, and so does the channel's head.
  auto history = FullHistory(*chat.alice, kGeneral);
  CHECK(SameMessages(history, received[0].messages));
  auto page = chat.alice->GetHistory(kGeneral, kTotal, 1);
  REQUIRE(page.ok());
  CHECK(page->head_seq() == kTotal);
}

TEST_CASE(
    "a retried client_msg_id returns the original seq with duplicate=true and is delivered once",
    "[e2e][chat]") {
  Chat chat;
  auto watcher = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*watcher, kGeneral) == 0);
  auto a = chat.alice->Connect();

  // An id with characters that need escaping on the way to the database.
  const std::string id = "retry-\"1\"\\{x,y}";
  auto first = SendAndWait(*a, kGeneral, id, "hello");
  REQUIRE(first.has_value());
  REQUIRE(first->has_send_ack());
  CHECK(first->send_ack().seq() == 1);
  CHECK_FALSE(first->send_ack().duplicate());

  // The same stream retries...
  auto second = SendAndWait(*a, kGeneral, id, "hello");
  REQUIRE(second.has_value());
  REQUIRE(second->has_send_ack());
  CHECK(second->send_ack().seq() == 1);
  CHECK(second->send_ack().duplicate());
  CHECK(second->send_ack().sent_at_unix_ms() == first->send_ack().sent_at_unix_ms());

  // ...and so does a new stream (a reconnect), even with another body: the original stays.
  auto a2 = chat.alice->Connect();
  auto third = SendAndWait(*a2, kGeneral, id, "hello, edited");
  REQUIRE(third.has_value());
  REQUIRE(third->has_send_ack());
  CHECK(third->send_ack().seq() == 1);
  CHECK(third->send_ack().duplicate());

  // Two copies in flight at once (likely one group commit): one message, one original ack.
  REQUIRE(a->Send(kGeneral, "twice", "x"));
  REQUIRE(a->Send(kGeneral, "twice", "x"));
  std::vector<v1::SendAck> twice;
  while (twice.size() < 2) {
    auto frame = NextMatching(
        *a, [](const v1::ServerFrame& f) { return f.has_send_ack() || f.has_error(); }, kWait);
    REQUIRE(frame.has_value());
    REQUIRE(frame->has_send_ack());
    twice.push_back(frame->send_ack());
  }
  CHECK(twice[0].seq() == 2);
  CHECK(twice[1].seq() == 2);
  CHECK(twice[0].duplicate() + twice[1].duplicate() == 1);

  // The key is (channel, sender, id): bob's message with the same id is a new one.
  auto b = chat.bob->Connect();
  auto bobs = SendAndWait(*b, kGeneral, id, "bob's own");
  REQUIRE(bobs.has_value());
  REQUIRE(bobs->has_send_ack());
  CHECK(bobs->send_ack().seq() == 3);
  CHECK_FALSE(bobs->send_ack().duplicate());
  auto marker = SendAndWait(*a, kGeneral, "marker", "end");
  REQUIRE(marker.has_value());
  REQUIRE(marker->has_send_ack());
  CHECK(marker->send_ack().seq() == 4);

  // The subscriber got each message once: nothing between them, nothing twice.
  auto seen = CollectMessages(*watcher, kGeneral, 4, kWait);
  CHECK(Seqs(seen) == Range(1, 4));
  std::vector<std::string> bodies;
  for (const auto& m : seen) bodies.push_back(m.body());
  CHECK(bodies == std::vector<std::string>{"hello", "x", "bob's own", "end"});
  CHECK(SameMessages(FullHistory(*chat.alice, kGeneral), seen));
}

TEST_CASE("subscribe with after_seq delivers exactly the missed messages and then live ones",
          "[e2e][chat]") {
  // Small catch-up reads, so that a catch-up takes many rounds while live messages arrive.
  Chat chat({"fanout.catchup_batch=7", "limits.send_rate_per_s=10000", "limits.send_burst=10000"});
  auto a = chat.alice->Connect();
  SendMany(*a, kGeneral, Bodies("before", 40));

  // Missed 26..40 from the log, then 41 live; nothing before 26, nothing twice.
  auto b = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*b, kGeneral, 25) == 40);
  CHECK(Seqs(CollectMessages(*b, kGeneral, 40, kWait)) == Range(26, 40));
  SendMany(*a, kGeneral, {"live-41"});
  CHECK(Seqs(CollectMessages(*b, kGeneral, 41, kWait)) == std::vector<std::uint64_t>{41});

  // Subscriptions made while messages keep coming: each gets a gap-free, duplicate-free run up
  // to the end, whether its catch-up started at 0, at 20, or it asked for live messages only.
  std::atomic<bool> first_round_done{false};
  std::atomic<bool> live_subscribed{false};
  std::thread writer([&] {
    for (int round = 0; round < 12; ++round) {
      // The last round waits for the live-only subscription, so that it has something to see
      // however fast the first rounds went.
      if (round == 11) WaitUntil([&] { return live_subscribed.load(); }, kWait);
      SendMany(*a, kGeneral, Bodies("during-" + std::to_string(round), 10));
      first_round_done = true;
    }
  });
  REQUIRE(WaitUntil([&] { return first_round_done.load(); }, kWait));
  auto from_zero = chat.bob->Connect();
  auto from_twenty = chat.alice->Connect();
  auto live_only = chat.bob->Connect();
  SubscribeAndWait(*from_zero, kGeneral, 0);
  SubscribeAndWait(*from_twenty, kGeneral, 20);
  const std::uint64_t live_head = SubscribeAndWait(*live_only, kGeneral);
  live_subscribed = true;
  writer.join();
  constexpr std::uint64_t kEnd = 41 + 12 * 10;

  CHECK(Seqs(CollectMessages(*from_zero, kGeneral, kEnd, kWait)) == Range(1, kEnd));
  CHECK(Seqs(CollectMessages(*from_twenty, kGeneral, kEnd, kWait)) == Range(21, kEnd));
  REQUIRE(live_head < kEnd);
  CHECK(Seqs(CollectMessages(*live_only, kGeneral, kEnd, kWait)) == Range(live_head + 1, kEnd));
  // b stayed subscribed through all of it.
  CHECK(Seqs(CollectMessages(*b, kGeneral, kEnd, kWait)) == Range(42, kEnd));

  // Without after_seq in a quiet channel: Subscribed says where "now" is, then only new ones.
  auto quiet = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*quiet, kGeneral) == kEnd);
  SendMany(*a, kGeneral, {"new"});
  auto fresh = CollectMessages(*quiet, kGeneral, kEnd + 1, kWait);
  CHECK(Seqs(fresh) == std::vector<std::uint64_t>{kEnd + 1});
  // A client that claims more than exists gets what comes after the head, not an error.
  auto ahead = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*ahead, kGeneral, 1000000) == kEnd + 1);
  SendMany(*a, kGeneral, {"newer"});
  CHECK(Seqs(CollectMessages(*ahead, kGeneral, kEnd + 2, kWait)) ==
        std::vector<std::uint64_t>{kEnd + 2});
}

// Issue 7's race, as an independent client found it: a live-only subscribe (or a resume at
// the head) and another user's send to the same quiet channel within a few milliseconds of each
// other. Whatever Subscribed.head_seq says, every message after it must arrive without waiting
// for a later message to reveal a gap; nothing at or before it may arrive.
TEST_CASE("subscribing while a message is being sent: the message after the head always arrives",
          "[e2e][chat][switchover]") {
  Chat chat({"limits.send_rate_per_s=100000", "limits.send_burst=100000"});
  constexpr int kChannels = 200;
  auto name = [](int i) { return "race-" + std::to_string(i); };
  for (int i = 0; i < kChannels; ++i) {
    REQUIRE(chat.alice->CreateChannel(name(i)).ok());
    REQUIRE(chat.bob->JoinChannel(name(i)).ok());
  }
  auto sender = chat.alice->Connect();
  auto subscriber = chat.bob->Connect();
  std::mt19937 random(std::random_device{}());
  std::vector<int> send_delay_us(kChannels), subscribe_delay_us(kChannels);
  std::vector<bool> resume_at_head(kChannels);
  for (int i = 0; i < kChannels; ++i) {
    send_delay_us[i] = std::uniform_int_distribution<int>(0, 4000)(random);
    subscribe_delay_us[i] = std::uniform_int_distribution<int>(0, 4000)(random);
    resume_at_head[i] = i % 2 == 1;
    // after_seq = 0: the head of the channel if the subscribe comes first, else one behind it.
  }
  // Both sides walk the channels on the same clock, each with its own jitter per channel.
  const auto start = std::chrono::steady_clock::now() + 50ms;
  auto slot = [&](int i, int delay_us) {
    return start + std::chrono::microseconds(i * 5000 + delay_us);
  };
  std::thread sends([&] {
    for (int i = 0; i < kChannels; ++i) {
      std::this_thread::sleep_until(slot(i, send_delay_us[i]));
      sender->Send(name(i), "m-" + std::to_string(i));
    }
  });
  for (int i = 0; i < kChannels; ++i) {
    std::this_thread::sleep_until(slot(i, subscribe_delay_us[i]));
    subscriber->Subscribe(name(i),
                          resume_at_head[i] ? std::optional<std::uint64_t>(0) : std::nullopt);
  }
  sends.join();
  for (int i = 0; i < kChannels; ++i) {
    auto ack = NextMatching(
        *sender, [](const v1::ServerFrame& f) { return f.has_send_ack() || f.has_error(); }, kWait);
    REQUIRE(ack.has_value());
    INFO(ack->ShortDebugString());
    REQUIRE(ack->has_send_ack());
    REQUIRE(ack->send_ack().seq() == 1);
  }

  // Every channel whose starting point is 0 (subscribed at head 0, or resuming after 0) must
  // deliver seq 1 with nothing else sent to it.
  std::map<std::string, std::uint64_t> head;
  std::map<std::string, std::vector<std::uint64_t>> got;
  auto start_of = [&](int i) { return resume_at_head[i] ? 0 : head[name(i)]; };
  auto expected_missing = [&] {
    int missing = 0;
    for (int i = 0; i < kChannels; ++i) {
      if (head.count(name(i)) == 0 || (start_of(i) == 0 && got[name(i)].empty())) ++missing;
    }
    return missing;
  };
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (expected_missing() > 0 && std::chrono::steady_clock::now() < deadline) {
    auto frame = subscriber->Next(100ms);
    if (!frame) continue;
    INFO(frame->ShortDebugString());
    REQUIRE_FALSE(frame->has_error());
    if (frame->has_subscribed())
      head[frame->subscribed().channel()] = frame->subscribed().head_seq();
    if (frame->has_message()) got[frame->message().channel()].push_back(frame->message().seq());
  }
  int heads_at_zero = 0;
  for (const auto& [channel, h] : head) heads_at_zero += h == 0 ? 1 : 0;
  INFO(heads_at_zero << " of " << kChannels << " subscriptions came before their message");
  CHECK(expected_missing() == 0);

  // Then one more message per channel: each channel shows exactly what follows its head.
  for (int i = 0; i < kChannels; ++i) sender->Send(name(i), "n-" + std::to_string(i));
  auto complete = [&] {
    for (int i = 0; i < kChannels; ++i) {
      const auto& seqs = got[name(i)];
      if (seqs.empty() || seqs.back() < 2) return false;
    }
    return true;
  };
  const auto deadline2 = std::chrono::steady_clock::now() + kWait;
  while (!complete() && std::chrono::steady_clock::now() < deadline2) {
    auto frame = subscriber->Next(100ms);
    if (frame && frame->has_message()) {
      got[frame->message().channel()].push_back(frame->message().seq());
    }
  }
  for (int i = 0; i < kChannels; ++i) {
    INFO(name(i) << " head " << head[name(i)] << " resumed after 0: " << resume_at_head[i]);
    CHECK(got[name(i)] == Range(start_of(i) + 1, 2));
  }
}

TEST_CASE(
    "membership is checked on history and subscribe and send and private channels need an invite",
    "[e2e][chat]") {
  Chat chat;
  auto carol = chat.User("carol", /*join=*/false);

  CHECK(carol->GetHistory(kGeneral).code() == Code::kPermissionDenied);
  CHECK(carol->ListMembers(kGeneral).code() == Code::kPermissionDenied);
  auto c = carol->Connect();
  REQUIRE(c->Subscribe(kGeneral));
  auto denied = NextMatching(
      *c, [](const v1::ServerFrame& f) { return f.has_error() || f.has_subscribed(); }, kWait);
  REQUIRE(denied.has_value());
  REQUIRE(denied->has_error());
  CHECK(denied->error().code() == static_cast<int>(Code::kPermissionDenied));
  CHECK(denied->error().channel() == kGeneral);
  auto send = SendAndWait(*c, kGeneral, "c-1", "let me in");
  REQUIRE(send.has_value());
  REQUIRE(send->has_error());
  CHECK(send->error().code() == static_cast<int>(Code::kPermissionDenied));
  CHECK(send->error().client_msg_id() == "c-1");
  auto head = chat.alice->GetHistory(kGeneral);
  REQUIRE(head.ok());
  CHECK(head->head_seq() == 0);  // nothing was stored

  // Once carol joins, the same requests work (membership is checked at request time).
  REQUIRE(carol->JoinChannel(kGeneral).ok());
  CHECK(SubscribeAndWait(*c, kGeneral) == 0);
  auto ok = SendAndWait(*c, kGeneral, "c-2", "in");
  REQUIRE(ok.has_value());
  CHECK(ok->has_send_ack());

  // A private channel: invisible and closed to others until a member invites them. To anyone
  // else it answers exactly as a name that does not exist (docs/adr/0008), on every path, so
  // its name cannot be probed.
  REQUIRE(chat.alice->CreateChannel("secret", v1::PRIVATE).ok());
  auto listed = chat.bob->ListChannels();
  REQUIRE(listed.ok());
  for (const auto& channel : *listed) CHECK(channel.name() != "secret");
  const auto same_as_unknown = [&](auto call) {
    auto hidden = call("secret");
    auto unknown = call("nosuch");
    REQUIRE_FALSE(hidden.ok());
    REQUIRE_FALSE(unknown.ok());
    CHECK(hidden.code() == Code::kNotFound);
    CHECK(unknown.code() == Code::kNotFound);
    CHECK(hidden.error().message == "no such channel: secret");
    CHECK(unknown.error().message == "no such channel: nosuch");
  };
  same_as_unknown([&](const std::string& c) { return chat.bob->JoinChannel(c); });
  same_as_unknown([&](const std::string& c) { return chat.bob->GetHistory(c); });
  same_as_unknown([&](const std::string& c) { return chat.bob->ListMembers(c); });
  same_as_unknown([&](const std::string& c) { return chat.bob->LeaveChannel(c); });
  same_as_unknown([&](const std::string& c) { return carol->InviteMember(c, "bob"); });
  for (const std::string name : {"secret", "nosuch"}) {
    INFO(name);
    REQUIRE(c->Subscribe(name));
    auto refused = NextMatching(
        *c, [](const v1::ServerFrame& f) { return f.has_error() || f.has_subscribed(); }, kWait);
    REQUIRE(refused.has_value());
    REQUIRE(refused->has_error());
    CHECK(refused->error().code() == static_cast<int>(Code::kNotFound));
    auto sent = SendAndWait(*c, name, "probe-" + name, "anyone there?");
    REQUIRE(sent.has_value());
    REQUIRE(sent->has_error());
    CHECK(sent->error().code() == static_cast<int>(Code::kNotFound));
    CHECK(sent->error().message() == "no such channel: " + name);
  }

  REQUIRE(chat.alice->InviteMember("secret", "bob").ok());
  // Invited, bob knows of it: not a member yet, so reading is refused as such.
  CHECK(chat.bob->GetHistory("secret").code() == Code::kPermissionDenied);
  auto joined = chat.bob->JoinChannel("secret");
  REQUIRE(joined.ok());
  CHECK(joined->visibility() == v1::PRIVATE);
  CHECK(chat.bob->GetHistory("secret").ok());
  CHECK(carol->GetHistory("secret").code() == Code::kNotFound);
}

TEST_CASE("leaving a channel stops live delivery with an Unsubscribed frame", "[e2e][chat]") {
  Chat chat;
  auto b = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*b, kGeneral) == 0);
  auto observer = chat.alice->Connect();
  REQUIRE(SubscribeAndWait(*observer, kGeneral) == 0);
  auto a = chat.alice->Connect();

  SendMany(*a, kGeneral, {"while bob is here"});
  CHECK(Seqs(CollectMessages(*b, kGeneral, 1, kWait)) == std::vector<std::uint64_t>{1});
  CHECK(Seqs(CollectMessages(*observer, kGeneral, 1, kWait)) == std::vector<std::uint64_t>{1});

  REQUIRE(chat.bob->LeaveChannel(kGeneral).ok());
  auto gone = NextMatching(
      *b, [](const v1::ServerFrame& f) { return f.has_unsubscribed(); }, kWait);
  REQUIRE(gone.has_value());
  CHECK(gone->unsubscribed().channel() == kGeneral);
  CHECK(gone->unsubscribed().resume_after_seq() == 1);

  // A message after the leave: the observer gets it; by then fanout has handled it for every
  // subscriber, so if anything had been queued for bob it would come before his Pong.
  SendMany(*a, kGeneral, {"after bob left"});
  CHECK(Seqs(CollectMessages(*observer, kGeneral, 2, kWait)) == std::vector<std::uint64_t>{2});
  for (const auto& frame : FramesBeforePong(*b, 42)) {
    INFO(frame.ShortDebugString());
    CHECK_FALSE(frame.has_message());
  }
  // And every way back in is closed.
  CHECK(chat.bob->GetHistory(kGeneral).code() == Code::kPermissionDenied);
  auto send = SendAndWait(*b, kGeneral, "b-late", "hello?");
  REQUIRE(send.has_value());
  REQUIRE(send->has_error());
  CHECK(send->error().code() == static_cast<int>(Code::kPermissionDenied));
  REQUIRE(b->Subscribe(kGeneral, 0));
  auto again = NextMatching(
      *b, [](const v1::ServerFrame& f) { return f.has_error() || f.has_subscribed(); }, kWait);
  REQUIRE(again.has_value());
  REQUIRE(again->has_error());
  CHECK(again->error().code() == static_cast<int>(Code::kPermissionDenied));
}

// A stream whose reader thread stops reading (blocks in the frame callback) once a Message
// arrives, until Release(). The gRPC channel has small HTTP/2 windows (no BDP probing), so the
// server's writes soon block and its bounded per-stream queue fills up.
class StalledStream {
 public:
  StalledStream(const std::string& address, const std::string& token) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 * 1024);
    auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    client::ChatStreamOptions options;
    options.on_frame = [this](v1::ServerFrame&& frame) {
      std::unique_lock lock(mu_);
      if (frame.has_message()) cv_.wait(lock, [&] { return released_; });
      frames_.push_back(std::move(frame));
      cv_.notify_all();
    };
    stream_ = std::make_unique<ChatStream>(channel, token, std::move(options));
  }
  ~StalledStream() {
    Release();
    stream_.reset();
  }

  ChatStream& stream() { return *stream_; }
  void Release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  std::optional<v1::ServerFrame> Next(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !frames_.empty(); })) return std::nullopt;
    auto frame = std::move(frames_.front());
    frames_.pop_front();
    return frame;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  std::deque<v1::ServerFrame> frames_;
  std::unique_ptr<ChatStream> stream_;
};

TEST_CASE(
    "a subscriber that does not read is cut off and resumes from the log while others are "
    "unaffected",
    "[e2e][chat]") {
  // A queue of 64 frames; messages are sent in rounds of 10, so a reading subscriber never has
  // more than a round or two queued, while one that does not read fills its queue soon.
  Chat chat({"limits.session_queue_frames=64", "limits.send_rate_per_s=10000",
             "limits.send_burst=10000"});
  constexpr std::uint64_t kCount = 300;
  const std::string filler(4000, 'x');  // 1.2 MB in all: far beyond the windows and the queue

  StalledStream slow(chat.daemon.address(), chat.bob->access_token());
  REQUIRE(slow.stream().Subscribe(kGeneral));
  auto subscribed = slow.Next(kWait);
  REQUIRE(subscribed.has_value());
  REQUIRE(subscribed->has_subscribed());
  auto fast = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*fast, kGeneral) == 0);

  auto a = chat.alice->Connect();
  std::vector<std::string> bodies;
  for (std::uint64_t i = 1; i <= kCount; ++i) bodies.push_back(std::to_string(i) + filler);
  std::thread writer([&] {
    for (std::size_t i = 0; i < bodies.size(); i += 10) {
      SendMany(*a, kGeneral, std::vector<std::string>(bodies.begin() + i, bodies.begin() + i + 10));
    }
  });

  // The reading subscriber gets everything live, without interruption.
  v1::ServerFrame stop;
  auto fast_got = CollectMessages(*fast, kGeneral, kCount, kWait, &stop);
  writer.join();
  INFO(stop.ShortDebugString());
  CHECK(Seqs(fast_got) == Range(1, kCount));
  CHECK_FALSE(stop.has_unsubscribed());

  // fanout has offered all 300 to the stalled stream by now. Let it read: a prefix of the
  // messages, then Unsubscribed with the resume point.
  slow.Release();
  std::vector<v1::ChatMessage> slow_got;
  std::optional<v1::ServerFrame> cut;
  while (!cut) {
    auto frame = slow.Next(kWait);
    REQUIRE(frame.has_value());
    if (frame->has_message()) slow_got.push_back(frame->message());
    if (frame->has_unsubscribed()) cut = frame;
  }
  INFO(cut->ShortDebugString());
  CHECK(cut->unsubscribed().channel() == kGeneral);
  CHECK_THAT(cut->unsubscribed().reason(), Catch::Contains("slow consumer"));
  const std::uint64_t resume = cut->unsubscribed().resume_after_seq();
  CHECK(resume < kCount);
  CHECK(Seqs(slow_got) == Range(1, resume));

  // Resuming from the log brings every remaining message, then live delivery again.
  REQUIRE(slow.stream().Subscribe(kGeneral, resume));
  const std::string last = "after the catch-up";
  std::uint64_t expect = resume + 1;
  bool sent_live = false;
  while (expect <= kCount + 1) {
    auto frame = slow.Next(kWait);
    REQUIRE(frame.has_value());
    if (frame->has_unsubscribed()) FAIL("cut off again: " << frame->ShortDebugString());
    if (!frame->has_message()) continue;
    REQUIRE(frame->message().seq() == expect);
    if (expect <= kCount) CHECK(frame->message().body() == bodies[expect - 1]);
    ++expect;
    if (expect == kCount + 1 && !sent_live) {
      sent_live = true;
      SendMany(*a, kGeneral, {last});
    }
  }
  CHECK(Seqs(CollectMessages(*fast, kGeneral, kCount + 1, kWait)) ==
        std::vector<std::uint64_t>{kCount + 1});
}

TEST_CASE("DELIVERED and READ acks are stored per member", "[e2e][chat]") {
  Chat chat;
  auto a = chat.alice->Connect();
  SendMany(*a, kGeneral, Bodies("m", 5));
  auto b = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*b, kGeneral) == 5);

  auto positions = [&](const std::string& who) {
    auto members = chat.alice->ListMembers(kGeneral);
    REQUIRE(members.ok());
    for (const auto& m : *members) {
      if (m.username() == who) return std::make_pair(m.delivered_seq(), m.read_seq());
    }
    FAIL("no member " << who);
    return std::make_pair(std::uint64_t{0}, std::uint64_t{0});
  };

  // Positions only move forward: the DELIVERED 1 after DELIVERED 3 changes nothing. Acks of one
  // stream are applied in order, so once READ 2 shows, the two before it are applied too.
  REQUIRE(b->Ack(kGeneral, 3, v1::DELIVERED));
  REQUIRE(b->Ack(kGeneral, 1, v1::DELIVERED));
  REQUIRE(b->Ack(kGeneral, 2, v1::READ));
  CHECK(WaitUntil([&] { return positions("bob").second == 2; }, kWait));
  CHECK(positions("bob") == std::make_pair(std::uint64_t{3}, std::uint64_t{2}));
  CHECK(positions("alice") == std::make_pair(std::uint64_t{0}, std::uint64_t{0}));

  // Subscribers see receipts for the moves (not for the ignored one).
  std::vector<std::pair<std::uint64_t, int>> receipts;
  while (receipts.size() < 2) {
    auto frame = NextMatching(
        *b, [](const v1::ServerFrame& f) { return f.has_receipt(); }, kWait);
    REQUIRE(frame.has_value());
    CHECK(frame->receipt().username() == "bob");
    receipts.emplace_back(frame->receipt().seq(), frame->receipt().kind());
  }
  CHECK(receipts == std::vector<std::pair<std::uint64_t, int>>{{3, v1::DELIVERED}, {2, v1::READ}});

  // READ implies DELIVERED.
  REQUIRE(b->Ack(kGeneral, 5, v1::READ));
  CHECK(WaitUntil([&] { return positions("bob").second == 5; }, kWait));
  CHECK(positions("bob") == std::make_pair(std::uint64_t{5}, std::uint64_t{5}));

  // A seq the channel does not have is refused in-stream; the position stays.
  REQUIRE(b->Ack(kGeneral, 99, v1::READ));
  auto error = NextMatching(
      *b, [](const v1::ServerFrame& f) { return f.has_error(); }, kWait);
  REQUIRE(error.has_value());
  CHECK(error->error().code() == static_cast<int>(Code::kOutOfRange));
  CHECK(error->error().channel() == kGeneral);
  CHECK(positions("bob") == std::make_pair(std::uint64_t{5}, std::uint64_t{5}));
}

// ---------------------------------------------------------------------------------------------
// Ephemeral frames: presence and typing
// ---------------------------------------------------------------------------------------------

// The presence frames among `frames`, as "user:on" / "user:off".
std::vector<std::string> Presences(const std::vector<v1::ServerFrame>& frames) {
  std::vector<std::string> out;
  for (const auto& f : frames) {
    if (f.has_presence()) {
      out.push_back(f.presence().username() + (f.presence().online() ? ":on" : ":off"));
    }
  }
  return out;
}

bool IsPresence(const v1::ServerFrame& f, const std::string& user, bool online) {
  return f.has_presence() && f.presence().username() == user && f.presence().online() == online;
}

// What ListMembers says of `user`'s being online, as seen by `client`; `channel` as the caller
// spells it ("#general" is the same channel).
std::optional<bool> ListedOnline(client::Client& client, const std::string& user,
                                 const std::string& channel = kGeneral) {
  auto members = client.ListMembers(channel);
  REQUIRE(members.ok());
  for (const auto& m : *members) {
    if (m.username() == user) return m.online();
  }
  return std::nullopt;
}

TEST_CASE("a subscriber sees another member come online and go offline when the stream ends",
          "[e2e][chat][presence]") {
  Chat chat;
  const std::uint64_t bob_id = chat.bob->credentials().user_id;
  auto a = chat.alice->Connect();
  REQUIRE(SubscribeAndWait(*a, kGeneral) == 0);

  auto phone = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*phone, kGeneral) == 0);
  auto online = NextMatching(
      *a, [](const v1::ServerFrame& f) { return f.has_presence(); }, kWait);
  REQUIRE(online.has_value());
  CHECK(online->presence().channel() == kGeneral);
  CHECK(online->presence().user_id() == bob_id);
  CHECK(online->presence().username() == "bob");
  CHECK(online->presence().online());
  CHECK(ListedOnline(*chat.alice, "bob") == true);
  CHECK(ListedOnline(*chat.alice, "bob", "#general") == true);  // as the terminal client asks
  // Members come with their display names (kept by auth, not by the channel).
  auto dora = std::make_shared<Client>(chat.daemon.address());
  REQUIRE(dora->Register("dora", testing::kTestPassword, "Dora the Explorer").ok());
  REQUIRE(dora->JoinChannel(kGeneral).ok());
  auto members = chat.alice->ListMembers(kGeneral);
  REQUIRE(members.ok());
  std::map<std::string, std::string> display;
  for (const auto& m : *members) display[m.username()] = m.display_name();
  CHECK(display["dora"] == "Dora the Explorer");
  CHECK(display["bob"] == "bob");  // registered without one: the username

  // A second device changes nothing for alice, and bob hears nothing about alice (no snapshot)
  // or himself.
  auto laptop = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*laptop, kGeneral) == 0);
  CHECK(Presences(FramesBeforePong(*phone, 1)).empty());
  CHECK(Presences(FramesBeforePong(*laptop, 2)).empty());

  // One device unsubscribes: bob is still online. Its Unsubscribed frame comes after fanout has
  // counted it out; a message sent after that travels the same bus, in order, so any presence
  // frame about it would reach alice before the message.
  REQUIRE(phone->Unsubscribe(kGeneral));
  REQUIRE(NextMatching(
              *phone, [](const v1::ServerFrame& f) { return f.has_unsubscribed(); }, kWait)
              .has_value());
  REQUIRE(SendAndWait(*laptop, kGeneral, "still-here", "still here").has_value());
  std::vector<v1::ServerFrame> before;
  REQUIRE(NextMatching(
              *a, [](const v1::ServerFrame& f) { return f.has_message(); }, kWait, &before)
              .has_value());
  INFO(Describe(before));
  CHECK(Presences(before).empty());

  // The last device's stream is cancelled: offline, once.
  laptop->Cancel();
  auto offline = NextMatching(
      *a, [](const v1::ServerFrame& f) { return f.has_presence(); }, kWait);
  REQUIRE(offline.has_value());
  CHECK(IsPresence(*offline, "bob", false));
  CHECK(offline->presence().user_id() == bob_id);
  CHECK(offline->presence().channel() == kGeneral);
  // fanout counted bob out before it sent that frame, so ListMembers already agrees.
  CHECK(ListedOnline(*chat.alice, "bob") == false);
  auto after = FramesBeforePong(*a, 3);
  INFO(Describe(after));
  CHECK(Presences(after).empty());

  // Back again: online again.
  auto again = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*again, kGeneral) == 1);
  CHECK(NextMatching(
            *a, [](const v1::ServerFrame& f) { return IsPresence(f, "bob", true); }, kWait)
            .has_value());
}

TEST_CASE("typing reaches the other subscribers, and typing where one may not is refused",
          "[e2e][chat][typing]") {
  Chat chat;
  const std::uint64_t bob_id = chat.bob->credentials().user_id;
  auto a = chat.alice->Connect();
  auto b = chat.bob->Connect();
  REQUIRE(SubscribeAndWait(*a, kGeneral) == 0);

  // Typing right behind the Subscribe, without waiting for Subscribed: frames of a stream take
  // effect in order, so the subscription is in place.
  REQUIRE(b->Subscribe(kGeneral));
  REQUIRE(b->Typing(kGeneral));
  auto typing = NextMatching(
      *a, [](const v1::ServerFrame& f) { return f.has_typing(); }, kWait);
  REQUIRE(typing.has_value());
  CHECK(typing->typing().channel() == kGeneral);
  CHECK(typing->typing().user_id() == bob_id);
  CHECK(typing->typing().username() == "bob");
  for (const auto& frame : FramesBeforePong(*b, 1)) {
    INFO(frame.ShortDebugString());
    CHECK_FALSE(frame.has_error());
    CHECK_FALSE(frame.has_typing());  // not echoed to the typist
  }

  // Refusals say why, and the stream stays usable.
  auto carol = chat.User("carol", /*join=*/false);
  auto dave = chat.User("dave");  // a member, not subscribed
  auto c = carol->Connect();
  auto d = dave->Connect();
  auto refused = [](ChatStream& stream, const std::string& channel) {
    REQUIRE(stream.Typing(channel));
    auto error = NextMatching(
        stream, [](const v1::ServerFrame& f) { return f.has_error(); }, kWait);
    REQUIRE(error.has_value());
    CHECK(error->error().channel() == channel);
    CHECK_FALSE(error->error().message().empty());
    return error->error().code();
  };
  CHECK(refused(*c, kGeneral) == static_cast<int>(Code::kPermissionDenied));
  CHECK(refused(*c, "nowhere") == static_cast<int>(Code::kNotFound));
  CHECK(refused(*d, kGeneral) == static_cast<int>(Code::kFailedPrecondition));
  CHECK(refused(*c, "Not A Name") == static_cast<int>(Code::kInvalidArgument));
  REQUIRE(SubscribeAndWait(*d, kGeneral) == 0);
  REQUIRE(d->Typing(kGeneral));
  REQUIRE(NextMatching(
              *a,
              [](const v1::ServerFrame& f) {
                return f.has_typing() && f.typing().username() == "dave";
              },
              kWait)
              .has_value());
  // Nothing of the refused ones reached alice.
  for (const auto& frame : FramesBeforePong(*a, 2)) {
    INFO(frame.ShortDebugString());
    CHECK_FALSE(frame.has_typing());
  }
}

// ---------------------------------------------------------------------------------------------
// gRPC health checking and server reflection
// ---------------------------------------------------------------------------------------------
// Debian ships neither the health nor the reflection proto as generated C++: the calls go
// through test/support/grpc_wire.h, as protobuf wire data.

TEST_CASE("grpc.health.v1.Health/Check says SERVING", "[e2e][chat][grpc]") {
  TestDatabase db;
  DaemonProcess daemon(db);
  constexpr const char* kCheck = "/grpc.health.v1.Health/Check";
  // HealthCheckRequest{service = ""}: the server as a whole.
  grpc::Status status;
  const std::string response = CallUnary(daemon.address(), kCheck, "", status);
  INFO(status.error_message());
  REQUIRE(status.ok());
  google::protobuf::UnknownFieldSet fields;
  REQUIRE(fields.ParseFromString(response));
  REQUIRE(fields.field_count() == 1);
  CHECK(fields.field(0).number() == 1);  // HealthCheckResponse.status
  REQUIRE(fields.field(0).type() == google::protobuf::UnknownField::TYPE_VARINT);
  CHECK(fields.field(0).varint() == 1);  // SERVING

  // Each public service by name, as load balancers and Kubernetes probes ask.
  for (const char* service : {"infrachat.v1.ChatService", "infrachat.v1.AuthService",
                              "infrachat.v1.ChannelService", "infrachat.v1.RouterService"}) {
    INFO(service);
    google::protobuf::UnknownFieldSet request;
    request.AddLengthDelimited(1, service);
    const std::string answer = CallUnary(daemon.address(), kCheck, Encode(request), status);
    INFO(status.error_message());
    REQUIRE(status.ok());
    google::protobuf::UnknownFieldSet got;
    REQUIRE(got.ParseFromString(answer));
    REQUIRE(got.field_count() == 1);
    CHECK(got.field(0).varint() == 1);  // SERVING
  }

  // A service the server does not know: NOT_FOUND, as the health protocol says.
  google::protobuf::UnknownFieldSet unknown;
  unknown.AddLengthDelimited(1, "no.such.Service");
  CallUnary(daemon.address(), kCheck, Encode(unknown), status);
  CHECK(status.error_code() == grpc::StatusCode::NOT_FOUND);
}

TEST_CASE("server reflection lists the public services and serves their descriptors",
          "[e2e][chat][grpc]") {
  TestDatabase db;
  DaemonProcess daemon(db);
  constexpr const char* kInfo = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

  // ServerReflectionRequest{list_services = ""} -> list_services_response (6) -> service (1)
  // -> name (1).
  google::protobuf::UnknownFieldSet list;
  list.AddLengthDelimited(7, "");
  const std::string listed = CallStreamOnce(daemon.address(), kInfo, Encode(list));
  std::set<std::string> names;
  for (const auto& services : Field(listed, 6)) {
    for (const auto& service : Field(services, 1)) {
      for (const auto& name : Field(service, 1)) names.insert(name);
    }
  }
  INFO("listed: " << fmt::format("{}", fmt::join(names, ", ")));
  for (const char* want : {"infrachat.v1.ChatService", "infrachat.v1.AuthService",
                           "infrachat.v1.ChannelService", "infrachat.v1.RouterService"}) {
    CHECK(names.count(want) == 1);
  }

  // ServerReflectionRequest{file_containing_symbol = "infrachat.v1.ChatService"} ->
  // file_descriptor_response (4) -> file_descriptor_proto (1): the real descriptor, so tools
  // such as grpcurl can call Connect.
  google::protobuf::UnknownFieldSet symbol;
  symbol.AddLengthDelimited(4, "infrachat.v1.ChatService");
  const std::string described = CallStreamOnce(daemon.address(), kInfo, Encode(symbol));
  bool found = false;
  for (const auto& response : Field(described, 4)) {
    for (const auto& bytes : Field(response, 1)) {
      google::protobuf::FileDescriptorProto file;
      REQUIRE(file.ParseFromString(bytes));
      for (const auto& service : file.service()) {
        if (file.package() != "infrachat.v1" || service.name() != "ChatService") continue;
        for (const auto& method : service.method()) {
          if (method.name() != "Connect") continue;
          found = true;
          CHECK(method.client_streaming());
          CHECK(method.server_streaming());
          CHECK(method.input_type() == ".infrachat.v1.ClientFrame");
          CHECK(method.output_type() == ".infrachat.v1.ServerFrame");
        }
      }
    }
  }
  CHECK(found);
}

}  // namespace
}  // namespace infrachat
