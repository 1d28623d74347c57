// Password hashing with argon2id (libsodium crypto_pwhash, ALG_ARGON2ID13).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "infrachat/core/result.h"

namespace infrachat::auth {

struct PasswordHasherOptions {
  std::uint64_t ops_limit = 2;          // crypto_pwhash opslimit (AuthConfig::argon2_ops_limit)
  std::uint64_t mem_limit_kib = 19456;  // AuthConfig::argon2_mem_limit_kib
  // Hashes computed at once; more callers wait. Bounds memory at about
  // max_concurrent * mem_limit_kib. 0 means std::thread::hardware_concurrency().
  int max_concurrent = 0;
};

// Thread-safety: all methods may be called concurrently. Blocking: Hash, Verify and DummyVerify
// take tens of milliseconds of CPU with production limits; call them from worker threads.
class PasswordHasher {
 public:
  // Throws std::invalid_argument if the limits are outside what libsodium accepts, and
  // std::runtime_error if libsodium cannot be initialized (start-up path).
  explicit PasswordHasher(PasswordHasherOptions options);

  // "$argon2id$v=19$m=...,t=...,p=1$salt$hash" with a fresh random salt. INTERNAL (out of
  // memory) is the only failure.
  Result<std::string> Hash(std::string_view password) const;

  // True if `password` matches `encoded` (any argon2 parameters encoded in it). False for a
  // malformed `encoded`.
  bool Verify(std::string_view encoded, std::string_view password) const;

  // Verifies `password` against a hash of a random password made with the same limits, so that
  // a login for an unknown user costs as much time as one for a known user. Always "fails".
  void DummyVerify(std::string_view password) const;

  // True if `encoded` was made with other limits than the current ones (rehash on next login).
  bool NeedsRehash(std::string_view encoded) const;

 private:
  class Slot;

  PasswordHasherOptions options_;
  std::string dummy_hash_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable int running_ = 0;
};

}  // namespace infrachat::auth
