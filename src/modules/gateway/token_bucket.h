#pragma once

#include <algorithm>
#include <chrono>

namespace infrachat::gateway {

// Rate limiter: `rate` tokens per second, at most `burst` saved up. Not thread-safe (one per
// stream, used under the stream's lock).
class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;
  TokenBucket(double rate, double burst, Clock::time_point now = Clock::now())
      : rate_(rate), burst_(burst), tokens_(burst), last_(now) {}

  bool TryTake(Clock::time_point now = Clock::now()) {
    Refill(now);
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
    return true;
  }

  // How long until TryTake(now + result) succeeds; zero when it would succeed now.
  Clock::duration TimeUntilToken(Clock::time_point now = Clock::now()) {
    Refill(now);
    if (tokens_ >= 1.0) return Clock::duration::zero();
    // Rounded up, so that the wake-up is never a hair too early.
    return std::chrono::duration_cast<Clock::duration>(
               std::chrono::duration<double>((1.0 - tokens_) / rate_)) +
           Clock::duration(1);
  }

 private:
  void Refill(Clock::time_point now) {
    if (now <= last_) return;
    const double elapsed = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
  }

  double rate_;
  double burst_;
  double tokens_;
  Clock::time_point last_;
};

}  // namespace infrachat::gateway
