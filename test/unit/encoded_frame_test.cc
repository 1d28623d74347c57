// EncodedFrame and EncodeWrite: a frame encoded once is written as those exact bytes, and a batch
// of frames is a ServerFrame{batch} that any protobuf parser reads back as the same frames.
#include "infrachat/core/encoded_frame.h"

#include <catch2/catch.hpp>
#include <deque>
#include <string>

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

}  // namespace
}  // namespace infrachat
