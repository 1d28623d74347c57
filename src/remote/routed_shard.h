// RoutedShard: the ShardApi of a region's shard processes, as seen from a process that runs
// none of them. Each channel's calls go to its owner, chosen by rendezvous hashing over the
// configured shard addresses (peers.shard); a send that finds its owner unreachable is tried
// once more on the next shard in the channel's hash order, with the same client_msg_id.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "infrachat/api/shard_api.h"
#include "shard_client.h"

namespace infrachat::remote {

// Correctness never depends on which shard serves a channel: every shard process works on the
// region's database, which allocates each seq (docs/adr/0009). Placement spreads load and keeps
// a channel's sends in one group committer. Calls that name no channel (ListChannels) go to the
// first shard in the hash order of the caller's id.
// Thread-safety: as ShardApi. Lifetime: owns one RemoteShard per address.
class RoutedShard final : public ShardApi {
 public:
  RoutedShard(const std::vector<std::string>& addresses, std::chrono::milliseconds timeout);

  // The addresses in `channel`'s rendezvous order: the owner first. For tests and the bus.
  std::vector<std::string> Order(std::string_view channel) const;

  void SendAsync(SendCommand command, SendCallback done) override;
  Result<v1::Channel> CreateChannel(const Principal& caller,
                                    const v1::CreateChannelRequest& request) override;
  Result<v1::Channel> JoinChannel(const Principal& caller, std::string_view channel) override;
  Result<void> LeaveChannel(const Principal& caller, std::string_view channel) override;
  Result<void> InviteMember(const Principal& caller, std::string_view channel,
                            std::uint64_t invitee_id, std::string_view invitee_username) override;
  Result<std::vector<v1::Channel>> ListChannels(const Principal& caller) override;
  Result<std::vector<v1::Member>> ListMembers(const Principal& caller,
                                              std::string_view channel) override;
  Result<v1::GetHistoryResponse> GetHistory(const Principal& caller,
                                            const v1::GetHistoryRequest& request) override;
  Result<std::uint64_t> AuthorizeSubscribe(const Principal& caller,
                                           std::string_view channel) override;
  Result<bool> RecordAck(const Principal& caller, std::string_view channel, std::uint64_t seq,
                         v1::AckKind kind) override;
  Result<std::vector<v1::ChatMessage>> ReadLog(std::string_view channel, std::uint64_t reader_id,
                                               std::uint64_t after_seq,
                                               std::uint32_t limit) override;

 private:
  // The channel's owner, or, when it is unreachable, the next in its order: blocking calls
  // are safe to repeat elsewhere (reads, idempotent writes).
  template <typename Call>
  auto WithOwner(std::string_view channel, Call call) -> decltype(call(std::declval<ShardApi&>()));
  ShardApi& At(const std::string& address) const;

  std::vector<std::string> addresses_;
  std::vector<std::unique_ptr<RemoteShard>> shards_;  // parallel to addresses_
};

}  // namespace infrachat::remote
