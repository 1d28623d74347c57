// RemoteShard: the ShardApi of a shard role that runs in another process, over its internal
// listener (ShardInternal).
#pragma once

#include <chrono>
#include <memory>

#include "infrachat/api/shard_api.h"
#include "infrachat/internal/v1/internal.grpc.pb.h"

namespace infrachat::remote {

// Every call's deadline is the earlier of its context's and now + `timeout`, and carries the
// context's trace id; a failure is the remote Error, or UNAVAILABLE / DEADLINE_EXCEEDED when the
// peer cannot be reached in time (never a hang). SendAsync and the *Async forms use gRPC's
// callback API and never block; their callbacks run on a gRPC thread. The other methods block
// for one round trip, like the in-process ones block on the database.
// Thread-safety: every method may be called concurrently from any thread.
// Lifetime: the destructor does not wait for SendAsync callbacks; destroy it only after the
// callers (gateway streams) are gone, as the daemon does.
class RemoteShard final : public ShardApi {
 public:
  RemoteShard(std::shared_ptr<grpc::Channel> channel, std::chrono::milliseconds timeout);

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
  void AuthorizeSubscribeAsync(const CallContext& call, const Principal& caller,
                               std::string channel, Done<std::uint64_t> done) override;
  void RecordAckAsync(const CallContext& call, const Principal& caller, std::string channel,
                      std::uint64_t seq, v1::AckKind kind, Done<bool> done) override;
  void ReadLogAsync(const CallContext& call, std::string channel, std::uint64_t reader_id,
                    std::uint64_t after_seq, std::uint32_t limit,
                    Done<std::vector<v1::ChatMessage>> done) override;
  Result<std::vector<ShardLease>> LiveShards(const CallContext& call) override;

 private:
  using Stub = internal::v1::ShardInternal::Stub;
  // One blocking unary call of `method` with the deadline.
  template <typename Response, typename Request>
  Result<Response> Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                     Response*),
                        const CallContext& call, const Request& request);

  std::unique_ptr<Stub> stub_;
  const std::chrono::milliseconds timeout_;
};

}  // namespace infrachat::remote
