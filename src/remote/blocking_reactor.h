// Runs the blocking part of a callback-API unary call on an Executor, never on gRPC's threads.
#pragma once

#include <grpcpp/grpcpp.h>

#include <utility>

#include "convert.h"
#include "infrachat/core/executor.h"
#include "infrachat/core/grpc_call_context.h"

namespace infrachat::remote {

// The longest an internal call may hold an executor thread when its caller set no deadline (the
// cluster's own clients always set one: grpc.internal_call_timeout_ms).
inline constexpr std::chrono::milliseconds kMaxInternalCall{60000};

// `work(const CallContext&)` returns the call's grpc::Status after filling the response; the
// request and response stay valid until the reactor finishes. The context carries the caller's
// deadline, cancellation and trace id (valid while `work` runs). A call already cancelled or
// past its deadline when its turn comes is not run: its caller gave up (the caller of a send
// resends with the same id).
template <typename Work>
grpc::ServerUnaryReactor* RunBlocking(grpc::CallbackServerContext* context, Executor& executor,
                                      Work work) {
  auto* reactor = context->DefaultReactor();
  const bool posted = executor.Post([context, reactor, work = std::move(work)]() mutable {
    const CallContext call = FromServerContext(*context, kMaxInternalCall);
    if (auto gone = GaveUp(call)) {
      reactor->Finish(ToStatus(*gone));
      return;
    }
    reactor->Finish(work(call));
  });
  if (!posted) reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "shutting down"));
  return reactor;
}

}  // namespace infrachat::remote
