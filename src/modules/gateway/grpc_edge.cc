#include "grpc_edge.h"

namespace infrachat::gateway {

grpc::Status ToStatus(const Error& error) {
  return grpc::Status(static_cast<grpc::StatusCode>(error.code), error.message);
}

Result<Principal> Authenticate(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                               const AuthApi& auth) {
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return MakeError(Code::kUnauthenticated, "missing `authorization: Bearer <token>` metadata");
  }
  const std::string_view value(it->second.data(), it->second.size());
  constexpr std::string_view kPrefix = "Bearer ";
  if (value.size() <= kPrefix.size() || value.substr(0, kPrefix.size()) != kPrefix) {
    return MakeError(Code::kUnauthenticated, "authorization metadata must be `Bearer <token>`");
  }
  return auth.VerifyAccessToken(value.substr(kPrefix.size()));
}

v1::ServerFrame ErrorFrame(const Error& error, const std::string& channel,
                           const std::string& client_msg_id) {
  v1::ServerFrame frame;
  auto* e = frame.mutable_error();
  e->set_code(static_cast<int>(error.code));
  e->set_message(error.message);
  e->set_channel(channel);
  e->set_client_msg_id(client_msg_id);
  return frame;
}

}  // namespace infrachat::gateway
