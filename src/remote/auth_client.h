// RemoteAuth: the AuthApi of an auth role that runs in another process (AuthInternal), with
// access tokens verified locally.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>

#include "infrachat/api/auth_api.h"
#include "infrachat/internal/v1/internal.grpc.pb.h"

namespace infrachat::auth {
class TokenVerifier;
}

namespace infrachat::remote {

// Token verification never calls auth: the public keys are fetched once (FetchKeys, at start)
// and kept. A token signed with a key id this process does not know (auth rotated its key)
// starts one asynchronous refetch, at most one per second, and is refused meanwhile
// (UNAUTHENTICATED "unknown signing key": the client retries). Every other call is one round
// trip with the earlier of its context's deadline and now + `timeout`, carrying the context's
// trace id; failures are the remote Error or UNAVAILABLE / DEADLINE_EXCEEDED.
// Thread-safety: every method may be called concurrently. VerifyAccessToken never blocks.
// Lifetime: destroy after the callers; an asynchronous refetch in flight keeps what it needs.
class RemoteAuth final : public AuthApi {
 public:
  RemoteAuth(std::shared_ptr<grpc::Channel> channel, std::chrono::milliseconds timeout);
  ~RemoteAuth() override;

  // Fetches the verification keys, retrying until `deadline` (auth may start after this
  // process). Start-up path: throws std::runtime_error when it cannot.
  void FetchKeys(std::chrono::steady_clock::time_point deadline);

  Result<v1::Session> Register(const CallContext& call,
                               const v1::RegisterRequest& request) override;
  Result<v1::Session> Login(const CallContext& call, const v1::LoginRequest& request) override;
  Result<v1::Session> Refresh(const CallContext& call, const v1::RefreshRequest& request) override;
  Result<void> Logout(const CallContext& call, const v1::LogoutRequest& request) override;
  Result<Principal> VerifyAccessToken(std::string_view token) const override;
  Result<std::uint64_t> LookupUserId(const CallContext& call, std::string_view username) override;
  Result<bool> IsSessionActive(const CallContext& call, std::string_view session_id) override;
  Result<std::vector<std::string>> ActiveSessions(
      const CallContext& call, const std::vector<std::string>& session_ids) override;
  Result<TokenVerificationKeys> VerificationKeys() const override;
  Result<std::map<std::uint64_t, std::string>> DisplayNames(
      const CallContext& call, const std::vector<std::uint64_t>& user_ids) override;

 private:
  using Stub = internal::v1::AuthInternal::Stub;
  template <typename Response, typename Request>
  Result<Response> Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                     Response*),
                        const CallContext& call, const Request& request) const;
  void Install(const internal::v1::VerificationKeysResponse& keys);
  void RefetchKeysAsync() const;

  std::unique_ptr<Stub> stub_;
  const std::chrono::milliseconds timeout_;

  mutable std::mutex mu_;
  std::shared_ptr<const auth::TokenVerifier> verifier_;  // replaced whole, read lock-free after
  TokenVerificationKeys keys_;
  mutable bool refetching_ = false;
  mutable std::chrono::steady_clock::time_point last_refetch_{};
  // Shared with refetches in flight: the destructor clears `self` under `mu` (waiting for a
  // running completion), so one finishing later is harmless.
  struct Life {
    std::mutex mu;
    RemoteAuth* self = nullptr;
  };
  std::shared_ptr<Life> life_ = std::make_shared<Life>();
};

}  // namespace infrachat::remote
