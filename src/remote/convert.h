// Conversions shared by the remote module clients and the internal services: Error <-> gRPC
// status (the codes are the same numbers), Principal <-> its internal proto, client contexts.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "infrachat/api/principal.h"
#include "infrachat/core/grpc_call_context.h"
#include "infrachat/core/result.h"
#include "infrachat/internal/v1/internal.pb.h"

namespace infrachat::remote {

grpc::Status ToStatus(const Error& error);
// A failed call's status as the Error an in-process call would have returned. Transport
// failures arrive as UNAVAILABLE or DEADLINE_EXCEEDED, which callers retry idempotently.
Error FromStatus(const grpc::Status& status);
// The same for a call made for `trace_id`: a failure to reach the peer in time (UNAVAILABLE,
// DEADLINE_EXCEEDED) names the trace id, so that the error a user sees leads to the log lines of
// every process the request crossed.
Error FromStatus(const grpc::Status& status, const std::string& trace_id);

internal::v1::Principal ToProto(const Principal& principal);
Principal FromProto(const internal::v1::Principal& principal);

// Prepares a client context for one call: its deadline now + `timeout`.
void PrepareContext(grpc::ClientContext& context, std::chrono::milliseconds timeout);

// One blocking unary call of a generated stub's `method` for `call`: its deadline capped at
// now + `hop_timeout`, its trace id forwarded. The response, or the call's status as an Error;
// a caller that has already given up gets CANCELLED / DEADLINE_EXCEEDED without a round trip.
template <typename Stub, typename Request, typename Response>
Result<Response> UnaryCall(
    Stub& stub, grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
    const CallContext& call, const Request& request, std::chrono::milliseconds hop_timeout) {
  if (auto gone = GaveUp(call)) return *gone;
  grpc::ClientContext context;
  PrepareClientContext(context, call, hop_timeout);
  Response response;
  const grpc::Status status = (stub.*method)(&context, request, &response);
  if (!status.ok()) return FromStatus(status, call.trace_id());
  return response;
}

// The same call with gRPC's callback API: nothing blocks. `start(context, request, response,
// on_status)` begins it (a lambda around `stub->async()->Method(...)`); `done` gets the response
// or the status as an Error, exactly once, on a gRPC callback thread (or inline when the caller
// had already given up). Everything the call uses lives until its completion.
template <typename Response, typename Request, typename Start>
void AsyncUnaryCall(Start start, const CallContext& call, Request request,
                    std::chrono::milliseconds hop_timeout,
                    std::function<void(Result<Response>)> done) {
  if (auto gone = GaveUp(call)) return done(*gone);
  struct Pending {
    grpc::ClientContext context;
    Request request;
    Response response;
    std::string trace_id;
    std::function<void(Result<Response>)> done;
  };
  auto pending = std::make_shared<Pending>();
  PrepareClientContext(pending->context, call, hop_timeout);
  pending->request = std::move(request);
  pending->trace_id = call.trace_id();
  pending->done = std::move(done);
  start(&pending->context, &pending->request, &pending->response, [pending](grpc::Status status) {
    if (!status.ok()) return pending->done(FromStatus(status, pending->trace_id));
    pending->done(std::move(pending->response));
  });
}

// A channel to another InfraChat process's internal listener: keepalive agreed with the
// server's settings, secured by `credentials` (the daemon builds them once from tls.internal.*:
// mutual TLS, or plaintext; every internal channel of a process gets the same ones). Every call
// on it is counted in infrachat_cluster_client_* with `peer` as its label: the configured
// address, or kDiscoveredPeer for an address learned at run time (a lease), so that the label
// set stays bounded by configuration.
std::shared_ptr<grpc::Channel> MakeInternalChannel(
    const std::string& address, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    const std::string& peer);

// The peer label of internal channels to processes not named in the configuration.
inline constexpr const char* kDiscoveredPeer = "discovered";

}  // namespace infrachat::remote
