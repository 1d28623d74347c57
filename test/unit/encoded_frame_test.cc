// EncodedFrame and EncodeWrite: a frame encoded once is written as those exact bytes, and a batch
// of frames is a ServerFrame{batch} that any protobuf parser reads back as the same frames.
#include "infrachat/core/encoded_frame.h"

#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace infrachat {
namespace {

std::string BytesOf(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  REQUIRE(buffer.Dump(&slices).ok());
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

v1::ServerFrame Message(std::uint64_t seq, std::size_t body_bytes) {
  v1::ServerFrame frame;
  auto* m = frame.mutable_message();
  m->set_channel("general");
  m->set_seq(seq);
  m->set_sender("alice");
  m->set_body(std::string(body_bytes, static_cast<char>('a' + seq % 26)));
  m->set_client_msg_id("id-" + std::to_string(seq));
  return frame;
}

v1::ServerFrame Ack(std::uint64_t seq) {
  v1::ServerFrame frame;
  frame.mutable_send_ack()->set_channel("general");
  frame.mutable_send_ack()->set_seq(seq);
  return frame;
}

TEST_CASE("an encoded frame holds the frame's own encoding and knows data from control",
          "[unit][frames]") {
  const v1::ServerFrame message = Message(7, 100);
  const EncodedFrame encoded(message);
  CHECK(encoded.size() == message.ByteSizeLong());
  CHECK(encoded.Decode().SerializeAsString() == message.SerializeAsString());
  CHECK(encoded.is_data());
  CHECK_FALSE(EncodedFrame(Ack(1)).is_data());
  v1::ServerFrame typing;
  typing.mutable_typing()->set_channel("general");
  CHECK(EncodedFrame(typing).is_data());
  v1::ServerFrame subscribed;
  subscribed.mutable_subscribed()->set_channel("general");
  CHECK_FALSE(EncodedFrame(subscribed).is_data());
}

TEST_CASE("copies of an encoded frame share its bytes", "[unit][frames]") {
  const EncodedFrame encoded(Message(1, 500));
  const EncodedFrame copy = encoded;  // NOLINT(performance-unnecessary-copy-initialization)
  CHECK(copy.bytes().begin() == encoded.bytes().begin());
}

TEST_CASE("one frame is written as itself, several as one FrameBatch in order", "[unit][frames]") {
  std::deque<EncodedFrame> queue;
  std::vector<v1::ServerFrame> originals;
  // Sizes on both sides of the one-byte varint length (127) and a big one (two-byte length).
  for (std::size_t i = 0; i < 6; ++i) {
    originals.push_back(i % 3 == 2 ? Ack(i) : Message(i, i * 60));
    queue.emplace_back(originals.back());
  }

  SECTION("a single frame") {
    const std::string bytes = BytesOf(EncodeWrite(queue, 2, 1));
    CHECK(bytes == originals[2].SerializeAsString());
  }
  SECTION("a batch of the frames from the second on") {
    const std::string bytes = BytesOf(EncodeWrite(queue, 1, 5));
    v1::ServerFrame parsed;
    REQUIRE(parsed.ParseFromString(bytes));
    REQUIRE(parsed.has_batch());
    REQUIRE(parsed.batch().frames_size() == 5);
    for (int i = 0; i < 5; ++i) {
      INFO("frame " << i);
      CHECK(parsed.batch().frames(i).SerializeAsString() == originals[i + 1].SerializeAsString());
    }
    // The same bytes protobuf itself would write for that batch.
    v1::ServerFrame expected;
    for (std::size_t i = 1; i < 6; ++i) *expected.mutable_batch()->add_frames() = originals[i];
    CHECK(bytes == expected.SerializeAsString());
  }
  SECTION("the per-frame overhead is what the batch adds") {
    std::size_t inner = 0;
    for (std::size_t i = 0; i < 6; ++i)
      inner += queue[i].size() + BatchElementOverhead(queue[i].size());
    v1::ServerFrame expected;
    for (const auto& f : originals) *expected.mutable_batch()->add_frames() = f;
    CHECK(expected.batch().ByteSizeLong() == inner);
  }
}

TEST_CASE("the batch capability is one item of a comma-separated list", "[unit][frames]") {
  const auto accepts = [](std::vector<std::pair<std::string, std::string>> headers) {
    std::vector<std::pair<std::string, std::string>> kept = std::move(headers);
    std::multimap<grpc::string_ref, grpc::string_ref> metadata;
    for (const auto& [k, v] : kept) metadata.emplace(k, v);
    return AcceptsBatches(metadata);
  };
  CHECK(accepts({{"infrachat-capabilities", "batch"}}));
  CHECK(accepts({{"infrachat-capabilities", "later, batch "}}));
  CHECK(accepts({{"infrachat-capabilities", "later"}, {"infrachat-capabilities", "batch"}}));
  CHECK_FALSE(accepts({{"infrachat-capabilities", "nobatch,batches"}}));
  CHECK_FALSE(accepts({{"other", "batch"}}));
  CHECK_FALSE(accepts({}));
  CHECK_FALSE(accepts({{"infrachat-capabilities", "client_batch"}}));
}

TEST_CASE("client batches are a capability of their own, listed with batch in one value",
          "[unit][frames]") {
  std::multimap<grpc::string_ref, grpc::string_ref> metadata;
  const std::string key = "infrachat-capabilities", both = "batch, client_batch";
  metadata.emplace(key, both);
  CHECK(HasCapability(metadata, kCapabilityClientBatch));
  CHECK(HasCapability(metadata, kCapabilityBatch));
  CHECK_FALSE(HasCapability(metadata, "client"));
  CHECK(CapabilityList(true, true) == both);
  CHECK(CapabilityList(false, true) == "client_batch");
  CHECK(CapabilityList(true, false) == "batch");
  CHECK(CapabilityList(false, false).empty());
}

TEST_CASE("a write carries one frame, or as many as the batch caps allow", "[unit][frames]") {
  std::deque<EncodedFrame> queue;
  for (std::uint64_t i = 0; i < kMaxBatchFrames + 10; ++i) queue.emplace_back(Message(i, 10));
  CHECK(FramesForNextWrite(queue, /*batches=*/false) == 1);
  CHECK(FramesForNextWrite(queue, /*batches=*/true) == kMaxBatchFrames);
  std::deque<EncodedFrame> big;
  for (std::uint64_t i = 0; i < 10; ++i) big.emplace_back(Message(i, 100 * 1024));
  CHECK(FramesForNextWrite(big, /*batches=*/true) == 2);  // 3 x 100 KiB > 256 KiB
  std::deque<EncodedFrame> huge;
  huge.emplace_back(Message(1, 300 * 1024));
  huge.emplace_back(Message(2, 10));
  CHECK(FramesForNextWrite(huge, /*batches=*/true) == 1);  // too big for company, never for itself
}

}  // namespace
}  // namespace infrachat
