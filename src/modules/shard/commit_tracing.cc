#include "commit_tracing.h"

#include "infrachat/core/logging.h"

namespace infrachat::shard {

void BatchTraces::EndCommit(Span span, const SendCommand& command,
                            const Result<SendOutcome>& outcome, std::size_t batch_size,
                            spdlog::logger& log) {
  const bool traced = span.context().has_trace();
  if (traced && log.should_log(spdlog::level::debug)) {
    SpanScope scope(span.context());
    LogEvent(log, spdlog::level::debug, "send committed",
             {{"code", CodeName(outcome.ok() ? Code::kOk : outcome.code())},
              {"seq", outcome.ok() ? outcome->seq : 0},
              {"duplicate", outcome.ok() && outcome->duplicate},
              {"batch_size", batch_size}});
  }
  if (!span.recording()) return;
  span.SetAttribute("infrachat.batch.size", static_cast<std::uint64_t>(batch_size));
  if (outcome.ok()) {
    span.SetAttribute("infrachat.seq", outcome->seq);
    span.SetAttribute("infrachat.duplicate", outcome->duplicate);
    if (!outcome->duplicate) stored_.push_back({command.channel, outcome->seq, span.context()});
  } else {
    span.SetError(CodeName(outcome.code()));
  }
  span.End();
}

void BatchTraces::Publish(EventBus& bus, v1::ChatMessage message) {
  const Stored* from = nullptr;
  for (const Stored& s : stored_) {
    if (s.seq == message.seq() && s.channel == message.channel()) from = &s;
  }
  if (from == nullptr) return bus.Publish(std::move(message));
  Span span = StartSpan("chat.messages publish", SpanKind::kProducer, from->commit);
  span.SetAttribute("messaging.system", "infrachat");
  span.SetAttribute("messaging.operation", "publish");
  span.SetAttribute("infrachat.seq", message.seq());
  {
    SpanScope scope(span.context());
    bus.Publish(std::move(message));
  }
  span.End();
}

}  // namespace infrachat::shard
