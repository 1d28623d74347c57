#include "infrachat/core/write_scheduler.h"

#include <pthread.h>

#include <algorithm>
#include <iterator>

namespace infrachat {

WriteScheduler::WriteScheduler() : thread_([this] { Run(); }) {}

WriteScheduler::~WriteScheduler() { Stop(); }

namespace {
// Streams flushed between two looks at the urgent queue.
constexpr std::size_t kChunk = 64;
}  // namespace

void WriteScheduler::Schedule(std::shared_ptr<Flushable> stream, bool urgent) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      // Only the first of an empty pair wakes the thread; otherwise it is awake or notified.
      wake = urgent_.empty() && ready_.empty();
      if (urgent) {
        urgent_.push_back(std::move(stream));
      } else {
        ready_.push_back(std::move(stream));
      }
    }
  }
  if (wake) {
    cv_.notify_one();
  } else if (stream) {
    stream->Flush();  // stopped: write from here rather than never
  }
}

void WriteScheduler::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void WriteScheduler::Run() {
  pthread_setname_np(pthread_self(), "write-scheduler");
  std::vector<std::shared_ptr<Flushable>> batch;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return !urgent_.empty() || !ready_.empty() || stopping_; });
      if (urgent_.empty() && ready_.empty()) return;  // stopping, and everything was flushed
      if (!urgent_.empty()) {
        batch.swap(urgent_);
      } else {
        const std::size_t n = std::min(kChunk, ready_.size());
        batch.assign(std::make_move_iterator(ready_.begin()),
                     std::make_move_iterator(ready_.begin() + static_cast<std::ptrdiff_t>(n)));
        ready_.erase(ready_.begin(), ready_.begin() + static_cast<std::ptrdiff_t>(n));
      }
    }
    for (const auto& stream : batch) stream->Flush();
    batch.clear();  // releases the streams outside the lock
  }
}

}  // namespace infrachat
