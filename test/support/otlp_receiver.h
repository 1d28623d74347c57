// OtlpReceiver: a small OTLP/HTTP trace receiver for tests (what an OpenTelemetry collector's
// port 4318 does, reduced to what the tests look at): POST requests with a JSON
// ExportTraceServiceRequest body, answered 200 "{}" (or another status, after a delay, to
// play a slow or failing collector). HTTP/1.1 with keep-alive and Content-Length bodies only;
// a thread per connection (each exporting process keeps one open).
//
// Lifetime: listens on 127.0.0.1 (port chosen by the kernel) from construction; the destructor
// stops the threads (a delayed answer is cut short). Thread-safety: every method from any
// thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace infrachat::testing {

class OtlpReceiver {
 public:
  struct Options {
    std::chrono::milliseconds delay{0};  // before each answer
    int status = 200;
  };
  OtlpReceiver();
  explicit OtlpReceiver(Options options);
  ~OtlpReceiver();
  OtlpReceiver(const OtlpReceiver&) = delete;
  OtlpReceiver& operator=(const OtlpReceiver&) = delete;

  // http://127.0.0.1:<port>/v1/traces
  std::string url() const;
  int port() const { return port_; }

  // Every request body, parsed (a body that is not JSON is kept as a string value).
  std::vector<nlohmann::json> Requests() const;
  // Every span received: the span's JSON object plus a "resource" member holding its
  // resource's attributes as a map of key to string value.
  std::vector<nlohmann::json> Spans() const;
  std::vector<std::string> Paths() const;         // the request targets
  std::vector<std::string> ContentTypes() const;  // their Content-Type headers
  // Polls Spans() until `done` accepts them or `timeout` passes; returns the last ones seen.
  std::vector<nlohmann::json> WaitForSpans(
      const std::function<bool(const std::vector<nlohmann::json>&)>& done,
      std::chrono::milliseconds timeout) const;

 private:
  void Run();
  void Serve(int fd);

  const Options options_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};  // a pipe that wakes the thread's poll when stopping
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::mutex stop_mu_;  // for stop_cv_: a delayed answer waits on it
  std::condition_variable stop_cv_;
  std::vector<nlohmann::json> requests_;
  std::vector<std::string> paths_;
  std::vector<std::string> content_types_;
  std::vector<std::thread> connections_;  // guarded by mu_; joined by the destructor
  std::thread thread_;
};

// Attribute `key` of an OTLP JSON attribute list as a string (stringValue, or intValue's
// string), empty when absent.
std::string OtlpAttribute(const nlohmann::json& attributes, const std::string& key);

}  // namespace infrachat::testing
