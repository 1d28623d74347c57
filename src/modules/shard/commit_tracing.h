// The spans of sampled sends through the group committer (docs/adr/0010, "Traces").
//
// One "group commit" span per sampled send (INTERNAL, child of the span that handed the send
// to the shard): from Submit to the COMMIT of its batch, with a "commit started" event when its
// batch's transaction begins (so the wait in the queue and the commit show apart) and the
// batch's size as an attribute. Per send rather than one batch span with links: a send's trace
// then shows its own commit directly under the shard's span, and a send that is not sampled
// costs nothing (a batch span would exist for every batch, sampled or not).
// Then one "chat.messages publish" span (PRODUCER, child of the commit span) per message a
// sampled send stored, current (SpanScope) while the message is published, so that the bus
// carries it to the fanout's spans.
//
// Use: one BatchTraces per processed batch, on the committer's thread. Costs nothing (no
// allocation, no clock read) for a batch without a sampled send.
#pragma once

#include <spdlog/logger.h>

#include <string_view>
#include <vector>

#include "infrachat/api/shard_api.h"
#include "infrachat/bus/event_bus.h"
#include "infrachat/core/tracing.h"

namespace infrachat::shard {

// The name of a send's commit span.
inline constexpr std::string_view kCommitSpanName = "group commit";

class BatchTraces {
 public:
  // Ends the commit span of one send of a batch of `batch_size` with its outcome, logs "send
  // committed" at debug (in the span's trace), and remembers the span for the publish of the
  // message when the send stored a new one. `command` must outlive this object.
  void EndCommit(Span span, const SendCommand& command, const Result<SendOutcome>& outcome,
                 std::size_t batch_size, spdlog::logger& log);
  // Publishes `message` on `bus`, inside the publish span of the sampled send that stored it.
  void Publish(EventBus& bus, v1::ChatMessage message);

 private:
  struct Stored {
    std::string_view channel;
    std::uint64_t seq;
    SpanContext commit;
  };
  std::vector<Stored> stored_;  // sampled sends that stored a new message
};

}  // namespace infrachat::shard
