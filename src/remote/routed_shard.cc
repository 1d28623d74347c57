#include "routed_shard.h"

#include <algorithm>

#include "convert.h"
#include "infrachat/core/validation.h"
#include "modules/router/placement.h"

namespace infrachat::remote {

namespace {

bool Unreachable(Code code) { return code == Code::kUnavailable; }

// Channel names as the shard keys them ("#general" is "general"); an invalid name still gets
// an owner, which answers INVALID_ARGUMENT.
std::string Key(std::string_view channel) {
  auto name = NormalizeChannelName(channel);
  return name.ok() ? *name : std::string(channel);
}

}  // namespace

RoutedShard::RoutedShard(const std::vector<std::string>& addresses,
                         std::chrono::milliseconds timeout)
    : addresses_(addresses) {
  for (const auto& address : addresses_) {
    shards_.push_back(std::make_unique<RemoteShard>(MakeInternalChannel(address), timeout));
  }
}

std::vector<std::string> RoutedShard::Order(std::string_view channel) const {
  std::vector<std::string> order = addresses_;
  const std::string key = Key(channel);
  std::sort(order.begin(), order.end(), [&](const std::string& a, const std::string& b) {
    return router::StableHash(a, key) > router::StableHash(b, key);
  });
  return order;
}

ShardApi& RoutedShard::At(const std::string& address) const {
  const auto it = std::find(addresses_.begin(), addresses_.end(), address);
  return *shards_[static_cast<std::size_t>(it - addresses_.begin())];
}

template <typename Call>
auto RoutedShard::WithOwner(std::string_view channel, Call call)
    -> decltype(call(std::declval<ShardApi&>())) {
  const auto order = Order(channel);
  auto result = call(At(order.front()));
  if (!result.ok() && Unreachable(result.code()) && order.size() > 1) {
    result = call(At(order[1]));
  }
  return result;
}

void RoutedShard::SendAsync(SendCommand command, SendCallback done) {
  const auto order = Order(command.channel);
  if (order.size() == 1) return At(order.front()).SendAsync(std::move(command), std::move(done));
  // Once more on the next shard when the owner cannot be reached: the same client_msg_id, so
  // a first attempt that was stored after all is answered as a duplicate, never stored twice.
  SendCommand retry = command;
  ShardApi* next = &At(order[1]);
  At(order.front())
      .SendAsync(std::move(command), [next, retry = std::move(retry),
                                      done = std::move(done)](Result<SendOutcome> outcome) mutable {
        if (outcome.ok() || !Unreachable(outcome.code())) return done(std::move(outcome));
        next->SendAsync(std::move(retry), std::move(done));
      });
}

Result<v1::Channel> RoutedShard::CreateChannel(const Principal& caller,
                                               const v1::CreateChannelRequest& request) {
  return WithOwner(request.name(),
                   [&](ShardApi& shard) { return shard.CreateChannel(caller, request); });
}

Result<v1::Channel> RoutedShard::JoinChannel(const Principal& caller, std::string_view channel) {
  return WithOwner(channel, [&](ShardApi& shard) { return shard.JoinChannel(caller, channel); });
}

Result<void> RoutedShard::LeaveChannel(const Principal& caller, std::string_view channel) {
  return WithOwner(channel, [&](ShardApi& shard) { return shard.LeaveChannel(caller, channel); });
}

Result<void> RoutedShard::InviteMember(const Principal& caller, std::string_view channel,
                                       std::uint64_t invitee_id,
                                       std::string_view invitee_username) {
  return WithOwner(channel, [&](ShardApi& shard) {
    return shard.InviteMember(caller, channel, invitee_id, invitee_username);
  });
}

Result<std::vector<v1::Channel>> RoutedShard::ListChannels(const Principal& caller) {
  return WithOwner(std::to_string(caller.user_id),
                   [&](ShardApi& shard) { return shard.ListChannels(caller); });
}

Result<std::vector<v1::Member>> RoutedShard::ListMembers(const Principal& caller,
                                                         std::string_view channel) {
  return WithOwner(channel, [&](ShardApi& shard) { return shard.ListMembers(caller, channel); });
}

Result<v1::GetHistoryResponse> RoutedShard::GetHistory(const Principal& caller,
                                                       const v1::GetHistoryRequest& request) {
  return WithOwner(request.channel(),
                   [&](ShardApi& shard) { return shard.GetHistory(caller, request); });
}

Result<std::uint64_t> RoutedShard::AuthorizeSubscribe(const Principal& caller,
                                                      std::string_view channel) {
  return WithOwner(channel,
                   [&](ShardApi& shard) { return shard.AuthorizeSubscribe(caller, channel); });
}

Result<bool> RoutedShard::RecordAck(const Principal& caller, std::string_view channel,
                                    std::uint64_t seq, v1::AckKind kind) {
  return WithOwner(channel,
                   [&](ShardApi& shard) { return shard.RecordAck(caller, channel, seq, kind); });
}

Result<std::vector<v1::ChatMessage>> RoutedShard::ReadLog(std::string_view channel,
                                                          std::uint64_t reader_id,
                                                          std::uint64_t after_seq,
                                                          std::uint32_t limit) {
  return WithOwner(channel, [&](ShardApi& shard) {
    return shard.ReadLog(channel, reader_id, after_seq, limit);
  });
}

}  // namespace infrachat::remote
