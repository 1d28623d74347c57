// The conversions at the gRPC edge: Error <-> grpc::Status, bearer tokens, error frames.
#pragma once

#include <grpcpp/grpcpp.h>

#include "infrachat/api/auth_api.h"
#include "infrachat/core/result.h"
#include "infrachat/v1/infrachat.pb.h"

namespace infrachat::gateway {

grpc::Status ToStatus(const Error& error);

template <typename T>
grpc::Status ToStatus(const Result<T>& result) {
  return result.ok() ? grpc::Status::OK : ToStatus(result.error());
}

// Verifies the `authorization: Bearer <token>` metadata of a call. UNAUTHENTICATED if it is
// missing, malformed or the token does not verify. Never blocks.
Result<Principal> Authenticate(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                               const AuthApi& auth);

// An in-stream Error frame carrying `error`'s canonical code number.
v1::ServerFrame ErrorFrame(const Error& error, const std::string& channel = {},
                           const std::string& client_msg_id = {});

}  // namespace infrachat::gateway
