#include "unary_services.h"

#include <algorithm>
#include <vector>

#include "grpc_edge.h"
#include "infrachat/core/grpc_call_context.h"
#include "infrachat/core/validation.h"

namespace infrachat::gateway {

namespace {

// Copies a successful result into the response message; returns the call's status.
template <typename T>
grpc::Status Reply(Result<T> result, T* response) {
  if (!result.ok()) return ToStatus(result.error());
  *response = std::move(result).value();
  return grpc::Status::OK;
}

// The longest a public call may take when its client set no deadline (or a longer one).
constexpr std::chrono::milliseconds kMaxCall{30000};

}  // namespace

grpc::Status AuthServiceImpl::Register(grpc::ServerContext* ctx, const v1::RegisterRequest* request,
                                       v1::Session* response) {
  return Reply(auth_->Register(FromServerContext(*ctx, kMaxCall), *request), response);
}

grpc::Status AuthServiceImpl::Login(grpc::ServerContext* ctx, const v1::LoginRequest* request,
                                    v1::Session* response) {
  return Reply(auth_->Login(FromServerContext(*ctx, kMaxCall), *request), response);
}

grpc::Status AuthServiceImpl::Refresh(grpc::ServerContext* ctx, const v1::RefreshRequest* request,
                                      v1::Session* response) {
  return Reply(auth_->Refresh(FromServerContext(*ctx, kMaxCall), *request), response);
}

grpc::Status AuthServiceImpl::Logout(grpc::ServerContext* ctx, const v1::LogoutRequest* request,
                                     v1::LogoutResponse*) {
  return ToStatus(auth_->Logout(FromServerContext(*ctx, kMaxCall), *request));
}

grpc::Status RouterServiceImpl::Route(grpc::ServerContext* ctx, const v1::RouteRequest* request,
                                      v1::RouteResponse* response) {
  auto caller = Authenticate(ctx->client_metadata(), *auth_);
  if (!caller.ok()) return ToStatus(caller.error());
  return Reply(router_->Route(request->channel()), response);
}

// Authenticates the call (`caller`) and makes its context (`call`).
#define INFRACHAT_AUTHENTICATE(ctx)                             \
  auto caller = Authenticate((ctx)->client_metadata(), *auth_); \
  if (!caller.ok()) return ToStatus(caller.error());            \
  const CallContext call = FromServerContext(*(ctx), kMaxCall)

grpc::Status ChannelServiceImpl::CreateChannel(grpc::ServerContext* ctx,
                                               const v1::CreateChannelRequest* request,
                                               v1::Channel* response) {
  INFRACHAT_AUTHENTICATE(ctx);
  return Reply(shard_->CreateChannel(call, *caller, *request), response);
}

grpc::Status ChannelServiceImpl::JoinChannel(grpc::ServerContext* ctx,
                                             const v1::JoinChannelRequest* request,
                                             v1::Channel* response) {
  INFRACHAT_AUTHENTICATE(ctx);
  return Reply(shard_->JoinChannel(call, *caller, request->channel()), response);
}

grpc::Status ChannelServiceImpl::LeaveChannel(grpc::ServerContext* ctx,
                                              const v1::LeaveChannelRequest* request,
                                              v1::LeaveChannelResponse*) {
  INFRACHAT_AUTHENTICATE(ctx);
  return ToStatus(shard_->LeaveChannel(call, *caller, request->channel()));
}

grpc::Status ChannelServiceImpl::InviteMember(grpc::ServerContext* ctx,
                                              const v1::InviteMemberRequest* request,
                                              v1::InviteMemberResponse*) {
  INFRACHAT_AUTHENTICATE(ctx);
  auto invitee = auth_->LookupUserId(call, request->username());
  if (!invitee.ok()) return ToStatus(invitee.error());
  return ToStatus(
      shard_->InviteMember(call, *caller, request->channel(), *invitee, request->username()));
}

grpc::Status ChannelServiceImpl::ListChannels(grpc::ServerContext* ctx,
                                              const v1::ListChannelsRequest*,
                                              v1::ListChannelsResponse* response) {
  INFRACHAT_AUTHENTICATE(ctx);
  auto channels = shard_->ListChannels(call, *caller);
  if (!channels.ok()) return ToStatus(channels.error());
  for (auto& c : *channels) *response->add_channels() = std::move(c);
  return grpc::Status::OK;
}

grpc::Status ChannelServiceImpl::ListMembers(grpc::ServerContext* ctx,
                                             const v1::ListMembersRequest* request,
                                             v1::ListMembersResponse* response) {
  INFRACHAT_AUTHENTICATE(ctx);
  auto members = shard_->ListMembers(call, *caller, request->channel());
  if (!members.ok()) return ToStatus(members.error());
  // Asked after the membership check above, so only members learn who is online. Fanout
  // knows channels by their normal name ("general" for "#general"), as the shard does.
  const auto channel = NormalizeChannelName(request->channel());
  if (!channel.ok()) return ToStatus(channel.error());
  const std::vector<std::uint64_t> online = fanout_->OnlineUsers(*channel);
  // Display names live with the accounts (auth), not in the channel's membership; without them
  // (auth unreachable) the list still answers, with usernames only.
  std::vector<std::uint64_t> ids;
  for (const auto& m : *members) ids.push_back(m.user_id());
  auto names = auth_->DisplayNames(call, ids);
  for (auto& m : *members) {
    m.set_online(std::binary_search(online.begin(), online.end(), m.user_id()));
    if (names.ok()) {
      if (auto it = names->find(m.user_id()); it != names->end()) m.set_display_name(it->second);
    }
    *response->add_members() = std::move(m);
  }
  return grpc::Status::OK;
}

grpc::Status ChannelServiceImpl::GetHistory(grpc::ServerContext* ctx,
                                            const v1::GetHistoryRequest* request,
                                            v1::GetHistoryResponse* response) {
  INFRACHAT_AUTHENTICATE(ctx);
  return Reply(shard_->GetHistory(call, *caller, *request), response);
}

#undef INFRACHAT_AUTHENTICATE

}  // namespace infrachat::gateway
