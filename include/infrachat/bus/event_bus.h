// EventBus: how committed messages and other channel events travel from the shard to fanout.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <variant>

#include "infrachat/v1/infrachat.pb.h"

namespace infrachat {

// A member joined or left a channel (or was removed). Fanout ends live delivery on leave.
struct MembershipChanged {
  std::string channel;
  std::uint64_t user_id = 0;
  std::string username;
  bool joined = false;
};

// A user's first live subscription to a channel started (online) or their last one ended
// (offline), as one fanout instance (`origin`) sees its own subscriptions. Ephemeral like typing:
// never stored or sequenced. Not a v1::Presence because `origin` is internal: every fanout merges
// the reports of all origins, so a user with devices on two gateways is online until both are
// gone (see docs/adr/0006-presence.md).
struct PresenceChanged {
  std::string channel;
  std::uint64_t user_id = 0;
  std::string username;
  bool online = false;
  std::uint64_t origin = 0;
};

// A committed message (published only after COMMIT), a typing notice, a stored receipt, a
// membership change, or a presence change.
using BusEvent =
    std::variant<v1::ChatMessage, v1::TypingEvent, v1::Receipt, MembershipChanged, PresenceChanged>;

// Returns the channel an event belongs to.
const std::string& EventChannel(const BusEvent& event);

// Publish/subscribe of BusEvents. Two implementations: in-process (LocalEventBus) and, for
// modules in different processes, gRPC streams. Both pass the same conformance tests.
//
// Ordering: events published by one thread are delivered to each subscriber in publish order.
// Delivery is at-most-once and may be lost on a crash: consumers that need every message read
// the durable log (a committed message carries its seq, so gaps are detectable).
// Thread-safety: all methods may be called from any thread. Handlers run on a bus thread, one at
// a time per subscriber, and must not block (enqueue and return).
// Trace context (docs/adr/0010, "Traces"): Publish takes the span context current on the
// calling thread (CurrentSpan(), set by a SpanScope: the shard's publish span of a sampled
// send) and every handler of the event runs with a span context of that trace current: the
// publisher's in process; across processes, the receiving side's "receive" span, a child of
// it (the wire form carries it as `traceparent`). Outside any scope an event carries none.
class EventBus {
 public:
  using Handler = std::function<void(const BusEvent&)>;
  using SubscriptionId = std::uint64_t;

  virtual ~EventBus() = default;

  // Never blocks.
  virtual void Publish(BusEvent event) = 0;
  virtual SubscriptionId Subscribe(Handler handler) = 0;
  // After it returns the handler is not running and will not be called again.
  virtual void Unsubscribe(SubscriptionId id) = 0;

  // Interest per channel, for a bus that crosses processes: an edge receives only the channels
  // its sessions watch (a bus may deliver more; the in-process bus delivers everything).
  // `ready` runs on a bus thread each time the interest is in place: once after Watch, and
  // again whenever a lost connection to the channel's owner was re-established. Every event of
  // the channel published after the owner put the interest in place is delivered (at most once,
  // like all events), so a watcher reads the durable log after each `ready` to repair what may
  // have been lost before it (the switch-over rule, docs/adr/0003 and 0009).
  // Watching a channel again replaces its `ready`; Unwatch stops it (a `ready` already on its
  // way may still run). Neither blocks, nor calls `ready` inline: callers may hold their locks.
  using Ready = std::function<void()>;
  virtual void Watch(const std::string& channel, Ready ready) = 0;
  virtual void Unwatch(const std::string& channel) = 0;
};

}  // namespace infrachat
