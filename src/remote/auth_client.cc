#include "auth_client.h"

#include <stdexcept>
#include <thread>

#include "convert.h"
#include "modules/auth/token_signer.h"

namespace infrachat::remote {

RemoteAuth::RemoteAuth(std::shared_ptr<grpc::Channel> channel, std::chrono::milliseconds timeout)
    : stub_(internal::v1::AuthInternal::NewStub(std::move(channel))), timeout_(timeout) {
  life_->self = this;
}

RemoteAuth::~RemoteAuth() {
  std::lock_guard lock(life_->mu);
  life_->self = nullptr;
}

template <typename Response, typename Request>
Result<Response> RemoteAuth::Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                               Response*),
                                  const CallContext& call, const Request& request) const {
  return UnaryCall(*stub_, method, call, request, timeout_);
}

void RemoteAuth::Install(const internal::v1::VerificationKeysResponse& keys) {
  std::vector<auth::VerificationKey> verification;
  TokenVerificationKeys copy;
  for (const auto& key : keys.keys()) {
    verification.push_back({key.key_id(), key.public_key_pem()});
    copy.public_pems.emplace_back(key.key_id(), key.public_key_pem());
  }
  copy.issuer = keys.issuer();
  copy.audience = keys.audience();
  auto verifier = std::make_shared<const auth::TokenVerifier>(
      verification, auth::TokenOptions{keys.issuer(), keys.audience(), 0, 0},
      auth::SystemUnixClock());
  std::lock_guard lock(mu_);
  verifier_ = std::move(verifier);
  keys_ = std::move(copy);
}

void RemoteAuth::FetchKeys(std::chrono::steady_clock::time_point deadline) {
  std::string last_error;
  for (auto backoff = std::chrono::milliseconds(100);;
       backoff = std::min(backoff * 2, std::chrono::milliseconds(2000))) {
    auto keys =
        Call(&Stub::VerificationKeys, CallContext::Background(timeout_), internal::v1::Empty());
    if (keys.ok()) {
      if (keys->keys().empty()) throw std::runtime_error("auth peer has no verification keys");
      Install(*keys);
      return;
    }
    last_error = keys.error().message;
    if (std::chrono::steady_clock::now() + backoff > deadline) break;
    std::this_thread::sleep_for(backoff);
  }
  throw std::runtime_error("cannot fetch token verification keys from the auth peer: " +
                           last_error);
}

void RemoteAuth::RefetchKeysAsync() const {
  {
    std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (refetching_ || now - last_refetch_ < std::chrono::seconds(1)) return;
    refetching_ = true;
    last_refetch_ = now;
  }
  struct Fetch {
    grpc::ClientContext context;
    internal::v1::Empty request;
    internal::v1::VerificationKeysResponse response;
  };
  auto fetch = std::make_shared<Fetch>();
  PrepareContext(fetch->context, timeout_);
  stub_->async()->VerificationKeys(&fetch->context, &fetch->request, &fetch->response,
                                   [fetch, life = life_](grpc::Status status) {
                                     std::lock_guard alive(life->mu);
                                     RemoteAuth* auth = life->self;
                                     if (auth == nullptr) return;
                                     if (status.ok() && fetch->response.keys_size() > 0)
                                       auth->Install(fetch->response);
                                     std::lock_guard lock(auth->mu_);
                                     auth->refetching_ = false;
                                   });
}

Result<v1::Session> RemoteAuth::Register(const CallContext& call,
                                         const v1::RegisterRequest& request) {
  return Call(&Stub::Register, call, request);
}

Result<v1::Session> RemoteAuth::Login(const CallContext& call, const v1::LoginRequest& request) {
  return Call(&Stub::Login, call, request);
}

Result<v1::Session> RemoteAuth::Refresh(const CallContext& call,
                                        const v1::RefreshRequest& request) {
  return Call(&Stub::Refresh, call, request);
}

Result<void> RemoteAuth::Logout(const CallContext& call, const v1::LogoutRequest& request) {
  auto result = Call(&Stub::Logout, call, request);
  if (!result.ok()) return result.error();
  return Ok();
}

Result<Principal> RemoteAuth::VerifyAccessToken(std::string_view token) const {
  std::shared_ptr<const auth::TokenVerifier> verifier;
  {
    std::lock_guard lock(mu_);
    verifier = verifier_;
  }
  if (!verifier) return MakeError(Code::kUnavailable, "token verification keys not fetched yet");
  auto principal = verifier->Verify(token);
  if (!principal.ok() && principal.error().message == auth::kUnknownSigningKey) RefetchKeysAsync();
  return principal;
}

Result<std::uint64_t> RemoteAuth::LookupUserId(const CallContext& call, std::string_view username) {
  internal::v1::LookupUserIdRequest request;
  request.set_username(std::string(username));
  auto result = Call(&Stub::LookupUserId, call, request);
  if (!result.ok()) return result.error();
  return result->user_id();
}

Result<bool> RemoteAuth::IsSessionActive(const CallContext& call, std::string_view session_id) {
  auto active = ActiveSessions(call, {std::string(session_id)});
  if (!active.ok()) return active.error();
  return !active->empty();
}

Result<std::vector<std::string>> RemoteAuth::ActiveSessions(
    const CallContext& call, const std::vector<std::string>& session_ids) {
  internal::v1::SessionsActiveRequest request;
  for (const auto& id : session_ids) request.add_session_ids(id);
  auto result = Call(&Stub::SessionsActive, call, request);
  if (!result.ok()) return result.error();
  return std::vector<std::string>(result->active().begin(), result->active().end());
}

Result<TokenVerificationKeys> RemoteAuth::VerificationKeys() const {
  std::lock_guard lock(mu_);
  if (keys_.public_pems.empty()) {
    return MakeError(Code::kUnavailable, "token verification keys not fetched yet");
  }
  return keys_;
}

Result<std::map<std::uint64_t, std::string>> RemoteAuth::DisplayNames(
    const CallContext& call, const std::vector<std::uint64_t>& user_ids) {
  internal::v1::DisplayNamesRequest request;
  for (const auto id : user_ids) request.add_user_ids(id);
  auto result = Call(&Stub::DisplayNames, call, request);
  if (!result.ok()) return result.error();
  return std::map<std::uint64_t, std::string>(result->display_names().begin(),
                                              result->display_names().end());
}

}  // namespace infrachat::remote
