// The public unary services of infrachat.v1, forwarding to the module APIs.
#pragma once

#include "infrachat/api/auth_api.h"
#include "infrachat/api/fanout_api.h"
#include "infrachat/api/router_api.h"
#include "infrachat/api/shard_api.h"
#include "infrachat/v1/infrachat.grpc.pb.h"

namespace infrachat::gateway {

// Synchronous gRPC services: each call runs on gRPC's sync thread pool, so the blocking Api
// calls (database, password hashing) are fine here. Thread-safe; the Apis must outlive them.

class AuthServiceImpl final : public v1::AuthService::Service {
 public:
  explicit AuthServiceImpl(AuthApi* auth) : auth_(auth) {}
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest*, v1::Session*) override;
  grpc::Status Login(grpc::ServerContext*, const v1::LoginRequest*, v1::Session*) override;
  grpc::Status Refresh(grpc::ServerContext*, const v1::RefreshRequest*, v1::Session*) override;
  grpc::Status Logout(grpc::ServerContext*, const v1::LogoutRequest*, v1::LogoutResponse*) override;

 private:
  AuthApi* auth_;
};

class RouterServiceImpl final : public v1::RouterService::Service {
 public:
  RouterServiceImpl(AuthApi* auth, RouterApi* router) : auth_(auth), router_(router) {}
  grpc::Status Route(grpc::ServerContext*, const v1::RouteRequest*, v1::RouteResponse*) override;

 private:
  AuthApi* auth_;
  RouterApi* router_;
};

class ChannelServiceImpl final : public v1::ChannelService::Service {
 public:
  // `fanout` answers who is online for ListMembers (fanout always runs beside the gateway).
  ChannelServiceImpl(AuthApi* auth, ShardApi* shard, FanoutApi* fanout)
      : auth_(auth), shard_(shard), fanout_(fanout) {}
  grpc::Status CreateChannel(grpc::ServerContext*, const v1::CreateChannelRequest*,
                             v1::Channel*) override;
  grpc::Status JoinChannel(grpc::ServerContext*, const v1::JoinChannelRequest*,
                           v1::Channel*) override;
  grpc::Status LeaveChannel(grpc::ServerContext*, const v1::LeaveChannelRequest*,
                            v1::LeaveChannelResponse*) override;
  grpc::Status InviteMember(grpc::ServerContext*, const v1::InviteMemberRequest*,
                            v1::InviteMemberResponse*) override;
  grpc::Status ListChannels(grpc::ServerContext*, const v1::ListChannelsRequest*,
                            v1::ListChannelsResponse*) override;
  grpc::Status ListMembers(grpc::ServerContext*, const v1::ListMembersRequest*,
                           v1::ListMembersResponse*) override;
  grpc::Status GetHistory(grpc::ServerContext*, const v1::GetHistoryRequest*,
                          v1::GetHistoryResponse*) override;

 private:
  AuthApi* auth_;
  ShardApi* shard_;
  FanoutApi* fanout_;
};

}  // namespace infrachat::gateway
