// End-to-end: "bad input gets a clear error and loses nothing", against a real `infrachatd`.
//
// Every case does something wrong (or something bad happens to the server), checks the precise
// status or in-stream Error, then checks that the server still serves a well-behaved user and
// that every message acknowledged so far is stored with its seq and body (a Ledger):
//   - no, garbage, forged (alg none, bad signature) and expired tokens -> UNAUTHENTICATED, and an
//     expired token ends the live stream;
//   - wrong password and unknown user look identical; duplicate usernames -> ALREADY_EXISTS;
//   - invalid channel names, ids and bodies (empty, oversized, not UTF-8, NUL) -> in-stream
//     INVALID_ARGUMENT, and the stream stays usable;
//   - unknown channels -> NOT_FOUND; a frame over grpc.max_receive_message_bytes ends that stream
//     with RESOURCE_EXHAUSTED; over-rate sends are slowed to the rate, in order, and the
//     stream's limits are told in its initial metadata;
//   - logout ends the session's live streams;
//   - the database going away: UNAVAILABLE and no ack, then sending works again, no restart;
//   - kill -9 under continuous sending: every acked message survives, seqs stay gap-free, and
//     retrying the unacknowledged sends with their client_msg_id creates no duplicates;
//   - SIGTERM drains: exit 0, in-flight sends are answered, everything acked is stored.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"
#include "infrachat/client/chat_stream.h"
#include "infrachat/client/client.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using client::ChatStream;
using client::Client;
using testing::CollectMessages;
using testing::DaemonProcess;
using testing::DatabaseOutage;
using testing::FullHistory;
using testing::kTestPassword;
using testing::NextMatching;
using testing::Range;
using testing::RegisterUser;
using testing::SendAndWait;
using testing::Seqs;
using testing::SubscribeAndWait;
using testing::TestDatabase;
using testing::WaitUntil;
namespace v1 = client::v1;

constexpr auto kWait = 15s;
constexpr const char* kGeneral = "general";
constexpr int kInvalidArgument = static_cast<int>(Code::kInvalidArgument);

std::int64_t NowUnix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The messages acknowledged so far: what must never be lost.
class Ledger {
 public:
  void Record(const v1::SendAck& ack, const std::string& body) {
    REQUIRE_FALSE(ack.duplicate());
    auto [it, inserted] = by_seq_.emplace(ack.seq(), std::make_pair(ack.client_msg_id(), body));
    REQUIRE(inserted);
  }
  // Sends and REQUIREs a SendAck; records it.
  v1::SendAck SendAcked(ChatStream& stream, const std::string& body,
                        const std::string& id = client::NewClientMsgId()) {
    auto frame = SendAndWait(stream, kGeneral, id, body, kWait);
    REQUIRE(frame.has_value());
    INFO(frame->ShortDebugString());
    REQUIRE(frame->has_send_ack());
    Record(frame->send_ack(), body);
    return frame->send_ack();
  }
  // Every acknowledged message is stored under its seq with its id and body, and the log is
  // gap-free. Returns the history.
  std::vector<v1::ChatMessage> ExpectAllStored(Client& reader) const {
    auto history = FullHistory(reader, kGeneral);
    CHECK(Seqs(history) == Range(1, history.size()));
    for (const auto& [seq, entry] : by_seq_) {
      INFO("acknowledged seq " << seq);
      REQUIRE(seq <= history.size());
      CHECK(history[seq - 1].client_msg_id() == entry.first);
      CHECK(history[seq - 1].body() == entry.second);
    }
    return history;
  }
  std::size_t size() const { return by_seq_.size(); }

 private:
  std::map<std::uint64_t, std::pair<std::string, std::string>> by_seq_;
};

// A daemon on a fresh database: alice created #general, bob joined, alice sent three messages.
struct Server {
  explicit Server(std::vector<std::string> overrides = {}) : daemon(db, std::move(overrides)) {
    alice = RegisterUser(daemon.address(), "alice");
    bob = RegisterUser(daemon.address(), "bob");
    REQUIRE(alice->CreateChannel(kGeneral).ok());
    REQUIRE(bob->JoinChannel(kGeneral).ok());
    auto stream = alice->Connect();
    for (int i = 0; i < 3; ++i) ledger.SendAcked(*stream, "before " + std::to_string(i));
  }

  std::shared_ptr<Client> Login(const std::string& user) {
    auto c = std::make_shared<Client>(daemon.address());
    auto session = c->Login(user, kTestPassword);
    REQUIRE(session.ok());
    return c;
  }

  // After the bad input: a new connection of a well-behaved user logs in, sends and is acked, and
  // nothing acknowledged before is lost.
  void ExpectServesOthers() {
    auto c = Login("bob");
    auto stream = c->Connect();
    ledger.SendAcked(*stream, "still serving " + std::to_string(ledger.size()));
    ledger.ExpectAllStored(*c);
  }

  TestDatabase db;
  DaemonProcess daemon;
  std::shared_ptr<Client> alice;
  std::shared_ptr<Client> bob;
  Ledger ledger;
};

// The next Error frame; REQUIREs one.
v1::Error NextError(ChatStream& stream) {
  auto frame = NextMatching(
      stream, [](const v1::ServerFrame& f) { return f.has_error() || f.has_subscribed(); }, kWait);
  REQUIRE(frame.has_value());
  INFO(frame->ShortDebugString());
  REQUIRE(frame->has_error());
  return frame->error();
}

// Sends and REQUIREs an in-stream Error for that client_msg_id; returns it.
v1::Error SendRefused(ChatStream& stream, const std::string& channel, const std::string& id,
                      const std::string& body) {
  auto frame = SendAndWait(stream, channel, id, body, kWait);
  REQUIRE(frame.has_value());
  INFO(frame->ShortDebugString());
  REQUIRE(frame->has_error());
  CHECK(frame->error().client_msg_id() == id);
  return frame->error();
}

// The frames a stream receives before the Pong of a Ping: a barrier for "nothing more is queued".
std::vector<v1::ServerFrame> FramesBeforePong(ChatStream& stream, std::uint64_t nonce) {
  std::vector<v1::ServerFrame> before;
  REQUIRE(stream.Ping(nonce));
  auto pong = NextMatching(
      stream, [&](const v1::ServerFrame& f) { return f.has_pong() && f.pong().nonce() == nonce; },
      kWait, &before);
  REQUIRE(pong.has_value());
  return before;
}

void ExpectUnauthenticated(Client& c) {
  CHECK(c.ListChannels().code() == Code::kUnauthenticated);
  CHECK(c.GetHistory(kGeneral).code() == Code::kUnauthenticated);
  auto stream = c.Connect();
  auto end = stream->WaitForEnd(kWait);
  REQUIRE(end.has_value());
  CHECK(end->code == Code::kUnauthenticated);
}

TEST_CASE("requests without a valid token are refused with UNAUTHENTICATED", "[e2e][resilience]") {
  Server s;
  auto anon = std::make_shared<Client>(s.daemon.address());
  SECTION("no token") { ExpectUnauthenticated(*anon); }
  SECTION("garbage") {
    anon->SetAccessToken("not-a-token");
    ExpectUnauthenticated(*anon);
  }
  SECTION("a forged signature") {
    std::string token = s.alice->access_token();
    const auto dot = token.rfind('.');
    REQUIRE(dot != std::string::npos);
    token[dot + 5] = token[dot + 5] == 'A' ? 'B' : 'A';
    anon->SetAccessToken(token);
    ExpectUnauthenticated(*anon);
  }
  SECTION("alg none with alice's claims") {
    const std::string token = s.alice->access_token();
    const auto first = token.find('.');
    const auto last = token.rfind('.');
    // base64url of {"alg":"none","typ":"JWT"}
    anon->SetAccessToken("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0" + token.substr(first, last - first) +
                         ".");
    ExpectUnauthenticated(*anon);
  }
  s.ExpectServesOthers();
}

TEST_CASE("an expired access token is refused and ends the live stream", "[e2e][resilience]") {
  Server s({"auth.access_token_ttl_s=2", "auth.revocation_check_interval_s=1"});
  auto carol = RegisterUser(s.daemon.address(), "carol");
  REQUIRE(carol->JoinChannel(kGeneral).ok());
  const std::int64_t expires = carol->credentials().access_expires_at_unix;
  auto stream = carol->Connect();
  SubscribeAndWait(*stream, kGeneral);
  s.ledger.SendAcked(*stream, "carol, while her token is valid");

  auto end = stream->WaitForEnd(kWait);
  REQUIRE(end.has_value());
  CHECK(end->code == Code::kUnauthenticated);
  CHECK_THAT(end->message, Catch::Contains("expired"));
  CHECK(NowUnix() >= expires);  // it ended because of the expiry, not before

  ExpectUnauthenticated(*carol);
  // The refresh token gives a working access token again.
  REQUIRE(carol->Refresh().ok());
  CHECK(carol->ListChannels().ok());
  s.ExpectServesOthers();
}

TEST_CASE("login failures look alike and a taken username is ALREADY_EXISTS", "[e2e][resilience]") {
  Server s;
  Client c(s.daemon.address());
  auto wrong_password = c.Login("alice", "not her password");
  auto unknown_user = c.Login("nobody", "not her password");
  auto malformed_user = c.Login("No Such User!", "not her password");
  REQUIRE_FALSE(wrong_password.ok());
  REQUIRE_FALSE(unknown_user.ok());
  REQUIRE_FALSE(malformed_user.ok());
  CHECK(wrong_password.code() == Code::kUnauthenticated);
  CHECK(unknown_user.code() == Code::kUnauthenticated);
  CHECK(malformed_user.code() == Code::kUnauthenticated);
  CHECK(wrong_password.error().message == unknown_user.error().message);
  CHECK(malformed_user.error().message == unknown_user.error().message);

  auto taken = c.Register("alice", "another password");
  CHECK(taken.code() == Code::kAlreadyExists);
  // The first alice is untouched.
  CHECK(Client(s.daemon.address()).Login("alice", kTestPassword).ok());
  CHECK(c.Login("alice", "another password").code() == Code::kUnauthenticated);

  CHECK(c.Register("x", kTestPassword).code() == Code::kInvalidArgument);
  CHECK(c.Register("Upper", kTestPassword).code() == Code::kInvalidArgument);
  CHECK(c.Register("carol", "short").code() == Code::kInvalidArgument);
  s.ExpectServesOthers();
}

TEST_CASE("invalid frames get an in-stream INVALID_ARGUMENT and the stream stays usable",
          "[e2e][resilience]") {
  Server s;
  auto stream = s.alice->Connect();
  struct Bad {
    const char* what;
    std::string channel;
    std::string id;
    std::string body;
  };
  const std::string ok_id = "valid-id";
  const std::vector<Bad> cases = {
      {"channel with capitals and spaces", "Not Valid!", ok_id, "hi"},
      {"empty channel", "", ok_id, "hi"},
      {"channel of 65 characters", std::string(65, 'a'), ok_id, "hi"},
      {"empty body", kGeneral, ok_id, ""},
      {"body one byte over the limit", kGeneral, ok_id, std::string(8193, 'x')},
      {"lone continuation byte", kGeneral, ok_id, "abc\x80"},
      {"invalid lead byte", kGeneral, ok_id, "\xff\xfe"},
      {"truncated sequence", kGeneral, ok_id, "euro \xe2\x82"},
      {"overlong encoding", kGeneral, ok_id, "\xc0\xaf"},
      {"UTF-16 surrogate", kGeneral, ok_id, "\xed\xa0\x80"},
      {"beyond U+10FFFF", kGeneral, ok_id, "\xf4\x90\x80\x80"},
      {"NUL byte", kGeneral, ok_id, std::string("a\0b", 3)},
      {"empty client_msg_id", kGeneral, "", "hi"},
      {"client_msg_id of 65 characters", kGeneral, std::string(65, 'i'), "hi"},
      {"client_msg_id with a space", kGeneral, "has space", "hi"},
  };
  int n = 0;
  for (const Bad& bad : cases) {
    INFO(bad.what);
    const v1::Error error = SendRefused(*stream, bad.channel, bad.id, bad.body);
    CHECK(error.code() == kInvalidArgument);
    CHECK_FALSE(error.message().empty());
    // The same stream goes on working.
    s.ledger.SendAcked(*stream, "valid after " + std::string(bad.what) + " " + std::to_string(++n));
  }
  // The limits are inclusive: exactly max_body_bytes, ending in a 4-byte character, is fine.
  std::string full(8192 - 4, 'y');
  full += "\xf0\x9f\x8c\x8d";
  s.ledger.SendAcked(*stream, full);

  // Other frames with invalid input.
  REQUIRE(stream->Subscribe("Bad Name"));
  CHECK(NextError(*stream).code() == kInvalidArgument);
  REQUIRE(stream->Write(v1::ClientFrame{}));
  CHECK(NextError(*stream).code() == kInvalidArgument);
  REQUIRE(stream->Ack(kGeneral, 1, v1::ACK_KIND_UNSPECIFIED));
  CHECK(NextError(*stream).code() == kInvalidArgument);
  CHECK(SubscribeAndWait(*stream, kGeneral) == s.ledger.size());

  // The unary calls.
  CHECK(s.alice->CreateChannel("Not Valid!").code() == Code::kInvalidArgument);
  CHECK(s.alice->GetHistory("").code() == Code::kInvalidArgument);
  CHECK(s.alice->JoinChannel(std::string(65, 'a')).code() == Code::kInvalidArgument);

  // Nothing invalid was stored: the log holds exactly the acknowledged messages.
  auto history = s.ledger.ExpectAllStored(*s.bob);
  CHECK(history.size() == s.ledger.size());
  s.ExpectServesOthers();
}

TEST_CASE("an unknown channel is NOT_FOUND", "[e2e][resilience]") {
  Server s;
  auto stream = s.alice->Connect();
  CHECK(SendRefused(*stream, "nope", "n-1", "anyone?").code() == static_cast<int>(Code::kNotFound));
  REQUIRE(stream->Subscribe("nope", 0));
  const v1::Error error = NextError(*stream);
  CHECK(error.code() == static_cast<int>(Code::kNotFound));
  CHECK(error.channel() == "nope");
  CHECK(s.alice->GetHistory("nope").code() == Code::kNotFound);
  CHECK(s.alice->JoinChannel("nope").code() == Code::kNotFound);
  CHECK(s.alice->ListMembers("nope").code() == Code::kNotFound);
  CHECK(s.alice->InviteMember("nope", "bob").code() == Code::kNotFound);
  s.ledger.SendAcked(*stream, "the stream still works");
  s.ExpectServesOthers();
}

TEST_CASE(
    "a frame over grpc.max_receive_message_bytes ends only that stream with RESOURCE_EXHAUSTED",
    "[e2e][resilience]") {
  Server s;
  // Another stream on the same HTTP/2 connection, and one of another user.
  auto neighbour = s.alice->Connect();
  SubscribeAndWait(*neighbour, kGeneral);
  auto other = s.bob->Connect();
  SubscribeAndWait(*other, kGeneral);

  auto big = s.alice->Connect();
  v1::ClientFrame frame;
  frame.mutable_send()->set_channel(kGeneral);
  frame.mutable_send()->set_client_msg_id("too-big");
  frame.mutable_send()->set_body(std::string(70 * 1024, 'x'));  // the limit is 64 KiB
  big->Write(frame);
  auto end = big->WaitForEnd(kWait);
  REQUIRE(end.has_value());
  CHECK(end->code == Code::kResourceExhausted);

  CHECK_FALSE(neighbour->ended());
  CHECK_FALSE(other->ended());
  const auto ack = s.ledger.SendAcked(*neighbour, "the neighbour still works");
  CHECK(Seqs(CollectMessages(*other, kGeneral, ack.seq(), kWait)) ==
        std::vector<std::uint64_t>{ack.seq()});
  for (const auto& m : FullHistory(*s.bob, kGeneral)) CHECK(m.client_msg_id() != "too-big");
  s.ExpectServesOthers();
}

// Over the rate, sends are delayed, not refused (docs/adr/0007): they are stored in the order
// they were sent, at the configured rate, and other streams are not slowed down.
TEST_CASE("sending too fast is slowed to the rate, in order, and other streams go on",
          "[e2e][resilience]") {
  constexpr double kRate = 20;
  constexpr int kBurst = 5;
  Server s({"limits.send_rate_per_s=20", "limits.send_burst=5"});
  auto hasty = s.alice->Connect();
  constexpr int kSends = 30;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < kSends; ++i) {
    REQUIRE(hasty->Send(kGeneral, "r-" + std::to_string(i), "burst " + std::to_string(i)));
  }
  // While most of them wait for their tokens, another stream of the same user is not held up.
  auto calm = s.alice->Connect();
  const auto calm_ack = s.ledger.SendAcked(*calm, "from a calm stream");

  std::vector<v1::SendAck> acks;
  std::chrono::steady_clock::time_point last_ack;
  while (acks.size() < kSends) {
    auto frame = NextMatching(
        *hasty, [](const v1::ServerFrame& f) { return f.has_send_ack() || f.has_error(); }, kWait);
    REQUIRE(frame.has_value());
    INFO(frame->ShortDebugString());
    REQUIRE(frame->has_send_ack());  // never refused
    acks.push_back(frame->send_ack());
    last_ack = std::chrono::steady_clock::now();
  }
  for (int i = 0; i < kSends; ++i) {
    INFO("send " << i);
    CHECK(acks[i].client_msg_id() == "r-" + std::to_string(i));  // acked in order...
    if (i > 0) CHECK(acks[i].seq() > acks[i - 1].seq());         // ...and stored in order
    s.ledger.Record(acks[i], "burst " + std::to_string(i));
  }
  // The calm stream's message went in between: it was not queued behind the hasty one.
  CHECK(calm_ack.seq() < acks.back().seq());
  // The rate held: beyond the burst, one token per 1/kRate seconds (a lower bound only).
  const double elapsed_s = std::chrono::duration<double>(last_ack - started).count();
  CHECK(elapsed_s >= (kSends - kBurst) / kRate * 0.9);

  auto history = s.ledger.ExpectAllStored(*s.bob);
  CHECK(history.size() == s.ledger.size());
  s.ExpectServesOthers();
}

// The stream's limits come as initial metadata, so that a client can size and pace its sends.
TEST_CASE("a Connect stream tells its limits in its initial metadata", "[e2e][resilience]") {
  Server s({"limits.send_rate_per_s=2.5", "limits.send_burst=7", "limits.max_body_bytes=1000"});
  auto channel = grpc::CreateChannel(s.daemon.address(), grpc::InsecureChannelCredentials());
  auto stub = v1::ChatService::NewStub(channel);
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer " + s.alice->access_token());
  context.set_deadline(std::chrono::system_clock::now() + kWait);
  auto stream = stub->Connect(&context);
  stream->WaitForInitialMetadata();  // before any frame was sent or received
  std::map<std::string, std::string> headers;
  for (const auto& [key, value] : context.GetServerInitialMetadata()) {
    headers[std::string(key.data(), key.size())] = std::string(value.data(), value.size());
  }
  CHECK(headers["infrachat-send-rate-per-s"] == "2.5");
  CHECK(headers["infrachat-send-burst"] == "7");
  CHECK(headers["infrachat-max-inflight-sends"] == "256");
  CHECK(headers["infrachat-max-body-bytes"] == "1000");
  CHECK(headers["infrachat-max-frame-bytes"] == "65536");
  stream->WritesDone();
  CHECK(stream->Finish().ok());
}

TEST_CASE("logging out ends the live streams of that session", "[e2e][resilience]") {
  Server s({"auth.revocation_check_interval_s=1"});
  auto phone = s.Login("bob");
  auto laptop = s.Login("bob");  // another session of the same user
  auto on_phone = phone->Connect();
  auto on_laptop = laptop->Connect();
  SubscribeAndWait(*on_phone, kGeneral);
  SubscribeAndWait(*on_laptop, kGeneral);
  const client::Credentials revoked = phone->credentials();

  REQUIRE(phone->Logout().ok());
  // Within the revocation check interval (1 s), with slack for a loaded machine.
  auto end = on_phone->WaitForEnd(5s);
  REQUIRE(end.has_value());
  CHECK(end->code == Code::kUnauthenticated);
  CHECK(phone->Refresh(revoked.refresh_token).code() == Code::kUnauthenticated);
  // A stream opened with the revoked session's (unexpired) access token is ended as well.
  phone->SetAccessToken(revoked.access_token);
  auto reopened = phone->Connect();
  auto reopened_end = reopened->WaitForEnd(5s);
  REQUIRE(reopened_end.has_value());
  CHECK(reopened_end->code == Code::kUnauthenticated);

  // The other session is unaffected.
  CHECK_FALSE(on_laptop->ended());
  s.ledger.SendAcked(*on_laptop, "from the laptop");
  s.ExpectServesOthers();
}

TEST_CASE(
    "with the database down a send gets UNAVAILABLE and no ack and it recovers without restart",
    "[e2e][resilience]") {
  Server s;
  auto sender = s.alice->Connect();
  auto watcher = s.bob->Connect();
  REQUIRE(SubscribeAndWait(*watcher, kGeneral) == 3);
  // Concurrent reads, so that the daemon's connection pool holds several connections that the
  // outage will break.
  auto concurrent_reads = [&] {
    std::vector<std::thread> readers;
    std::atomic<int> ok{0};
    for (int i = 0; i < 8; ++i) {
      readers.emplace_back([&] {
        for (int k = 0; k < 5; ++k) ok += s.bob->GetHistory(kGeneral).ok() ? 1 : 0;
      });
    }
    for (auto& t : readers) t.join();
    return ok.load();
  };
  REQUIRE(concurrent_reads() == 40);
  {
    DatabaseOutage outage(s.db);
    CHECK(SendRefused(*sender, kGeneral, "down-1", "during the outage").code() ==
          static_cast<int>(Code::kUnavailable));
    CHECK(SendRefused(*sender, kGeneral, "down-2", "still down").code() ==
          static_cast<int>(Code::kUnavailable));
    for (const auto& frame : FramesBeforePong(*sender, 1)) {
      INFO(frame.ShortDebugString());
      CHECK_FALSE(frame.has_send_ack());
    }
    CHECK(s.bob->GetHistory(kGeneral).code() == Code::kUnavailable);
    outage.Restore();
  }
  // The same stream and the same ids: stored now, once.
  const auto first = s.ledger.SendAcked(*sender, "during the outage", "down-1");
  const auto second = s.ledger.SendAcked(*sender, "still down", "down-2");
  CHECK(first.seq() == 4);
  CHECK(second.seq() == 5);
  // The watcher's stream survived the outage and gets them live.
  CHECK(Seqs(CollectMessages(*watcher, kGeneral, 5, kWait)) == Range(4, 5));
  // Everything else recovered too: no request fails on a connection the outage broke.
  CHECK(concurrent_reads() == 40);
  CHECK(s.bob->ListMembers(kGeneral).ok());
  CHECK(Client(s.daemon.address()).Login("alice", kTestPassword).ok());
  s.ExpectServesOthers();
}

// A stream that sends without pause from one thread while another reads the answers.
class ContinuousSender {
 public:
  ContinuousSender(Client& c, std::string prefix) : stream_(c.Connect()) {
    writer_ = std::thread([this, prefix] {
      for (int i = 0;; ++i) {
        const std::string id = prefix + std::to_string(i);
        const std::string body = "continuous " + std::to_string(i);
        {
          std::lock_guard lock(mu_);
          attempted_.emplace_back(id, body);
        }
        if (!stream_->Send(kGeneral, id, body)) return;
      }
    });
    reader_ = std::thread([this] {
      while (auto frame = stream_->Next(std::chrono::seconds(60))) {
        std::lock_guard lock(mu_);
        if (frame->has_send_ack()) acks_[frame->send_ack().client_msg_id()] = frame->send_ack();
        if (frame->has_error()) errors_[frame->error().client_msg_id()] = frame->error();
      }
    });
  }
  ~ContinuousSender() { Join(); }

  std::size_t acked() const {
    std::lock_guard lock(mu_);
    return acks_.size();
  }
  // Returns once the stream has ended and both threads are done.
  void Join() {
    if (writer_.joinable()) writer_.join();
    if (reader_.joinable()) reader_.join();
  }
  std::optional<client::Status> final_status() const { return stream_->final_status(); }

  // After Join().
  const std::vector<std::pair<std::string, std::string>>& attempted() const { return attempted_; }
  const std::map<std::string, v1::SendAck>& acks() const { return acks_; }
  const std::map<std::string, v1::Error>& errors() const { return errors_; }

 private:
  std::unique_ptr<ChatStream> stream_;
  mutable std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> attempted_;
  std::map<std::string, v1::SendAck> acks_;
  std::map<std::string, v1::Error> errors_;
  std::thread writer_;
  std::thread reader_;
};

// Sends (id, body) pairs again, pipelined, and returns the SendAck of each id.
std::map<std::string, v1::SendAck> Resend(
    Client& c, const std::vector<std::pair<std::string, std::string>>& sends) {
  auto stream = c.Connect();
  for (const auto& [id, body] : sends) REQUIRE(stream->Send(kGeneral, id, body));
  std::map<std::string, v1::SendAck> acks;
  while (acks.size() < sends.size()) {
    auto frame = NextMatching(
        *stream, [](const v1::ServerFrame& f) { return f.has_send_ack() || f.has_error(); }, kWait);
    INFO(acks.size() << " of " << sends.size() << " acked; stream "
                     << (stream->ended() ? client::ToString(*stream->final_status()) : "open"));
    REQUIRE(frame.has_value());
    INFO(frame->ShortDebugString());
    REQUIRE(frame->has_send_ack());
    acks[frame->send_ack().client_msg_id()] = frame->send_ack();
  }
  return acks;
}

// Every id of `sends` appears exactly once in the history, with its body; the log is gap-free.
void ExpectEachOnce(const std::vector<v1::ChatMessage>& history,
                    const std::vector<std::pair<std::string, std::string>>& sends) {
  CHECK(Seqs(history) == Range(1, history.size()));
  std::map<std::string, int> count;
  std::map<std::string, std::string> body_of;
  for (const auto& m : history) {
    ++count[m.client_msg_id()];
    body_of[m.client_msg_id()] = m.body();
  }
  for (const auto& [id, body] : sends) {
    INFO(id);
    CHECK(count[id] == 1);
    CHECK(body_of[id] == body);
  }
  for (const auto& [id, n] : count) {
    INFO(id);
    CHECK(n == 1);
  }
}

TEST_CASE("kill -9 while a client sends - acked messages survive and retries create no duplicates",
          "[e2e][resilience]") {
  Server s({"limits.send_rate_per_s=100000", "limits.send_burst=100000"});
  std::vector<std::pair<std::string, std::string>> attempted;
  std::map<std::string, v1::SendAck> acks;
  {
    ContinuousSender sender(*s.alice, "k-");
    REQUIRE(WaitUntil([&] { return sender.acked() >= 200; }, kWait));
    s.daemon.Kill9();
    sender.Join();
    auto end = sender.final_status();
    REQUIRE(end.has_value());
    CHECK(end->code == Code::kUnavailable);
    attempted = sender.attempted();
    acks = sender.acks();
  }
  s.daemon.Restart();
  auto alice = s.Login("alice");

  // Every acknowledged message is there, under the acknowledged seq, gap-free.
  for (const auto& [id, body] : attempted) {
    if (auto it = acks.find(id); it != acks.end()) s.ledger.Record(it->second, body);
  }
  const auto before = s.ledger.ExpectAllStored(*alice);
  REQUIRE(before.size() >= s.ledger.size());

  // Retrying the rest with the same ids: stored ones come back as duplicates with their seq,
  // the others get new seqs after the head; nothing is stored twice.
  std::vector<std::pair<std::string, std::string>> unacked;
  for (const auto& send : attempted) {
    if (acks.count(send.first) == 0) unacked.push_back(send);
  }
  INFO(acks.size() << " acked, " << unacked.size() << " unacknowledged, " << before.size()
                   << " stored before the retry");
  const auto retried = Resend(*alice, unacked);
  std::size_t stored_without_ack = 0;
  for (const auto& [id, ack] : retried) {
    if (ack.duplicate()) {
      ++stored_without_ack;
      REQUIRE(ack.seq() <= before.size());
      CHECK(before[ack.seq() - 1].client_msg_id() == id);
    } else {
      CHECK(ack.seq() > before.size());
    }
  }
  CHECK(before.size() == s.ledger.size() + stored_without_ack);
  auto after = FullHistory(*alice, kGeneral);
  ExpectEachOnce(after, attempted);
  CHECK(after.size() == 3 + attempted.size());
  s.ExpectServesOthers();
}

TEST_CASE("SIGTERM drains - exit 0 and in-flight sends are answered and everything acked is stored",
          "[e2e][resilience]") {
  Server s({"limits.send_rate_per_s=100000", "limits.send_burst=100000"});
  std::vector<std::pair<std::string, std::string>> attempted;
  std::map<std::string, v1::SendAck> acks;
  std::map<std::string, v1::Error> errors;
  {
    ContinuousSender alice(*s.alice, "a-");
    ContinuousSender bob(*s.bob, "b-");
    const bool enough =
        WaitUntil([&] { return alice.acked() >= 100 && bob.acked() >= 100; }, kWait);
    INFO("alice " << alice.acked() << " bob " << bob.acked());
    REQUIRE(enough);
    s.daemon.SignalTerminate();
    alice.Join();
    bob.Join();
    for (const ContinuousSender* sender : {&alice, &bob}) {
      auto end = sender->final_status();
      REQUIRE(end.has_value());
      INFO(client::ToString(*end));
      CHECK(end->code == Code::kUnavailable);  // a clean "shutting down", not a cancel
      attempted.insert(attempted.end(), sender->attempted().begin(), sender->attempted().end());
      acks.insert(sender->acks().begin(), sender->acks().end());
      errors.insert(sender->errors().begin(), sender->errors().end());
    }
  }
  auto exit_status = s.daemon.Wait(kWait);
  REQUIRE(exit_status.has_value());
  CHECK(*exit_status == 0);
  for (const auto& [id, error] : errors) {
    INFO(id << ": " << error.ShortDebugString());
    CHECK(error.code() == static_cast<int>(Code::kUnavailable));
  }

  s.daemon.Restart();
  auto alice = s.Login("alice");
  auto bob = s.Login("bob");
  for (const auto& [id, body] : attempted) {
    if (auto it = acks.find(id); it != acks.end()) s.ledger.Record(it->second, body);
  }
  const auto before = s.ledger.ExpectAllStored(*alice);
  {
    std::size_t stored_after_error = 0, stored_unanswered = 0;
    for (const auto& m : before) {
      if (acks.count(m.client_msg_id()) > 0 || m.body().rfind("before", 0) == 0) continue;
      if (errors.count(m.client_msg_id()) > 0) {
        ++stored_after_error;
      } else {
        ++stored_unanswered;
      }
    }
    INFO("attempted " << attempted.size() << " acked " << acks.size() << " errors " << errors.size()
                      << " stored after error " << stored_after_error << " stored unanswered "
                      << stored_unanswered);
    // Nothing was stored without its ack reaching the client: the drain answered every send it
    // had read (before the connection closed), and the ones it had not read were not stored.
    CHECK(stored_after_error == 0);
    CHECK(stored_unanswered == 0);
  }
  CHECK(before.size() == s.ledger.size());

  std::vector<std::pair<std::string, std::string>> alice_rest, bob_rest;
  for (const auto& send : attempted) {
    if (acks.count(send.first) > 0) continue;
    (send.first.rfind("a-", 0) == 0 ? alice_rest : bob_rest).push_back(send);
  }
  for (const auto& [c, rest] : {std::make_pair(alice, alice_rest), std::make_pair(bob, bob_rest)}) {
    for (const auto& [id, ack] : Resend(*c, rest)) {
      INFO(id);
      CHECK_FALSE(ack.duplicate());
    }
  }
  ExpectEachOnce(FullHistory(*alice, kGeneral), attempted);
  s.ExpectServesOthers();
}

}  // namespace
}  // namespace infrachat
