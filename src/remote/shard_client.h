// RemoteShard: the ShardApi of a shard role that runs in another process, over its internal
// listener (ShardInternal).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "infrachat/api/shard_api.h"
#include "infrachat/internal/v1/internal.grpc.pb.h"

namespace infrachat::remote {

class SendStreamCall;

// Every call's deadline is the earlier of its context's and now + `timeout`, and carries the
// context's trace id; a failure is the remote Error, or UNAVAILABLE / DEADLINE_EXCEEDED when the
// peer cannot be reached in time (never a hang). SendAsync and the *Async forms use gRPC's
// callback API and never block; their callbacks run on a gRPC thread (or the sweeper thread, or
// inline when refused at once). The other methods block for one round trip, like the
// in-process ones block on the database.
//
// Sends: SendAsync does not make a unary call per message (its per-call cost was most of an
// edge's CPU per send) but queues the send on one long-lived ShardInternal.SendStream call
// (SendStreamCall in the .cc), opened on the first send and opened again by the first send after
// it ended. Each send gets an id; its callback runs exactly once: with the answer of that id;
// UNAVAILABLE ("outcome unknown: resend with the same client_msg_id") when the stream ends
// before it, whatever the status (refused connection: at once, no wait_for_ready, like the unary
// calls; RoutedShard then retries once on the next shard); DEADLINE_EXCEEDED when its deadline
// (min(context's, now + timeout)) passes first, found by a sweeper thread that wakes every 50 ms
// while sends are pending (a late answer for it is ignored); RESOURCE_EXHAUSTED inline beyond
// 65536 pending sends on the stream; UNAVAILABLE from the destructor's cancel. An expired send
// also cancels its stream (see SendStreamCall::Expire for why). Sends are written in the order
// SendAsync queued them, on one HTTP/2 stream, so they reach the shard's group commit in order.
//
// Traces: a sampled send gets a CLIENT span "infrachat.internal.v1.ShardInternal/SendStream"
// (child of the caller's span, from SendAsync to its callback), sent as the request's
// traceparent; the shard process's server span is its child.
// Metrics: every send's outcome and time from SendAsync to its callback, labelled by `peer`
// (a configured address, or "discovered"): infrachat_cluster_send_seconds{peer} and
// infrachat_cluster_sends_total{peer, grpc_code}. The other calls are counted by the channel
// (MakeInternalChannel); one long-lived stream hides each send from those.
//
// Thread-safety: every method may be called concurrently from any thread.
// Lock order: `send_mu_` (which stream is current, the sweeper's state) before a
// SendStreamCall's own mutex; no callback is ever called with either held, so a callback may
// call SendAsync again.
// Lifetime: streams are owned only by this object (`stream_`, `retired_`), never by themselves,
// and are destroyed here, on the sweeper thread, or by a caller's thread while `stub_` (and so
// the grpc::Channel) is still alive: the last reference to the channel is never dropped on a
// gRPC callback thread. The destructor cancels the streams, waits until each one's OnDone has
// run (which fails what is pending with UNAVAILABLE), and joins the sweeper. It does not wait
// for the callbacks of the other *Async calls; destroy it only after the callers (gateway
// streams) are gone, as the daemon does.
class RemoteShard final : public ShardApi {
 public:
  RemoteShard(std::shared_ptr<grpc::Channel> channel, std::chrono::milliseconds timeout,
              const std::string& peer);
  ~RemoteShard() override;
  RemoteShard(const RemoteShard&) = delete;
  RemoteShard& operator=(const RemoteShard&) = delete;

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

  // The current send stream, a new one when it is missing, closing, or `stale`.
  std::shared_ptr<SendStreamCall> CurrentStream(const SendStreamCall* stale);
  // Fails expired sends while any are pending; drops streams whose OnDone has run.
  void SweepLoop();

  std::unique_ptr<Stub> stub_;  // declared first: outlives every stream (it holds the channel)
  const std::chrono::milliseconds timeout_;
  const std::string peer_;  // its metrics label, also a span attribute
  prometheus::Histogram* send_seconds_;
  std::array<prometheus::Counter*, 17> sends_by_code_;  // by gRPC status code

  std::mutex send_mu_;
  std::condition_variable sweep_cv_;
  std::shared_ptr<SendStreamCall> stream_;                // guarded by send_mu_
  std::vector<std::shared_ptr<SendStreamCall>> retired_;  // ended, OnDone maybe still to come
  bool sweep_work_ = false;    // sends were queued (or may be pending) since the last sweep
  bool sweeper_idle_ = false;  // the sweeper waits for sweep_work_ without a timeout
  bool stopping_ = false;
  std::thread sweeper_;  // last: started after everything it uses
};

}  // namespace infrachat::remote
