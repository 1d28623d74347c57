#include "shard_client.h"

#include "convert.h"

namespace infrachat::remote {

namespace {

internal::v1::ChannelRequest ChannelRequest(const Principal& caller, std::string_view channel) {
  internal::v1::ChannelRequest request;
  *request.mutable_caller() = ToProto(caller);
  request.set_channel(std::string(channel));
  return request;
}

}  // namespace

RemoteShard::RemoteShard(std::shared_ptr<grpc::Channel> channel, std::chrono::milliseconds timeout)
    : stub_(internal::v1::ShardInternal::NewStub(std::move(channel))), timeout_(timeout) {}

template <typename Response, typename Request>
Result<Response> RemoteShard::Call(grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                                const Request&, Response*),
                                   const Request& request) {
  return UnaryCall(*stub_, method, request, timeout_);
}

void RemoteShard::SendAsync(SendCommand command, SendCallback done) {
  // Everything the call needs lives until its completion callback.
  struct Call {
    grpc::ClientContext context;
    internal::v1::SendRequest request;
    internal::v1::SendResponse response;
    SendCallback done;
  };
  auto call = std::make_shared<Call>();
  PrepareContext(call->context, timeout_);
  call->request.set_channel(std::move(command.channel));
  call->request.set_sender_id(command.sender_id);
  call->request.set_sender(std::move(command.sender));
  call->request.set_client_msg_id(std::move(command.client_msg_id));
  call->request.set_body(std::move(command.body));
  call->done = std::move(done);
  stub_->async()->Send(&call->context, &call->request, &call->response,
                       [call](grpc::Status status) {
                         if (!status.ok()) {
                           // An unknown outcome: the client resends with the same id, and a
                           // message that was stored after all comes back as a duplicate.
                           call->done(FromStatus(status));
                           return;
                         }
                         call->done(SendOutcome{call->response.seq(), call->response.duplicate(),
                                                call->response.sent_at_unix_ms()});
                       });
}

Result<v1::Channel> RemoteShard::CreateChannel(const Principal& caller,
                                               const v1::CreateChannelRequest& request) {
  internal::v1::CreateChannelRequest remote;
  *remote.mutable_caller() = ToProto(caller);
  *remote.mutable_request() = request;
  return Call(&Stub::CreateChannel, remote);
}

Result<v1::Channel> RemoteShard::JoinChannel(const Principal& caller, std::string_view channel) {
  return Call(&Stub::JoinChannel, ChannelRequest(caller, channel));
}

Result<void> RemoteShard::LeaveChannel(const Principal& caller, std::string_view channel) {
  auto result = Call(&Stub::LeaveChannel, ChannelRequest(caller, channel));
  if (!result.ok()) return result.error();
  return Ok();
}

Result<void> RemoteShard::InviteMember(const Principal& caller, std::string_view channel,
                                       std::uint64_t invitee_id,
                                       std::string_view invitee_username) {
  internal::v1::InviteMemberRequest request;
  *request.mutable_caller() = ToProto(caller);
  request.set_channel(std::string(channel));
  request.set_invitee_id(invitee_id);
  request.set_invitee_username(std::string(invitee_username));
  auto result = Call(&Stub::InviteMember, request);
  if (!result.ok()) return result.error();
  return Ok();
}

Result<std::vector<v1::Channel>> RemoteShard::ListChannels(const Principal& caller) {
  internal::v1::ListChannelsRequest request;
  *request.mutable_caller() = ToProto(caller);
  auto result = Call(&Stub::ListChannels, request);
  if (!result.ok()) return result.error();
  return std::vector<v1::Channel>(result->channels().begin(), result->channels().end());
}

Result<std::vector<v1::Member>> RemoteShard::ListMembers(const Principal& caller,
                                                         std::string_view channel) {
  auto result = Call(&Stub::ListMembers, ChannelRequest(caller, channel));
  if (!result.ok()) return result.error();
  return std::vector<v1::Member>(result->members().begin(), result->members().end());
}

Result<v1::GetHistoryResponse> RemoteShard::GetHistory(const Principal& caller,
                                                       const v1::GetHistoryRequest& request) {
  internal::v1::GetHistoryRequest remote;
  *remote.mutable_caller() = ToProto(caller);
  *remote.mutable_request() = request;
  return Call(&Stub::GetHistory, remote);
}

Result<std::uint64_t> RemoteShard::AuthorizeSubscribe(const Principal& caller,
                                                      std::string_view channel) {
  auto result = Call(&Stub::AuthorizeSubscribe, ChannelRequest(caller, channel));
  if (!result.ok()) return result.error();
  return result->head_seq();
}

Result<bool> RemoteShard::RecordAck(const Principal& caller, std::string_view channel,
                                    std::uint64_t seq, v1::AckKind kind) {
  internal::v1::RecordAckRequest request;
  *request.mutable_caller() = ToProto(caller);
  request.set_channel(std::string(channel));
  request.set_seq(seq);
  request.set_kind(kind);
  auto result = Call(&Stub::RecordAck, request);
  if (!result.ok()) return result.error();
  return result->moved();
}

Result<std::vector<v1::ChatMessage>> RemoteShard::ReadLog(std::string_view channel,
                                                          std::uint64_t reader_id,
                                                          std::uint64_t after_seq,
                                                          std::uint32_t limit) {
  internal::v1::ReadLogRequest request;
  request.set_channel(std::string(channel));
  request.set_reader_id(reader_id);
  request.set_after_seq(after_seq);
  request.set_limit(limit);
  auto result = Call(&Stub::ReadLog, request);
  if (!result.ok()) return result.error();
  return std::vector<v1::ChatMessage>(result->messages().begin(), result->messages().end());
}

Result<std::vector<ShardLease>> RemoteShard::LiveShards() {
  auto result = Call(&Stub::LiveShards, internal::v1::Empty());
  if (!result.ok()) return result.error();
  std::vector<ShardLease> out;
  for (const auto& lease : result->shards()) {
    out.push_back(ShardLease{lease.shard_id(), lease.address(), lease.epoch()});
  }
  return out;
}

}  // namespace infrachat::remote
