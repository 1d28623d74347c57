// SpanContext: the W3C trace context that every call carries (docs/adr/0010, "Traces"), and
// its `traceparent` header form. Spans and the exporter are in tracing.h.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace infrachat {

// A W3C trace context. A trivially copyable value (no allocation to copy or pass around).
struct SpanContext {
  std::array<char, 32> trace_id{};  // lower-case hex; all '\0' when there is no trace
  std::uint64_t span_id = 0;        // 0: no span (a trace id without a parent)
  bool sampled = false;             // the work is recorded (W3C trace-flags bit 0)

  bool has_trace() const { return trace_id[0] != '\0'; }
  std::string_view trace_id_view() const {
    return has_trace() ? std::string_view(trace_id.data(), trace_id.size()) : std::string_view();
  }
  std::string TraceIdHex() const { return std::string(trace_id_view()); }
  // 16 lower-case hex digits; empty when span_id is 0.
  std::string SpanIdHex() const;
  // "00-<trace id>-<span id>-<01|00>"; empty without a trace id or span id (W3C forbids a
  // zero parent id).
  std::string TraceParent() const;

  // A context with `trace_id` (nothing when it is not 32 lower-case hex digits, not all zero).
  static SpanContext OfTraceId(std::string_view trace_id);
};

// Parses a W3C `traceparent` value: version 00 exactly as specified (55 characters), a later
// version by its first 55 characters (the spec's forward compatibility); nullopt for anything
// malformed: wrong length or separators, upper-case or non-hex digits, an all-zero trace id or
// parent id, version ff. Only bit 0 of the flags (sampled) is kept.
std::optional<SpanContext> ParseTraceParent(std::string_view header);

// A new random trace id (32 hex, never all zero) and span id (never 0).
std::array<char, 32> NewTraceIdHex();
std::uint64_t NewSpanId();
// 16 lower-case hex digits of `span_id` ("" for 0).
std::string SpanIdHex(std::uint64_t span_id);

}  // namespace infrachat
