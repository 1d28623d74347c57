// Runs the blocking part of a callback-API unary call on an Executor, never on gRPC's threads.
#pragma once

#include <grpcpp/grpcpp.h>

#include <utility>

#include "infrachat/core/executor.h"

namespace infrachat::remote {

// `work` returns the call's grpc::Status after filling the response; the request and response
// stay valid until the reactor finishes. A call already cancelled or past its deadline when its
// turn comes is not run: its caller gave up (the caller of a send resends with the same id).
template <typename Work>
grpc::ServerUnaryReactor* RunBlocking(grpc::CallbackServerContext* context, Executor& executor,
                                      Work work) {
  auto* reactor = context->DefaultReactor();
  const bool posted = executor.Post([context, reactor, work = std::move(work)]() mutable {
    if (context->IsCancelled()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the caller gave up"));
      return;
    }
    reactor->Finish(work());
  });
  if (!posted) reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "shutting down"));
  return reactor;
}

}  // namespace infrachat::remote
