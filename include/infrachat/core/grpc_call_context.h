// CallContext at the gRPC boundaries: built from a server call, applied to a client call.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "infrachat/core/call_context.h"

namespace infrachat {

// Metadata key of the trace id on every call (public ones may send it; internal ones always do).
inline constexpr const char* kTraceIdHeader = "infrachat-trace-id";

// The trace id a client sent (`infrachat-trace-id`, or the trace-id of a W3C `traceparent`);
// empty when there is none or it is malformed.
std::string TraceIdOf(const grpc::ServerContextBase& server);

// The context of a server call: its client's deadline, capped at `max_timeout` from now (a call
// without a deadline must not hold a thread forever); cancelled when the call is; the trace id
// from `infrachat-trace-id` or a W3C `traceparent` header, or a new one. The result probes
// `server`: use it (and its copies) only while the handler runs.
CallContext FromServerContext(const grpc::ServerContextBase& server,
                              std::chrono::milliseconds max_timeout);

// Sets a client call's deadline to the earlier of the context's and now + `hop_timeout`, and
// forwards the trace id.
void PrepareClientContext(grpc::ClientContext& client, const CallContext& call,
                          std::chrono::milliseconds hop_timeout);

}  // namespace infrachat
