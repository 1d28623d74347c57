#include "shard_server.h"

#include "blocking_reactor.h"
#include "convert.h"

namespace infrachat::remote {

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
