// FanoutApi: live delivery of channel events to client streams.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "infrachat/api/principal.h"
#include "infrachat/core/encoded_frame.h"
#include "infrachat/core/result.h"
#include "infrachat/v1/infrachat.pb.h"

namespace infrachat {

// One client stream as fanout sees it; implemented by the gateway.
//
// Thread-safety: Offer may be called from any thread, concurrently.
class SessionSink {
 public:
  virtual ~SessionSink() = default;
  // Queues a frame for the client. Returns false without queuing when the stream's bounded
  // queue is full (the slow-consumer case) or the stream has ended. Never blocks.
  // `reserved` frames (Subscribed, Unsubscribed) may use a small reserve beyond the limit so
  // that control frames are not lost with the data. Ephemeral frames (typing, receipts,
  // presence) are never reserved: they are the first to go when a stream falls behind.
  // The frame is encoded by the caller, once for all the streams it goes to; the sink keeps a
  // reference to its bytes.
  virtual bool Offer(const EncodedFrame& frame, bool reserved) = 0;
  // Free slots in the queue now; fanout uses it to pace catch-up reads from the log.
  virtual std::size_t FreeSlots() const = 0;
};

// Fanout is always co-located with the gateway (edge tier `[gateway, fanout]`); it receives
// channel events from the EventBus, wherever the shard runs.
//
// Presence: fanout owns the subscriptions, so it also tells the other subscribers of a channel
// when a user's first live subscription to it starts and when their last one ends (Subscribe,
// Unsubscribe, UnsubscribeAll, a slow-consumer cut, leaving the channel). The caller does
// nothing extra for it. Best effort, and only in channels up to a configured number of live
// subscribers: see docs/adr/0006-presence.md.
//
// Thread-safety: all methods may be called from any thread. Non-blocking: log reads for
// catch-up run on fanout's own workers.
class FanoutApi {
 public:
  virtual ~FanoutApi() = default;

  // Starts delivering `channel` to `sink`: first a Subscribed{head_seq}, then, if after_seq is
  // set, every message with seq > after_seq from the log, then live ones, with no gap and no
  // duplicate; without after_seq, only messages with seq > head_seq. The caller has checked
  // membership (ShardApi::AuthorizeSubscribe returned head_seq). Subscribing again replaces the
  // previous subscription of this sink to the channel.
  virtual void Subscribe(const std::shared_ptr<SessionSink>& sink, const Principal& principal,
                         std::string_view channel, std::uint64_t head_seq,
                         std::optional<std::uint64_t> after_seq) = 0;
  virtual void Unsubscribe(const SessionSink* sink, std::string_view channel) = 0;
  // Ends every subscription of the sink (stream closed).
  virtual void UnsubscribeAll(const SessionSink* sink) = 0;
  // Whether the sink currently has a live subscription to the channel.
  virtual bool IsSubscribed(const SessionSink* sink, std::string_view channel) const = 0;
  // Number of live subscriptions of the sink (for the per-stream limit).
  virtual std::size_t CountSubscriptions(const SessionSink* sink) const = 0;
  // The users this instance knows to be online in `channel` (a live subscription on any fanout
  // instance whose reports it has heard), in ascending id order. A hint with the same limits as
  // Presence frames: an instance that started after a user came online does not know of them.
  virtual std::vector<std::uint64_t> OnlineUsers(std::string_view channel) const = 0;
};

}  // namespace infrachat
