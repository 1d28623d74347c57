#include "signing_keys.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "sodium_util.h"

namespace infrachat::auth {

namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();  // NOLINT(google-runtime-int): OpenSSL's type
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

BioPtr MemBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// Empty unless `pkey` is an EC key on P-256.
std::string CheckP256(EVP_PKEY* pkey) {
  if (EVP_PKEY_is_a(pkey, "EC") != 1) return "not an EC key (ES256 needs EC P-256)";
  char group[64] = {};
  std::size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                     &len) != 1) {
    return "EC key without a named curve (ES256 needs P-256)";
  }
  const std::string name(group, len);
  if (name != "prime256v1" && name != "P-256") {
    return "EC key on curve " + name + ", not P-256 (ES256 needs P-256)";
  }
  return {};
}

Result<std::string> PublicPem(EVP_PKEY* pkey) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), pkey) != 1) {
    return MakeError(Code::kInternal, "cannot encode public key: " + OpenSslError());
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);  // NOLINT(google-runtime-int)
  return std::string(data, static_cast<std::size_t>(n));
}

Result<std::string> PrivatePem(EVP_PKEY* pkey) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), pkey, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return MakeError(Code::kInternal, "cannot encode private key: " + OpenSslError());
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);  // NOLINT(google-runtime-int)
  return std::string(data, static_cast<std::size_t>(n));
}

Result<std::string> Kid(EVP_PKEY* pkey) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(pkey, &der);
  if (n <= 0) return MakeError(Code::kInternal, "cannot encode public key: " + OpenSslError());
  const std::string digest = Sha256(std::string_view(reinterpret_cast<char*>(der), n));
  OPENSSL_free(der);
  return Base64UrlEncode(std::string_view(digest).substr(0, 16));
}

Result<SigningKey> FromPkey(EVP_PKEY* pkey, std::string private_pem) {
  auto pub = PublicPem(pkey);
  if (!pub.ok()) return pub.error();
  auto kid = Kid(pkey);
  if (!kid.ok()) return kid.error();
  return SigningKey{std::move(kid).value(), std::move(private_pem), std::move(pub).value()};
}

Result<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return MakeError(Code::kInvalidArgument, std::string(what) + " " + path + ": unreadable");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return MakeError(Code::kInvalidArgument, std::string(what) + " " + path + ": read error");
  }
  return text.str();
}

}  // namespace

Result<SigningKey> GenerateSigningKey() {
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!pkey) return MakeError(Code::kInternal, "EC P-256 key generation failed: " + OpenSslError());
  auto priv = PrivatePem(pkey.get());
  if (!priv.ok()) return priv.error();
  return FromPkey(pkey.get(), std::move(priv).value());
}

Result<SigningKey> SigningKeyFromPrivatePem(const std::string& private_pem) {
  BioPtr bio = MemBio(private_pem);
  PkeyPtr pkey(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!pkey) {
    ERR_clear_error();
    return MakeError(Code::kInvalidArgument,
                     "not a PEM private key (encrypted keys are not supported)");
  }
  if (std::string why = CheckP256(pkey.get()); !why.empty()) {
    return MakeError(Code::kInvalidArgument, why);
  }
  return FromPkey(pkey.get(), private_pem);
}

Result<VerificationKey> VerificationKeyFromPublicPem(const std::string& public_pem) {
  BioPtr bio = MemBio(public_pem);
  PkeyPtr pkey(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!pkey) {
    ERR_clear_error();
    return MakeError(Code::kInvalidArgument, "not a PEM public key (\"BEGIN PUBLIC KEY\")");
  }
  if (std::string why = CheckP256(pkey.get()); !why.empty()) {
    return MakeError(Code::kInvalidArgument, why);
  }
  auto kid = Kid(pkey.get());
  if (!kid.ok()) return kid.error();
  return VerificationKey{std::move(kid).value(), public_pem};
}

Result<SigningKey> LoadSigningKeyFiles(const std::string& private_key_file,
                                       const std::string& public_key_file) {
  auto priv_text = ReadFile(private_key_file, "auth.private_key_file");
  if (!priv_text.ok()) return priv_text.error();
  auto pub_text = ReadFile(public_key_file, "auth.public_key_file");
  if (!pub_text.ok()) return pub_text.error();

  auto key = SigningKeyFromPrivatePem(*priv_text);
  if (!key.ok()) {
    return MakeError(Code::kInvalidArgument,
                     "auth.private_key_file " + private_key_file + ": " + key.error().message);
  }
  auto pub = VerificationKeyFromPublicPem(*pub_text);
  if (!pub.ok()) {
    return MakeError(Code::kInvalidArgument,
                     "auth.public_key_file " + public_key_file + ": " + pub.error().message);
  }
  // Same SubjectPublicKeyInfo digest = the public key belongs to the private key.
  if (pub->kid != key->kid) {
    return MakeError(Code::kInvalidArgument, "auth.public_key_file " + public_key_file +
                                                 " does not match auth.private_key_file " +
                                                 private_key_file);
  }
  key->public_pem = pub->public_pem;
  return key;
}

}  // namespace infrachat::auth
