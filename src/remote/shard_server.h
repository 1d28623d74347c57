// ShardInternalService: the shard role's API on the internal listener, for gateways and fanout
// instances in other processes (RemoteShard is its client).
#pragma once

#include <memory>
#include <mutex>
#include <unordered_set>

#include "infrachat/api/shard_api.h"
#include "infrachat/core/executor.h"
#include "infrachat/internal/v1/internal.grpc.pb.h"

namespace infrachat::remote {

class SendStreamReactor;

// Send and SendStream go straight to ShardApi::SendAsync (non-blocking; answered after COMMIT).
// Every other call blocks on the database, so it runs on `executor`, never on gRPC's threads.
// SendStream (the edge's path): one reactor per stream (see shard_server.cc) that hands each
// request to the shard as it is read, at most kMaxStreamInflight per stream (reads pause at the
// limit), and writes each outcome back, one write in flight.
// Lifetime: `shard` and `executor` outlive the gRPC server that serves this; a SendStream
// reactor lives until its OnDone and every shard callback it is owed have run (sends already
// handed to the shard still commit; their outcomes are dropped once the stream is gone).
// Thread-safety: gRPC calls it from many threads; ShardApi is thread-safe. EndSendStreams may be
// called from any thread.
class ShardInternalService final : public internal::v1::ShardInternal::CallbackService {
 public:
  ShardInternalService(ShardApi* shard, Executor* executor) : shard_(shard), executor_(executor) {}

  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* context,
                                 const internal::v1::SendRequest* request,
                                 internal::v1::SendResponse* response) override;
  grpc::ServerBidiReactor<internal::v1::SendStreamRequest, internal::v1::SendStreamResponse>*
  SendStream(grpc::CallbackServerContext* context) override;
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

  // Sends handed to the shard per stream before its reads pause.
  static constexpr std::size_t kMaxStreamInflight = 4096;

  // The start of a drain: send streams never end by themselves, so each one stops taking
  // requests (a request read from now on is answered UNAVAILABLE), answers the sends it handed
  // to the shard, and finishes with UNAVAILABLE; the edge resends what it did not get an
  // answer for. Without this the internal server's Shutdown would wait out the whole grace.
  void EndSendStreams();

 private:
  friend class SendStreamReactor;
  void StreamDone(SendStreamReactor* stream);

  ShardApi* shard_;
  Executor* executor_;

  std::mutex streams_mu_;                           // before any SendStreamReactor's mutex
  std::unordered_set<SendStreamReactor*> streams_;  // live (OnDone not yet run)
  bool ending_ = false;
};

}  // namespace infrachat::remote
