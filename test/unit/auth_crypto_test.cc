// Unit tests of the auth module's pure logic: argon2id hashing, refresh token format, ES256 keys
// and JWT signing/verification (including the classic JWT attacks).
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <jwt/jwt.hpp>
#include <memory>
#include <nlohmann/json.hpp>

#include "modules/auth/password_hasher.h"
#include "modules/auth/refresh_token.h"
#include "modules/auth/signing_keys.h"
#include "modules/auth/sodium_util.h"
#include "modules/auth/token_signer.h"

using namespace infrachat;
using namespace infrachat::auth;

namespace {

// Small limits keep the tests fast; production uses AuthConfig's.
PasswordHasherOptions FastArgon2() { return PasswordHasherOptions{1, 8 * 1024, 0}; }

SigningKey NewKey() {
  auto key = GenerateSigningKey();
  REQUIRE(key.ok());
  return std::move(key).value();
}

struct FakeClock {
  std::int64_t now = 1'700'000'000;
  UnixClock fn() {
    return [this] { return now; };
  }
};

TokenOptions Options() { return TokenOptions{"infrachat", "infrachat", 900, 0}; }

std::string PemOf(EVP_PKEY* pkey) {
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);  // NOLINT(google-runtime-int)
  std::string pem(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return pem;
}

std::string Claims(const nlohmann::json& claims) { return Base64UrlEncode(claims.dump()); }

nlohmann::json ValidClaims(std::int64_t now) {
  return {{"sub", "42"},      {"name", "alice"},    {"sid", "session-1"}, {"iat", now},
          {"exp", now + 900}, {"iss", "infrachat"}, {"aud", "infrachat"}};
}

// Signs arbitrary header/claims with cpp-jwt's ES256 primitive, for malformed-claims cases.
std::string SignRaw(const SigningKey& key, const nlohmann::json& header,
                    const nlohmann::json& claims) {
  const std::string input = Base64UrlEncode(header.dump()) + "." + Claims(claims);
  auto [sig, ec] = jwt::PEMSign<jwt::algo::ES256>::sign(key.private_pem, input);
  REQUIRE(!ec);
  return input + "." + Base64UrlEncode(sig);
}

class TempDir {
 public:
  TempDir() : path_(std::filesystem::temp_directory_path() / ("authtest-" + RandomBase64Url(8))) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string Write(const std::string& name, const std::string& text) const {
    auto p = path_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  std::string Path(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Passwords

TEST_CASE("argon2id hash verifies the right password only", "[auth][password]") {
  PasswordHasher hasher(FastArgon2());
  auto hash = hasher.Hash("correct horse battery");
  REQUIRE(hash.ok());
  CHECK(hash->rfind("$argon2id$", 0) == 0);
  CHECK(hasher.Verify(*hash, "correct horse battery"));
  CHECK_FALSE(hasher.Verify(*hash, "correct horse batterY"));
  CHECK_FALSE(hasher.Verify(*hash, ""));
  CHECK_FALSE(hasher.Verify("not a hash", "correct horse battery"));
  CHECK_FALSE(hasher.Verify("", "correct horse battery"));
  hasher.DummyVerify("anything");  // must neither throw nor crash
}

TEST_CASE("argon2id salts every hash", "[auth][password]") {
  PasswordHasher hasher(FastArgon2());
  auto a = hasher.Hash("same password");
  auto b = hasher.Hash("same password");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*a != *b);
}

TEST_CASE("argon2id rehash is needed when limits change", "[auth][password]") {
  PasswordHasher weak(FastArgon2());
  PasswordHasher stronger(PasswordHasherOptions{2, 8 * 1024, 0});
  auto hash = weak.Hash("password123");
  REQUIRE(hash.ok());
  CHECK_FALSE(weak.NeedsRehash(*hash));
  CHECK(stronger.NeedsRehash(*hash));
  CHECK(stronger.Verify(*hash, "password123"));  // old hashes keep working
}

TEST_CASE("argon2id limits outside libsodium's range are rejected", "[auth][password]") {
  CHECK_THROWS_AS(PasswordHasher(PasswordHasherOptions{0, 8 * 1024, 0}), std::invalid_argument);
  CHECK_THROWS_AS(PasswordHasher(PasswordHasherOptions{1, 1, 0}), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Encoding and refresh tokens

TEST_CASE("base64url decoding is strict", "[auth][encoding]") {
  CHECK(Base64UrlEncode("hello?>") == "aGVsbG8_Pg");
  CHECK(Base64UrlDecode("aGVsbG8_Pg") == std::optional<std::string>("hello?>"));
  CHECK_FALSE(Base64UrlDecode("aGVsbG8/Pg"));    // standard alphabet
  CHECK_FALSE(Base64UrlDecode("aGVsbG8_Pg=="));  // padding
  CHECK_FALSE(Base64UrlDecode("aGVsbG8_P"));     // impossible length
  CHECK_FALSE(Base64UrlDecode("aGVsbG8_Ph"));    // non-zero trailing bits
  CHECK(Base64UrlDecode("") == std::optional<std::string>(""));
}

TEST_CASE("refresh tokens round-trip and reject malformed input", "[auth][refresh]") {
  RefreshToken token{NewSessionId(), NewRefreshSecret()};
  CHECK(token.session_id.size() == 22);
  CHECK(token.secret.size() == 43);
  CHECK(token.session_id.find('.') == std::string::npos);
  CHECK(IsWellFormedSessionId(token.session_id));
  const std::string text = FormatRefreshToken(token);
  auto parsed = ParseRefreshToken(text);
  REQUIRE(parsed);
  CHECK(parsed->session_id == token.session_id);
  CHECK(parsed->secret == token.secret);

  CHECK_FALSE(ParseRefreshToken(""));
  CHECK_FALSE(ParseRefreshToken(token.session_id));
  CHECK_FALSE(ParseRefreshToken(text + "."));
  CHECK_FALSE(ParseRefreshToken(text + "x"));
  CHECK_FALSE(ParseRefreshToken("." + token.secret));
  CHECK_FALSE(ParseRefreshToken(token.session_id + ".short"));
  CHECK_FALSE(ParseRefreshToken("a.b.c"));
  CHECK_FALSE(IsWellFormedSessionId("'; DROP TABLE sessions; --"));

  CHECK(NewSessionId() != NewSessionId());
  CHECK(NewRefreshSecret() != NewRefreshSecret());
  const std::string hash = HashRefreshSecret(token.secret);
  CHECK(hash.size() == 64);
  CHECK(hash == HashRefreshSecret(token.secret));
  CHECK(hash != HashRefreshSecret(NewRefreshSecret()));
  CHECK(ConstantTimeEquals(hash, HashRefreshSecret(token.secret)));
  CHECK_FALSE(ConstantTimeEquals(hash, hash.substr(1)));
}

// ---------------------------------------------------------------------------------------------
// Signing keys

TEST_CASE("generated keys are EC P-256 and reload with the same kid", "[auth][keys]") {
  SigningKey key = NewKey();
  CHECK(key.kid.size() == 22);
  CHECK(key.private_pem.rfind("-----BEGIN PRIVATE KEY-----", 0) == 0);
  CHECK(key.public_pem.rfind("-----BEGIN PUBLIC KEY-----", 0) == 0);
  auto reloaded = SigningKeyFromPrivatePem(key.private_pem);
  REQUIRE(reloaded.ok());
  CHECK(reloaded->kid == key.kid);
  CHECK(reloaded->public_pem == key.public_pem);
  auto pub = VerificationKeyFromPublicPem(key.public_pem);
  REQUIRE(pub.ok());
  CHECK(pub->kid == key.kid);
  CHECK(NewKey().kid != key.kid);
}

TEST_CASE("keys that are not EC P-256 are refused", "[auth][keys]") {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> p384(
      EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384"), EVP_PKEY_free);
  REQUIRE(p384);
  auto r = SigningKeyFromPrivatePem(PemOf(p384.get()));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("not P-256") != std::string::npos);

  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> ed(
      EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"), EVP_PKEY_free);
  REQUIRE(ed);
  auto e = SigningKeyFromPrivatePem(PemOf(ed.get()));
  REQUIRE_FALSE(e.ok());
  CHECK(e.error().message.find("not an EC key") != std::string::npos);

  CHECK_FALSE(SigningKeyFromPrivatePem("garbage").ok());
  CHECK_FALSE(VerificationKeyFromPublicPem(NewKey().private_pem).ok());
}

TEST_CASE("key files: loaded, or refused with a message naming the file", "[auth][keys]") {
  TempDir dir;
  SigningKey key = NewKey();
  const std::string priv = dir.Write("jwt.key", key.private_pem);
  const std::string pub = dir.Write("jwt.pub", key.public_pem);

  auto loaded = LoadSigningKeyFiles(priv, pub);
  REQUIRE(loaded.ok());
  CHECK(loaded->kid == key.kid);

  auto missing = LoadSigningKeyFiles(dir.Path("nope.key"), pub);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().message.find("nope.key") != std::string::npos);
  CHECK(missing.error().message.find("unreadable") != std::string::npos);

  const std::string other_pub = dir.Write("other.pub", NewKey().public_pem);
  auto mismatch = LoadSigningKeyFiles(priv, other_pub);
  REQUIRE_FALSE(mismatch.ok());
  CHECK(mismatch.error().message.find("does not match") != std::string::npos);

  const std::string junk = dir.Write("junk.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n");
  auto bad = LoadSigningKeyFiles(junk, pub);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("junk.key") != std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Access tokens

TEST_CASE("JWT round trip carries the principal", "[auth][jwt]") {
  FakeClock clock;
  SigningKey key = NewKey();
  TokenSigner signer(key, Options(), clock.fn());
  TokenVerifier verifier({{key.kid, key.public_pem}}, Options(), clock.fn());

  auto token = signer.Sign(42, "alice", "sess-1");
  REQUIRE(token.ok());
  CHECK(token->expires_at_unix == clock.now + 900);

  auto principal = verifier.Verify(token->token);
  REQUIRE(principal.ok());
  CHECK(principal->user_id == 42);
  CHECK(principal->username == "alice");
  CHECK(principal->session_id == "sess-1");
  CHECK(principal->expires_at_unix == clock.now + 900);

  // The header names the algorithm and the key.
  const std::string header = token->token.substr(0, token->token.find('.'));
  auto json = nlohmann::json::parse(*Base64UrlDecode(header));
  CHECK(json["alg"] == "ES256");
  CHECK(json["kid"] == key.kid);
}

TEST_CASE("expired JWT is rejected", "[auth][jwt]") {
  FakeClock clock;
  SigningKey key = NewKey();
  TokenSigner signer(key, Options(), clock.fn());
  TokenVerifier verifier({{key.kid, key.public_pem}}, Options(), clock.fn());
  auto token = signer.Sign(1, "bob", "s");
  REQUIRE(token.ok());

  clock.now += 899;
  CHECK(verifier.Verify(token->token).ok());
  clock.now += 1;  // exactly exp
  auto r = verifier.Verify(token->token);
  REQUIRE_FALSE(r.ok());
  CHECK(r.code() == Code::kUnauthenticated);
  CHECK(r.error().message == "token expired");
}

TEST_CASE("JWT with the wrong issuer or audience is rejected", "[auth][jwt]") {
  FakeClock clock;
  SigningKey key = NewKey();
  TokenVerifier verifier({{key.kid, key.public_pem}}, Options(), clock.fn());

  TokenSigner other_issuer(key, TokenOptions{"evil", "infrachat", 900, 0}, clock.fn());
  auto a = verifier.Verify(other_issuer.Sign(1, "bob", "s")->token);
  REQUIRE_FALSE(a.ok());
  CHECK(a.error().message == "wrong issuer");

  TokenSigner other_audience(key, TokenOptions{"infrachat", "elsewhere", 900, 0}, clock.fn());
  auto b = verifier.Verify(other_audience.Sign(1, "bob", "s")->token);
  REQUIRE_FALSE(b.ok());
  CHECK(b.code() == Code::kUnauthenticated);
  CHECK(b.error().message == "wrong audience");
}

TEST_CASE("JWT signed by another key is rejected", "[auth][jwt]") {
  FakeClock clock;
  SigningKey ours = NewKey();
  SigningKey theirs = NewKey();
  TokenVerifier verifier({{ours.kid, ours.public_pem}}, Options(), clock.fn());

  // Their key, their kid: we do not know that kid.
  auto unknown =
      verifier.Verify(TokenSigner(theirs, Options(), clock.fn()).Sign(1, "x", "s")->token);
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error().message == "unknown signing key");

  // Their key, claiming our kid: the signature does not verify.
  SigningKey impostor = theirs;
  impostor.kid = ours.kid;
  auto forged =
      verifier.Verify(TokenSigner(impostor, Options(), clock.fn()).Sign(1, "x", "s")->token);
  REQUIRE_FALSE(forged.ok());
  CHECK(forged.error().message == "bad signature");
}

TEST_CASE("JWT from an older key still in the verification set is accepted", "[auth][jwt]") {
  FakeClock clock;
  SigningKey old_key = NewKey();
  SigningKey new_key = NewKey();
  TokenVerifier verifier({{new_key.kid, new_key.public_pem}, {old_key.kid, old_key.public_pem}},
                         Options(), clock.fn());
  CHECK(verifier.Verify(TokenSigner(old_key, Options(), clock.fn()).Sign(7, "o", "s")->token).ok());
  CHECK(verifier.Verify(TokenSigner(new_key, Options(), clock.fn()).Sign(7, "o", "s")->token).ok());
}

TEST_CASE("JWT with a tampered payload is rejected", "[auth][jwt]") {
  FakeClock clock;
  SigningKey key = NewKey();
  TokenVerifier verifier({{key.kid, key.public_pem}}, Options(), clock.fn());
  const std::string token = TokenSigner(key, Options(), clock.fn()).Sign(42, "alice", "s")->token;
  const auto dot1 = token.find('.');
  const auto dot2 = token.find('.', dot1 + 1);

  auto claims = nlohmann::json::parse(*Base64UrlDecode(token.substr(dot1 + 1, dot2 - dot1 - 1)));
  claims["sub"] = "1";  // become user 1
  const std::string tampered = token.substr(0, dot1 + 1) + Claims(claims) + token.substr(dot2);
  auto r = verifier.Verify(tampered);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "bad signature");

  // Flipped signature byte, truncated signature, missing signature.
  std::string flipped = token;
  flipped[dot2 + 5] = flipped[dot2 + 5] == 'A' ? 'B' : 'A';
  CHECK(verifier.Verify(flipped).error().message == "bad signature");
  CHECK(verifier.Verify(token.substr(0, token.size() - 4)).code() == Code::kUnauthenticated);
  CHECK(verifier.Verify(token.substr(0, dot2 + 1)).code() == Code::kUnauthenticated);
}

TEST_CASE("JWT with alg none is rejected", "[auth][jwt]") {
  FakeClock clock;
  SigningKey key = NewKey();
  TokenVerifier verifier({{key.kid, key.public_pem}}, Options(), clock.fn());
  for (const char* alg : {"none", "None", "NONE"}) {
    const std::string unsigned_token =
        Base64UrlEncode(nlohmann::json{{"alg", alg}, {"typ", "JWT"}, {"kid", key.kid}}.dump()) +
        "." + Claims(ValidClaims(clock.now)) + ".";
    auto r = verifier.Verify(unsigned_token);
    REQUIRE_FALSE(r.ok());
    CHECK(r.code() == Code::kUnauthenticated);
    CHECK(r.error().message == "algorithm not allowed");
    // Same with a signature part present.
    CHECK(verifier.Verify(unsigned_token + "c2ln").error().message == "algorithm not allowed");
  }
}

TEST_CASE("HS256 JWT made with the public key as HMAC secret is rejected", "[auth][jwt]") {
  FakeClock clock;
  SigningKey key = NewKey();
  TokenVerifier verifier({{key.kid, key.public_pem}}, Options(), clock.fn());

  jwt::jwt_object obj{jwt::params::algorithm("HS256"), jwt::params::secret(key.public_pem)};
  obj.header().add_header("kid", key.kid);
  const nlohmann::json claims = ValidClaims(clock.now);
  for (const auto& [name, value] : claims.items()) obj.add_claim(name, value);
  const std::string confused = obj.signature();

  auto r = verifier.Verify(confused);
  REQUIRE_FALSE(r.ok());
  CHECK(r.code() == Code::kUnauthenticated);
  CHECK(r.error().message == "algorithm not allowed");
}

TEST_CASE("JWT claims must be complete and well typed", "[auth][jwt]") {
  FakeClock clock;
  SigningKey key = NewKey();
  TokenVerifier verifier({{key.kid, key.public_pem}}, Options(), clock.fn());
  const nlohmann::json header = {{"alg", "ES256"}, {"typ", "JWT"}, {"kid", key.kid}};

  CHECK(verifier.Verify(SignRaw(key, header, ValidClaims(clock.now))).ok());

  auto without = [&](const char* claim) {
    auto c = ValidClaims(clock.now);
    c.erase(claim);
    return verifier.Verify(SignRaw(key, header, c));
  };
  CHECK(without("exp").error().message == "token has no expiry");
  CHECK(without("iss").error().message == "wrong issuer");
  CHECK(without("aud").error().message == "wrong audience");
  CHECK(without("sub").code() == Code::kUnauthenticated);
  CHECK(without("sid").code() == Code::kUnauthenticated);
  CHECK(without("name").code() == Code::kUnauthenticated);

  auto with = [&](const char* claim, nlohmann::json value) {
    auto c = ValidClaims(clock.now);
    c[claim] = std::move(value);
    return verifier.Verify(SignRaw(key, header, c));
  };
  CHECK_FALSE(with("exp", "9999999999").ok());  // a string is not a NumericDate
  CHECK_FALSE(with("sub", "-1").ok());
  CHECK_FALSE(with("sub", "0").ok());
  CHECK_FALSE(with("sub", "12abc").ok());
  CHECK_FALSE(with("sub", 42).ok());
  CHECK(with("aud", nlohmann::json::array({"other", "infrachat"})).ok());
  CHECK(with("nbf", clock.now + 60).error().message == "token not yet valid");

  auto crit = header;
  crit["crit"] = nlohmann::json::array({"exp"});
  CHECK_FALSE(verifier.Verify(SignRaw(key, crit, ValidClaims(clock.now))).ok());
  auto no_kid = header;
  no_kid.erase("kid");
  CHECK(verifier.Verify(SignRaw(key, no_kid, ValidClaims(clock.now))).error().message ==
        "unknown signing key");
}

TEST_CASE("malformed JWTs are rejected without throwing", "[auth][jwt]") {
  FakeClock clock;
  SigningKey key = NewKey();
  TokenVerifier verifier({{key.kid, key.public_pem}}, Options(), clock.fn());
  const std::string header_alg_number = Base64UrlEncode(R"({"alg":256})");
  for (const std::string& bad :
       {std::string(), std::string("abc"), std::string("a.b"), std::string("a.b.c.d"),
        std::string(".."), std::string("!!!.???.***"), std::string(5000, 'a'),
        header_alg_number + "." + Claims(ValidClaims(clock.now)) + ".c2ln",
        Base64UrlEncode("[1,2]") + ".e30.c2ln", Base64UrlEncode("{not json") + ".e30.c2ln"}) {
    auto r = verifier.Verify(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.code() == Code::kUnauthenticated);
  }
}
