// WriteScheduler: starts stream writes on a thread of its own.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace infrachat {

// Something with queued output that a WriteScheduler should start writing.
class Flushable {
 public:
  virtual ~Flushable() = default;
  // Starts a write of what is queued, if none is in flight. Called on the scheduler's thread.
  virtual void Flush() = 0;
};

// Whoever queues a frame for a stream (the shard's commit thread publishing a message to a
// thousand subscribers, a gRPC thread answering a send) only queues it and schedules the
// stream here; this thread starts the writes. Starting a gRPC write from an idle call performs
// the socket write on the calling thread, so without this the publisher would make one system
// call per subscriber before it could publish the next message, and every stream would be idle
// again by then: nothing would ever pile up to be batched. With it, the publisher's cost per
// delivery is a queue push, frames pile up behind a stream's write in flight, and one wake-up
// of this thread serves every stream that became ready meanwhile.
//
// Urgent streams (those with a control frame waiting: an ACK, an error) go first: the thread
// flushes them before the next few streams that only have deliveries waiting, so an ACK never
// waits behind one message's flushes to ten thousand subscribers.
//
// Thread-safety: Schedule may be called from any thread. Lifetime: Stop (or the destructor)
// flushes what is scheduled and ends the thread; later Schedules flush inline, so nothing
// scheduled is ever dropped.
class WriteScheduler {
 public:
  WriteScheduler();
  ~WriteScheduler();  // Stop()

  WriteScheduler(const WriteScheduler&) = delete;
  WriteScheduler& operator=(const WriteScheduler&) = delete;

  // Flushes `stream` soon, on the scheduler's thread; `urgent` ahead of the others. The caller
  // schedules a stream at most once per kind until its Flush runs (the stream keeps flags), so
  // the queues stay bounded by twice the number of streams.
  void Schedule(std::shared_ptr<Flushable> stream, bool urgent = false);
  void Stop();

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Flushable>> urgent_;
  std::deque<std::shared_ptr<Flushable>> ready_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace infrachat
