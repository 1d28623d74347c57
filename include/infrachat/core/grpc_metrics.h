// Per-RPC Prometheus metrics of gRPC servers and of the channels to other InfraChat processes,
// as gRPC interceptors (docs/adr/0010-observability.md).
//
// Server side, the conventional names and labels of go-grpc-prometheus, so that existing
// dashboards and alerts work unchanged:
//   grpc_server_started_total{grpc_type, grpc_service, grpc_method}
//   grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}
//   grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}   (histogram)
// A call is started when gRPC creates its interceptors and handled when its status is sent; a
// stream is handled when it ends, and its handling time is its whole life. grpc_code is the
// status code's name as Go spells it ("OK", "InvalidArgument", "Unavailable", ...).
//
// Client side (this process's calls to a peer's internal listener), per configured peer:
//   infrachat_cluster_client_handled_total{peer, grpc_type, grpc_service, grpc_method, grpc_code}
//   infrachat_cluster_client_handling_seconds{peer, grpc_service, grpc_method}   (unary only)
//
// Labels never carry values a client chooses: a method name that is not one of this build's
// services (the generated descriptor pool, plus grpc.health.v1.Health) is counted as
// grpc_service="unknown", grpc_method="unknown"; `peer` is what the caller passes (a configured
// address, see MakeClientMetricsInterceptor).
#pragma once

#include <grpcpp/support/client_interceptor.h>
#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <string>
#include <string_view>

namespace infrachat {

// Go's name of a gRPC status code ("OK", "Canceled", ..., "Unauthenticated"); "Unknown" for a
// number outside 0..16.
std::string_view GrpcCodeName(int code);

// For grpc::ServerBuilder::experimental().SetInterceptorCreators. The factory and its
// interceptors are thread-safe; they count into MetricsRegistry().
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerMetricsInterceptor();

// For grpc::experimental::CreateCustomChannelWithInterceptors: every call on the channel is
// counted with `peer` as its peer label. Pass a configured address (or a fixed word such as
// "discovered" for an address learned at run time), never a value from a request.
std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface> MakeClientMetricsInterceptor(
    std::string peer);

}  // namespace infrachat
