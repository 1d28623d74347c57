#include "infrachat/core/write_scheduler.h"

#include <pthread.h>

namespace infrachat {

WriteScheduler::WriteScheduler() : thread_([this] { Run(); }) {}

WriteScheduler::~WriteScheduler() { Stop(); }

void WriteScheduler::Schedule(std::shared_ptr<Flushable> stream) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      ready_.push_back(std::move(stream));
      wake = ready_.size() == 1;  // otherwise the thread is awake or already notified
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
      cv_.wait(lock, [&] { return !ready_.empty() || stopping_; });
      if (ready_.empty()) return;  // stopping, and everything scheduled was flushed
      batch.swap(ready_);
    }
    for (const auto& stream : batch) stream->Flush();
    batch.clear();  // releases the streams outside the lock
  }
}

}  // namespace infrachat
