#include "shard_client.h"

#include "convert.h"

namespace infrachat::remote {

namespace {

using Stub = internal::v1::ShardInternal::Stub;

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

RemoteShard::RemoteShard(std::shared_ptr<grpc::Channel> channel, std::chrono::milliseconds timeout)
    : stub_(internal::v1::ShardInternal::NewStub(std::move(channel))), timeout_(timeout) {}

template <typename Response, typename Request>
Result<Response> RemoteShard::Call(grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                                const Request&, Response*),
                                   const CallContext& call, const Request& request) {
  return UnaryCall(*stub_, method, call, request, timeout_);
}

void RemoteShard::SendAsync(const CallContext& call, SendCommand command, SendCallback done) {
  internal::v1::SendRequest request;
  request.set_channel(std::move(command.channel));
  request.set_sender_id(command.sender_id);
  request.set_sender(std::move(command.sender));
  request.set_client_msg_id(std::move(command.client_msg_id));
  request.set_body(std::move(command.body));
  // A failure is an unknown outcome: the client resends with the same id, and a message that
  // was stored after all comes back as a duplicate.
  AsyncUnaryCall<internal::v1::SendResponse>(
      [this](auto* context, auto* req, auto* resp, auto on_status) {
        stub_->async()->Send(context, req, resp, std::move(on_status));
      },
      call, std::move(request), timeout_,
      Converting<internal::v1::SendResponse, SendOutcome>(
          std::move(done), [](const internal::v1::SendResponse& r) {
            return SendOutcome{r.seq(), r.duplicate(), r.sent_at_unix_ms()};
          }));
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
