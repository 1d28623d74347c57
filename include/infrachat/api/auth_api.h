// AuthApi: what other modules may ask of the auth module (the Gatekeeper).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "infrachat/api/principal.h"
#include "infrachat/core/call_context.h"
#include "infrachat/core/result.h"
#include "infrachat/v1/infrachat.pb.h"

namespace infrachat {

struct TokenVerificationKeys {
  std::vector<std::pair<std::string, std::string>> public_pems;  // (key id, PEM), newest first
  std::string issuer;
  std::string audience;
};

// Implemented in-process by the auth module, and later by a gRPC client to a remote auth tier.
//
// Thread-safety: every method may be called concurrently from any thread.
// Blocking: the methods taking a CallContext may block on the database and on password hashing
// (or a round trip to a remote auth, within the context's deadline); call them from a worker
// thread, never from a gRPC reactor.
// VerifyAccessToken never blocks: it checks the signature with locally held public keys.
class AuthApi {
 public:
  virtual ~AuthApi() = default;

  virtual Result<v1::Session> Register(const CallContext& call,
                                       const v1::RegisterRequest& request) = 0;
  virtual Result<v1::Session> Login(const CallContext& call, const v1::LoginRequest& request) = 0;
  virtual Result<v1::Session> Refresh(const CallContext& call,
                                      const v1::RefreshRequest& request) = 0;
  virtual Result<void> Logout(const CallContext& call, const v1::LogoutRequest& request) = 0;

  // Verifies signature, algorithm, issuer, audience and expiry of an access token.
  // UNAUTHENTICATED with a short reason on any failure.
  virtual Result<Principal> VerifyAccessToken(std::string_view token) const = 0;

  // The user id of `username`; NOT_FOUND if there is none. For resolving invitees by name.
  virtual Result<std::uint64_t> LookupUserId(const CallContext& call,
                                             std::string_view username) = 0;

  // False once the session has been logged out, revoked, or has expired.
  virtual Result<bool> IsSessionActive(const CallContext& call, std::string_view session_id) = 0;
  // The subset of `session_ids` that is still active, in one round trip: the gateway's
  // revocation sweep asks once for all its live sessions.
  virtual Result<std::vector<std::string>> ActiveSessions(
      const CallContext& call, const std::vector<std::string>& session_ids) = 0;

  // The display names of these users (those that exist), for member lists: one round trip.
  virtual Result<std::map<std::uint64_t, std::string>> DisplayNames(
      const CallContext& call, const std::vector<std::uint64_t>& user_ids) = 0;

  // What verifies access tokens: public keys by key id, issuer and audience. Processes without
  // the auth role fetch them (AuthInternal.VerificationKeys) and verify tokens locally.
  virtual Result<TokenVerificationKeys> VerificationKeys() const = 0;
};

}  // namespace infrachat
