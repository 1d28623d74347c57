// Live streams for infrachat-bench: ChatService.Connect on gRPC's callback API, so that thousands
// of streams cost no thread each (the client library's ChatStream keeps one reader thread per
// stream, which does not scale to 10,000 streams on a 2-core machine that also runs the server).
//
// A BenchStream reads frames in a loop and hands each one to the scenario's StreamHandler on one of
// gRPC's callback threads; writes go through a per-stream FIFO with one write in flight. Handlers
// only count and record: they must not block, because the stream is not read meanwhile. When the
// server takes client batches (it answered `client_batch`), the frames that pile up while a write
// is in flight leave as one ClientFrame.batch, as infrachatd's own writes do.
//
// A StreamGroup owns the streams of one scenario and the gRPC channels under them, spreading the
// streams over channels `streams_per_connection` at a time; every channel has its own subchannel
// pool, so each really opens its own TCP connection, as separate clients would.
//
// Thread-safety: BenchStream::Write/Subscribe/Send/Cancel may be called from any thread, including
// from handler callbacks of any stream. StreamGroup's methods are for the thread that owns the
// group (Add/Start before or while streams run; Wait/Cancel from the same thread).
//
// Lifetime: OnDone is the last callback of a stream; the group counts them and its destructor
// cancels every started stream and waits for all of them before destroying any, so no callback can
// run on a destroyed stream or handler. The handler must outlive the group.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "infrachat/v1/infrachat.grpc.pb.h"

namespace infrachat::bench {

namespace v1 = ::infrachat::v1;

class BenchStream;
class StreamGroup;

// What a scenario does with its streams. Called on gRPC's callback threads; calls for one stream
// never overlap (one read in flight), calls for different streams run concurrently.
class StreamHandler {
 public:
  virtual ~StreamHandler() = default;
  // One server frame. The handler may move from it; the buffer is reused for the next read.
  virtual void OnFrame(BenchStream& stream, v1::ServerFrame& frame) = 0;
  // The stream ended with `status` (its last callback). stream.cancelled() tells whether the
  // benchmark asked for it.
  virtual void OnEnd(BenchStream& stream, const grpc::Status& status) {}
};

class BenchStream final : public grpc::ClientBidiReactor<v1::ClientFrame, v1::ServerFrame> {
 public:
  BenchStream(StreamGroup* group, std::size_t index, v1::ChatService::Stub* stub,
              const std::string& access_token);

  // The position of this stream in its group (scenarios index their per-stream state with it).
  std::size_t index() const { return index_; }

  // Queues `frame`; written after the frames queued before it. Before Start() frames wait for
  // it. False once the stream has ended (the frame is dropped).
  bool Write(v1::ClientFrame frame);
  bool Subscribe(const std::string& channel, std::optional<std::uint64_t> after_seq = {});
  bool Send(const std::string& channel, std::string client_msg_id, std::string body);

  // Asks gRPC to cancel the call; OnEnd follows. Only meaningful once started.
  void Cancel();
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }
  // Whether OnDone has run; the final status is then status().
  bool ended() const { return ended_.load(std::memory_order_acquire); }
  const grpc::Status& status() const { return status_; }
  // When Start() began the call (for connect latency).
  std::chrono::steady_clock::time_point started_at() const { return started_at_; }
  // Frames queued or being written.
  std::size_t queued() const;

 private:
  friend class StreamGroup;
  void Start();

  void OnReadInitialMetadataDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

  // Moves the next write's frames from out_ (not empty) into write_: the front frame alone, or
  // a batch of what is waiting once the server takes batches. Requires mu_.
  const v1::ClientFrame* NextWriteLocked();

  StreamGroup* const group_;
  const std::size_t index_;
  v1::ChatService::Stub* const stub_;
  grpc::ClientContext context_;
  v1::ServerFrame in_;  // the one read in flight
  std::chrono::steady_clock::time_point started_at_{};

  // Write side. gRPC may run a reaction inline from StartWrite/RemoveHold when the call has
  // already failed, so those are always called with mu_ released.
  mutable std::mutex mu_;
  std::deque<v1::ClientFrame> out_;  // waiting for the next write
  v1::ClientFrame write_;            // the write in flight while writing_
  std::size_t write_frames_ = 0;     // frames in write_
  bool started_ = false;
  bool writing_ = false;
  bool closed_ = false;         // reads ended or a write failed: no more writes
  bool hold_released_ = false;  // the hold that keeps OnDone back while we may still write

  // Set once the server's initial metadata said `client_batch`; batch_bytes_ before it.
  std::atomic<bool> server_takes_batches_{false};
  std::size_t batch_bytes_ = 0;  // what one batch may carry: under the server's frame limit

  std::atomic<bool> cancelled_{false};
  std::atomic<bool> ended_{false};
  grpc::Status status_;  // written before ended_ is set
};

class StreamGroup {
 public:
  // `target` is host:port; streams are spread over channels `streams_per_connection` at a time.
  // `accept_batches`: every stream asks for FrameBatch (handlers see the frames one by one) and
  // offers ClientFrame.batch (used once the server says it takes them).
  StreamGroup(std::string target, std::size_t streams_per_connection, StreamHandler* handler,
              bool accept_batches = true);
  // Cancels every started stream and waits for all of them to end.
  ~StreamGroup();

  StreamGroup(const StreamGroup&) = delete;
  StreamGroup& operator=(const StreamGroup&) = delete;

  // A new stream (not started) carrying `authorization: Bearer <access_token>` unless empty.
  BenchStream& Add(const std::string& access_token);
  // Starts the call of stream `index` (once).
  void Start(std::size_t index);
  void StartAll();

  std::size_t size() const { return streams_.size(); }
  BenchStream& at(std::size_t index) { return *streams_[index]; }
  std::size_t connections() const { return channels_.size(); }
  // Started streams whose OnDone has run.
  std::size_t ended() const;
  StreamHandler* handler() const { return handler_; }
  bool accept_batches() const { return accept_batches_; }

  void CancelAll();
  // Waits until every started stream has ended; false on timeout.
  bool WaitAllEnded(std::chrono::steady_clock::duration timeout);
  // CancelAll(), then WaitAllEnded(timeout).
  bool CancelAndWait(std::chrono::steady_clock::duration timeout);

 private:
  friend class BenchStream;
  void StreamEnded();

  const std::string target_;
  const std::size_t per_connection_;
  StreamHandler* const handler_;
  const bool accept_batches_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<v1::ChatService::Stub>> stubs_;
  std::vector<std::unique_ptr<BenchStream>> streams_;
  std::size_t started_ = 0;

  mutable std::mutex mu_;
  std::condition_variable ended_cv_;
  std::size_t ended_ = 0;
};

}  // namespace infrachat::bench
