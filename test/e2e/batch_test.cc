// FrameBatch (issue 9): a client that asks for batches gets what piles up on its stream as one
// message, and one that does not ask gets exactly the single frames it always got; both see
// every message once and in order. And the stream parses frames itself now: bytes that are not
// a ClientFrame get an Error frame, and the stream goes on.
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <chrono>
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
using testing::CallStream;
using testing::DaemonProcess;
using testing::RegisterUser;
using testing::SendAndWait;
using testing::TestDatabase;
namespace v1 = client::v1;

constexpr const char* kChannel = "general";

// ChatService.Connect on the generated stub, seeing the server's frames as they come, batches
// included (the client library unpacks them).
struct WireStream {
  WireStream(const std::string& address, const std::string& access_token, bool ask_for_batches)
      : WireStream(address, access_token, std::string(ask_for_batches ? "batch" : "")) {}
  // `capabilities`: the request's infrachat-capabilities value (none when empty). A std::string:
  // a string literal would pick the bool constructor.
  WireStream(const std::string& address, const std::string& access_token,
             const std::string& capabilities)
      : stub(v1::ChatService::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {
    context.AddMetadata("authorization", "Bearer " + access_token);
    context.set_deadline(std::chrono::system_clock::now() + 60s);  // a missing answer fails
    if (!capabilities.empty()) context.AddMetadata("infrachat-capabilities", capabilities);
    stream = stub->Connect(&context);
  }
  ~WireStream() { context.TryCancel(); }

  std::string InitialMetadata(const std::string& key) {
    stream->WaitForInitialMetadata();
    const auto& headers = context.GetServerInitialMetadata();
    auto it = headers.find(key);
    return it == headers.end() ? std::string() : std::string(it->second.data(), it->second.size());
  }

  std::unique_ptr<v1::ChatService::Stub> stub;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ClientFrame, v1::ServerFrame>> stream;
};

struct Seen {
  std::size_t reads = 0;            // messages read off the wire
  std::size_t batches = 0;          // of which FrameBatch
  std::size_t in_batches = 0;       // frames carried inside batches
  std::size_t nested = 0;           // batches inside batches (never allowed)
  std::vector<std::uint64_t> seqs;  // Message frames of kChannel, in arrival order
};

// Reads until `want` messages have arrived (or the stream ends).
Seen ReadMessages(WireStream& wire, std::size_t want) {
  Seen seen;
  v1::ServerFrame frame;
  auto take = [&](const v1::ServerFrame& f) {
    if (f.has_batch()) ++seen.nested;
    if (f.has_message() && f.message().channel() == kChannel)
      seen.seqs.push_back(f.message().seq());
  };
  while (seen.seqs.size() < want && wire.stream->Read(&frame)) {
    ++seen.reads;
    if (frame.has_batch()) {
      ++seen.batches;
      seen.in_batches += static_cast<std::size_t>(frame.batch().frames_size());
      for (const auto& inner : frame.batch().frames()) take(inner);
    } else {
      take(frame);
    }
  }
  return seen;
}

void Subscribe(WireStream& wire) {
  v1::ClientFrame subscribe;
  subscribe.mutable_subscribe()->set_channel(kChannel);
  REQUIRE(wire.stream->Write(subscribe));
  v1::ServerFrame frame;
  REQUIRE(wire.stream->Read(&frame));
  INFO(frame.ShortDebugString());
  REQUIRE(frame.has_subscribed());
}

TEST_CASE("a client that asks for batches gets them, and one that does not gets single frames",
          "[e2e][batch]") {
  TestDatabase db;
  DaemonProcess daemon(db, {"limits.send_rate_per_s=100000", "limits.send_burst=100000"});
  auto alice = RegisterUser(daemon.address(), "alice");
  auto bob = RegisterUser(daemon.address(), "bob");
  auto carol = RegisterUser(daemon.address(), "carol");
  REQUIRE(alice->CreateChannel(kChannel).ok());
  REQUIRE(bob->JoinChannel(kChannel).ok());
  REQUIRE(carol->JoinChannel(kChannel).ok());

  WireStream batched(daemon.address(), bob->access_token(), /*ask_for_batches=*/true);
  WireStream single(daemon.address(), carol->access_token(), /*ask_for_batches=*/false);
  CHECK(batched.InitialMetadata("infrachat-capabilities") == "batch");
  CHECK(single.InitialMetadata("infrachat-capabilities").empty());
  Subscribe(batched);
  Subscribe(single);

  // 500 messages in a burst while neither subscriber reads: they pile up on both streams
  // (below the 1,024-frame queue, so nobody is cut off).
  constexpr std::size_t kMessages = 500;
  auto sender = alice->Connect();
  std::size_t acked = 0;
  for (std::size_t i = 0; i < kMessages; ++i) {
    REQUIRE_FALSE(
        sender->Send(kChannel, "message " + std::to_string(i) + std::string(60, '.')).empty());
  }
  while (acked < kMessages) {
    auto frame = sender->Next(15s);
    REQUIRE(frame.has_value());
    INFO(frame->ShortDebugString());
    REQUIRE_FALSE(frame->has_error());
    if (frame->has_send_ack()) ++acked;
  }

  const Seen b = ReadMessages(batched, kMessages);
  const Seen s = ReadMessages(single, kMessages);
  std::vector<std::uint64_t> expected(kMessages);
  for (std::size_t i = 0; i < kMessages; ++i) expected[i] = i + 1;
  CHECK(b.seqs == expected);
  CHECK(s.seqs == expected);
  CHECK(b.nested == 0);
  // Batched: far fewer reads than messages, and the batches carried most of them.
  INFO("batched stream: " << b.reads << " reads, " << b.batches << " batches carrying "
                          << b.in_batches << " frames");
  CHECK(b.batches > 0);
  CHECK(b.reads < kMessages / 2);
  // Not asked for: never a batch, one read per message.
  CHECK(s.batches == 0);
  CHECK(s.reads == kMessages);
}

TEST_CASE("the client library asks for batches and hands the frames over one by one",
          "[e2e][batch]") {
  TestDatabase db;
  DaemonProcess daemon(db, {"limits.send_rate_per_s=100000", "limits.send_burst=100000"});
  auto alice = RegisterUser(daemon.address(), "alice");
  REQUIRE(alice->CreateChannel(kChannel).ok());
  auto stream = alice->Connect();
  testing::SubscribeAndWait(*stream, kChannel);
  constexpr std::uint64_t kMessages = 300;
  for (std::uint64_t i = 0; i < kMessages; ++i) REQUIRE_FALSE(stream->Send(kChannel, "x").empty());
  std::this_thread::sleep_for(300ms);  // let the acks and messages pile up server-side
  std::uint64_t next_seq = 1, acks = 0;
  while (next_seq <= kMessages || acks < kMessages) {
    auto frame = stream->Next(15s);
    REQUIRE(frame.has_value());
    INFO(frame->ShortDebugString());
    REQUIRE_FALSE(frame->has_batch());  // unpacked by the library
    REQUIRE_FALSE(frame->has_error());
    if (frame->has_send_ack()) ++acks;
    if (frame->has_message()) CHECK(frame->message().seq() == next_seq++);
  }
}

v1::ClientFrame SendFrame(const std::string& id, std::string body) {
  v1::ClientFrame frame;
  frame.mutable_send()->set_channel(kChannel);
  frame.mutable_send()->set_client_msg_id(id);
  frame.mutable_send()->set_body(std::move(body));
  return frame;
}

// What came back for a ClientFrameBatch, by kind.
struct Answers {
  std::vector<v1::SendAck> acks;
  std::vector<v1::Error> errors;
  std::vector<std::uint64_t> seqs;  // delivered messages of kChannel
  std::vector<std::uint64_t> pongs;
  std::size_t subscribed = 0;
  std::size_t total() const {
    return acks.size() + errors.size() + seqs.size() + pongs.size() + subscribed;
  }
};

Answers ReadAnswers(WireStream& wire, std::size_t want) {
  Answers answers;
  auto take = [&](const v1::ServerFrame& f) {
    if (f.has_send_ack()) answers.acks.push_back(f.send_ack());
    if (f.has_error()) answers.errors.push_back(f.error());
    if (f.has_message() && f.message().channel() == kChannel) {
      answers.seqs.push_back(f.message().seq());
    }
    if (f.has_pong()) answers.pongs.push_back(f.pong().nonce());
    if (f.has_subscribed()) ++answers.subscribed;
  };
  v1::ServerFrame frame;
  while (answers.total() < want && wire.stream->Read(&frame)) {
    if (frame.has_batch()) {
      for (const auto& inner : frame.batch().frames()) take(inner);
    } else {
      take(frame);
    }
  }
  return answers;
}

TEST_CASE("a ClientFrame batch is handled frame by frame, in order, each frame on its own",
          "[e2e][batch]") {
  TestDatabase db;
  DaemonProcess daemon(db, {"limits.send_rate_per_s=100000", "limits.send_burst=100000",
                            "limits.max_body_bytes=100"});
  auto alice = RegisterUser(daemon.address(), "alice");
  REQUIRE(alice->CreateChannel(kChannel).ok());

  // Offered only to a client that asks; taken from any.
  WireStream plain(daemon.address(), alice->access_token(), std::string());
  CHECK(plain.InitialMetadata("infrachat-capabilities").empty());
  WireStream wire(daemon.address(), alice->access_token(), std::string("batch, client_batch"));
  CHECK(wire.InitialMetadata("infrachat-capabilities") == "batch, client_batch");

  v1::ClientFrame batch;
  auto* frames = batch.mutable_batch()->mutable_frames();
  frames->Add()->mutable_subscribe()->set_channel(kChannel);
  *frames->Add() = SendFrame("a1", "first");
  *frames->Add() = SendFrame("a2", std::string(101, 'x'));  // over max_body_bytes: refused alone
  v1::ClientFrame nested;
  *nested.mutable_batch()->add_frames() = SendFrame("a3", "nested");  // never stored
  *frames->Add() = nested;
  *frames->Add() = SendFrame("a4", "second");
  *frames->Add() = SendFrame("a1", "first");  // a resend inside the same batch
  frames->Add()->mutable_ping()->set_nonce(7);
  REQUIRE(wire.stream->Write(batch));

  // subscribed, 2 errors, pong, 3 acks, 2 messages.
  const Answers got = ReadAnswers(wire, 9);
  CHECK(got.subscribed == 1);
  REQUIRE(got.errors.size() == 2);
  CHECK(got.errors[0].code() == 3);  // INVALID_ARGUMENT, in the batch's order
  CHECK(got.errors[0].client_msg_id() == "a2");
  CHECK(got.errors[1].code() == 3);
  CHECK(got.errors[1].message().find("nest") != std::string::npos);
  CHECK(got.pongs == std::vector<std::uint64_t>{7});
  REQUIRE(got.acks.size() == 3);
  CHECK(got.acks[0].client_msg_id() == "a1");
  CHECK(got.acks[0].seq() == 1);
  CHECK_FALSE(got.acks[0].duplicate());
  CHECK(got.acks[1].client_msg_id() == "a4");
  CHECK(got.acks[1].seq() == 2);
  CHECK(got.acks[2].client_msg_id() == "a1");
  CHECK(got.acks[2].seq() == 1);
  CHECK(got.acks[2].duplicate());
  CHECK(got.seqs == std::vector<std::uint64_t>{1, 2});

  // Stored once each, in the batch's order; the nested send and the refused one not at all.
  auto history = alice->GetHistory(kChannel);
  REQUIRE(history.ok());
  REQUIRE(history->messages_size() == 2);
  CHECK(history->messages(0).body() == "first");
  CHECK(history->messages(1).body() == "second");

  v1::ClientFrame empty;
  empty.mutable_batch();
  REQUIRE(wire.stream->Write(empty));
  const Answers refused = ReadAnswers(wire, 1);
  REQUIRE(refused.errors.size() == 1);
  CHECK(refused.errors[0].code() == 3);
  CHECK(refused.errors[0].message().find("empty batch") != std::string::npos);
}

TEST_CASE("the sends of a ClientFrame batch wait for the send rate like single sends",
          "[e2e][batch]") {
  TestDatabase db;
  DaemonProcess daemon(db, {"limits.send_rate_per_s=10", "limits.send_burst=1"});
  auto alice = RegisterUser(daemon.address(), "alice");
  REQUIRE(alice->CreateChannel(kChannel).ok());
  WireStream wire(daemon.address(), alice->access_token(), std::string("client_batch"));
  v1::ClientFrame batch;
  for (int i = 0; i < 6; ++i) {
    *batch.mutable_batch()->add_frames() = SendFrame("r" + std::to_string(i), "paced");
  }
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(wire.stream->Write(batch));
  const Answers got = ReadAnswers(wire, 6);
  const auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(got.acks.size() == 6);
  for (int i = 0; i < 6; ++i) CHECK(got.acks[static_cast<std::size_t>(i)].seq() == i + 1U);
  // One token at once, then one every 100 ms: the sixth send waits at least 0.5 s.
  CHECK(took >= 450ms);
}

TEST_CASE(
    "bytes that are not a ClientFrame are answered with INVALID_ARGUMENT and the stream goes on",
    "[e2e][batch]") {
  TestDatabase db;
  DaemonProcess daemon(db);
  auto alice = RegisterUser(daemon.address(), "alice");
  v1::ClientFrame ping;
  ping.mutable_ping()->set_nonce(42);
  // Field 1 (subscribe) claims 100 bytes of a 3-byte message: not a protobuf message at all.
  const std::string garbage("\x0a\x64\x01\x02\x03", 5);
  const auto answers =
      CallStream(daemon.address(), "/infrachat.v1.ChatService/Connect",
                 {garbage, ping.SerializeAsString()}, /*pipelined=*/false, testing::kWireDeadline,
                 {{"authorization", "Bearer " + alice->access_token()}});
  REQUIRE(answers.size() == 2);
  v1::ServerFrame error, pong;
  REQUIRE(error.ParseFromString(answers[0]));
  INFO(error.ShortDebugString());
  REQUIRE(error.has_error());
  CHECK(error.error().code() == 3);  // INVALID_ARGUMENT
  CHECK(error.error().message().find("malformed") != std::string::npos);
  REQUIRE(pong.ParseFromString(answers[1]));
  CHECK(pong.pong().nonce() == 42);
}

}  // namespace
}  // namespace infrachat
