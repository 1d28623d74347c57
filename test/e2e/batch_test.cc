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
      : stub(v1::ChatService::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {
    context.AddMetadata("authorization", "Bearer " + access_token);
    if (ask_for_batches) context.AddMetadata("infrachat-capabilities", "batch");
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
