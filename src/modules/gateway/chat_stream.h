// ChatStream: one ChatService.Connect call (a client's live stream).
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <spdlog/logger.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "infrachat/api/auth_api.h"
#include "infrachat/api/fanout_api.h"
#include "infrachat/api/shard_api.h"
#include "infrachat/bus/event_bus.h"
#include "infrachat/core/call_context.h"
#include "infrachat/core/encoded_frame.h"
#include "infrachat/core/executor.h"
#include "infrachat/core/tracing.h"
#include "infrachat/core/write_scheduler.h"
#include "infrachat/v1/infrachat.grpc.pb.h"
#include "token_bucket.h"

namespace infrachat::gateway {

struct StreamLimits {
  std::size_t queue_frames = 1024;       // queued outgoing data frames before "slow consumer"
  std::size_t max_inflight_sends = 256;  // unacknowledged sends before reads pause
  double send_rate_per_s = 50;
  double send_burst = 100;
  std::size_t max_subscriptions = 256;
  std::size_t max_body_bytes = 8 * 1024;
  std::size_t max_streams = 10000;          // per process
  std::size_t max_frame_bytes = 64 * 1024;  // grpc.max_receive_message_bytes, told to clients
};

class StreamRegistry;

// infrachat_gateway_sends_total{result}: every Send frame's outcome, counted once: "acked",
// "duplicate" (acked with an earlier seq), or the error code's name in lower case
// ("permission_denied", "invalid_argument", "unavailable", ...). A bounded label set.
// infrachat_gateway_ack_latency_seconds: for every acked send, from its frame being read to
// its SendAck being queued for the client (rate shaping, the shard and the commit included).
class SendCounters {
 public:
  explicit SendCounters(prometheus::Registry& registry);
  void Acked(bool duplicate, std::chrono::steady_clock::duration latency) const;
  void Refused(Code code) const;

 private:
  prometheus::Counter* acked_;
  prometheus::Counter* duplicate_;
  std::vector<prometheus::Counter*> by_code_;  // index: the code's number
  prometheus::Histogram* ack_latency_;
};

// What a stream uses; everything outlives every stream (the gateway drains streams first).
struct StreamDeps {
  AuthApi* auth = nullptr;
  ShardApi* shard = nullptr;
  FanoutApi* fanout = nullptr;
  EventBus* bus = nullptr;
  Executor* executor = nullptr;      // runs the serial tasks and the send timer
  WriteScheduler* writes = nullptr;  // starts writes of idle streams (null: the caller does)
  StreamRegistry* registry = nullptr;
  const SendCounters* sends = nullptr;
  // infrachat_gateway_write_queue_frames: frames queued on a stream when a write starts (the
  // frames of that write, batched or not, and those behind it). Null: not observed.
  prometheus::Histogram* write_queue = nullptr;
  StreamLimits limits;
  std::shared_ptr<spdlog::logger> log;
};

// A gRPC callback reactor and the fanout's SessionSink for one client stream.
//
// The stream reads and writes raw bytes (the raw callback form of ChatService.Connect): it
// parses each ClientFrame itself, so a malformed one is answered with an Error frame instead of
// ending the call, and it writes frames that were encoded once for every stream they go to
// (EncodedFrame) without serializing them again.
//
// Flow control, in both directions:
// - Outgoing: frames wait in a bounded queue; one write is in flight at a time. Data frames
//   beyond `queue_frames` are refused (fanout then ends that subscription with a resume point).
//   Control frames (acks, errors, pongs, subscribed/unsubscribed) use a reserve bounded by the
//   in-flight send limit, so they are never dropped. A client with the `batch` capability gets
//   everything queued while the previous write was in flight as one FrameBatch (up to
//   kMaxBatchFrames frames and kMaxBatchBytes bytes): one write, one HTTP/2 frame and one
//   system call for many frames when the stream is busy, and single frames when it is not.
//   The limits count frames, batched or not.
//   Offer never writes to the socket itself: a frame for an idle stream schedules it on the
//   WriteScheduler, whose thread starts the write; a write that completes starts the next one
//   on gRPC's thread. So a publisher hands a message to many streams at the cost of a queue
//   push each, and frames pile up (and are batched) behind the writes in flight.
// - Incoming: at most `max_inflight_sends` sends await their ACK; beyond that the stream stops
//   reading, and HTTP/2 flow control pushes back on the client.
// - Send rate: shaped, not refused (docs/adr/0007-send-rate-shaping.md). A Send over the token
//   bucket's rate waits in `waiting_sends_` (counted in flight) until a token is due; sends leave
//   that queue in arrival order, one thread at a time (`pumping_`), so one stream's messages are
//   stored in the order they were sent, however fast they come.
// The stream's limits are sent to the client as initial metadata (kLimitHeaders) when it opens.
// Subscribes, unsubscribes, acks and typing run as serial tasks on the executor, one at a time
// per stream, so frames of one stream take effect in the order they were sent (a typing notice
// right after its Subscribe finds the subscription in place). A task's shard call is
// asynchronous (a remote shard answers on a gRPC thread): the next task starts when it is
// answered, and no executor thread waits for the network.
// Every call the stream makes carries its CallContext: the client's trace (metadata
// `traceparent` or `infrachat-trace-id`, else a new trace id), cancelled when the stream is
// done. Traces (docs/adr/0010): each Send frame decides on its own whether it is sampled
// (tracing.sample_ratio; a client's traceparent with flag 00 opts out); a sampled send gets a
// SERVER span "gateway send" from its frame read to its SendAck written, a child of the
// client's span when the client sent a traceparent, else the root of a new trace; its calls
// carry that span. Unsampled sends cost no allocation and no clock read for tracing.
//
// Lifetime: owned by shared_ptrs (itself until gRPC's OnDone, pending callbacks, the registry's
// weak refs). Thread-safety: all public methods may be called from any thread.
class ChatStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                         public SessionSink,
                         public Flushable,
                         public std::enable_shared_from_this<ChatStream> {
 public:
  // Authenticates the call and starts reading; on failure the call ends with UNAUTHENTICATED.
  static grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Open(
      grpc::CallbackServerContext* context, const StreamDeps& deps);

  bool Offer(const EncodedFrame& frame, bool reserved) override;
  std::size_t FreeSlots() const override;
  // Starts writing what is queued (the WriteScheduler's call).
  void Flush() override;

  // Ends the stream with `status` after in-flight sends are answered (token expired or revoked).
  void End(const grpc::Status& status);
  // Graceful shutdown: stop taking frames, answer in-flight sends, then end with UNAVAILABLE.
  void BeginDrain();

  const Principal& principal() const { return principal_; }

 private:
  ChatStream(const StreamDeps& deps, Principal principal, const SpanContext& client_trace,
             bool batches);

  // A send read from the client, waiting for a token; `read_at` times its ACK. `span`: its
  // "gateway send" span, recording when the send is sampled.
  struct PendingSend {
    SendCommand command;
    std::chrono::steady_clock::time_point read_at;
    Span span;
  };
  // A sampled send's span, ended once the frame at position `position` (frames_pushed_
  // numbering: its SendAck) has been written.
  struct AckSpan {
    std::uint64_t position;
    Span span;
  };

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;
  void OnCancel() override;

  // Queues a control frame of this stream's own (ack, error, pong, unsubscribed). With a
  // recording `written`, that span ends when the frame has been written (or with an error when
  // the stream ends first).
  void Reply(const v1::ServerFrame& frame, Span* written = nullptr);
  bool Queue(const EncodedFrame& frame, bool reserved, Span* written);
  // The span of a send just read: sampled or not (tracing.h), in the client's trace when it
  // sent one, else in a trace of its own (sampled) or the stream's (not sampled).
  Span StartSendSpan(const v1::Send& send);
  // Ends, with an error, the ack spans whose frames will never be written. Requires mu_.
  void FailAckSpansLocked(std::uint64_t after_position);
  // Drops the sends still waiting for a token, unanswered (the client resends them). Requires
  // mu_.
  void DropWaitingSendsLocked();
  void Handle(v1::ClientFrame& frame);
  // Each frame of a ClientFrameBatch, in order, as if it had come alone (nested batches and an
  // empty batch are answered INVALID_ARGUMENT). Counts the inner frames in frames_in_.
  void HandleBatch(v1::ClientFrameBatch& batch);
  void HandleSubscribe(const v1::Subscribe& subscribe);
  void HandleSend(v1::Send& send);
  void HandleAck(const v1::Ack& ack);
  void HandleTyping(const v1::Typing& typing);
  // Hands waiting sends to the shard in order while tokens last, then arms the timer.
  void PumpSends();
  void OnSendTimer();
  void Dispatch(PendingSend send);
  void OnSendDone(const std::string& channel, const std::string& client_msg_id,
                  std::chrono::steady_clock::time_point read_at, Span span,
                  Result<SendOutcome> outcome);

  // A serial task calls `done` exactly once, when its effect is in place (inline or later).
  using SerialTask = std::function<void(std::function<void()> done)>;
  void RunSerial(SerialTask task);
  void RunSerialTasks();
  // Continues the serial tasks on the executor (after an asynchronous task completed).
  void ResumeSerial();
  // Requires mu_.
  void ContinueReadingLocked();
  void MaybeFinishLocked();
  void StartWriteLocked();
  void ArmSendTimerLocked();
  // The first refused frame of a stream is logged ("frame refused"); the rest are counted in
  // its "stream closed" line, so a client cannot flood the log. `size` and `limit`: of the
  // frame (malformed) or of the body (body_too_large, invalid_body), in bytes. A frame over
  // grpc.max_receive_message_bytes never gets here: gRPC ends the stream with
  // RESOURCE_EXHAUSTED before the reactor sees it (its "stream closed" says "cancelled").
  void NoteRefusedFrame(std::string_view reason, std::size_t size, std::size_t limit);
  // Why the stream ended, for its "stream closed" line. Requires mu_.
  std::string_view CloseReasonLocked() const;

  const StreamDeps deps_;
  const Principal principal_;
  // No deadline of its own: each hop bounds its calls. Its trace is the client's (with the
  // client's span as the parent, never sampled: each send decides), else one of its own.
  const CallContext call_;
  const SpanContext client_trace_;    // what the client sent on Connect (empty: nothing valid)
  std::shared_ptr<ChatStream> self_;  // keeps the reactor alive until OnDone

  const bool batches_;     // the client accepts FrameBatch
  grpc::ByteBuffer in_;    // the one read in flight
  v1::ClientFrame frame_;  // in_, parsed

  mutable std::mutex mu_;
  // Frames not yet written completely; the first `write_frames_` are in the write in flight.
  std::deque<EncodedFrame> out_;
  std::size_t data_frames_queued_ = 0;
  grpc::ByteBuffer write_buf_;  // what the write in flight sends
  std::size_t write_frames_ = 0;
  std::uint64_t frames_pushed_ = 0;   // frames ever queued in out_, minus those taken back
  std::uint64_t frames_written_ = 0;  // frames ever removed from out_'s front
  std::deque<AckSpan> ack_spans_;     // in position order
  std::size_t write_data_frames_ = 0;
  bool writing_ = false;
  bool write_scheduled_ = false;   // on the WriteScheduler, not flushed yet
  bool urgent_scheduled_ = false;  // ... in its urgent queue (a control frame waits)
  bool write_failed_ = false;
  bool reading_ = false;
  bool handling_ = false;  // OnReadDone is handling in_ (no new read, no Finish meanwhile)
  bool read_done_ = false;
  bool draining_ = false;
  std::optional<grpc::Status> end_status_;
  bool finished_ = false;
  bool done_ = false;
  std::size_t inflight_sends_ = 0;
  std::deque<SerialTask> serial_;
  bool serial_running_ = false;
  TokenBucket send_bucket_;
  std::deque<PendingSend> waiting_sends_;  // valid sends waiting for a token, in arrival order
  bool pumping_ = false;                   // a thread is handing waiting_sends_ to the shard
  bool send_timer_armed_ = false;          // OnSendTimer is scheduled for the next token

  // For the stream's log lines (never per frame at info: counted here, logged at the end).
  std::string peer_;                                 // the client's address, from gRPC
  std::chrono::steady_clock::time_point opened_at_;  // set when the stream is accepted
  bool opened_ = false;  // accepted (logged "stream opened"), so "stream closed" follows
  std::uint64_t frames_in_ = 0;
  std::uint64_t frames_out_ = 0;
  std::uint64_t frames_refused_ = 0;  // malformed frames and sends refused by validation
  bool rate_limited_ = false;         // a send waits for a token; cleared when the stream caught up
  std::uint64_t rate_limited_bursts_ = 0;
  bool cancelled_ = false;  // OnCancel: the client cancelled, or gRPC failed the call
};

// Initial-metadata keys of a Connect stream: its limits, as decimal strings.
inline constexpr const char* kHeaderSendRate = "infrachat-send-rate-per-s";
inline constexpr const char* kHeaderSendBurst = "infrachat-send-burst";
inline constexpr const char* kHeaderMaxInflightSends = "infrachat-max-inflight-sends";
inline constexpr const char* kHeaderMaxBodyBytes = "infrachat-max-body-bytes";
inline constexpr const char* kHeaderMaxFrameBytes = "infrachat-max-frame-bytes";

// The live streams of a gateway, for draining on shutdown and for periodic session checks.
// Thread-safe.
class StreamRegistry {
 public:
  // `active` (infrachat_gateway_streams_active) follows the number of streams; may be null.
  explicit StreamRegistry(prometheus::Gauge* active = nullptr) : active_(active) {}
  void Add(const std::shared_ptr<ChatStream>& stream);
  void Remove(const ChatStream* stream);
  std::vector<std::shared_ptr<ChatStream>> Snapshot() const;
  std::size_t size() const;
  // Waits until every stream has completed (OnDone), at most until `deadline`; true if empty.
  bool WaitUntilEmpty(std::chrono::steady_clock::time_point deadline);

 private:
  prometheus::Gauge* const active_;
  mutable std::mutex mu_;
  std::condition_variable empty_cv_;
  std::unordered_map<const ChatStream*, std::weak_ptr<ChatStream>> streams_;
};

}  // namespace infrachat::gateway
