#include "infrachat/core/call_context.h"

#include <algorithm>
#include <cstdint>
#include <random>

#include "infrachat/core/grpc_call_context.h"

namespace infrachat {

CallContext::CallContext(Clock::time_point deadline, std::string trace_id, std::uint64_t span_id,
                         bool sampled, std::shared_ptr<CancelState> cancel)
    : deadline_(deadline),
      trace_id_(std::move(trace_id)),
      span_id_(span_id),
      sampled_(sampled),
      cancel_(std::move(cancel)) {}

CallContext CallContext::Background(std::chrono::milliseconds timeout) {
  return WithDeadline(Clock::now() + timeout);
}

CallContext CallContext::WithDeadline(Clock::time_point deadline, std::string_view trace_id) {
  return CallContext(deadline, IsValidTraceId(trace_id) ? std::string(trace_id) : NewTraceId(), 0,
                     false, std::make_shared<CancelState>());
}

CallContext CallContext::WithDeadline(Clock::time_point deadline, const SpanContext& span) {
  if (!span.has_trace()) return WithDeadline(deadline);
  return CallContext(deadline, span.TraceIdHex(), span.span_id, span.sampled,
                     std::make_shared<CancelState>());
}

SpanContext CallContext::span() const {
  SpanContext span = SpanContext::OfTraceId(trace_id_);
  span.span_id = span_id_;
  span.sampled = sampled_;
  return span;
}

CallContext CallContext::WithSpan(const SpanContext& span) const {
  return CallContext(deadline_, span.has_trace() ? span.TraceIdHex() : trace_id_, span.span_id,
                     span.sampled, cancel_);
}

CallContext CallContext::Unbounded(std::string_view trace_id) {
  return WithDeadline(Clock::time_point::max(), trace_id);
}

bool CallContext::cancelled() const {
  for (const CancelState* s = cancel_.get(); s != nullptr; s = s->parent.get()) {
    if (s->cancelled.load(std::memory_order_acquire)) return true;
    if (s->probe && s->probe()) return true;
  }
  return false;
}

std::chrono::milliseconds CallContext::Remaining(std::chrono::milliseconds cap) const {
  const auto now = Clock::now();
  if (now >= deadline_) return std::chrono::milliseconds(0);
  // Clock::time_point::max() - now overflows nothing; compare before converting.
  if (deadline_ - now >= cap) return cap;
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - now);
}

void CallContext::Cancel() const { cancel_->cancelled.store(true, std::memory_order_release); }

CallContext CallContext::WithCancelProbe(std::function<bool()> probe) const {
  auto state = std::make_shared<CancelState>();
  state->probe = std::move(probe);
  state->parent = cancel_;
  return CallContext(deadline_, trace_id_, span_id_, sampled_, std::move(state));
}

std::string CallContext::NewTraceId() {
  const auto id = NewTraceIdHex();
  return std::string(id.data(), id.size());
}

bool CallContext::IsValidTraceId(std::string_view id) {
  if (id.size() != 32) return false;
  bool nonzero = false;
  for (char c : id) {
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    if (!hex) return false;
    nonzero = nonzero || c != '0';
  }
  return nonzero;
}

std::optional<Error> GaveUp(const CallContext& call) {
  if (call.cancelled()) return MakeError(Code::kCancelled, "the caller cancelled the call");
  if (CallContext::Clock::now() >= call.deadline()) {
    return MakeError(Code::kDeadlineExceeded, "the caller's deadline passed before the call ran");
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------------------------

namespace {

std::string_view Metadata(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                          const char* key) {
  auto it = metadata.find(key);
  if (it == metadata.end()) return {};
  return std::string_view(it->second.data(), it->second.size());
}

}  // namespace

SpanContext SpanContextOf(const grpc::ServerContextBase& server) {
  const auto& metadata = server.client_metadata();
  if (auto parent = ParseTraceParent(Metadata(metadata, kTraceParentHeader))) return *parent;
  return SpanContext::OfTraceId(Metadata(metadata, kTraceIdHeader));
}

std::string TraceIdOf(const grpc::ServerContextBase& server) {
  return SpanContextOf(server).TraceIdHex();
}

CallContext FromServerContext(const grpc::ServerContextBase& server,
                              std::chrono::milliseconds max_timeout) {
  const SpanContext span = SpanContextOf(server);
  // The client's deadline as a steady-clock point (gRPC reports it on the system clock).
  const auto now = CallContext::Clock::now();
  auto deadline = now + max_timeout;
  const auto client_deadline = server.deadline();
  if (client_deadline != std::chrono::system_clock::time_point::max()) {
    const auto left = client_deadline - std::chrono::system_clock::now();
    deadline = std::min(deadline, now + std::chrono::duration_cast<CallContext::Clock::duration>(
                                            std::max(left, decltype(left)::zero())));
  }
  return CallContext::WithDeadline(deadline, span).WithCancelProbe([&server] {
    return server.IsCancelled();
  });
}

void PrepareClientContext(grpc::ClientContext& client, const CallContext& call,
                          std::chrono::milliseconds hop_timeout) {
  client.set_deadline(std::chrono::system_clock::now() + call.Remaining(hop_timeout));
  SpanContext span = call.span();
  // W3C requires a parent id; a call made outside any span (a sweep, a lease refresh) names a
  // fresh one that nothing records.
  if (span.span_id == 0) span.span_id = NewSpanId();
  client.AddMetadata(kTraceParentHeader, span.TraceParent());
}

}  // namespace infrachat
