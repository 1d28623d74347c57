#include "shard_client.h"

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <string>

#include "convert.h"
#include "infrachat/core/grpc_metrics.h"
#include "infrachat/core/metrics.h"
#include "infrachat/core/tracing.h"

namespace infrachat::remote {

namespace {

using Stub = internal::v1::ShardInternal::Stub;
using internal::v1::SendStreamRequest;
using internal::v1::SendStreamResponse;
using Clock = CallContext::Clock;

// Sends waiting for an answer on one stream before SendAsync refuses (RESOURCE_EXHAUSTED).
constexpr std::size_t kMaxPendingSends = 65536;
// How often the sweeper looks for expired sends while any are pending: the lateness of a
// DEADLINE_EXCEEDED, against an idle cost of nothing (it sleeps while nothing is pending).
constexpr std::chrono::milliseconds kSweepEvery{50};

// The client span of a send on the stream; the shard process names its server span the same.
constexpr std::string_view kSendStreamSpan = "infrachat.internal.v1.ShardInternal/SendStream";

// Ends a send's span with its gRPC status code (and ERROR unless OK).
void EndRpcSpan(Span span, const Result<SendOutcome>& outcome) {
  if (!span.recording()) return;
  const Code code = outcome.ok() ? Code::kOk : outcome.code();
  span.SetAttribute("rpc.grpc.status_code", static_cast<int>(code));
  if (!outcome.ok()) span.SetError(CodeName(code));
  span.End();
}

Error WithTrace(Code code, const std::string& message, const std::string& trace_id) {
  return MakeError(code, message + " [trace " + trace_id + "]");
}

internal::v1::ChannelRequest ChannelRequest(const Principal& caller, std::string_view channel) {
  internal::v1::ChannelRequest request;
  *request.mutable_caller() = ToProto(caller);
  request.set_channel(std::string(channel));
  return request;
}

internal::v1::RecordAckRequest AckRequest(const Principal& caller, std::string channel,
                                          std::uint64_t seq, v1::AckKind kind) {
  internal::v1::RecordAckRequest request;
  *request.mutable_caller() = ToProto(caller);
  request.set_channel(std::move(channel));
  request.set_seq(seq);
  request.set_kind(kind);
  return request;
}

internal::v1::ReadLogRequest LogRequest(std::string channel, std::uint64_t reader_id,
                                        std::uint64_t after_seq, std::uint32_t limit) {
  internal::v1::ReadLogRequest request;
  request.set_channel(std::move(channel));
  request.set_reader_id(reader_id);
  request.set_after_seq(after_seq);
  request.set_limit(limit);
  return request;
}

std::vector<v1::ChatMessage> Messages(const internal::v1::ReadLogResponse& response) {
  return {response.messages().begin(), response.messages().end()};
}

// `done` for a response of type From, called with what `convert` makes of it.
template <typename From, typename To, typename Convert>
std::function<void(Result<From>)> Converting(Done<To> done, Convert convert) {
  return [done = std::move(done), convert](Result<From> result) {
    if (!result.ok()) return done(result.error());
    done(convert(*result));
  };
}

}  // namespace

// One ShardInternal.SendStream call: the sends queued on it (one write in flight, `out_`'s
// front), and those waiting for their answer (`pending_`, by id; ordered, so that a stream's
// end fails them, and RoutedShard retries them, in the order they were sent).
// A read is always outstanding from the start until it fails, so OnDone cannot come before
// OnReadDone(false); that sets closing_, after which no write is started: no hold is needed.
// Thread-safety: reactions (gRPC threads), Enqueue (callers), Expire (the sweeper) and Cancel
// (the destructor) take `mu_`; callbacks and TryCancel run without it.
// Lifetime: owned by RemoteShard only (see there); done_ is the last thing OnDone sets, and
// nothing of the object is touched after it, so a holder may destroy it once IsDone().
class SendStreamCall final : public grpc::ClientBidiReactor<SendStreamRequest, SendStreamResponse> {
 public:
  enum class Queued { kOk, kEnded, kFull };

  // Starts the call. No deadline: it lives as long as it works, each send has its own. No
  // wait_for_ready, like the unary calls: a refused connection ends it at once (UNAVAILABLE).
  explicit SendStreamCall(Stub& stub) {
    stub.async()->SendStream(&context_, this);
    StartRead(&in_);
    StartCall();
  }

  // Queues `request` (its id is set here); `request` and `done` are moved from only on kOk.
  Queued Enqueue(SendStreamRequest& request, Clock::time_point deadline,
                 const std::string& trace_id, SendCallback& done) {
    std::lock_guard lock(mu_);
    if (closing_) return Queued::kEnded;
    if (pending_.size() >= kMaxPendingSends) return Queued::kFull;
    const std::uint64_t id = ++next_id_;
    request.set_id(id);
    pending_.emplace(id, Pending{deadline, trace_id, std::move(done)});
    out_.push_back(std::move(request));
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());  // deque: the front stays put while requests are appended
    }
    return Queued::kOk;
  }

  // Fails the sends whose deadline has passed with DEADLINE_EXCEEDED; returns whether sends are
  // still pending. An expired send also cancels the stream: an answer that takes longer than
  // the call timeout means the peer (or the path to it) is stuck: SIGSTOPped, a half-open
  // connection, a database that hangs. Keeping the stream would make every later send wait out
  // its own timeout behind it, and leave the requests still queued here to be written (and
  // committed) long after their callers were told the outcome is unknown and resent them,
  // possibly out of order. Cancelling fails the rest at once with UNAVAILABLE (RoutedShard then
  // tries the next shard) and the next send opens a fresh stream. The cost, failing sends that
  // might still have been answered, is what a client's resend with the same id makes safe.
  bool Expire(Clock::time_point now) {
    std::vector<Pending> expired;
    bool cancel = false;
    bool left = false;
    {
      std::lock_guard lock(mu_);
      for (auto it = pending_.begin(); it != pending_.end();) {
        if (it->second.deadline <= now) {
          expired.push_back(std::move(it->second));
          it = pending_.erase(it);
        } else {
          ++it;
        }
      }
      if (!expired.empty() && !closing_) {
        closing_ = true;  // no new send joins a stream being cancelled
        cancel = true;
      }
      left = !pending_.empty();
    }
    // Not under mu_: cancelling may run reactions. The call stays valid (context_ holds it)
    // even if OnDone runs meanwhile; the holder keeps this object alive.
    if (cancel) context_.TryCancel();
    for (auto& send : expired) {
      send.done(WithTrace(Code::kDeadlineExceeded,
                          "the shard did not answer the send in time; outcome unknown: resend "
                          "with the same client_msg_id",
                          send.trace_id));
    }
    return left;
  }

  bool Closing() {
    std::lock_guard lock(mu_);
    return closing_;
  }

  bool IsDone() {
    std::lock_guard lock(mu_);
    return done_;
  }

  // Ends the call; OnDone fails what is pending.
  void Cancel() {
    {
      std::lock_guard lock(mu_);
      if (done_) return;
      closing_ = true;
    }
    context_.TryCancel();
  }

  void WaitDone() {
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return done_; });
  }

 private:
  struct Pending {
    Clock::time_point deadline;
    std::string trace_id;
    SendCallback done;
  };

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    writing_ = false;
    out_.pop_front();
    if (!ok) {
      // The call is broken: its read fails too, and OnDone fails what is pending.
      closing_ = true;
      out_.clear();
    } else if (!closing_ && !out_.empty()) {
      writing_ = true;
      StartWrite(&out_.front());
    }
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      std::lock_guard lock(mu_);
      closing_ = true;  // the call ends; OnDone follows once the writes in flight complete
      return;
    }
    std::optional<Pending> answered;
    std::optional<Result<SendOutcome>> result;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(in_.id());
      if (it != pending_.end()) {  // else already failed (expired): its answer is dropped
        answered = std::move(it->second);
        pending_.erase(it);
        if (in_.has_ok()) {
          result = SendOutcome{in_.ok().seq(), in_.ok().duplicate(), in_.ok().sent_at_unix_ms()};
        } else {
          const grpc::Status status(static_cast<grpc::StatusCode>(in_.error().code()),
                                    in_.error().message());
          result = FromStatus(status, answered->trace_id);
        }
      }
      StartRead(&in_);  // after everything was taken from in_
    }
    if (answered) answered->done(std::move(*result));
  }

  void OnDone(const grpc::Status& status) override {
    std::map<std::uint64_t, Pending> failed;
    {
      std::lock_guard lock(mu_);
      closing_ = true;
      failed.swap(pending_);
      out_.clear();
    }
    const std::string why = "the send stream to the shard ended (" +
                            std::to_string(status.error_code()) + " " + status.error_message() +
                            ") before the answer; outcome unknown: resend with the same "
                            "client_msg_id";
    for (auto& [id, send] : failed) send.done(WithTrace(Code::kUnavailable, why, send.trace_id));
    std::lock_guard lock(mu_);
    done_ = true;
    done_cv_.notify_all();
    // Nothing of this object is touched after the unlock: its holder may destroy it now.
  }

  grpc::ClientContext context_;
  SendStreamResponse in_;  // the one read in flight

  std::mutex mu_;
  std::condition_variable done_cv_;
  std::map<std::uint64_t, Pending> pending_;
  std::deque<SendStreamRequest> out_;  // front is being written while writing_
  std::uint64_t next_id_ = 0;
  bool writing_ = false;
  bool closing_ = false;  // no more writes start; Enqueue answers kEnded
  bool done_ = false;     // OnDone has run (and called every callback it owed)
};

RemoteShard::RemoteShard(std::shared_ptr<grpc::Channel> channel, std::chrono::milliseconds timeout,
                         const std::string& peer)
    : stub_(internal::v1::ShardInternal::NewStub(std::move(channel))),
      timeout_(timeout),
      peer_(peer) {
  // Sends are answered in milliseconds when healthy; the top buckets cover the call timeout.
  send_seconds_ = &prometheus::BuildHistogram()
                       .Name("infrachat_cluster_send_seconds")
                       .Help("Time from handing a send to a remote shard to its answer, by peer")
                       .Register(MetricsRegistry())
                       .Add({{"peer", peer}}, prometheus::Histogram::BucketBoundaries{
                                                  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                  0.25, 0.5, 1, 2.5, 5, 10});
  auto& sends = prometheus::BuildCounter()
                    .Name("infrachat_cluster_sends_total")
                    .Help("Sends handed to a remote shard, by peer and outcome (gRPC code name)")
                    .Register(MetricsRegistry());
  for (std::size_t code = 0; code < sends_by_code_.size(); ++code) {
    sends_by_code_[code] = &sends.Add(
        {{"peer", peer}, {"grpc_code", std::string(GrpcCodeName(static_cast<int>(code)))}});
  }
  sweeper_ = std::thread([this] { SweepLoop(); });
}

RemoteShard::~RemoteShard() {
  std::vector<std::shared_ptr<SendStreamCall>> streams;
  {
    std::lock_guard lock(send_mu_);
    stopping_ = true;
    streams = retired_;
    if (stream_) streams.push_back(stream_);
  }
  sweep_cv_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
  for (auto& stream : streams) stream->Cancel();
  for (auto& stream : streams) stream->WaitDone();
  // The streams go with `streams`, `stream_` and `retired_`, on this thread, before stub_.
}

std::shared_ptr<SendStreamCall> RemoteShard::CurrentStream(const SendStreamCall* stale) {
  std::lock_guard lock(send_mu_);
  if (!stream_ || stream_.get() == stale || stream_->Closing()) {
    // The old one stays owned until its OnDone has run (the sweeper drops it then).
    if (stream_) retired_.push_back(std::move(stream_));
    stream_ = std::make_shared<SendStreamCall>(*stub_);
  }
  sweep_work_ = true;
  if (sweeper_idle_) sweep_cv_.notify_one();
  return stream_;
}

void RemoteShard::SweepLoop() {
  std::unique_lock lock(send_mu_);
  while (!stopping_) {
    if (!sweep_work_) {
      sweeper_idle_ = true;
      sweep_cv_.wait(lock, [&] { return stopping_ || sweep_work_; });
      sweeper_idle_ = false;
      continue;
    }
    if (sweep_cv_.wait_for(lock, kSweepEvery, [&] { return stopping_; })) break;
    sweep_work_ = false;  // a SendAsync from now on sets it again
    std::vector<std::shared_ptr<SendStreamCall>> streams = retired_;
    if (stream_) streams.push_back(stream_);
    lock.unlock();
    bool pending = false;
    const auto now = Clock::now();
    for (auto& stream : streams) pending = stream->Expire(now) || pending;
    streams.clear();
    lock.lock();
    std::erase_if(retired_, [](const auto& stream) { return stream->IsDone(); });
    if (pending || !retired_.empty()) sweep_work_ = true;
  }
}

template <typename Response, typename Request>
Result<Response> RemoteShard::Call(grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                                const Request&, Response*),
                                   const CallContext& call, const Request& request) {
  return UnaryCall(*stub_, method, call, request, timeout_);
}

void RemoteShard::SendAsync(const CallContext& call, SendCommand command, SendCallback done) {
  // The client half of the hop (the shard process records the server half); records only for
  // a sampled send.
  Span span = StartSpan(kSendStreamSpan, SpanKind::kClient, call.span());
  if (span.recording()) {
    span.SetAttribute("rpc.system", "grpc");
    span.SetAttribute("rpc.service", "infrachat.internal.v1.ShardInternal");
    span.SetAttribute("rpc.method", "SendStream");
    span.SetAttribute("net.peer.name", peer_);
  }
  // Every way a send ends goes through `done` exactly once: count it there.
  done = [this, start = Clock::now(), span, done = std::move(done)](Result<SendOutcome> outcome) {
    const auto code = static_cast<std::size_t>(outcome.ok() ? Code::kOk : outcome.code());
    sends_by_code_[code < sends_by_code_.size() ? code : 2]->Increment();
    send_seconds_->Observe(std::chrono::duration<double>(Clock::now() - start).count());
    EndRpcSpan(span, outcome);
    done(std::move(outcome));
  };
  if (auto gone = GaveUp(call)) return done(*gone);
  SendStreamRequest request;
  auto* send = request.mutable_send();
  send->set_channel(std::move(command.channel));
  send->set_sender_id(command.sender_id);
  send->set_sender(std::move(command.sender));
  send->set_client_msg_id(std::move(command.client_msg_id));
  send->set_body(std::move(command.body));
  request.set_trace_id(call.trace_id());  // per send: the shard logs it with the send
  if (span.context().span_id != 0) request.set_traceparent(span.context().TraceParent());
  // A failure is an unknown outcome: the client resends with the same id, and a message that
  // was stored after all comes back as a duplicate.
  const auto deadline = std::min(call.deadline(), Clock::now() + timeout_);
  const SendStreamCall* stale = nullptr;
  // Twice at most: the current stream may end between being chosen and the send being queued;
  // a stream opened just now that has already ended means the shard cannot be reached.
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto stream = CurrentStream(stale);
    switch (stream->Enqueue(request, deadline, call.trace_id(), done)) {
      case SendStreamCall::Queued::kOk:
        return;
      case SendStreamCall::Queued::kFull:
        return done(MakeError(Code::kResourceExhausted,
                              "too many sends in flight to this shard; retry later"));
      case SendStreamCall::Queued::kEnded:
        stale = stream.get();
        break;
    }
  }
  done(WithTrace(Code::kUnavailable, "the send stream to the shard could not be opened",
                 call.trace_id()));
}

Result<v1::Channel> RemoteShard::CreateChannel(const CallContext& call, const Principal& caller,
                                               const v1::CreateChannelRequest& request) {
  internal::v1::CreateChannelRequest remote;
  *remote.mutable_caller() = ToProto(caller);
  *remote.mutable_request() = request;
  return Call(&Stub::CreateChannel, call, remote);
}

Result<v1::Channel> RemoteShard::JoinChannel(const CallContext& call, const Principal& caller,
                                             std::string_view channel) {
  return Call(&Stub::JoinChannel, call, ChannelRequest(caller, channel));
}

Result<void> RemoteShard::LeaveChannel(const CallContext& call, const Principal& caller,
                                       std::string_view channel) {
  auto result = Call(&Stub::LeaveChannel, call, ChannelRequest(caller, channel));
  if (!result.ok()) return result.error();
  return Ok();
}

Result<void> RemoteShard::InviteMember(const CallContext& call, const Principal& caller,
                                       std::string_view channel, std::uint64_t invitee_id,
                                       std::string_view invitee_username) {
  internal::v1::InviteMemberRequest request;
  *request.mutable_caller() = ToProto(caller);
  request.set_channel(std::string(channel));
  request.set_invitee_id(invitee_id);
  request.set_invitee_username(std::string(invitee_username));
  auto result = Call(&Stub::InviteMember, call, request);
  if (!result.ok()) return result.error();
  return Ok();
}

Result<std::vector<v1::Channel>> RemoteShard::ListChannels(const CallContext& call,
                                                           const Principal& caller) {
  internal::v1::ListChannelsRequest request;
  *request.mutable_caller() = ToProto(caller);
  auto result = Call(&Stub::ListChannels, call, request);
  if (!result.ok()) return result.error();
  return std::vector<v1::Channel>(result->channels().begin(), result->channels().end());
}

Result<std::vector<v1::Member>> RemoteShard::ListMembers(const CallContext& call,
                                                         const Principal& caller,
                                                         std::string_view channel) {
  auto result = Call(&Stub::ListMembers, call, ChannelRequest(caller, channel));
  if (!result.ok()) return result.error();
  return std::vector<v1::Member>(result->members().begin(), result->members().end());
}

Result<v1::GetHistoryResponse> RemoteShard::GetHistory(const CallContext& call,
                                                       const Principal& caller,
                                                       const v1::GetHistoryRequest& request) {
  internal::v1::GetHistoryRequest remote;
  *remote.mutable_caller() = ToProto(caller);
  *remote.mutable_request() = request;
  return Call(&Stub::GetHistory, call, remote);
}

Result<std::uint64_t> RemoteShard::AuthorizeSubscribe(const CallContext& call,
                                                      const Principal& caller,
                                                      std::string_view channel) {
  auto result = Call(&Stub::AuthorizeSubscribe, call, ChannelRequest(caller, channel));
  if (!result.ok()) return result.error();
  return result->head_seq();
}

void RemoteShard::AuthorizeSubscribeAsync(const CallContext& call, const Principal& caller,
                                          std::string channel, Done<std::uint64_t> done) {
  AsyncUnaryCall<internal::v1::HeadResponse>(
      [this](auto* context, auto* req, auto* resp, auto on_status) {
        stub_->async()->AuthorizeSubscribe(context, req, resp, std::move(on_status));
      },
      call, ChannelRequest(caller, channel), timeout_,
      Converting<internal::v1::HeadResponse, std::uint64_t>(
          std::move(done), [](const internal::v1::HeadResponse& r) { return r.head_seq(); }));
}

Result<bool> RemoteShard::RecordAck(const CallContext& call, const Principal& caller,
                                    std::string_view channel, std::uint64_t seq, v1::AckKind kind) {
  auto result = Call(&Stub::RecordAck, call, AckRequest(caller, std::string(channel), seq, kind));
  if (!result.ok()) return result.error();
  return result->moved();
}

void RemoteShard::RecordAckAsync(const CallContext& call, const Principal& caller,
                                 std::string channel, std::uint64_t seq, v1::AckKind kind,
                                 Done<bool> done) {
  AsyncUnaryCall<internal::v1::RecordAckResponse>(
      [this](auto* context, auto* req, auto* resp, auto on_status) {
        stub_->async()->RecordAck(context, req, resp, std::move(on_status));
      },
      call, AckRequest(caller, std::move(channel), seq, kind), timeout_,
      Converting<internal::v1::RecordAckResponse, bool>(
          std::move(done), [](const internal::v1::RecordAckResponse& r) { return r.moved(); }));
}

Result<std::vector<v1::ChatMessage>> RemoteShard::ReadLog(const CallContext& call,
                                                          std::string_view channel,
                                                          std::uint64_t reader_id,
                                                          std::uint64_t after_seq,
                                                          std::uint32_t limit) {
  auto result =
      Call(&Stub::ReadLog, call, LogRequest(std::string(channel), reader_id, after_seq, limit));
  if (!result.ok()) return result.error();
  return Messages(*result);
}

void RemoteShard::ReadLogAsync(const CallContext& call, std::string channel,
                               std::uint64_t reader_id, std::uint64_t after_seq,
                               std::uint32_t limit, Done<std::vector<v1::ChatMessage>> done) {
  AsyncUnaryCall<internal::v1::ReadLogResponse>(
      [this](auto* context, auto* req, auto* resp, auto on_status) {
        stub_->async()->ReadLog(context, req, resp, std::move(on_status));
      },
      call, LogRequest(std::move(channel), reader_id, after_seq, limit), timeout_,
      Converting<internal::v1::ReadLogResponse, std::vector<v1::ChatMessage>>(std::move(done),
                                                                              Messages));
}

Result<std::vector<ShardLease>> RemoteShard::LiveShards(const CallContext& call) {
  auto result = Call(&Stub::LiveShards, call, internal::v1::Empty());
  if (!result.ok()) return result.error();
  std::vector<ShardLease> out;
  for (const auto& lease : result->shards()) {
    out.push_back(ShardLease{lease.shard_id(), lease.address(), lease.epoch()});
  }
  return out;
}

}  // namespace infrachat::remote
