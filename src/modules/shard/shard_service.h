// ShardService: the in-process ShardApi.
#pragma once

#include <spdlog/logger.h>

#include <functional>
#include <memory>

#include "group_committer.h"
#include "infrachat/api/shard_api.h"
#include "infrachat/bus/event_bus.h"
#include "infrachat/storage/pg.h"

namespace infrachat::shard {

struct ShardServiceOptions {
  std::size_t max_body_bytes = 8 * 1024;
  // Whether a channel name belongs to this shard's region (its home region is a function of
  // the name). Creating a channel homed elsewhere is refused: names are unique because only
  // the home region's database holds them. Empty: every name (a single region).
  std::function<bool(const std::string& channel)> homed_here;
};

// Thread-safety: every method may be called concurrently. Blocking methods use `pool`.
// Lifetime: `pool`, `committer` and `bus` must outlive the service.
class ShardService final : public ShardApi {
 public:
  ShardService(ShardServiceOptions options, pg::ConnectionPool* pool, GroupCommitter* committer,
               EventBus* bus);

  void SendAsync(const CallContext& call, SendCommand command, SendCallback done) override;
  Result<v1::Channel> CreateChannel(const CallContext& call, const Principal& caller,
                                    const v1::CreateChannelRequest& request) override;
  Result<v1::Channel> JoinChannel(const CallContext& call, const Principal& caller,
                                  std::string_view channel) override;
  Result<void> LeaveChannel(const CallContext& call, const Principal& caller,
                            std::string_view channel) override;
  Result<void> InviteMember(const CallContext& call, const Principal& caller,
                            std::string_view channel, std::uint64_t invitee_id,
                            std::string_view invitee_username) override;
  Result<std::vector<v1::Channel>> ListChannels(const CallContext& call,
                                                const Principal& caller) override;
  Result<std::vector<v1::Member>> ListMembers(const CallContext& call, const Principal& caller,
                                              std::string_view channel) override;
  Result<v1::GetHistoryResponse> GetHistory(const CallContext& call, const Principal& caller,
                                            const v1::GetHistoryRequest& request) override;
  Result<std::uint64_t> AuthorizeSubscribe(const CallContext& call, const Principal& caller,
                                           std::string_view channel) override;
  Result<bool> RecordAck(const CallContext& call, const Principal& caller, std::string_view channel,
                         std::uint64_t seq, v1::AckKind kind) override;
  Result<std::vector<v1::ChatMessage>> ReadLog(const CallContext& call, std::string_view channel,
                                               std::uint64_t reader_id, std::uint64_t after_seq,
                                               std::uint32_t limit) override;
  Result<std::vector<ShardLease>> LiveShards(const CallContext& call) override;

 private:
  ShardServiceOptions options_;
  pg::ConnectionPool* pool_;
  GroupCommitter* committer_;
  EventBus* bus_;
};

}  // namespace infrachat::shard
