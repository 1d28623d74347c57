#include "infrachat/core/executor.h"

namespace infrachat {

Executor::Executor(int threads, std::string name) : name_(std::move(name)) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
}

Executor::~Executor() { Stop(); }

bool Executor::PostAt(Clock::time_point when, Task task) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    tasks_.emplace(when, std::move(task));
  }
  cv_.notify_one();
  return true;
}

void Executor::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

std::size_t Executor::pending() const {
  std::lock_guard lock(mu_);
  return tasks_.size();
}

void Executor::Run() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (tasks_.empty()) {
      if (stopping_) return;
      cv_.wait(lock);
      continue;
    }
    auto first = tasks_.begin();
    const auto now = Clock::now();
    if (first->first > now) {
      if (stopping_) {  // only delayed tasks are left: drop them
        tasks_.clear();
        return;
      }
      // By value: while this thread waits, another worker may run and erase that task, and
      // wait_until reads its deadline again after waking.
      const Clock::time_point when = first->first;
      cv_.wait_until(lock, when);
      continue;
    }
    Task task = std::move(first->second);
    tasks_.erase(first);
    lock.unlock();
    task();
    lock.lock();
  }
}

}  // namespace infrachat
