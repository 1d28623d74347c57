#include "infrachat/core/encoded_frame.h"

#include <google/protobuf/io/coded_stream.h>
#include <grpc/slice.h>

#include <cstring>
#include <string_view>

namespace infrachat {

namespace {

using google::protobuf::io::CodedOutputStream;

// Wire tags (field number << 3 | length-delimited) of ServerFrame.batch and FrameBatch.frames.
constexpr std::uint32_t kBatchTag = (v1::ServerFrame::kBatchFieldNumber << 3) | 2;
constexpr std::uint32_t kFramesTag = (v1::FrameBatch::kFramesFieldNumber << 3) | 2;

bool IsData(const v1::ServerFrame& frame) {
  return frame.has_message() || frame.has_typing() || frame.has_receipt() || frame.has_presence();
}

std::uint8_t* WriteLengthPrefix(std::uint32_t tag, std::size_t length, std::uint8_t* out) {
  out = CodedOutputStream::WriteVarint32ToArray(tag, out);
  return CodedOutputStream::WriteVarint64ToArray(length, out);
}

}  // namespace

EncodedFrame::EncodedFrame(const v1::ServerFrame& frame) : data_(IsData(frame)) {
  const std::size_t size = frame.ByteSizeLong();
  grpc_slice slice = grpc_slice_malloc(size);
  frame.SerializeWithCachedSizesToArray(GRPC_SLICE_START_PTR(slice));
  bytes_ = grpc::Slice(slice, grpc::Slice::STEAL_REF);
}

v1::ServerFrame EncodedFrame::Decode() const {
  v1::ServerFrame frame;
  frame.ParseFromArray(bytes_.begin(), static_cast<int>(bytes_.size()));
  return frame;
}

std::size_t BatchElementOverhead(std::size_t frame_size) {
  return CodedOutputStream::VarintSize32(kFramesTag) + CodedOutputStream::VarintSize64(frame_size);
}

bool AcceptsBatches(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  return HasCapability(metadata, kCapabilityBatch);
}

std::string CapabilityList(bool batch, bool client_batch) {
  std::string list = batch ? kCapabilityBatch : "";
  if (client_batch)
    list += list.empty() ? kCapabilityClientBatch : std::string(", ") + kCapabilityClientBatch;
  return list;
}

bool HasCapability(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                   std::string_view capability) {
  auto [begin, end] = metadata.equal_range(kHeaderCapabilities);
  for (auto it = begin; it != end; ++it) {
    std::string_view list(it->second.data(), it->second.size());
    while (!list.empty()) {
      const std::size_t comma = list.find(',');
      std::string_view item = list.substr(0, comma);
      while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
      while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
      if (item == capability) return true;
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
  return false;
}

std::size_t FramesForNextWrite(const std::deque<EncodedFrame>& queue, bool batches) {
  std::size_t count = 1;
  std::size_t bytes = queue.front().size();
  while (batches && count < queue.size() && count < kMaxBatchFrames) {
    const std::size_t more = queue[count].size() + BatchElementOverhead(queue[count].size());
    if (bytes + more > kMaxBatchBytes) break;
    bytes += more;
    ++count;
  }
  return count;
}

grpc::ByteBuffer EncodeWrite(const std::deque<EncodedFrame>& frames, std::size_t first,
                             std::size_t count) {
  if (count == 1) return grpc::ByteBuffer(&frames[first].bytes(), 1);
  // ServerFrame{batch = FrameBatch{frames = [f1, f2, ...]}}: each element is the frame's own
  // encoding behind a tag and a length, so the shared bytes are copied, not re-encoded.
  std::size_t inner = 0;
  for (std::size_t i = first; i < first + count; ++i) {
    inner += BatchElementOverhead(frames[i].size()) + frames[i].size();
  }
  const std::size_t total =
      CodedOutputStream::VarintSize32(kBatchTag) + CodedOutputStream::VarintSize64(inner) + inner;
  grpc_slice slice = grpc_slice_malloc(total);
  std::uint8_t* out = WriteLengthPrefix(kBatchTag, inner, GRPC_SLICE_START_PTR(slice));
  for (std::size_t i = first; i < first + count; ++i) {
    const grpc::Slice& bytes = frames[i].bytes();
    out = WriteLengthPrefix(kFramesTag, bytes.size(), out);
    std::memcpy(out, bytes.begin(), bytes.size());
    out += bytes.size();
  }
  grpc::Slice owned(slice, grpc::Slice::STEAL_REF);
  return grpc::ByteBuffer(&owned, 1);
}

}  // namespace infrachat
