#include "token_signer.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>

#include <charconv>
#include <chrono>
#include <climits>
#include <cstdint>
#include <jwt/jwt.hpp>
#include <nlohmann/json.hpp>
#include <optional>

#include "infrachat/core/metrics.h"
#include "sodium_util.h"

namespace infrachat::auth {

namespace {

// infrachat_auth_token_verifications_failed_total{reason}: each refusal below counts under one
// of these fixed words; all show from the start (at 0).
constexpr const char* kRefusalReasons[] = {"malformed",     "algorithm",      "unknown_key",
                                           "bad_signature", "expired",        "not_yet_valid",
                                           "wrong_issuer",  "wrong_audience", "claims"};

prometheus::Family<prometheus::Counter>& FailedVerifications() {
  static auto& family = []() -> prometheus::Family<prometheus::Counter>& {
    auto& f = prometheus::BuildCounter()
                  .Name("infrachat_auth_token_verifications_failed_total")
                  .Help("Access tokens refused, by reason")
                  .Register(MetricsRegistry());
    for (const char* reason : kRefusalReasons) f.Add({{"reason", reason}});
    return f;
  }();
  return family;
}

// The refusal of a token: counted under `reason` (one of kRefusalReasons), answered with
// `message`.
Error Refuse(const char* reason, const char* message) {
  FailedVerifications().Add({{"reason", reason}}).Increment();
  return MakeError(Code::kUnauthenticated, message);
}

// Strict JSON object from one base64url part of the token, or nullopt.
std::optional<nlohmann::json> DecodeJsonPart(std::string_view part) {
  auto bytes = Base64UrlDecode(part);
  if (!bytes) return std::nullopt;
  nlohmann::json json = nlohmann::json::parse(*bytes, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return std::nullopt;
  return json;
}

const std::string* GetString(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return nullptr;
  return it->get_ptr<const std::string*>();
}

std::optional<std::int64_t> GetInt(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) return std::nullopt;
  if (it->is_number_unsigned()) {
    const auto v = it->get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<std::int64_t>(v);
  }
  if (it->is_number_integer()) return it->get<std::int64_t>();
  return std::nullopt;
}

std::optional<std::uint64_t> ParseUserId(const std::string& text) {
  if (text.empty() || text.size() > 20 || text.front() == '0') return std::nullopt;
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

UnixClock SystemUnixClock() {
  return [] {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
}

TokenSigner::TokenSigner(SigningKey key, TokenOptions options, UnixClock clock)
    : key_(std::move(key)), options_(std::move(options)), clock_(std::move(clock)) {}

Result<SignedToken> TokenSigner::Sign(std::uint64_t user_id, const std::string& username,
                                      const std::string& session_id) const {
  try {
    const std::int64_t now = clock_();
    const std::int64_t exp = now + options_.ttl_s;
    jwt::jwt_object obj{jwt::params::algorithm(std::string(kAccessTokenAlgorithm)),
                        jwt::params::secret(key_.private_pem)};
    obj.header().add_header("kid", key_.kid);
    obj.add_claim("sub", std::to_string(user_id))
        .add_claim("name", username)
        .add_claim("sid", session_id)
        .add_claim("iat", now)
        .add_claim("exp", exp)
        .add_claim("iss", options_.issuer)
        .add_claim("aud", options_.audience);
    std::error_code ec;
    std::string token = obj.signature(ec);
    if (ec) return MakeError(Code::kInternal, "cannot sign access token: " + ec.message());
    return SignedToken{std::move(token), exp};
  } catch (const std::exception& e) {
    return MakeError(Code::kInternal, std::string("cannot sign access token: ") + e.what());
  }
}

TokenVerifier::TokenVerifier(const std::vector<VerificationKey>& keys, TokenOptions options,
                             UnixClock clock)
    : options_(std::move(options)), clock_(std::move(clock)) {
  FailedVerifications();  // the family shows (at 0) wherever tokens are verified
  for (const auto& key : keys) public_pems_.emplace(key.kid, key.public_pem);
}

Result<Principal> TokenVerifier::Verify(std::string_view token) const {
  try {
    if (token.empty() || token.size() > kMaxAccessTokenBytes) {
      return Refuse("malformed", "malformed token");
    }
    const auto dot1 = token.find('.');
    const auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
      return Refuse("malformed", "malformed token");
    }
    const std::string_view header_part = token.substr(0, dot1);
    const std::string_view payload_part = token.substr(dot1 + 1, dot2 - dot1 - 1);
    const std::string_view signature_part = token.substr(dot2 + 1);
    if (header_part.empty() || payload_part.empty()) return Refuse("malformed", "malformed token");

    // 1. Header: the algorithm allowlist comes before any use of a key.
    auto header = DecodeJsonPart(header_part);
    if (!header) return Refuse("malformed", "malformed token");
    const std::string* alg = GetString(*header, "alg");
    if (alg == nullptr || *alg != kAccessTokenAlgorithm) {
      return Refuse("algorithm", "algorithm not allowed");
    }
    if (header->contains("crit")) return Refuse("malformed", "unsupported critical header");
    const std::string* kid = GetString(*header, "kid");
    if (kid == nullptr) return Refuse("unknown_key", kUnknownSigningKey.data());
    auto key = public_pems_.find(*kid);
    if (key == public_pems_.end()) return Refuse("unknown_key", kUnknownSigningKey.data());

    // 2. Signature, over "<header>.<payload>" exactly as received. ES256 signatures are the
    // 64-byte r||s of RFC 7518 3.4; anything else is rejected before OpenSSL sees it.
    auto raw_signature = Base64UrlDecode(signature_part);
    if (!raw_signature || raw_signature->size() != 64)
      return Refuse("bad_signature", "bad signature");
    const auto signing_input = token.substr(0, dot2);
    const std::string signature(signature_part);
    auto [valid, ec] = jwt::PEMSign<jwt::algo::ES256>::verify(
        key->second, jwt::string_view(signing_input.data(), signing_input.size()),
        jwt::string_view(signature.data(), signature.size()));
    if (ec || !valid) return Refuse("bad_signature", "bad signature");

    // 3. Claims, now that they are known to come from us.
    auto claims = DecodeJsonPart(payload_part);
    if (!claims) return Refuse("malformed", "malformed token");
    const std::int64_t now = clock_();
    auto exp = GetInt(*claims, "exp");
    if (!exp) return Refuse("claims", "token has no expiry");
    if (now >= *exp + options_.leeway_s) return Refuse("expired", "token expired");
    if (claims->contains("nbf")) {
      auto nbf = GetInt(*claims, "nbf");
      if (!nbf || now + options_.leeway_s < *nbf)
        return Refuse("not_yet_valid", "token not yet valid");
    }
    const std::string* iss = GetString(*claims, "iss");
    if (iss == nullptr || *iss != options_.issuer) return Refuse("wrong_issuer", "wrong issuer");
    bool audience_ok = false;
    if (auto it = claims->find("aud"); it != claims->end()) {
      if (it->is_string()) {
        audience_ok = it->get_ref<const std::string&>() == options_.audience;
      } else if (it->is_array()) {
        for (const auto& a : *it) {
          if (a.is_string() && a.get_ref<const std::string&>() == options_.audience) {
            audience_ok = true;
          }
        }
      }
    }
    if (!audience_ok) return Refuse("wrong_audience", "wrong audience");
    const std::string* sub = GetString(*claims, "sub");
    const std::string* name = GetString(*claims, "name");
    const std::string* sid = GetString(*claims, "sid");
    std::optional<std::uint64_t> user_id = sub ? ParseUserId(*sub) : std::nullopt;
    if (!user_id || *user_id == 0 || name == nullptr || sid == nullptr || sid->empty()) {
      return Refuse("claims", "malformed token claims");
    }
    return Principal{*user_id, *name, *sid, *exp};
  } catch (const std::exception&) {
    // cpp-jwt throws on allocation failure; nothing else should get here.
    return Refuse("malformed", "malformed token");
  }
}

}  // namespace infrachat::auth
