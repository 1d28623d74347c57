// AuthInternalService: the auth role's API on the internal listener, for processes that do not
// run auth (RemoteAuth is its client).
#pragma once

#include "infrachat/api/auth_api.h"
#include "infrachat/core/executor.h"
#include "infrachat/internal/v1/internal.grpc.pb.h"

namespace infrachat::remote {

// Every call may block on the database or on password hashing: it runs on `executor`.
// Lifetime: `auth` and `executor` outlive the gRPC server that serves this.
class AuthInternalService final : public internal::v1::AuthInternal::CallbackService {
 public:
  AuthInternalService(AuthApi* auth, Executor* executor) : auth_(auth), executor_(executor) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context,
                                     const v1::RegisterRequest* request,
                                     v1::Session* response) override;
  grpc::ServerUnaryReactor* Login(grpc::CallbackServerContext* context,
                                  const v1::LoginRequest* request, v1::Session* response) override;
  grpc::ServerUnaryReactor* Refresh(grpc::CallbackServerContext* context,
                                    const v1::RefreshRequest* request,
                                    v1::Session* response) override;
  grpc::ServerUnaryReactor* Logout(grpc::CallbackServerContext* context,
                                   const v1::LogoutRequest* request,
                                   internal::v1::Empty* response) override;
  grpc::ServerUnaryReactor* VerificationKeys(
      grpc::CallbackServerContext* context, const internal::v1::Empty* request,
      internal::v1::VerificationKeysResponse* response) override;
  grpc::ServerUnaryReactor* LookupUserId(grpc::CallbackServerContext* context,
                                         const internal::v1::LookupUserIdRequest* request,
                                         internal::v1::LookupUserIdResponse* response) override;
  grpc::ServerUnaryReactor* SessionsActive(grpc::CallbackServerContext* context,
                                           const internal::v1::SessionsActiveRequest* request,
                                           internal::v1::SessionsActiveResponse* response) override;
  grpc::ServerUnaryReactor* DisplayNames(grpc::CallbackServerContext* context,
                                         const internal::v1::DisplayNamesRequest* request,
                                         internal::v1::DisplayNamesResponse* response) override;

 private:
  AuthApi* auth_;
  Executor* executor_;
};

}  // namespace infrachat::remote
