#include "infrachat/core/tracing.h"

#include <mutex>
#include <random>

#include "infrachat/core/otlp_exporter.h"

namespace infrachat {

namespace {

// The process's tracing while it is on. Never destroyed: a span ending on another thread may
// still reach a tracer that StopTracing has just replaced (its exporter then counts the span
// as dropped, "stopped").
struct Tracer {
  explicit Tracer(const TracingOptions& options)
      : ratio(options.sample_ratio),
        exporter(OtlpExporterOptions{options.otlp_endpoint, options.resource,
                                     options.max_queue_spans, options.max_batch_spans,
                                     options.export_interval, options.export_timeout}) {}
  const double ratio;
  OtlpExporter exporter;
};

std::atomic<Tracer*> tracer{nullptr};

thread_local const SpanContext* current_span = nullptr;
const SpanContext kNoSpan{};

}  // namespace

std::int64_t UnixNanosNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Span::SetAttribute(std::string_view key, std::string_view value) {
  if (data_) data_->attributes.push_back({std::string(key), std::string(value)});
}

void Span::SetAttribute(std::string_view key, std::int64_t value) {
  if (data_) data_->attributes.push_back({std::string(key), value});
}

void Span::SetAttribute(std::string_view key, bool value) {
  if (data_) data_->attributes.push_back({std::string(key), value});
}

void Span::AddEvent(std::string_view name) {
  if (data_) data_->events.push_back({std::string(name), UnixNanosNow()});
}

void Span::SetError(std::string_view code) {
  if (!data_) return;
  data_->error = true;
  data_->status_message = std::string(code);
}

void Span::End() {
  if (!data_ || data_->ended.exchange(true)) return;
  data_->end_unix_ns = UnixNanosNow();
  if (Tracer* t = tracer.load(std::memory_order_acquire)) t->exporter.Enqueue(data_);
}

Span StartSpan(std::string_view name, SpanKind kind, const SpanContext& parent) {
  Span span;
  span.context_ = parent;
  if (!parent.sampled || !parent.has_trace() || !TracingEnabled()) return span;
  span.context_.span_id = NewSpanId();
  auto data = std::make_shared<SpanData>();
  data->context = span.context_;
  data->parent_span_id = parent.span_id;
  data->name = std::string(name);
  data->kind = kind;
  data->start_unix_ns = UnixNanosNow();
  span.data_ = std::move(data);
  return span;
}

SpanScope::SpanScope(const SpanContext& context) : outer_(current_span), context_(context) {
  current_span = &context_;
  if (!context_.has_trace()) return;
  // Formatted here, not with SpanIdHex(): 16 characters would not fit a short string.
  std::array<char, 16> span{};
  std::uint64_t id = context_.span_id;
  for (int i = 15; i >= 0; --i, id >>= 4)
    span[static_cast<std::size_t>(i)] = "0123456789abcdef"[id & 0xf];
  log_.emplace(context_.trace_id_view(),
               std::string_view(span.data(), context_.span_id != 0 ? span.size() : 0));
}

SpanScope::~SpanScope() { current_span = outer_; }

const SpanContext& CurrentSpan() { return current_span != nullptr ? *current_span : kNoSpan; }

namespace {

// Stops a tracer that is no longer current and keeps it (reachable, for leak checkers) for the
// spans still on their way to it.
void Retire(Tracer* old) {
  if (old == nullptr) return;
  old->exporter.Stop();
  static std::mutex mu;
  static auto* retired = new std::vector<Tracer*>;
  std::lock_guard lock(mu);
  retired->push_back(old);
}

}  // namespace

void StartTracing(const TracingOptions& options) {
  Retire(tracer.exchange(new Tracer(options), std::memory_order_acq_rel));
}

void StopTracing() { Retire(tracer.exchange(nullptr, std::memory_order_acq_rel)); }

bool TracingEnabled() { return tracer.load(std::memory_order_acquire) != nullptr; }

bool SampleNewTrace() {
  const Tracer* t = tracer.load(std::memory_order_acquire);
  if (t == nullptr || t->ratio <= 0) return false;
  if (t->ratio >= 1) return true;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  // 53 random bits as a double in [0, 1).
  return static_cast<double>(rng() >> 11) * 0x1p-53 < t->ratio;
}

}  // namespace infrachat
