// EncodedFrame: a ServerFrame serialized once and shared by every stream it is written to.
#pragma once

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>
#include <grpcpp/support/string_ref.h>

#include <cstddef>
#include <deque>
#include <map>
#include <string>
#include <string_view>

#include "infrachat/v1/infrachat.pb.h"

namespace infrachat {

// A committed message goes to every subscriber of its channel as the same bytes, so it is
// encoded once (by fanout) and every stream's write references that one buffer: copying an
// EncodedFrame copies a reference-counted gRPC slice, never the bytes.
//
// Immutable once made; copies may be used and destroyed on any thread (the slice's reference
// count is atomic).
class EncodedFrame {
 public:
  EncodedFrame() = default;
  explicit EncodedFrame(const v1::ServerFrame& frame);

  const grpc::Slice& bytes() const { return bytes_; }
  std::size_t size() const { return bytes_.size(); }
  // Data frames (message, typing, receipt, presence) count against a stream's bounded queue
  // and may be refused when it is full; the others (acks, errors, (un)subscribed, pongs) are
  // control frames that a stream keeps a reserve for.
  bool is_data() const { return data_; }
  // Parses the bytes back (tests and diagnostics; the write path never decodes).
  v1::ServerFrame Decode() const;

 private:
  grpc::Slice bytes_;
  bool data_ = false;
};

// The most frames and bytes one FrameBatch carries (a frame bigger than that goes alone). Small
// enough for any client's default receive limit (4 MiB) and to keep one write short.
inline constexpr std::size_t kMaxBatchFrames = 256;
inline constexpr std::size_t kMaxBatchBytes = 256 * 1024;

// Request and initial metadata of ChatService.Connect: a comma-separated list of capabilities.
// "batch": the client accepts ServerFrame.batch (the server answers with the same item when it
// will send them). "client_batch": the client would send ClientFrame.batch (the server answers
// with the same item when it takes them).
inline constexpr const char* kHeaderCapabilities = "infrachat-capabilities";
inline constexpr const char* kCapabilityBatch = "batch";
inline constexpr const char* kCapabilityClientBatch = "client_batch";

// Whether a call's metadata lists `capability` under kHeaderCapabilities (items trimmed of
// spaces; the key may repeat).
bool HasCapability(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                   std::string_view capability);
// The answer's value: the items that are true, comma-separated ("batch, client_batch").
std::string CapabilityList(bool batch, bool client_batch);
// HasCapability(metadata, kCapabilityBatch).
bool AcceptsBatches(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata);

// How many frames from the front of `queue` (not empty) the next write carries: 1 without
// batches, else as many as fit kMaxBatchFrames and kMaxBatchBytes (at least 1).
std::size_t FramesForNextWrite(const std::deque<EncodedFrame>& queue, bool batches);

// The one message written for frames[first, first + count): the frame's own bytes when count
// is 1, otherwise a ServerFrame whose FrameBatch holds them in order (the frames' bytes are
// copied once into the batch; nothing is re-serialized). Requires count >= 1.
grpc::ByteBuffer EncodeWrite(const std::deque<EncodedFrame>& frames, std::size_t first,
                             std::size_t count);

// Bytes a frame of `frame_size` bytes takes inside a batch beyond its own (tag and length).
std::size_t BatchElementOverhead(std::size_t frame_size);

}  // namespace infrachat
