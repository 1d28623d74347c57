#include "chat_stream.h"

#include <fmt/format.h>
#include <prometheus/family.h>

#include <cctype>

#include "grpc_edge.h"
#include "infrachat/core/grpc_call_context.h"
#include "infrachat/core/logging.h"
#include "infrachat/core/validation.h"

namespace infrachat::gateway {

namespace {

// Control frames beyond the data limit: acks of in-flight sends plus a margin for errors,
// pongs and (un)subscribed notices. Exceeding even that means the client does not read at all.
constexpr std::size_t kControlMargin = 256;

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ChatStream::Open(
    grpc::CallbackServerContext* context, const StreamDeps& deps) {
  auto principal = Authenticate(context->client_metadata(), *deps.auth);
  Principal who = principal.ok() ? *principal : Principal{};
  const bool batches = AcceptsBatches(context->client_metadata());
  // ClientFrame.batch is taken from any client; a client that asks is told so.
  const bool client_batches = HasCapability(context->client_metadata(), kCapabilityClientBatch);
  std::shared_ptr<ChatStream> stream(new ChatStream(deps, who, SpanContextOf(*context), batches));
  stream->self_ = stream;
  stream->peer_ = context->peer();
  LogTraceScope trace(stream->call_.trace_id());
  std::lock_guard lock(stream->mu_);
  if (!principal.ok()) {
    LogEvent(deps.log, spdlog::level::info, "stream refused",
             {{"peer", stream->peer_},
              {"code", CodeName(principal.error().code)},
              {"reason", "unauthenticated"}});
    stream->finished_ = true;
    stream->Finish(ToStatus(principal.error()));
    return stream.get();
  }
  if (deps.registry->size() >= deps.limits.max_streams) {
    LogEvent(deps.log, spdlog::level::info, "stream refused",
             {{"peer", stream->peer_},
              {"user_id", who.user_id},
              {"code", "RESOURCE_EXHAUSTED"},
              {"reason", "too_many_streams"}});
    stream->finished_ = true;
    stream->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                "too many concurrent streams on this gateway; retry later"));
    return stream.get();
  }
  deps.registry->Add(stream);
  // Before any frame, so that a client can pace itself and size its messages from the start.
  const StreamLimits& limits = deps.limits;
  context->AddInitialMetadata(kHeaderSendRate, fmt::format("{}", limits.send_rate_per_s));
  context->AddInitialMetadata(kHeaderSendBurst, fmt::format("{}", limits.send_burst));
  context->AddInitialMetadata(kHeaderMaxInflightSends, std::to_string(limits.max_inflight_sends));
  context->AddInitialMetadata(kHeaderMaxBodyBytes, std::to_string(limits.max_body_bytes));
  context->AddInitialMetadata(kHeaderMaxFrameBytes, std::to_string(limits.max_frame_bytes));
  if (batches || client_batches) {
    context->AddInitialMetadata(kHeaderCapabilities, CapabilityList(batches, client_batches));
  }
  stream->StartSendInitialMetadata();
  stream->opened_ = true;
  stream->opened_at_ = std::chrono::steady_clock::now();
  LogEvent(deps.log, spdlog::level::info, "stream opened",
           {{"user_id", who.user_id},
            {"session", who.session_id},
            {"peer", stream->peer_},
            {"batches", batches}});
  stream->reading_ = true;
  stream->StartRead(&stream->in_);
  return stream.get();
}

namespace {

// The stream's own context: the client's trace and span (never sampled: each send decides).
CallContext StreamContext(SpanContext client) {
  client.sampled = false;
  return CallContext::WithDeadline(CallContext::Clock::time_point::max(), client);
}

}  // namespace

ChatStream::ChatStream(const StreamDeps& deps, Principal principal, const SpanContext& client_trace,
                       bool batches)
    : deps_(deps),
      principal_(std::move(principal)),
      call_(StreamContext(client_trace)),
      client_trace_(client_trace),
      batches_(batches),
      send_bucket_(deps.limits.send_rate_per_s, deps.limits.send_burst) {}

void ChatStream::Reply(const v1::ServerFrame& frame, Span* written) {
  if (!Queue(EncodedFrame(frame), true, written) && written != nullptr && written->recording()) {
    written->SetError("CANCELLED");  // the stream ended before the frame could be queued
    written->End();
  }
}

bool ChatStream::Offer(const EncodedFrame& frame, bool reserved) {
  return Queue(frame, reserved, nullptr);
}

bool ChatStream::Queue(const EncodedFrame& frame, bool reserved, Span* written) {
  std::unique_lock lock(mu_);
  if (finished_ || end_status_ || write_failed_) return false;
  const bool data = frame.is_data();
  if (data && !reserved) {
    if (draining_ || data_frames_queued_ >= deps_.limits.queue_frames) return false;
  }
  if (out_.size() >= deps_.limits.queue_frames + deps_.limits.max_inflight_sends + kControlMargin) {
    return false;  // the client reads nothing at all; its stream ends by keepalive or expiry
  }
  if (data) ++data_frames_queued_;
  out_.push_back(frame);
  ++frames_pushed_;
  if (written != nullptr && written->recording()) {
    ack_spans_.push_back(AckSpan{frames_pushed_, std::move(*written)});
  }
  if (writing_) return true;  // goes with the next write
  if (deps_.writes == nullptr) {
    StartWriteLocked();
    return true;
  }
  // A control frame (an ACK, an error) jumps the queue of streams waiting for deliveries, even
  // when this stream is already in it.
  const bool urgent = !data && !urgent_scheduled_;
  if (!urgent && write_scheduled_) return true;
  write_scheduled_ = true;
  urgent_scheduled_ = urgent_scheduled_ || urgent;
  lock.unlock();
  deps_.writes->Schedule(shared_from_this(), urgent);
  return true;
}

void ChatStream::Flush() {
  std::lock_guard lock(mu_);
  write_scheduled_ = false;
  urgent_scheduled_ = false;
  if (writing_ || out_.empty() || finished_ || write_failed_) return;
  StartWriteLocked();
}

std::size_t ChatStream::FreeSlots() const {
  std::lock_guard lock(mu_);
  if (finished_ || end_status_ || draining_) return 0;
  return deps_.limits.queue_frames > data_frames_queued_
             ? deps_.limits.queue_frames - data_frames_queued_
             : 0;
}

void ChatStream::StartWriteLocked() {
  // Everything queued goes in this write when the client takes batches (within the caps);
  // otherwise the oldest frame alone. Frames stay in out_ until the write completes.
  const std::size_t count = FramesForNextWrite(out_, batches_);
  if (deps_.write_queue != nullptr) deps_.write_queue->Observe(static_cast<double>(out_.size()));
  write_frames_ = count;
  write_data_frames_ = 0;
  for (std::size_t i = 0; i < count; ++i) write_data_frames_ += out_[i].is_data() ? 1 : 0;
  write_buf_ = EncodeWrite(out_, 0, count);
  writing_ = true;
  StartWrite(&write_buf_);
}

void ChatStream::OnWriteDone(bool ok) {
  std::lock_guard lock(mu_);
  writing_ = false;
  data_frames_queued_ -= write_data_frames_;
  if (ok) frames_out_ += write_frames_;
  out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(write_frames_));
  frames_written_ += write_frames_;
  while (ok && !ack_spans_.empty() && ack_spans_.front().position <= frames_written_) {
    ack_spans_.front().span.End();
    ack_spans_.pop_front();
  }
  write_frames_ = write_data_frames_ = 0;
  write_buf_.Clear();
  if (!ok) {
    write_failed_ = true;  // the call is cancelled or broken: nothing more reaches the client
    out_.clear();
    FailAckSpansLocked(0);
    data_frames_queued_ = 0;
  } else if (!out_.empty() && !finished_) {
    StartWriteLocked();
    return;
  }
  MaybeFinishLocked();
}

void ChatStream::OnReadDone(bool ok) {
  if (!ok) {
    // Half-close, cancellation, or a frame that failed to parse: no more reads either way.
    std::lock_guard lock(mu_);
    reading_ = false;
    read_done_ = true;
    MaybeFinishLocked();
    return;
  }
  {
    std::lock_guard lock(mu_);
    reading_ = false;
    if (draining_ || end_status_) {
      MaybeFinishLocked();
      return;
    }
    // Until Handle returns, no other thread (OnSendDone) may start the next read into in_, and
    // a drain must not finish the stream before this frame's send is counted in flight.
    handling_ = true;
    ++frames_in_;
  }
  // Parsed here, not by gRPC, so that bytes that are not a ClientFrame get a clear answer and
  // the stream goes on (gRPC's own parse failure would end the call without saying why).
  frame_.Clear();
  const std::size_t size = in_.Length();  // Deserialize empties in_
  if (grpc::SerializationTraits<v1::ClientFrame>::Deserialize(&in_, &frame_).ok()) {
    Handle(frame_);  // consumes frame_ before the next read reuses it
  } else {
    NoteRefusedFrame("malformed", size, deps_.limits.max_frame_bytes);
    Reply(ErrorFrame(MakeError(Code::kInvalidArgument, "malformed frame: not a ClientFrame")));
  }
  std::lock_guard lock(mu_);
  handling_ = false;
  ContinueReadingLocked();
  MaybeFinishLocked();
}

void ChatStream::ContinueReadingLocked() {
  if (reading_ || handling_ || read_done_ || finished_ || draining_ || end_status_) return;
  if (inflight_sends_ >= deps_.limits.max_inflight_sends) return;  // resumed by OnSendDone
  reading_ = true;
  StartRead(&in_);
}

void ChatStream::OnDone() {
  call_.Cancel();  // calls of this stream not yet started are not made
  deps_.fanout->UnsubscribeAll(this);
  deps_.registry->Remove(this);
  std::shared_ptr<ChatStream> self;
  {
    std::lock_guard lock(mu_);
    done_ = true;
    self = std::move(self_);
    FailAckSpansLocked(0);
    if (opened_) {
      const auto duration = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - opened_at_);
      LogTraceScope trace(call_.trace_id());
      LogEvent(
          deps_.log, spdlog::level::info, "stream closed",
          {{"user_id", principal_.user_id},
           {"session", principal_.session_id},
           {"peer", peer_},
           {"duration_ms", duration.count()},
           {"frames_in", frames_in_},
           {"frames_out", frames_out_},
           {"frames_refused", frames_refused_},
           {"rate_limited_bursts", rate_limited_bursts_},
           {"reason", CloseReasonLocked()},
           {"code", end_status_ ? CodeName(static_cast<Code>(end_status_->error_code())) : "OK"},
           {"detail", end_status_ ? end_status_->error_message() : std::string()}});
    }
  }
  // `self` may hold the last reference: the stream is destroyed when it goes out of scope.
}

void ChatStream::OnCancel() {
  std::lock_guard lock(mu_);
  cancelled_ = true;
}

std::string_view ChatStream::CloseReasonLocked() const {
  // In order of precedence: what the server decided, then what happened to the call.
  if (end_status_) return "ended_by_server";  // slow consumer, session revoked: see code
  if (draining_) return "shutdown";
  // A cancel by the client, or gRPC ending the call (a frame over grpc.max_receive_bytes is
  // refused by gRPC with RESOURCE_EXHAUSTED before this stream sees it): the same here.
  if (cancelled_) return "cancelled";
  if (write_failed_) return "write_failed";
  return "client_closed";
}

void ChatStream::NoteRefusedFrame(std::string_view reason, std::size_t size, std::size_t limit) {
  std::unique_lock lock(mu_);
  if (frames_refused_++ > 0) return;
  lock.unlock();
  LogTraceScope trace(call_.trace_id());
  LogEvent(deps_.log, spdlog::level::info, "frame refused",
           {{"user_id", principal_.user_id},
            {"session", principal_.session_id},
            {"peer", peer_},
            {"reason", reason},
            {"size", size},
            {"limit", limit},
            {"code", "INVALID_ARGUMENT"}});
}

void ChatStream::End(const grpc::Status& status) {
  call_.Cancel();
  deps_.fanout->UnsubscribeAll(this);  // outside mu_: fanout locks before sinks
  std::lock_guard lock(mu_);
  if (finished_ || end_status_) return;
  end_status_ = status;
  // Sends still waiting for a token are dropped unanswered, like unwritten frames: none of them
  // was stored, and the client resends them (same ids, same order) on its next stream.
  DropWaitingSendsLocked();
  // Frames not yet written are dropped: the client resumes from its last seq.
  while (out_.size() > (writing_ ? write_frames_ : 0u)) {
    if (out_.back().is_data()) --data_frames_queued_;
    out_.pop_back();
    --frames_pushed_;
  }
  FailAckSpansLocked(frames_pushed_);
  MaybeFinishLocked();
}

void ChatStream::DropWaitingSendsLocked() {
  inflight_sends_ -= waiting_sends_.size();
  for (PendingSend& send : waiting_sends_) {
    send.span.SetError("CANCELLED");  // never handed to the shard
    send.span.End();
  }
  waiting_sends_.clear();
}

void ChatStream::FailAckSpansLocked(std::uint64_t after_position) {
  while (!ack_spans_.empty() && ack_spans_.back().position > after_position) {
    ack_spans_.back().span.SetError("CANCELLED");  // the ack was never written
    ack_spans_.back().span.End();
    ack_spans_.pop_back();
  }
}

void ChatStream::BeginDrain() {
  bool pump = false;
  {
    std::lock_guard lock(mu_);
    draining_ = true;
    // Sends already read are committed and answered before the stream ends, without waiting
    // for their tokens: at most max_inflight_sends of them.
    if (!waiting_sends_.empty() && !pumping_) pump = pumping_ = true;
    MaybeFinishLocked();
  }
  if (pump) PumpSends();
}

void ChatStream::MaybeFinishLocked() {
  if (finished_ || handling_) return;
  if (!read_done_ && !draining_ && !end_status_ && !write_failed_) return;
  if (inflight_sends_ > 0 || serial_running_ || !serial_.empty()) return;
  if (writing_ || (!out_.empty() && !write_failed_)) return;
  finished_ = true;
  if (end_status_) {
    Finish(*end_status_);
  } else if (draining_) {
    Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down; reconnect"));
  } else {
    Finish(grpc::Status::OK);
  }
}

void ChatStream::RunSerial(SerialTask task) {
  {
    std::lock_guard lock(mu_);
    serial_.push_back(std::move(task));
    if (serial_running_) return;
    serial_running_ = true;
  }
  ResumeSerial();
}

void ChatStream::ResumeSerial() {
  if (!deps_.executor->Post([self = shared_from_this()] { self->RunSerialTasks(); })) {
    std::lock_guard lock(mu_);  // executor stopped: shutting down
    serial_.clear();
    serial_running_ = false;
    MaybeFinishLocked();
  }
}

void ChatStream::RunSerialTasks() {
  enum : int { kRunning, kReturned, kCompleted };
  for (;;) {
    SerialTask task;
    {
      std::lock_guard lock(mu_);
      if (serial_.empty()) {
        serial_running_ = false;
        MaybeFinishLocked();
        return;
      }
      task = std::move(serial_.front());
      serial_.pop_front();
    }
    // The task's `done` comes inline (in process) or later from another thread (a remote
    // shard's answer); the next task runs only after it, so frames take effect in order. No
    // executor thread waits for a remote answer meanwhile.
    auto state = std::make_shared<std::atomic<int>>(kRunning);
    task([self = shared_from_this(), state] {
      if (state->exchange(kCompleted) == kReturned) self->ResumeSerial();
    });
    if (state->exchange(kReturned) == kCompleted) continue;
    return;
  }
}

void ChatStream::Handle(v1::ClientFrame& frame) {
  switch (frame.frame_case()) {
    case v1::ClientFrame::kSubscribe:
      return HandleSubscribe(frame.subscribe());
    case v1::ClientFrame::kUnsubscribe: {
      auto name = NormalizeChannelName(frame.unsubscribe().channel());
      if (!name.ok()) {
        Reply(ErrorFrame(name.error(), frame.unsubscribe().channel()));
        return;
      }
      RunSerial([this, channel = *name](const std::function<void()>& done) {
        deps_.fanout->Unsubscribe(this, channel);
        v1::ServerFrame frame;
        frame.mutable_unsubscribed()->set_channel(channel);
        frame.mutable_unsubscribed()->set_reason("unsubscribed on request");
        Reply(frame);
        done();
      });
      return;
    }
    case v1::ClientFrame::kSend:
      return HandleSend(*frame.mutable_send());
    case v1::ClientFrame::kAck:
      return HandleAck(frame.ack());
    case v1::ClientFrame::kTyping:
      return HandleTyping(frame.typing());
    case v1::ClientFrame::kPing: {
      v1::ServerFrame pong;
      pong.mutable_pong()->set_nonce(frame.ping().nonce());
      Reply(pong);
      return;
    }
    case v1::ClientFrame::kBatch:
      return HandleBatch(*frame.mutable_batch());
    case v1::ClientFrame::FRAME_NOT_SET:
      break;
  }
  Reply(ErrorFrame(MakeError(Code::kInvalidArgument, "empty or unknown frame")));
}

void ChatStream::HandleBatch(v1::ClientFrameBatch& batch) {
  if (batch.frames().empty()) {
    Reply(ErrorFrame(MakeError(Code::kInvalidArgument, "empty batch")));
    return;
  }
  {
    std::lock_guard lock(mu_);
    frames_in_ += static_cast<std::uint64_t>(batch.frames_size()) - 1;  // the batch counted one
  }
  for (v1::ClientFrame& frame : *batch.mutable_frames()) {
    if (frame.has_batch()) {
      Reply(ErrorFrame(MakeError(Code::kInvalidArgument, "batches do not nest")));
      continue;
    }
    Handle(frame);
  }
}

void ChatStream::HandleSubscribe(const v1::Subscribe& subscribe) {
  auto name = NormalizeChannelName(subscribe.channel());
  if (!name.ok()) {
    Reply(ErrorFrame(name.error(), subscribe.channel()));
    return;
  }
  std::optional<std::uint64_t> after_seq;
  if (subscribe.has_after_seq()) after_seq = subscribe.after_seq();
  RunSerial([this, channel = *name, after_seq](std::function<void()> done) {
    if (!deps_.fanout->IsSubscribed(this, channel) &&
        deps_.fanout->CountSubscriptions(this) >= deps_.limits.max_subscriptions) {
      Reply(ErrorFrame(
          MakeError(Code::kResourceExhausted, fmt::format("at most {} subscriptions per stream",
                                                          deps_.limits.max_subscriptions)),
          channel));
      return done();
    }
    // Membership, now.
    deps_.shard->AuthorizeSubscribeAsync(call_, principal_, channel,
                                         [self = shared_from_this(), channel, after_seq,
                                          done = std::move(done)](Result<std::uint64_t> head) {
                                           if (head.ok()) {
                                             self->deps_.fanout->Subscribe(
                                                 self, self->principal_, channel, *head, after_seq);
                                           } else {
                                             self->Reply(ErrorFrame(head.error(), channel));
                                           }
                                           done();
                                         });
  });
}

void ChatStream::HandleSend(v1::Send& send) {
  auto name = NormalizeChannelName(send.channel());
  Result<void> valid = name.ok() ? ValidateClientMsgId(send.client_msg_id()) : name.error();
  if (valid.ok()) {
    valid = ValidateBody(send.body(), deps_.limits.max_body_bytes);
    if (!valid.ok()) {
      NoteRefusedFrame(
          send.body().size() > deps_.limits.max_body_bytes ? "body_too_large" : "invalid_body",
          send.body().size(), deps_.limits.max_body_bytes);
    }
  }
  if (!valid.ok()) {
    if (deps_.sends != nullptr) deps_.sends->Refused(valid.error().code);
    Reply(ErrorFrame(valid.error(), send.channel(), send.client_msg_id()));
    return;
  }
  Span span = StartSendSpan(send);
  bool pump = false;
  {
    std::lock_guard lock(mu_);
    ++inflight_sends_;  // from here until its ACK or error, waiting for a token included
    waiting_sends_.push_back(
        PendingSend{SendCommand{*name, principal_.user_id, principal_.username,
                                send.client_msg_id(), std::move(*send.mutable_body())},
                    std::chrono::steady_clock::now(), std::move(span)});
    // With the timer armed the bucket is empty: the timer pumps, in order.
    if (!pumping_ && !send_timer_armed_) pump = pumping_ = true;
  }
  if (pump) PumpSends();
}

void ChatStream::PumpSends() {
  for (;;) {
    PendingSend send;
    {
      std::unique_lock lock(mu_);
      if (waiting_sends_.empty()) {
        pumping_ = false;
        rate_limited_ = false;  // caught up: the next wait is a new burst
        MaybeFinishLocked();
        return;
      }
      if (!draining_ && !send_bucket_.TryTake()) {
        pumping_ = false;
        ArmSendTimerLocked();
        if (rate_limited_) return;
        // Once per burst: logged when the stream first waits, then not until it caught up.
        rate_limited_ = true;
        const std::uint64_t bursts = ++rate_limited_bursts_;
        const std::size_t waiting = waiting_sends_.size();
        lock.unlock();
        LogTraceScope trace(call_.trace_id());
        LogEvent(deps_.log, spdlog::level::info, "sends rate limited",
                 {{"user_id", principal_.user_id},
                  {"session", principal_.session_id},
                  {"peer", peer_},
                  {"waiting_sends", waiting},
                  {"burst", bursts},
                  {"rate_per_s", deps_.limits.send_rate_per_s}});
        return;
      }
      send = std::move(waiting_sends_.front());
      waiting_sends_.pop_front();
    }
    // Outside mu_: SendAsync may answer inline (OnSendDone takes mu_). Only the pumping thread
    // gets here, so the shard receives this stream's sends in arrival order.
    Dispatch(std::move(send));
  }
}

void ChatStream::ArmSendTimerLocked() {
  if (send_timer_armed_) return;
  send_timer_armed_ = true;
  const bool posted = deps_.executor->PostAfter(
      send_bucket_.TimeUntilToken(), [self = shared_from_this()] { self->OnSendTimer(); });
  if (!posted) {
    // The executor stopped: the server is past its drain. Nothing waiting can be answered.
    send_timer_armed_ = false;
    DropWaitingSendsLocked();
  }
}

void ChatStream::OnSendTimer() {
  {
    std::lock_guard lock(mu_);
    send_timer_armed_ = false;
    if (pumping_ || waiting_sends_.empty()) return;
    pumping_ = true;
  }
  PumpSends();
}

Span ChatStream::StartSendSpan(const v1::Send& send) {
  // A client's traceparent with flag 00 asks not to record; any other send is a draw at
  // tracing.sample_ratio (false at once when tracing is off).
  const bool opted_out = client_trace_.span_id != 0 && !client_trace_.sampled;
  if (opted_out || !SampleNewTrace()) return Span();
  SpanContext parent = call_.span();
  if (!client_trace_.has_trace()) parent = SpanContext{NewTraceIdHex(), 0, false};
  parent.sampled = true;
  Span span = StartSpan("gateway send", SpanKind::kServer, parent);
  span.SetAttribute("rpc.system", "grpc");
  span.SetAttribute("rpc.service", "infrachat.v1.ChatService");
  span.SetAttribute("rpc.method", "Connect");
  span.SetAttribute("infrachat.body_bytes", static_cast<std::uint64_t>(send.body().size()));
  return span;
}

void ChatStream::Dispatch(PendingSend send) {
  std::string channel = send.command.channel;
  std::string id = send.command.client_msg_id;
  auto on_done = [self = shared_from_this(), channel = std::move(channel), id = std::move(id),
                  read_at = send.read_at, span = send.span](Result<SendOutcome> outcome) {
    self->OnSendDone(channel, id, read_at, span, std::move(outcome));
  };
  if (!send.span.recording()) {
    deps_.shard->SendAsync(call_, std::move(send.command), std::move(on_done));
    return;
  }
  send.span.AddEvent("dispatched");  // after rate shaping: handed to the shard
  deps_.shard->SendAsync(call_.WithSpan(send.span.context()), std::move(send.command),
                         std::move(on_done));
}

void ChatStream::OnSendDone(const std::string& channel, const std::string& client_msg_id,
                            std::chrono::steady_clock::time_point read_at, Span span,
                            Result<SendOutcome> outcome) {
  if (deps_.log->should_log(spdlog::level::debug)) {
    SpanScope scope(span.recording() ? span.context() : call_.span());
    LogEvent(deps_.log, spdlog::level::debug, outcome.ok() ? "send acked" : "send failed",
             {{"user_id", principal_.user_id},
              {"code", CodeName(outcome.ok() ? Code::kOk : outcome.code())},
              {"seq", outcome.ok() ? outcome->seq : 0},
              {"duplicate", outcome.ok() && outcome->duplicate}});
  }
  if (span.recording()) {
    span.SetAttribute("rpc.grpc.status_code",
                      static_cast<int>(outcome.ok() ? Code::kOk : outcome.code()));
    if (outcome.ok()) {
      span.SetAttribute("infrachat.seq", outcome->seq);
      span.SetAttribute("infrachat.duplicate", outcome->duplicate);
    } else {
      span.SetError(CodeName(outcome.code()));
    }
  }
  if (deps_.sends != nullptr) {
    if (outcome.ok()) {
      deps_.sends->Acked(outcome->duplicate, std::chrono::steady_clock::now() - read_at);
    } else {
      deps_.sends->Refused(outcome.error().code);
    }
  }
  if (outcome.ok()) {
    v1::ServerFrame frame;
    auto* ack = frame.mutable_send_ack();
    ack->set_client_msg_id(client_msg_id);
    ack->set_channel(channel);
    ack->set_seq(outcome->seq);
    ack->set_duplicate(outcome->duplicate);
    ack->set_sent_at_unix_ms(outcome->sent_at_unix_ms);
    Reply(frame, &span);
  } else {
    Reply(ErrorFrame(outcome.error(), channel, client_msg_id), &span);
  }
  std::lock_guard lock(mu_);
  --inflight_sends_;
  ContinueReadingLocked();
  MaybeFinishLocked();
}

void ChatStream::HandleAck(const v1::Ack& ack) {
  auto name = NormalizeChannelName(ack.channel());
  if (!name.ok()) {
    Reply(ErrorFrame(name.error(), ack.channel()));
    return;
  }
  RunSerial(
      [this, channel = *name, seq = ack.seq(), kind = ack.kind()](std::function<void()> done) {
        deps_.shard->RecordAckAsync(
            call_, principal_, channel, seq, kind,
            [self = shared_from_this(), channel, done = std::move(done)](Result<bool> moved) {
              if (!moved.ok()) self->Reply(ErrorFrame(moved.error(), channel));
              done();
            });
      });
}

void ChatStream::HandleTyping(const v1::Typing& typing) {
  auto name = NormalizeChannelName(typing.channel());
  if (!name.ok()) {
    Reply(ErrorFrame(name.error(), typing.channel()));
    return;
  }
  {
    std::lock_guard lock(mu_);
    // Before any check: the refusal below costs a database read, so it is rate-limited too.
    // Best effort: never ahead of sends waiting for their tokens.
    if (!waiting_sends_.empty() || !send_bucket_.TryTake()) return;
  }
  // Serially, so that a Subscribe sent just before takes effect first.
  RunSerial([this, channel = *name](std::function<void()> done) {
    if (deps_.fanout->IsSubscribed(this, channel)) {
      v1::TypingEvent event;
      event.set_channel(channel);
      event.set_user_id(principal_.user_id);
      event.set_username(principal_.username);
      deps_.bus->Publish(std::move(event));
      return done();
    }
    // Say why: not a member (PERMISSION_DENIED), no such channel (NOT_FOUND), or a member that
    // has not subscribed (FAILED_PRECONDITION).
    deps_.shard->AuthorizeSubscribeAsync(
        call_, principal_, channel,
        [self = shared_from_this(), channel, done = std::move(done)](Result<std::uint64_t> access) {
          self->Reply(ErrorFrame(access.ok() ? MakeError(Code::kFailedPrecondition,
                                                         "subscribe to the channel before "
                                                         "sending typing")
                                             : access.error(),
                                 channel));
          done();
        });
  });
}

SendCounters::SendCounters(prometheus::Registry& registry) {
  auto& family = prometheus::BuildCounter()
                     .Name("infrachat_gateway_sends_total")
                     .Help("Send frames by outcome: acked, duplicate, or the error code")
                     .Register(registry);
  acked_ = &family.Add({{"result", "acked"}});
  duplicate_ = &family.Add({{"result", "duplicate"}});
  for (int code = 0; code <= static_cast<int>(Code::kUnauthenticated); ++code) {
    std::string name = CodeName(static_cast<Code>(code));
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    by_code_.push_back(&family.Add({{"result", name}}));
  }
  // From well under a group commit (in-memory duplicate answers) to a stalled database.
  ack_latency_ =
      &prometheus::BuildHistogram()
           .Name("infrachat_gateway_ack_latency_seconds")
           .Help("Send frame read to its SendAck queued (acked sends only)")
           .Register(registry)
           .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                            0.1, 0.25, 0.5, 1, 2.5, 5, 10});
}

void SendCounters::Acked(bool duplicate, std::chrono::steady_clock::duration latency) const {
  (duplicate ? duplicate_ : acked_)->Increment();
  ack_latency_->Observe(std::chrono::duration<double>(latency).count());
}

void SendCounters::Refused(Code code) const {
  const auto index = static_cast<std::size_t>(code);
  if (index < by_code_.size()) by_code_[index]->Increment();
}

void StreamRegistry::Add(const std::shared_ptr<ChatStream>& stream) {
  std::lock_guard lock(mu_);
  if (streams_.emplace(stream.get(), stream).second && active_ != nullptr) active_->Increment();
}

void StreamRegistry::Remove(const ChatStream* stream) {
  std::lock_guard lock(mu_);
  if (streams_.erase(stream) > 0 && active_ != nullptr) active_->Decrement();
  if (streams_.empty()) empty_cv_.notify_all();
}

bool StreamRegistry::WaitUntilEmpty(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  return empty_cv_.wait_until(lock, deadline, [&] { return streams_.empty(); });
}

std::vector<std::shared_ptr<ChatStream>> StreamRegistry::Snapshot() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<ChatStream>> out;
  for (const auto& [key, weak] : streams_) {
    if (auto s = weak.lock()) out.push_back(std::move(s));
  }
  return out;
}

std::size_t StreamRegistry::size() const {
  std::lock_guard lock(mu_);
  return streams_.size();
}

}  // namespace infrachat::gateway
