// OtlpExporter: sends finished spans to an OpenTelemetry collector over OTLP/HTTP with the JSON
// encoding (POST <endpoint>, Content-Type: application/json, an ExportTraceServiceRequest).
//
// No OpenTelemetry C++ SDK is packaged for Debian, so this is our own, kept small and bounded
// (docs/adr/0010): a queue of at most `max_queue_spans` spans; one thread that sends a batch
// when `max_batch_spans` are queued or `interval` has passed since the first of them, one HTTP
// request at a time with a `timeout` (libcurl). Chat threads only ever push onto the queue
// under a short lock: when it is full, or the collector is slow, down or answers an error, the
// spans are dropped and counted, never retried and never waited for:
//   infrachat_tracing_spans_exported_total
//   infrachat_tracing_spans_dropped_total{reason="queue_full"|"export_failed"|"stopped"}
// ("stopped": ended after Stop, or still queued when Stop gave up).
//
// Lifetime: the constructor starts the thread; Stop (or the destructor) sends what is queued,
// giving up at the first failure or after one `timeout` in all, and joins it.
// Thread-safety: Enqueue and stats from any thread; Stop from one.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "infrachat/core/tracing.h"

namespace prometheus {
class Counter;
}

namespace infrachat {

struct OtlpExporterOptions {
  std::string endpoint;  // e.g. http://127.0.0.1:4318/v1/traces
  // Resource attributes of every span (service.name, ...), as strings.
  std::vector<std::pair<std::string, std::string>> resource;
  std::size_t max_queue_spans = 4096;
  std::size_t max_batch_spans = 512;
  std::chrono::milliseconds interval{500};
  std::chrono::milliseconds timeout{2000};  // of one request, connection included
};

class OtlpExporter {
 public:
  explicit OtlpExporter(OtlpExporterOptions options);
  ~OtlpExporter();
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  // Queues a finished span; false (and counted as dropped) when the queue is full or the
  // exporter stopped. Never waits for the network.
  bool Enqueue(std::shared_ptr<const SpanData> span);
  void Stop();

  struct Stats {
    std::uint64_t exported = 0;
    std::uint64_t dropped_queue_full = 0;
    std::uint64_t dropped_export_failed = 0;
    std::uint64_t dropped_stopped = 0;
    std::uint64_t requests = 0;  // HTTP requests made, failed or not
  };
  Stats stats() const;

 private:
  using Batch = std::vector<std::shared_ptr<const SpanData>>;
  void Run();
  // One POST of `batch`; whether the collector answered 2xx.
  bool Send(const Batch& batch);

  const OtlpExporterOptions options_;
  struct Metrics {
    prometheus::Counter* exported;
    prometheus::Counter* queue_full;
    prometheus::Counter* export_failed;
    prometheus::Counter* stopped;
  } metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<const SpanData>> queue_;
  bool stopping_ = false;
  bool stopped_ = false;
  Stats stats_;
  void* curl_ = nullptr;  // the exporter thread's CURL easy handle (keeps the connection)
  std::thread thread_;
};

// The OTLP/JSON ExportTraceServiceRequest for `spans`: one resourceSpans with `resource`, one
// scopeSpans (scope "infrachat"); ids as lower-case hex, times as decimal strings of Unix
// nanoseconds, kind and status code as OTLP's enum numbers, 64-bit integers as strings (the
// protobuf JSON mapping).
std::string EncodeOtlpJson(const std::vector<std::shared_ptr<const SpanData>>& spans,
                           const std::vector<std::pair<std::string, std::string>>& resource);

}  // namespace infrachat
