// Executor: a fixed pool of worker threads for blocking work (database calls) that must stay off
// gRPC's reactor threads, with optional delayed tasks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace infrachat {

// Thread-safety: Post/PostAfter from any thread, including from tasks. Tasks run on one of the
// workers, in time order (FIFO among tasks due at the same instant).
// Lifetime: Stop() (also called by the destructor) runs every task that is already due, drops
// delayed ones that are not, and joins the workers; later Posts are ignored and return false.
class Executor {
 public:
  using Task = std::function<void()>;
  using Clock = std::chrono::steady_clock;

  Executor(int threads, std::string name);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  bool Post(Task task) { return PostAt(Clock::now(), std::move(task)); }
  bool PostAfter(Clock::duration delay, Task task) {
    return PostAt(Clock::now() + delay, std::move(task));
  }
  void Stop();

  std::size_t pending() const;

 private:
  bool PostAt(Clock::time_point when, Task task);
  void Run();

  const std::string name_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<Clock::time_point, Task> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace infrachat
