#include "infrachat/core/call_context.h"

#include <algorithm>
#include <cstdint>
#include <random>

#include "infrachat/core/grpc_call_context.h"

namespace infrachat {

CallContext::CallContext(Clock::time_point deadline, std::string trace_id,
                         std::shared_ptr<CancelState> cancel)
    : deadline_(deadline), trace_id_(std::move(trace_id)), cancel_(std::move(cancel)) {}

CallContext CallContext::Background(std::chrono::milliseconds timeout) {
  return WithDeadline(Clock::now() + timeout);
}

CallContext CallContext::WithDeadline(Clock::time_point deadline, std::string_view trace_id) {
  return CallContext(deadline, IsValidTraceId(trace_id) ? std::string(trace_id) : NewTraceId(),
                     std::make_shared<CancelState>());
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
  return CallContext(deadline_, trace_id_, std::move(state));
}

std::string CallContext::NewTraceId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(32, '0');
  for (int half = 0; half < 2; ++half) {
    std::uint64_t bits = rng();
    for (int i = 0; i < 16; ++i, bits >>= 4) id[half * 16 + i] = kHex[bits & 0xf];
  }
  return IsValidTraceId(id) ? id : NewTraceId();
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

// The trace-id field of a W3C `traceparent` header ("00-<trace id>-<span id>-<flags>").
std::string_view TraceParentId(std::string_view traceparent) {
  if (traceparent.size() < 55 || traceparent[2] != '-' || traceparent[35] != '-') return {};
  return traceparent.substr(3, 32);
}

}  // namespace

std::string TraceIdOf(const grpc::ServerContextBase& server) {
  const auto& metadata = server.client_metadata();
  std::string_view trace_id = Metadata(metadata, kTraceIdHeader);
  if (!CallContext::IsValidTraceId(trace_id)) {
    trace_id = TraceParentId(Metadata(metadata, "traceparent"));
  }
  return CallContext::IsValidTraceId(trace_id) ? std::string(trace_id) : std::string();
}

CallContext FromServerContext(const grpc::ServerContextBase& server,
                              std::chrono::milliseconds max_timeout) {
  const std::string trace_id = TraceIdOf(server);
  // The client's deadline as a steady-clock point (gRPC reports it on the system clock).
  const auto now = CallContext::Clock::now();
  auto deadline = now + max_timeout;
  const auto client_deadline = server.deadline();
  if (client_deadline != std::chrono::system_clock::time_point::max()) {
    const auto left = client_deadline - std::chrono::system_clock::now();
    deadline = std::min(deadline, now + std::chrono::duration_cast<CallContext::Clock::duration>(
                                            std::max(left, decltype(left)::zero())));
  }
  return CallContext::WithDeadline(deadline, trace_id).WithCancelProbe([&server] {
    return server.IsCancelled();
  });
}

void PrepareClientContext(grpc::ClientContext& client, const CallContext& call,
                          std::chrono::milliseconds hop_timeout) {
  client.set_deadline(std::chrono::system_clock::now() + call.Remaining(hop_timeout));
  client.AddMetadata(kTraceIdHeader, call.trace_id());
}

}  // namespace infrachat
