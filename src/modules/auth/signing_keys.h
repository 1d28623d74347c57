// ES256 (ECDSA on NIST P-256 with SHA-256) key pairs for access tokens, with OpenSSL 3.
// Pure functions, no database; thread-safe.
#pragma once

#include <string>

#include "infrachat/core/result.h"

namespace infrachat::auth {

// One signing key. `kid` names it in the JWT header so verifiers pick the right public key
// after a rotation: the first 16 bytes of SHA-256(SubjectPublicKeyInfo DER), base64url
// (22 characters), so the same key always gets the same kid.
struct SigningKey {
  std::string kid;
  std::string private_pem;  // PKCS#8 "BEGIN PRIVATE KEY" (or SEC1 "BEGIN EC PRIVATE KEY" if loaded)
  std::string public_pem;   // "BEGIN PUBLIC KEY" (SubjectPublicKeyInfo)
};

// A public key that verifies tokens (a SigningKey without its private half).
struct VerificationKey {
  std::string kid;
  std::string public_pem;
};

// A fresh P-256 key pair from OpenSSL's CSPRNG. INTERNAL if OpenSSL fails.
Result<SigningKey> GenerateSigningKey();

// Parses a private key PEM, checks that it is EC P-256, derives its public PEM and kid.
// INVALID_ARGUMENT naming the problem ("not a PEM private key", "not an EC P-256 key", ...).
Result<SigningKey> SigningKeyFromPrivatePem(const std::string& private_pem);

// Parses a public key PEM, checks that it is EC P-256, computes its kid.
Result<VerificationKey> VerificationKeyFromPublicPem(const std::string& public_pem);

// Reads both files (auth.private_key_file, auth.public_key_file), checks that they hold an
// EC P-256 pair and that the public key belongs to the private key. INVALID_ARGUMENT with a
// message naming the file and the problem.
Result<SigningKey> LoadSigningKeyFiles(const std::string& private_key_file,
                                       const std::string& public_key_file);

}  // namespace infrachat::auth
