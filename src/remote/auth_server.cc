#include "auth_server.h"

#include "blocking_reactor.h"
#include "convert.h"

namespace infrachat::remote {

namespace {

// Runs `call` (returning Result<v1::Session>) and copies the session into the response.
template <typename Call>
grpc::Status SessionStatus(Call call, v1::Session* response) {
  auto result = call();
  if (!result.ok()) return ToStatus(result.error());
  *response = std::move(result).value();
  return grpc::Status::OK;
}

}  // namespace

grpc::ServerUnaryReactor* AuthInternalService::Register(grpc::CallbackServerContext* context,
                                                        const v1::RegisterRequest* request,
                                                        v1::Session* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    return SessionStatus([&] { return auth_->Register(call, *request); }, response);
  });
}

grpc::ServerUnaryReactor* AuthInternalService::Login(grpc::CallbackServerContext* context,
                                                     const v1::LoginRequest* request,
                                                     v1::Session* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    return SessionStatus([&] { return auth_->Login(call, *request); }, response);
  });
}

grpc::ServerUnaryReactor* AuthInternalService::Refresh(grpc::CallbackServerContext* context,
                                                       const v1::RefreshRequest* request,
                                                       v1::Session* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    return SessionStatus([&] { return auth_->Refresh(call, *request); }, response);
  });
}

grpc::ServerUnaryReactor* AuthInternalService::Logout(grpc::CallbackServerContext* context,
                                                      const v1::LogoutRequest* request,
                                                      internal::v1::Empty*) {
  return RunBlocking(context, *executor_, [this, request](const CallContext& call) {
    auto result = auth_->Logout(call, *request);
    return result.ok() ? grpc::Status::OK : ToStatus(result.error());
  });
}

grpc::ServerUnaryReactor* AuthInternalService::VerificationKeys(
    grpc::CallbackServerContext* context, const internal::v1::Empty*,
    internal::v1::VerificationKeysResponse* response) {
  // Immutable in-memory data: answered at once.
  auto* reactor = context->DefaultReactor();
  auto keys = auth_->VerificationKeys();
  if (!keys.ok()) {
    reactor->Finish(ToStatus(keys.error()));
    return reactor;
  }
  for (const auto& [kid, pem] : keys->public_pems) {
    auto* key = response->add_keys();
    key->set_key_id(kid);
    key->set_public_key_pem(pem);
  }
  response->set_issuer(keys->issuer);
  response->set_audience(keys->audience);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* AuthInternalService::LookupUserId(
    grpc::CallbackServerContext* context, const internal::v1::LookupUserIdRequest* request,
    internal::v1::LookupUserIdResponse* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    auto result = auth_->LookupUserId(call, request->username());
    if (!result.ok()) return ToStatus(result.error());
    response->set_user_id(*result);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* AuthInternalService::SessionsActive(
    grpc::CallbackServerContext* context, const internal::v1::SessionsActiveRequest* request,
    internal::v1::SessionsActiveResponse* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    auto result = auth_->ActiveSessions(
        call,
        std::vector<std::string>(request->session_ids().begin(), request->session_ids().end()));
    if (!result.ok()) return ToStatus(result.error());
    for (auto& id : *result) response->add_active(std::move(id));
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* AuthInternalService::DisplayNames(
    grpc::CallbackServerContext* context, const internal::v1::DisplayNamesRequest* request,
    internal::v1::DisplayNamesResponse* response) {
  return RunBlocking(context, *executor_, [this, request, response](const CallContext& call) {
    auto result = auth_->DisplayNames(
        call, std::vector<std::uint64_t>(request->user_ids().begin(), request->user_ids().end()));
    if (!result.ok()) return ToStatus(result.error());
    for (auto& [id, name] : *result) (*response->mutable_display_names())[id] = std::move(name);
    return grpc::Status::OK;
  });
}

}  // namespace infrachat::remote
