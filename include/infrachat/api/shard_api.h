// ShardApi: the durability plane (the ChatShard): channels, membership, per-channel sequence and
// the message log.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "infrachat/api/principal.h"
#include "infrachat/core/call_context.h"
#include "infrachat/core/result.h"
#include "infrachat/v1/infrachat.pb.h"

namespace infrachat {

// A validated request to append one message to a channel's log.
struct SendCommand {
  std::string channel;
  std::uint64_t sender_id = 0;
  std::string sender;  // username, copied into the committed message
  std::string client_msg_id;
  std::string body;
};

// A shard process of the region that holds an unexpired lease (docs/adr/0009).
struct ShardLease {
  std::string shard_id;
  std::string address;  // its internal listener
  std::uint64_t epoch = 0;
};

struct SendOutcome {
  std::uint64_t seq = 0;
  bool duplicate = false;  // the (channel, sender, client_msg_id) was already stored
  std::int64_t sent_at_unix_ms = 0;
};

// Called exactly once per SendAsync, after the outcome is known: on a shard thread, or inline on
// the caller's thread when the command is rejected before it is queued (validation, full queue,
// shutting down). For a success that is after COMMIT returned: ACK = durability. Must not block.
using SendCallback = std::function<void(Result<SendOutcome>)>;

// The completion of an asynchronous call: called exactly once, on the caller's thread (inline)
// or on another thread (a gRPC callback thread, a worker). Must not block.
template <typename T>
using Done = std::function<void(Result<T>)>;

// What fanout needs from the shard: the committed log of a channel, read on behalf of a
// subscriber. Thread-safety: may be called concurrently from any thread.
class LogReader {
 public:
  virtual ~LogReader() = default;

  // Reads committed messages with seq > after_seq, oldest first, at most `limit`, for fanout's
  // catch-up of a live subscriber. `reader_id` must be a member now, checked in the same
  // snapshot as the read (PERMISSION_DENIED, or NOT_FOUND for a channel hidden from them): a
  // read can never return messages committed after the reader left, even when the event of the
  // leave has not reached fanout yet.
  virtual Result<std::vector<v1::ChatMessage>> ReadLog(const CallContext& call,
                                                       std::string_view channel,
                                                       std::uint64_t reader_id,
                                                       std::uint64_t after_seq,
                                                       std::uint32_t limit) = 0;

  // The same without blocking the calling thread on a network round trip. This default runs
  // ReadLog on the calling thread and calls `done` inline: right in process, where the read
  // blocks on the local database like any worker's. A remote shard answers on a gRPC thread.
  virtual void ReadLogAsync(const CallContext& call, std::string channel, std::uint64_t reader_id,
                            std::uint64_t after_seq, std::uint32_t limit,
                            Done<std::vector<v1::ChatMessage>> done) {
    done(ReadLog(call, channel, reader_id, after_seq, limit));
  }
};

// Thread-safety: every method may be called concurrently from any thread.
// Blocking: everything but SendAsync and the *Async forms blocks on the database (or a network
// round trip to a remote shard, within `call`'s deadline); call from worker threads only.
// Contexts: a call whose context is Done() when its turn comes fails with DEADLINE_EXCEEDED or
// CANCELLED without touching the database.
// Authorization: methods taking a Principal check membership at the time of the call.
class ShardApi : public LogReader {
 public:
  // Appends a message. Never blocks: the command is queued and committed together with other
  // concurrent sends (group commit). Errors: NOT_FOUND (no such channel), PERMISSION_DENIED (not
  // a member), UNAVAILABLE (database unreachable or commit outcome unknown: retry with the same
  // client_msg_id), RESOURCE_EXHAUSTED (the shard's queue is full).
  // The sender must already be validated (channel name, body size and encoding). `call` gives
  // the trace id and bounds a remote hop; cancelling it does not withdraw the send (it may be
  // committed all the same, and the client's resend with the same id is then a duplicate).
  virtual void SendAsync(const CallContext& call, SendCommand command, SendCallback done) = 0;

  virtual Result<v1::Channel> CreateChannel(const CallContext& call, const Principal& caller,
                                            const v1::CreateChannelRequest& request) = 0;
  virtual Result<v1::Channel> JoinChannel(const CallContext& call, const Principal& caller,
                                          std::string_view channel) = 0;
  virtual Result<void> LeaveChannel(const CallContext& call, const Principal& caller,
                                    std::string_view channel) = 0;
  // `invitee_id`/`invitee_username` come from the auth module (the shard does not own users).
  virtual Result<void> InviteMember(const CallContext& call, const Principal& caller,
                                    std::string_view channel, std::uint64_t invitee_id,
                                    std::string_view invitee_username) = 0;
  virtual Result<std::vector<v1::Channel>> ListChannels(const CallContext& call,
                                                        const Principal& caller) = 0;
  virtual Result<std::vector<v1::Member>> ListMembers(const CallContext& call,
                                                      const Principal& caller,
                                                      std::string_view channel) = 0;
  virtual Result<v1::GetHistoryResponse> GetHistory(const CallContext& call,
                                                    const Principal& caller,
                                                    const v1::GetHistoryRequest& request) = 0;

  // Checks that the caller may subscribe to the channel now; returns its head seq.
  virtual Result<std::uint64_t> AuthorizeSubscribe(const CallContext& call, const Principal& caller,
                                                   std::string_view channel) = 0;

  // Stores a delivered/read position (only ever moves forward). Returns whether it moved.
  virtual Result<bool> RecordAck(const CallContext& call, const Principal& caller,
                                 std::string_view channel, std::uint64_t seq, v1::AckKind kind) = 0;

  // Asynchronous forms of the calls a gateway stream makes from its small executor, so that no
  // executor thread waits for a remote shard. The defaults run the blocking form on the calling
  // thread and call `done` inline (in process); a remote shard answers on a gRPC thread.
  virtual void AuthorizeSubscribeAsync(const CallContext& call, const Principal& caller,
                                       std::string channel, Done<std::uint64_t> done) {
    done(AuthorizeSubscribe(call, caller, channel));
  }
  virtual void RecordAckAsync(const CallContext& call, const Principal& caller, std::string channel,
                              std::uint64_t seq, v1::AckKind kind, Done<bool> done) {
    done(RecordAck(call, caller, channel, seq, kind));
  }

  // The region's shard processes whose lease has not expired, by shard id: what placement
  // chooses among.
  virtual Result<std::vector<ShardLease>> LiveShards(const CallContext& call) = 0;
};

}  // namespace infrachat
