// Conversions shared by the remote module clients and the internal services: Error <-> gRPC
// status (the codes are the same numbers), Principal <-> its internal proto, client contexts.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "infrachat/api/principal.h"
#include "infrachat/core/result.h"
#include "infrachat/internal/v1/internal.pb.h"

namespace infrachat::remote {

grpc::Status ToStatus(const Error& error);
// A failed call's status as the Error an in-process call would have returned. Transport
// failures arrive as UNAVAILABLE or DEADLINE_EXCEEDED, which callers retry idempotently.
Error FromStatus(const grpc::Status& status);

internal::v1::Principal ToProto(const Principal& principal);
Principal FromProto(const internal::v1::Principal& principal);

// Prepares a client context for one call: its deadline now + `timeout`.
void PrepareContext(grpc::ClientContext& context, std::chrono::milliseconds timeout);

// One blocking unary call of a generated stub's `method` with a deadline of `timeout`: the
// response, or the call's status as an Error.
template <typename Stub, typename Request, typename Response>
Result<Response> UnaryCall(Stub& stub,
                           grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                        Response*),
                           const Request& request, std::chrono::milliseconds timeout) {
  grpc::ClientContext context;
  PrepareContext(context, timeout);
  Response response;
  const grpc::Status status = (stub.*method)(&context, request, &response);
  if (!status.ok()) return FromStatus(status);
  return response;
}

// A channel to another InfraChat process's internal listener: keepalive agreed with the
// server's settings, secured by `credentials` (the daemon builds them once from tls.internal.*:
// mutual TLS, or plaintext; every internal channel of a process gets the same ones).
std::shared_ptr<grpc::Channel> MakeInternalChannel(
    const std::string& address, const std::shared_ptr<grpc::ChannelCredentials>& credentials);

}  // namespace infrachat::remote
