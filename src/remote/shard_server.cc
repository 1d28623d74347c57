#include "shard_server.h"

#include <deque>

#include "blocking_reactor.h"
#include "convert.h"
#include "infrachat/core/logging.h"
#include "infrachat/core/tracing.h"

namespace infrachat::remote {

using internal::v1::SendStreamRequest;
using internal::v1::SendStreamResponse;

namespace {

// The trace a send belongs to: the caller's span (traceparent), else its trace id alone.
SpanContext ParentOf(const SendStreamRequest& request) {
  if (!request.traceparent().empty()) {
    if (auto parent = ParseTraceParent(request.traceparent())) return *parent;
  }
  return SpanContext::OfTraceId(request.trace_id());
}

// The server half of a send's hop: from the request read to its answer queued. Named like the
// edge's client span (RemoteShard), whose child it is.
Span StartSendSpan(const SpanContext& parent) {
  Span span =
      StartSpan("infrachat.internal.v1.ShardInternal/SendStream", SpanKind::kServer, parent);
  if (span.recording()) {
    span.SetAttribute("rpc.system", "grpc");
    span.SetAttribute("rpc.service", "infrachat.internal.v1.ShardInternal");
    span.SetAttribute("rpc.method", "SendStream");
  }
  return span;
}

void EndSendSpan(Span span, const Result<SendOutcome>& outcome) {
  static const auto log = ModuleLogger("shard");
  const Code code = outcome.ok() ? Code::kOk : outcome.code();
  if (log->should_log(spdlog::level::debug)) {
    SpanScope scope(span.context());
    LogEvent(log, spdlog::level::debug, "send answered",
             {{"code", CodeName(code)},
              {"seq", outcome.ok() ? outcome->seq : 0},
              {"duplicate", outcome.ok() && outcome->duplicate}});
  }
  if (!span.recording()) return;
  span.SetAttribute("rpc.grpc.status_code", static_cast<int>(code));
  if (!outcome.ok()) span.SetError(CodeName(code));
  span.End();
}

}  // namespace

// One SendStream call. Reads requests one at a time and hands each to ShardApi::SendAsync as
// soon as it is read (so one stream's sends reach group commit in the order they were written),
// and queues each outcome as a response: one write in flight, front of `out_` being written.
// Backpressure: at most kMaxStreamInflight sends handed to the shard and not yet answered; at
// the limit no read is started, and an answer resumes reading (HTTP/2 flow control then holds
// the client back).
// Finishing: never while a write is in flight. OK after the client half-closed and every send
// was answered and written; UNAVAILABLE when drained (EndSendStreams); CANCELLED, dropping the
// outcomes still to come, when the call was cancelled (client gone, server Shutdown) or a write
// failed. A read may still be outstanding at Finish: it then fails, as in EventStreamService.
// Lifetime: owned by shared_ptrs: `self_` (until OnDone) and one in each shard callback not yet
// run, so a callback that comes after the stream ended finds the reactor alive and drops its
// outcome (the send is committed all the same; the client resends with the same client_msg_id
// and gets a duplicate). After finished_ nothing touches the call or `service_`'s shard.
// Thread-safety: reactions (gRPC threads), shard callbacks (shard threads, or inline inside
// SendAsync) and Drain (any thread) all take `mu_`; SendAsync is called without it, because a
// rejection calls back inline.
class SendStreamReactor final
    : public grpc::ServerBidiReactor<SendStreamRequest, SendStreamResponse>,
      public std::enable_shared_from_this<SendStreamReactor> {
 public:
  SendStreamReactor(ShardInternalService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {}

  // Registers and starts reading; `drain` when the service is already ending.
  void Start(std::shared_ptr<SendStreamReactor> self, bool drain) {
    std::lock_guard lock(mu_);
    self_ = std::move(self);
    if (drain) {
      draining_ = true;
      MaybeFinishLocked();
      return;
    }
    reading_ = true;
    StartRead(&in_);
  }

  void Drain() {
    std::lock_guard lock(mu_);
    draining_ = true;
    MaybeFinishLocked();
  }

 private:
  void OnReadDone(bool ok) override {
    if (!ok) {
      // Half-close, cancellation, or an unparsable request: no more reads either way.
      std::lock_guard lock(mu_);
      reading_ = false;
      read_done_ = true;
      if (!finished_ && context_->IsCancelled()) cancelled_ = true;
      MaybeFinishLocked();
      return;
    }
    const std::uint64_t id = in_.id();
    {
      std::lock_guard lock(mu_);
      if (draining_ || finished_) {
        reading_ = false;
        if (!finished_) {
          QueueLocked(Failed(id, grpc::StatusCode::UNAVAILABLE,
                             "this shard process is shutting down; resend with the same "
                             "client_msg_id"));
        }
        MaybeFinishLocked();
        return;
      }
      ++inflight_;
    }
    auto* send = in_.mutable_send();
    SendCommand command{
        std::move(*send->mutable_channel()), send->sender_id(), std::move(*send->mutable_sender()),
        std::move(*send->mutable_client_msg_id()), std::move(*send->mutable_body())};
    // The stream's deadline means nothing for one send; the edge bounds its wait itself (it
    // fails a send after grpc.internal_call_timeout_ms). A generous bound like Send's, detached
    // (nothing cancels it: a send handed over is committed even if the stream goes away).
    Span span = StartSendSpan(ParentOf(in_));
    const CallContext call =
        CallContext::WithDeadline(CallContext::Clock::now() + kMaxInternalCall, span.context());
    service_->shard_->SendAsync(call, std::move(command),
                                [self = shared_from_this(), id, span](Result<SendOutcome> outcome) {
                                  EndSendSpan(span, outcome);
                                  self->Answer(id, std::move(outcome));
                                });
    // Only after the send was handed over: the next request's send follows this one.
    std::lock_guard lock(mu_);
    reading_ = false;
    MaybeReadLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    writing_ = false;
    out_.pop_front();
    if (!ok) {
      write_failed_ = true;  // cancelled or broken: nothing more reaches the client
      out_.clear();
    } else if (!out_.empty() && !finished_) {
      writing_ = true;
      StartWrite(&out_.front());
      return;
    }
    MaybeFinishLocked();
  }

  void OnCancel() override {
    std::lock_guard lock(mu_);
    cancelled_ = true;
    MaybeFinishLocked();
  }

  void OnDone() override {
    service_->StreamDone(this);
    std::shared_ptr<SendStreamReactor> self;
    {
      std::lock_guard lock(mu_);
      self = std::move(self_);
    }
    // `self` may be the last owner: the reactor goes when this returns (gRPC is done with it).
  }

  // A shard callback: the outcome of request `id`.
  void Answer(std::uint64_t id, Result<SendOutcome> outcome) {
    std::lock_guard lock(mu_);
    --inflight_;
    if (!finished_) {
      if (outcome.ok()) {
        SendStreamResponse response;
        response.set_id(id);
        auto* ok = response.mutable_ok();
        ok->set_seq(outcome->seq);
        ok->set_duplicate(outcome->duplicate);
        ok->set_sent_at_unix_ms(outcome->sent_at_unix_ms);
        QueueLocked(std::move(response));
      } else {
        QueueLocked(Failed(id, static_cast<grpc::StatusCode>(outcome.error().code),
                           outcome.error().message));
      }
      MaybeReadLocked();
    }
    MaybeFinishLocked();
  }

  static SendStreamResponse Failed(std::uint64_t id, grpc::StatusCode code, std::string message) {
    SendStreamResponse response;
    response.set_id(id);
    response.mutable_error()->set_code(static_cast<int>(code));
    response.mutable_error()->set_message(std::move(message));
    return response;
  }

  void QueueLocked(SendStreamResponse response) {
    if (cancelled_ || write_failed_) return;  // nobody to tell
    out_.push_back(std::move(response));
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());  // deque: the front stays put while responses are appended
    }
  }

  // Starts the next read unless one is outstanding, the stream is ending, or the limit is hit.
  void MaybeReadLocked() {
    if (reading_ || read_done_ || finished_ || draining_ || cancelled_ || write_failed_) return;
    if (inflight_ >= ShardInternalService::kMaxStreamInflight) return;
    reading_ = true;
    StartRead(&in_);
  }

  void MaybeFinishLocked() {
    if (finished_ || writing_) return;
    if (cancelled_ || write_failed_) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "send stream cancelled"));
    } else if ((read_done_ || draining_) && inflight_ == 0 && out_.empty()) {
      FinishLocked(read_done_ ? grpc::Status::OK
                              : grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                             "this shard process is shutting down; resend "
                                             "unanswered sends with the same client_msg_id"));
    }
  }

  void FinishLocked(const grpc::Status& status) {
    finished_ = true;
    Finish(status);
  }

  ShardInternalService* const service_;
  grpc::CallbackServerContext* const context_;
  SendStreamRequest in_;  // the one read in flight (touched only by the reaction reading it)

  std::mutex mu_;
  std::shared_ptr<SendStreamReactor> self_;  // until OnDone
  std::deque<SendStreamResponse> out_;       // front is being written while writing_
  std::size_t inflight_ = 0;                 // handed to the shard, callback not yet run
  bool reading_ = false;
  bool read_done_ = false;
  bool writing_ = false;
  bool draining_ = false;
  bool cancelled_ = false;
  bool write_failed_ = false;
  bool finished_ = false;
};

grpc::ServerBidiReactor<SendStreamRequest, SendStreamResponse>* ShardInternalService::SendStream(
    grpc::CallbackServerContext* context) {
  auto stream = std::make_shared<SendStreamReactor>(this, context);
  bool ending;
  {
    std::lock_guard lock(streams_mu_);
    streams_.insert(stream.get());
    ending = ending_;
  }
  auto* reactor = stream.get();
  reactor->Start(std::move(stream), ending);
  return reactor;
}

void ShardInternalService::EndSendStreams() {
  std::lock_guard lock(streams_mu_);
  ending_ = true;
  for (SendStreamReactor* stream : streams_) stream->Drain();
}

void ShardInternalService::StreamDone(SendStreamReactor* stream) {
  std::lock_guard lock(streams_mu_);
  streams_.erase(stream);
}

namespace {

// The status of a result whose value the caller has copied into the response.
template <typename T>
grpc::Status StatusOf(const Result<T>& result) {
  return result.ok() ? grpc::Status::OK : ToStatus(result.error());
}

}  // namespace

grpc::ServerUnaryReactor* ShardInternalService::Send(grpc::CallbackServerContext* context,
                                                     const internal::v1::SendRequest* request,
                                                     internal::v1::SendResponse* response) {
  auto* reactor = context->DefaultReactor();
  SendCommand command{request->channel(), request->sender_id(), request->sender(),
                      request->client_msg_id(), request->body()};
  // Detached: the send may complete after the caller has gone (it is committed all the same).
  const CallContext call = FromServerContext(*context, kMaxInternalCall).Detached();
  shard_->SendAsync(call, std::move(command), [reactor, response](Result<SendOutcome> outcome) {
    if (!outcome.ok()) {
      reactor->Finish(ToStatus(outcome.error()));
      return;
    }
    response->set_seq(outcome->seq);
    response->set_duplicate(outcome->duplicate);
    response->set_sent_at_unix_ms(outcome->sent_at_unix_ms);
    reactor->Finish(grpc::Status::OK);  // after COMMIT: ACK = durability, one hop later
  });
  return reactor;
}

grpc::ServerUnaryReactor* ShardInternalService::CreateChannel(
    grpc::CallbackServerContext* context, const internal::v1::CreateChannelRequest* request,
    v1::Channel* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    auto result = shard_->CreateChannel(call, FromProto(request->caller()), request->request());
    if (result.ok()) *response = std::move(result).value();
    return StatusOf(result);
  });
}

grpc::ServerUnaryReactor* ShardInternalService::JoinChannel(
    grpc::CallbackServerContext* context, const internal::v1::ChannelRequest* request,
    v1::Channel* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    auto result = shard_->JoinChannel(call, FromProto(request->caller()), request->channel());
    if (result.ok()) *response = std::move(result).value();
    return StatusOf(result);
  });
}

grpc::ServerUnaryReactor* ShardInternalService::LeaveChannel(
    grpc::CallbackServerContext* context, const internal::v1::ChannelRequest* request,
    internal::v1::Empty*) {
  return RunBlocking(context, *executor_, [this, request](const CallContext& call) {
    return StatusOf(shard_->LeaveChannel(call, FromProto(request->caller()), request->channel()));
  });
}

grpc::ServerUnaryReactor* ShardInternalService::InviteMember(
    grpc::CallbackServerContext* context, const internal::v1::InviteMemberRequest* request,
    internal::v1::Empty*) {
  return RunBlocking(context, *executor_, [this, request](const CallContext& call) {
    return StatusOf(shard_->InviteMember(call, FromProto(request->caller()), request->channel(),
                                         request->invitee_id(), request->invitee_username()));
  });
}

grpc::ServerUnaryReactor* ShardInternalService::ListChannels(
    grpc::CallbackServerContext* context, const internal::v1::ListChannelsRequest* request,
    v1::ListChannelsResponse* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    auto result = shard_->ListChannels(call, FromProto(request->caller()));
    if (result.ok()) {
      for (auto& channel : *result) *response->add_channels() = std::move(channel);
    }
    return StatusOf(result);
  });
}

grpc::ServerUnaryReactor* ShardInternalService::ListMembers(
    grpc::CallbackServerContext* context, const internal::v1::ChannelRequest* request,
    v1::ListMembersResponse* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    auto result = shard_->ListMembers(call, FromProto(request->caller()), request->channel());
    if (result.ok()) {
      for (auto& member : *result) *response->add_members() = std::move(member);
    }
    return StatusOf(result);
  });
}

grpc::ServerUnaryReactor* ShardInternalService::GetHistory(
    grpc::CallbackServerContext* context, const internal::v1::GetHistoryRequest* request,
    v1::GetHistoryResponse* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    auto result = shard_->GetHistory(call, FromProto(request->caller()), request->request());
    if (result.ok()) *response = std::move(result).value();
    return StatusOf(result);
  });
}

grpc::ServerUnaryReactor* ShardInternalService::AuthorizeSubscribe(
    grpc::CallbackServerContext* context, const internal::v1::ChannelRequest* request,
    internal::v1::HeadResponse* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    auto result =
        shard_->AuthorizeSubscribe(call, FromProto(request->caller()), request->channel());
    if (result.ok()) response->set_head_seq(*result);
    return StatusOf(result);
  });
}

grpc::ServerUnaryReactor* ShardInternalService::RecordAck(
    grpc::CallbackServerContext* context, const internal::v1::RecordAckRequest* request,
    internal::v1::RecordAckResponse* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    auto result = shard_->RecordAck(call, FromProto(request->caller()), request->channel(),
                                    request->seq(), request->kind());
    if (result.ok()) response->set_moved(*result);
    return StatusOf(result);
  });
}

grpc::ServerUnaryReactor* ShardInternalService::ReadLog(grpc::CallbackServerContext* context,
                                                        const internal::v1::ReadLogRequest* request,
                                                        internal::v1::ReadLogResponse* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    auto result = shard_->ReadLog(call, request->channel(), request->reader_id(),
                                  request->after_seq(), request->limit());
    if (result.ok()) {
      for (auto& message : *result) *response->add_messages() = std::move(message);
    }
    return StatusOf(result);
  });
}

grpc::ServerUnaryReactor* ShardInternalService::LiveShards(
    grpc::CallbackServerContext* context, const internal::v1::Empty*,
    internal::v1::LiveShardsResponse* response) {
  return RunBlocking(context, *executor_, [this, response](const CallContext& call) {
    auto result = shard_->LiveShards(call);
    if (result.ok()) {
      for (const auto& lease : *result) {
        auto* out = response->add_shards();
        out->set_shard_id(lease.shard_id);
        out->set_address(lease.address);
        out->set_epoch(lease.epoch);
      }
    }
    return StatusOf(result);
  });
}

}  // namespace infrachat::remote
