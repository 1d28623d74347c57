// CallContext: what a module call carries besides its arguments, so that it can cross a network
// like it crosses a function call (docs/adr/0009).
//
//   - a deadline: after it the caller no longer waits for the answer. A call across processes
//     sends min(deadline, now + the hop's own timeout) as its gRPC deadline, so a remote failure
//     is DEADLINE_EXCEEDED or UNAVAILABLE, never a hang;
//   - cancellation: the caller went away before the deadline (a client stream ended, a client
//     cancelled its RPC). Work that has not started yet is skipped;
//   - a trace id (32 lower-case hex digits, the W3C trace-id format): the request it serves,
//     named in log lines of failures, so one user action can be followed across processes;
//     with the span the call works for (its parent span id, 0 for none) and the sampling
//     decision: together a W3C SpanContext (span_context.h), forwarded on internal calls as
//     `traceparent` metadata (tracing: docs/adr/0010).
//
// A value type, cheap to copy; copies share the cancellation state, so cancelling one cancels
// every copy (a stream cancels the context its pending calls hold). Thread-safety: every method
// may be called concurrently from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "infrachat/core/result.h"
#include "infrachat/core/span_context.h"

namespace infrachat {

class CallContext {
 public:
  using Clock = std::chrono::steady_clock;

  // A context for work that no single client waits for (sweeps, lease refreshes, the catch-up
  // of a live subscription): deadline `timeout` from now, a new trace id.
  static CallContext Background(std::chrono::milliseconds timeout);
  // A context with this deadline and trace id (a new one when `trace_id` is not a valid id).
  static CallContext WithDeadline(Clock::time_point deadline, std::string_view trace_id = {});
  // A context with this deadline for work done as part of `span` (a new trace id when it has
  // none).
  static CallContext WithDeadline(Clock::time_point deadline, const SpanContext& span);
  // A context with no deadline (a stream's own context: its calls are bounded by each hop's
  // timeout) and cancellation only by Cancel().
  static CallContext Unbounded(std::string_view trace_id = {});

  Clock::time_point deadline() const { return deadline_; }
  const std::string& trace_id() const { return trace_id_; }
  // The trace id, the span this call works for (0: none yet) and whether it is sampled.
  SpanContext span() const;
  // A copy for work done as part of `span` (its trace id, span id and sampling decision; the
  // trace id stays when `span` has none), with the same deadline and the same, shared,
  // cancellation. Allocates (the trace id string): for sampled work, or work whose client
  // chose its trace.
  CallContext WithSpan(const SpanContext& span) const;
  // Whether Cancel() was called on a copy, or the cancellation probe (see WithCancelProbe)
  // says the caller went away.
  bool cancelled() const;
  // Past the deadline or cancelled: the caller will not use an answer. Work not yet started
  // for it should not start.
  bool Done() const { return cancelled() || Clock::now() >= deadline_; }
  // Time left until the deadline, at most `cap` (zero when past).
  std::chrono::milliseconds Remaining(std::chrono::milliseconds cap) const;

  // Cancels this context and every copy of it.
  void Cancel() const;
  // A copy that is also cancelled when `probe` returns true (e.g. a gRPC server call's
  // IsCancelled). `probe` must stay callable as long as the copy (and its copies) are used:
  // only for contexts that live within one handler invocation.
  CallContext WithCancelProbe(std::function<bool()> probe) const;

  // A copy with the same deadline and trace id but its own cancellation, without probes: for
  // work that may outlive the handler whose context this is (a send queued for commit).
  CallContext Detached() const { return WithDeadline(deadline_, span()); }

  // A new random trace id; whether `id` is a valid one (32 hex digits, not all zero).
  static std::string NewTraceId();
  static bool IsValidTraceId(std::string_view id);

 private:
  struct CancelState {
    std::atomic<bool> cancelled{false};
    std::function<bool()> probe;  // set before the state is shared; immutable after
    std::shared_ptr<const CancelState> parent;
  };

  CallContext(Clock::time_point deadline, std::string trace_id, std::uint64_t span_id, bool sampled,
              std::shared_ptr<CancelState> cancel);

  Clock::time_point deadline_;
  std::string trace_id_;
  std::uint64_t span_id_ = 0;
  bool sampled_ = false;
  std::shared_ptr<CancelState> cancel_;
};

// CANCELLED or DEADLINE_EXCEEDED when the caller has given up (call.Done()), else nothing: what
// a blocking call answers instead of starting work nobody waits for.
std::optional<Error> GaveUp(const CallContext& call);

}  // namespace infrachat
