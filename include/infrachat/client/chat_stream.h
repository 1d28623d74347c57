// ChatStream: one ChatService.Connect bidirectional stream.
//
// Threading model: the stream uses gRPC's synchronous API (ClientReaderWriter) with one dedicated
// reader thread per stream. The reader thread starts the call (so Client::Connect never blocks),
// reads ServerFrames until the stream ends, then collects the final status with Finish().
// Incoming frames are delivered either
//   - to ChatStreamOptions::on_frame, called on the reader thread (do not block in it for long:
//     the stream is not read meanwhile), or, when no callback is set,
//   - to an unbounded thread-safe queue drained with Next(timeout).
// The end of the stream is reported once through on_end (reader thread) and by final_status().
//
// Writes (Subscribe, Send, ...) may be called from any thread; they are serialized by a mutex
// and block until gRPC has taken the frame (flow control) or the stream has ended. A write before
// the call has started waits for the start. They return false when the stream has ended or was
// cancelled; the reason is final_status() once the reader thread has seen the end.
//
// Lifetime: destroying a ChatStream cancels the call if it is still open and joins the reader
// thread; no callback runs after the destructor returns. Never destroy a stream from inside its
// own callbacks. The stream keeps its own reference to the gRPC channel, so it may outlive the
// Client that opened it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "infrachat/client/client.h"

namespace grpc {
class ClientContext;
template <class W, class R>
class ClientReaderWriter;
}  // namespace grpc

namespace infrachat::client {

// The per-stream limits a server announces in the initial metadata (response headers) of every
// Connect stream, all decimal strings:
//   infrachat-send-rate-per-s (may be fractional), infrachat-send-burst,
//   infrachat-max-inflight-sends, infrachat-max-body-bytes, infrachat-max-frame-bytes.
// An older server announces none (`announced` false): the defaults below apply (no pacing, one
// send in flight at a time so that a refused send can never be overtaken; see session_core.h).
struct StreamLimits {
  static constexpr std::uint32_t kDefaultMaxBodyBytes = 8192;

  bool announced = false;      // at least one of the headers was present and valid
  double send_rate_per_s = 0;  // 0: not announced
  std::uint32_t send_burst = 0;
  std::uint32_t max_inflight_sends = 0;  // 0: not announced
  std::uint32_t max_body_bytes = kDefaultMaxBodyBytes;
  std::uint32_t max_frame_bytes = 0;  // largest ClientFrame accepted; 0: not announced

  bool operator==(const StreamLimits& o) const {
    return announced == o.announced && send_rate_per_s == o.send_rate_per_s &&
           send_burst == o.send_burst && max_inflight_sends == o.max_inflight_sends &&
           max_body_bytes == o.max_body_bytes && max_frame_bytes == o.max_frame_bytes;
  }
};

// Parses the limits out of response headers (keys lower-case). Missing, malformed, negative or
// zero values keep their defaults. Pure.
StreamLimits ParseStreamLimits(const std::map<std::string, std::string>& headers);

struct ChatStreamOptions {
  // Called on the reader thread for each frame. When empty, frames go to the Next() queue.
  // Batches are unpacked first: on_frame and Next() see the frames one by one, in order.
  std::function<void(v1::ServerFrame&&)> on_frame;
  // Ask for FrameBatch (capability `batch`): a busy stream then costs one read for many frames.
  // Off only to see what a client without the capability gets.
  bool accept_batches = true;
  // Called once on the reader thread with the stream's limits when the server's initial metadata
  // has arrived (before the first frame), or when the stream ended without any (defaults).
  std::function<void(const StreamLimits&)> on_limits;
  // Called once on the reader thread when the stream has ended, with its final status.
  std::function<void(const Status&)> on_end;
  // Extra request metadata of the Connect call, e.g. {"traceparent", "00-<trace>-<span>-01"}:
  // the sends of the stream then belong to that trace (README "Tracing"). Keys in lower case.
  std::vector<std::pair<std::string, std::string>> metadata;
};

class ChatStream {
 public:
  // Starts ChatService.Connect on `channel` with `authorization: Bearer <access_token>` (no
  // metadata when the token is empty). Prefer Client::Connect().
  ChatStream(std::shared_ptr<grpc::Channel> channel, const std::string& access_token,
             ChatStreamOptions options = {});
  ~ChatStream();

  ChatStream(const ChatStream&) = delete;
  ChatStream& operator=(const ChatStream&) = delete;

  // --- Client frames. Each returns false when the frame could not be written. ----------------
  // Absent after_seq: live messages from now on; present: every message with seq > after_seq.
  bool Subscribe(const std::string& channel, std::optional<std::uint64_t> after_seq = {});
  bool Unsubscribe(const std::string& channel);
  // Sends with a fresh client_msg_id (NewClientMsgId()) and returns it, or an empty string when
  // the frame could not be written.
  std::string Send(const std::string& channel, const std::string& body);
  // Sends with the given client_msg_id (a retry must reuse the original id).
  bool Send(const std::string& channel, const std::string& client_msg_id, const std::string& body);
  bool Ack(const std::string& channel, std::uint64_t seq, v1::AckKind kind = v1::DELIVERED);
  bool Typing(const std::string& channel);
  bool Ping(std::uint64_t nonce);
  // Any frame, as-is (tests use it for malformed or oversized frames).
  bool Write(const v1::ClientFrame& frame);
  // Half-closes the sending side (no more writes); the server then ends the stream.
  bool CloseWrites();

  // --- Incoming frames (queue mode) --------------------------------------------------------
  // The next frame, waiting at most `timeout`. std::nullopt on timeout, or at once when the
  // stream has ended and every queued frame was taken. Always nullopt in callback mode.
  std::optional<v1::ServerFrame> Next(std::chrono::milliseconds timeout);
  // The next frame whose oneof case is `kind`, waiting at most `timeout` in total. Frames of
  // other kinds that arrive before it are DROPPED (handy for tests that ignore presence, etc.).
  std::optional<v1::ServerFrame> NextOf(v1::ServerFrame::FrameCase kind,
                                        std::chrono::milliseconds timeout);
  // Frames currently queued.
  std::size_t queued() const;

  // The limits from the server's initial metadata, once it has arrived (see StreamLimits).
  std::optional<StreamLimits> limits() const;

  // --- End of the stream ---------------------------------------------------------------------
  // Cancels the call (the final status becomes CANCELLED unless it had already ended).
  void Cancel();
  // True once the reader thread has seen the end and collected the status.
  bool ended() const;
  // The final status once ended().
  std::optional<Status> final_status() const;
  // Waits at most `timeout` for the end; returns the final status if it ended.
  std::optional<Status> WaitForEnd(std::chrono::milliseconds timeout);

 private:
  void ReaderMain(std::shared_ptr<grpc::Channel> channel);
  // Hands one (unbatched) frame to on_frame or the Next() queue.
  void Deliver(v1::ServerFrame&& frame);

  ChatStreamOptions options_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ClientFrame, v1::ServerFrame>> stream_;

  // Write side: guards stream_ creation, writes, started_/closed_.
  std::mutex write_mu_;
  std::condition_variable write_cv_;
  bool started_ = false;
  bool write_closed_ = false;  // the stream ended, was cancelled or half-closed

  // Read side: queue and final status.
  mutable std::mutex read_mu_;
  std::condition_variable read_cv_;
  std::deque<v1::ServerFrame> queue_;
  std::optional<Status> final_status_;
  std::optional<StreamLimits> limits_;

  std::thread reader_;
};

}  // namespace infrachat::client
