// CallContext at the gRPC boundaries: built from a server call, applied to a client call.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "infrachat/core/call_context.h"

namespace infrachat {

// Metadata keys of the trace context. `traceparent` (W3C Trace Context) is what every internal
// call sends and what clients should send; `infrachat-trace-id` (a trace id alone) is still
// accepted from clients.
inline constexpr const char* kTraceParentHeader = "traceparent";
inline constexpr const char* kTraceIdHeader = "infrachat-trace-id";

// The trace context a client sent: a valid `traceparent` (trace id, the client's span id and
// its sampled flag), else a valid `infrachat-trace-id` (a trace id alone, no span, not
// sampled); empty (no trace) when neither is there or both are malformed.
SpanContext SpanContextOf(const grpc::ServerContextBase& server);
// Its trace id; empty when there is none.
std::string TraceIdOf(const grpc::ServerContextBase& server);

// The context of a server call: its client's deadline, capped at `max_timeout` from now (a call
// without a deadline must not hold a thread forever); cancelled when the call is; the trace id
// context from SpanContextOf (a new trace id when there is none). The result probes
// `server`: use it (and its copies) only while the handler runs.
CallContext FromServerContext(const grpc::ServerContextBase& server,
                              std::chrono::milliseconds max_timeout);

// Sets a client call's deadline to the earlier of the context's and now + `hop_timeout`, and
// forwards the trace context as `traceparent` (the context's span as the parent, or a fresh
// unrecorded span id when it has none).
void PrepareClientContext(grpc::ClientContext& client, const CallContext& call,
                          std::chrono::milliseconds hop_timeout);

}  // namespace infrachat
