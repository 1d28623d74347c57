// Distributed tracing (docs/adr/0010-observability.md, "Traces"): W3C trace context, spans,
// and the process-wide switch that sends finished spans to an OTLP/HTTP collector.
//
// The model is OpenTelemetry's, kept to what InfraChat uses:
//   - SpanContext: trace id (32 hex), span id (64 bits, 16 hex) and the sampled flag; the
//     `traceparent` header form ("00-<trace id>-<span id>-<flags>") on every hop.
//   - Span: a handle on one timed operation. Only a span whose parent is sampled, in a process
//     where tracing is on, records anything (one allocation, two clock reads); every other
//     span is a plain value that carries its parent's context along, so work that is not
//     sampled pays no allocation and no clock read.
//   - SpanScope: "the span this thread works for": log lines carry its trace and span id, and
//     an EventBus publish done inside it carries it to the handlers (event_bus.h).
//   - StartTracing / StopTracing: the exporter (otlp_exporter.h) and the sampling ratio; off
//     (the default) means nothing is ever recorded.
//
// Attributes never carry user content: no bodies, tokens, channel or user names (the same
// rule as metric labels). Status messages are code names, not error texts (which may name a
// channel).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "infrachat/core/logging.h"
#include "infrachat/core/span_context.h"

namespace infrachat {

// OTLP's SpanKind numbers.
enum class SpanKind : int { kInternal = 1, kServer = 2, kClient = 3, kProducer = 4, kConsumer = 5 };

// Nanoseconds since the Unix epoch (what OTLP wants), from the system clock.
std::int64_t UnixNanosNow();

// What a finished span exports. Built by Span; read by the exporter.
struct SpanData {
  using Value = std::variant<std::string, std::int64_t, bool, double>;
  struct Attribute {
    std::string key;
    Value value;
  };
  struct Event {
    std::string name;
    std::int64_t time_unix_ns = 0;
  };
  SpanContext context;
  std::uint64_t parent_span_id = 0;  // 0: a root span
  std::string name;
  SpanKind kind = SpanKind::kInternal;
  std::int64_t start_unix_ns = 0;
  std::int64_t end_unix_ns = 0;
  std::vector<Attribute> attributes;
  std::vector<Event> events;
  bool error = false;
  std::string status_message;  // with error: a code name such as "UNAVAILABLE"
  std::atomic<bool> ended{false};
};

// A handle on one span. Default-constructed: no span and no context.
//
// Copies share the span (a callback can carry it to the thread that ends the work); End() is
// idempotent across copies, so the first End counts. A span that is never ended is never
// exported (it is dropped with its last copy). Mutators are no-ops on a span that does not
// record. Thread-safety: End may race with End; other mutators must not run concurrently with
// each other or with End (a span belongs to the piece of work that carries it).
class Span {
 public:
  Span() = default;

  // The context to hand to child work: this span's when it records, else its parent's (so a
  // trace id travels through work that is not sampled, with the parent's decision).
  const SpanContext& context() const { return context_; }
  bool recording() const { return data_ != nullptr; }

  void SetAttribute(std::string_view key, std::string_view value);
  void SetAttribute(std::string_view key, const char* value) {
    SetAttribute(key, std::string_view(value));
  }
  void SetAttribute(std::string_view key, std::int64_t value);
  void SetAttribute(std::string_view key, std::uint64_t value) {
    SetAttribute(key, static_cast<std::int64_t>(value));
  }
  void SetAttribute(std::string_view key, int value) {
    SetAttribute(key, static_cast<std::int64_t>(value));
  }
  void SetAttribute(std::string_view key, bool value);
  // A timestamped event inside the span (e.g. "commit started").
  void AddEvent(std::string_view name);
  // Marks the span failed; `code` is a code name ("UNAVAILABLE"), never an error text.
  void SetError(std::string_view code);
  // Takes the end time and hands the span to the exporter (dropped and counted when its queue
  // is full). Never blocks.
  void End();

 private:
  friend Span StartSpan(std::string_view name, SpanKind kind, const SpanContext& parent);
  SpanContext context_;
  std::shared_ptr<SpanData> data_;
};

// A child of `parent`: recording when tracing is on and `parent` is sampled (its start time is
// now), else a non-recording span that carries `parent` along. `parent` without a span id
// makes a root span of its trace.
Span StartSpan(std::string_view name, SpanKind kind, const SpanContext& parent);

// While it lives, CurrentSpan() on this thread is `context`, and log lines carry its trace id
// and span id (LogTraceScope). Scopes nest. Costs no allocation. Not movable: a stack object.
class SpanScope {
 public:
  explicit SpanScope(const SpanContext& context);
  ~SpanScope();
  SpanScope(const SpanScope&) = delete;
  SpanScope& operator=(const SpanScope&) = delete;

 private:
  const SpanContext* outer_;
  SpanContext context_;
  std::optional<LogTraceScope> log_;  // when the context has a trace
};

// The span context of the innermost SpanScope of this thread; an empty one outside any.
const SpanContext& CurrentSpan();

// The process's tracing configuration (config keys tracing.*).
struct TracingOptions {
  std::string otlp_endpoint;  // http(s)://host:port/v1/traces
  double sample_ratio = 1.0;  // of new traces (sends without a client's decision)
  // Resource attributes: service.name first, then roles, region, version, instance.
  std::vector<std::pair<std::string, std::string>> resource;
  std::size_t max_queue_spans = 4096;
  std::size_t max_batch_spans = 512;
  std::chrono::milliseconds export_interval{500};
  std::chrono::milliseconds export_timeout{2000};
};

// Turns tracing on for the process: spans whose parent is sampled are recorded and exported.
// Call from one thread (start-up), before or after the servers start. Calling it again
// replaces the previous configuration (StopTracing first is not needed).
void StartTracing(const TracingOptions& options);
// Turns tracing off: sends what is queued (bounded by the export timeout), then stops the
// exporter. Spans that end later are dropped. Idempotent.
void StopTracing();
bool TracingEnabled();
// A new trace's sampling decision: tracing is on and a random draw falls within sample_ratio.
bool SampleNewTrace();

}  // namespace infrachat
