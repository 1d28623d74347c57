// ShardInternalService: the shard role's API on the internal listener, for gateways and fanout
// instances in other processes (RemoteShard is its client).
#pragma once

#include "infrachat/api/shard_api.h"
#include "infrachat/core/executor.h"
#include "infrachat/internal/v1/internal.grpc.pb.h"

namespace infrachat::remote {

// Send goes straight to ShardApi::SendAsync (non-blocking; answered after COMMIT). Every other
// call blocks on the database, so it runs on `executor`, never on gRPC's threads.
// Lifetime: `shard` and `executor` outlive the gRPC server that serves this.
// Thread-safety: gRPC calls it from many threads; ShardApi is thread-safe.
class ShardInternalService final : public internal::v1::ShardInternal::CallbackService {
 public:
  ShardInternalService(ShardApi* shard, Executor* executor) : shard_(shard), executor_(executor) {}

  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* context,
                                 const internal::v1::SendRequest* request,
                                 internal::v1::SendResponse* response) override;
  grpc::ServerUnaryReactor* CreateChannel(grpc::CallbackServerContext* context,
                                          const internal::v1::CreateChannelRequest* request,
                                          v1::Channel* response) override;
  grpc::ServerUnaryReactor* JoinChannel(grpc::CallbackServerContext* context,
                                        const internal::v1::ChannelRequest* request,
                                        v1::Channel* response) override;
  grpc::ServerUnaryReactor* LeaveChannel(grpc::CallbackServerContext* context,
                                         const internal::v1::ChannelRequest* request,
                                         internal::v1::Empty* response) override;
  grpc::ServerUnaryReactor* InviteMember(grpc::CallbackServerContext* context,
                                         const internal::v1::InviteMemberRequest* request,
                                         internal::v1::Empty* response) override;
  grpc::ServerUnaryReactor* ListChannels(grpc::CallbackServerContext* context,
                                         const internal::v1::ListChannelsRequest* request,
                                         v1::ListChannelsResponse* response) override;
  grpc::ServerUnaryReactor* ListMembers(grpc::CallbackServerContext* context,
                                        const internal::v1::ChannelRequest* request,
                                        v1::ListMembersResponse* response) override;
  grpc::ServerUnaryReactor* GetHistory(grpc::CallbackServerContext* context,
                                       const internal::v1::GetHistoryRequest* request,
                                       v1::GetHistoryResponse* response) override;
  grpc::ServerUnaryReactor* AuthorizeSubscribe(grpc::CallbackServerContext* context,
                                               const internal::v1::ChannelRequest* request,
                                               internal::v1::HeadResponse* response) override;
  grpc::ServerUnaryReactor* RecordAck(grpc::CallbackServerContext* context,
                                      const internal::v1::RecordAckRequest* request,
                                      internal::v1::RecordAckResponse* response) override;
  grpc::ServerUnaryReactor* ReadLog(grpc::CallbackServerContext* context,
                                    const internal::v1::ReadLogRequest* request,
                                    internal::v1::ReadLogResponse* response) override;
  grpc::ServerUnaryReactor* LiveShards(grpc::CallbackServerContext* context,
                                       const internal::v1::Empty* request,
                                       internal::v1::LiveShardsResponse* response) override;

 private:
  ShardApi* shard_;
  Executor* executor_;
};

}  // namespace infrachat::remote
