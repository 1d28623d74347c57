#include "relay_server.h"

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "infrachat/core/encoded_frame.h"
#include "infrachat/core/write_scheduler.h"
#include "infrachat/v1/infrachat.grpc.pb.h"

namespace infrachat::bench {

namespace {

namespace v1 = ::infrachat::v1;

class RelayStream;

std::int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One channel: its seq counter and its subscribers. Both change only under `mu`, and a send
// queues its frames while holding it, so every subscriber gets the channel's messages in seq order
// and a stream removed from `subscribers` is never written to again.
struct Channel {
  std::mutex mu;
  std::uint64_t counter = 0;
  std::vector<RelayStream*> subscribers;
};

// The channels by name and the number of live streams. Channels are never removed: a benchmark
// uses a handful, and stable pointers let streams cache them.
class Hub {
 public:
  Channel* Find(const std::string& name) {
    std::lock_guard lock(mu_);
    auto& slot = channels_[name];
    if (!slot) slot = std::make_unique<Channel>();
    return slot.get();
  }

  void StreamOpened() {
    std::lock_guard lock(mu_);
    ++live_streams_;
  }
  // Called by a stream as the last thing that touches the hub.
  void StreamClosed() {
    std::lock_guard lock(mu_);
    if (--live_streams_ == 0) no_streams_.notify_all();
  }
  bool WaitNoStreams(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return no_streams_.wait_until(lock, deadline, [&] { return live_streams_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable no_streams_;
  std::unordered_map<std::string, std::unique_ptr<Channel>> channels_;
  std::size_t live_streams_ = 0;
};

// One Connect call. Owns itself (self_) from RelayService::Connect until OnDone (the last
// reaction gRPC runs), by which time it has left every channel, so no other stream holds a
// pointer to it; the WriteScheduler may hold it a little longer.
//
// Threads: reactions run on gRPC's threads. The read path (OnReadDone and what it calls) never
// runs twice at once and OnDone runs after it, so `in_`, `known_` and `subscribed_` need no lock.
// Enqueue() is called by other streams' read paths (relaying) under a channel mutex; the write
// queue and the flags are guarded by `mu_`. Lock order: Channel::mu, then RelayStream::mu_.
class RelayStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                          public Flushable,
                          public std::enable_shared_from_this<RelayStream> {
 public:
  // `writes` (shared frames): messages are encoded once for all subscribers and writes of idle
  // streams start on the scheduler's thread, as in infrachatd; null: one encoding per delivery
  // and the write starts on the relaying thread. `batches`: this stream's writes carry
  // everything queued (the client asked for it, and the relay runs with shared frames).
  static RelayStream* Open(Hub* hub, RelayCounters* counters, WriteScheduler* writes,
                           bool batches) {
    std::shared_ptr<RelayStream> stream(new RelayStream(hub, counters, writes, batches));
    stream->self_ = stream;
    stream->StartRead(&stream->in_);
    return stream.get();
  }
  ~RelayStream() override { hub_->StreamClosed(); }  // the last thing that touches the hub

  // Queues `frame` to be written. Frames for a stream that is finishing are dropped.
  //
  // The queue is unbounded on purpose: a ceiling must not drop or refuse what the real server
  // would deliver, and the benchmark client bounds what it has in flight (sends awaiting their
  // ack, subscribers reading as fast as they can), so the queue stays as short as the client's
  // window. infrachatd bounds its queues because its clients are not trusted; this is not a
  // server to expose.
  void Enqueue(const EncodedFrame& frame) {
    std::unique_lock lock(mu_);
    if (finished_ || write_failed_) return;
    out_.push_back(frame);
    if (writing_) return;
    if (writes_ == nullptr) {
      StartWriteLocked();
      return;
    }
    // As in infrachatd: acks jump the queue of streams waiting for deliveries.
    const bool urgent = !frame.is_data() && !urgent_scheduled_;
    if (!urgent && scheduled_) return;
    scheduled_ = true;
    urgent_scheduled_ = urgent_scheduled_ || urgent;
    lock.unlock();
    writes_->Schedule(shared_from_this(), urgent);
  }

  void Flush() override {
    std::lock_guard lock(mu_);
    scheduled_ = false;
    urgent_scheduled_ = false;
    if (!writing_ && !out_.empty() && !finished_ && !write_failed_) StartWriteLocked();
  }

 private:
  RelayStream(Hub* hub, RelayCounters* counters, WriteScheduler* writes, bool batches)
      : hub_(hub),
        counters_(counters),
        writes_(writes),
        shared_(writes != nullptr),
        batches_(batches) {
    hub_->StreamOpened();
    counters_->streams.fetch_add(1, std::memory_order_relaxed);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // Half-close, cancellation or an unparseable frame: no more reads. Leaving the channels
      // first means nothing new is queued, so the stream finishes once its queue is written.
      LeaveAllChannels();
      std::lock_guard lock(mu_);
      read_done_ = true;
      MaybeFinishLocked();
      return;
    }
    counters_->frames_in.fetch_add(1, std::memory_order_relaxed);
    frame_.Clear();
    // An unparseable frame is ignored, like any frame the relay does not handle.
    if (grpc::SerializationTraits<v1::ClientFrame>::Deserialize(&in_, &frame_).ok()) {
      Handle(frame_);
    }
    std::lock_guard lock(mu_);
    if (finished_) return;  // a failed write ended the stream: no operation after Finish
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    writing_ = false;
    // Only now: the written frames had to stay alive until here.
    out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(write_frames_));
    if (!ok) {
      write_failed_ = true;  // the call is cancelled or broken; nothing reaches the client
      out_.clear();
    } else if (!out_.empty()) {
      StartWriteLocked();
      return;
    }
    MaybeFinishLocked();
  }

  void OnDone() override {
    LeaveAllChannels();  // usually done already (read side ended); a no-op then
    std::shared_ptr<RelayStream> self = std::move(self_);
    // `self` may hold the last reference: the stream is destroyed when it goes out of scope.
  }

  void Handle(v1::ClientFrame& frame) {
    switch (frame.frame_case()) {
      case v1::ClientFrame::kSubscribe:
        return Subscribe(frame.subscribe().channel());
      case v1::ClientFrame::kUnsubscribe:
        return Unsubscribe(frame.unsubscribe().channel());
      case v1::ClientFrame::kSend:
        return Send(*frame.mutable_send());
      case v1::ClientFrame::kBatch:
        for (v1::ClientFrame& inner : *frame.mutable_batch()->mutable_frames()) {
          if (!inner.has_batch()) Handle(inner);
        }
        return;
      case v1::ClientFrame::kPing: {
        v1::ServerFrame pong;
        pong.mutable_pong()->set_nonce(frame.ping().nonce());
        Enqueue(EncodedFrame(pong));
        return;
      }
      default:
        return;  // acks, typing, empty frames: nothing to relay
    }
  }

  Channel* Lookup(const std::string& name) {
    auto it = known_.find(name);
    if (it != known_.end()) return it->second;
    Channel* channel = hub_->Find(name);
    known_.emplace(name, channel);
    return channel;
  }

  void Subscribe(const std::string& name) {
    Channel* channel = Lookup(name);
    v1::ServerFrame subscribed;
    subscribed.mutable_subscribed()->set_channel(name);
    // Under the channel mutex, so that Subscribed precedes every message relayed after it and
    // head_seq is exactly the seq before the first of them.
    std::lock_guard lock(channel->mu);
    if (subscribed_.insert(channel).second) channel->subscribers.push_back(this);
    subscribed.mutable_subscribed()->set_head_seq(channel->counter);
    Enqueue(EncodedFrame(subscribed));
  }

  void Unsubscribe(const std::string& name) {
    auto it = known_.find(name);
    if (it == known_.end() || subscribed_.erase(it->second) == 0) return;
    Leave(it->second);
  }

  void Send(v1::Send& send) {
    Channel* channel = Lookup(send.channel());
    const std::int64_t now_ms = NowUnixMs();
    v1::ServerFrame ack;
    v1::SendAck* a = ack.mutable_send_ack();
    a->set_client_msg_id(send.client_msg_id());
    a->set_channel(send.channel());
    a->set_sent_at_unix_ms(now_ms);
    v1::ServerFrame message;
    v1::ChatMessage* m = message.mutable_message();
    m->set_channel(send.channel());
    m->set_sender_id(0);
    m->set_sender("relay");
    m->set_body(std::move(*send.mutable_body()));
    m->set_sent_at_unix_ms(now_ms);
    m->set_client_msg_id(send.client_msg_id());

    std::lock_guard lock(channel->mu);
    const std::uint64_t seq = ++channel->counter;
    a->set_seq(seq);
    m->set_seq(seq);
    Enqueue(EncodedFrame(ack));
    const std::size_t n = channel->subscribers.size();
    if (shared_) {
      const EncodedFrame encoded(message);
      for (RelayStream* subscriber : channel->subscribers) subscriber->Enqueue(encoded);
    } else {
      for (RelayStream* subscriber : channel->subscribers) {
        subscriber->Enqueue(EncodedFrame(message));  // one encoding per delivery, as before
      }
    }
    counters_->sends.fetch_add(1, std::memory_order_relaxed);
    counters_->deliveries.fetch_add(n, std::memory_order_relaxed);
  }

  void Leave(Channel* channel) {
    std::lock_guard lock(channel->mu);
    auto& subs = channel->subscribers;
    for (std::size_t i = 0; i < subs.size(); ++i) {
      if (subs[i] == this) {
        subs[i] = subs.back();  // order of subscribers does not matter
        subs.pop_back();
        return;
      }
    }
  }

  void LeaveAllChannels() {
    for (Channel* channel : subscribed_) Leave(channel);
    subscribed_.clear();
  }

  // Requires mu_. The same batching rule as infrachatd's ChatStream.
  void StartWriteLocked() {
    write_frames_ = FramesForNextWrite(out_, batches_);
    write_buf_ = EncodeWrite(out_, 0, write_frames_);
    writing_ = true;
    StartWrite(&write_buf_);
  }

  // Requires mu_. Finish exactly once, never while a write is in flight, and only when the read
  // side has ended (queue written first) or a write failed (queue dropped).
  void MaybeFinishLocked() {
    if (finished_ || writing_) return;
    if (!read_done_ && !write_failed_) return;
    if (!out_.empty() && !write_failed_) return;
    finished_ = true;
    // After a cancellation the client never sees this status; after a half-close it is the
    // normal end of the stream.
    Finish(grpc::Status::OK);
  }

  Hub* const hub_;
  RelayCounters* const counters_;
  WriteScheduler* const writes_;
  const bool shared_;
  const bool batches_;
  std::shared_ptr<RelayStream> self_;  // until OnDone

  // Read path only.
  grpc::ByteBuffer in_;
  v1::ClientFrame frame_;
  std::unordered_map<std::string, Channel*> known_;
  std::unordered_set<Channel*> subscribed_;

  std::mutex mu_;
  std::deque<EncodedFrame> out_;  // the first write_frames_ are being written while writing_
  grpc::ByteBuffer write_buf_;
  std::size_t write_frames_ = 0;
  bool writing_ = false;
  bool scheduled_ = false;         // on the WriteScheduler, not flushed yet
  bool urgent_scheduled_ = false;  // ... in its urgent queue
  bool read_done_ = false;
  bool write_failed_ = false;
  bool finished_ = false;
};

class RelayService final
    : public v1::ChatService::WithRawCallbackMethod_Connect<v1::ChatService::Service> {
 public:
  RelayService(Hub* hub, RelayCounters* counters) : hub_(hub), counters_(counters) {}
  // Shared frames (see RelayOptions): set before the server starts.
  void set_write_scheduler(WriteScheduler* writes) { writes_ = writes; }

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Connect(
      grpc::CallbackServerContext* context) override {
    // Both kinds of batches only with shared frames: the plain relay is the old transport use.
    const bool batches = writes_ != nullptr && AcceptsBatches(context->client_metadata());
    const bool client_batches =
        writes_ != nullptr && HasCapability(context->client_metadata(), kCapabilityClientBatch);
    if (batches || client_batches) {
      context->AddInitialMetadata(kHeaderCapabilities, CapabilityList(batches, client_batches));
    }
    return RelayStream::Open(hub_, counters_, writes_, batches);
  }

 private:
  Hub* hub_;
  RelayCounters* counters_;
  WriteScheduler* writes_ = nullptr;
};

std::string HostOf(const std::string& address) {
  const auto colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

}  // namespace

// Destroyed in reverse order: the server (and with it every call) before the service and hub.
struct RelayServer::State {
  RelayCounters counters;
  Hub hub;
  WriteScheduler writes;  // used with shared frames only
  RelayService service{&hub, &counters};
  std::unique_ptr<grpc::Server> server;
  bool shut_down = false;
};

RelayServer::RelayServer(const RelayOptions& options) : state_(std::make_unique<State>()) {
  if (options.shared_frames) state_->service.set_write_scheduler(&state_->writes);
  grpc::ServerBuilder builder;
  // The same transport settings as infrachatd's defaults (include/infrachat/config/config.h),
  // so that only the logic behind the service differs.
  builder.SetMaxReceiveMessageSize(64 * 1024);
  builder.SetMaxSendMessageSize(4 * 1024 * 1024);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a port clash must fail loudly
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // The client library pings every 30 s; without this a quiet benchmark phase gets GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10 * 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  int port = 0;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&state_->service);
  state_->server = builder.BuildAndStart();
  if (!state_->server || port == 0) {
    throw std::runtime_error("cannot listen on " + options.listen + " (address in use or invalid)");
  }
  address_ = HostOf(options.listen) + ":" + std::to_string(port);
}

RelayServer::~RelayServer() { Shutdown(std::chrono::milliseconds(200)); }

void RelayServer::Shutdown(std::chrono::milliseconds grace) {
  if (state_->shut_down) return;
  state_->shut_down = true;
  // Open streams never end by themselves (a subscriber reads forever): after `grace` gRPC
  // cancels them, their reads fail and each one finishes and deletes itself.
  state_->server->Shutdown(std::chrono::system_clock::now() + grace);
  state_->server->Wait();
  // OnDone may still be running on a gRPC thread after Wait(); the hub must outlive it.
  state_->hub.WaitNoStreams(std::chrono::steady_clock::now() + std::chrono::seconds(30));
}

const RelayCounters& RelayServer::counters() const { return state_->counters; }

}  // namespace infrachat::bench
