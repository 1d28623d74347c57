#include "password_hasher.h"

#include <fmt/format.h>
#include <sodium.h>

#include <stdexcept>
#include <thread>

#include "sodium_util.h"

namespace infrachat::auth {

// Holds one of the max_concurrent hashing slots for its lifetime.
class PasswordHasher::Slot {
 public:
  explicit Slot(const PasswordHasher& h) : h_(h) {
    std::unique_lock lock(h_.mu_);
    h_.cv_.wait(lock, [&] { return h_.running_ < h_.options_.max_concurrent; });
    ++h_.running_;
  }
  ~Slot() {
    {
      std::lock_guard lock(h_.mu_);
      --h_.running_;
    }
    h_.cv_.notify_one();
  }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

 private:
  const PasswordHasher& h_;
};

namespace {

std::size_t MemBytes(std::uint64_t kib) { return static_cast<std::size_t>(kib) * 1024; }

}  // namespace

PasswordHasher::PasswordHasher(PasswordHasherOptions options) : options_(options) {
  EnsureSodium();
  if (options_.ops_limit < crypto_pwhash_OPSLIMIT_MIN ||
      options_.ops_limit > crypto_pwhash_OPSLIMIT_MAX) {
    throw std::invalid_argument(fmt::format("auth.argon2_ops_limit must be {} to {}",
                                            crypto_pwhash_OPSLIMIT_MIN,
                                            crypto_pwhash_OPSLIMIT_MAX));
  }
  if (MemBytes(options_.mem_limit_kib) < crypto_pwhash_MEMLIMIT_MIN ||
      options_.mem_limit_kib > 4ULL * 1024 * 1024) {
    throw std::invalid_argument(fmt::format("auth.argon2_mem_limit_kib must be {} to {}",
                                            crypto_pwhash_MEMLIMIT_MIN / 1024, 4 * 1024 * 1024));
  }
  if (options_.max_concurrent <= 0) {
    options_.max_concurrent = static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
  }
  auto dummy = Hash(RandomBase64Url(24));
  if (!dummy.ok()) throw std::runtime_error("argon2id: " + dummy.error().message);
  dummy_hash_ = std::move(dummy).value();
}

Result<std::string> PasswordHasher::Hash(std::string_view password) const {
  Slot slot(*this);
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), options_.ops_limit,
                            MemBytes(options_.mem_limit_kib), crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return MakeError(Code::kInternal, "password hashing ran out of memory");
  }
  return std::string(out);
}

bool PasswordHasher::Verify(std::string_view encoded, std::string_view password) const {
  // crypto_pwhash_str_verify needs a NUL-terminated string that fits crypto_pwhash_STRBYTES.
  if (encoded.empty() || encoded.size() >= crypto_pwhash_STRBYTES) return false;
  const std::string terminated(encoded);
  Slot slot(*this);
  return crypto_pwhash_str_verify(terminated.c_str(), password.data(), password.size()) == 0;
}

void PasswordHasher::DummyVerify(std::string_view password) const {
  (void)Verify(dummy_hash_, password);
}

bool PasswordHasher::NeedsRehash(std::string_view encoded) const {
  if (encoded.empty() || encoded.size() >= crypto_pwhash_STRBYTES) return true;
  const std::string terminated(encoded);
  return crypto_pwhash_str_needs_rehash(terminated.c_str(), options_.ops_limit,
                                        MemBytes(options_.mem_limit_kib)) != 0;
}

}  // namespace infrachat::auth
