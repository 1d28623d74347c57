#include "infrachat/core/span_context.h"

#include <random>

namespace infrachat {

namespace {

constexpr char kHex[] = "0123456789abcdef";

// Per thread: ids are made on many threads at once, and a lock per span would be a shared
// point of contention on the send path.
std::uint64_t Random64() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool AllLowerHexNotZero(std::string_view text) {
  bool nonzero = false;
  for (char c : text) {
    if (!IsLowerHex(c)) return false;
    nonzero = nonzero || c != '0';
  }
  return nonzero;
}

int HexValue(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

}  // namespace

std::string SpanIdHex(std::uint64_t span_id) {
  if (span_id == 0) return {};
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, span_id >>= 4)
    out[static_cast<std::size_t>(i)] = kHex[span_id & 0xf];
  return out;
}

std::string SpanContext::SpanIdHex() const { return infrachat::SpanIdHex(span_id); }

std::string SpanContext::TraceParent() const {
  if (!has_trace() || span_id == 0) return {};
  std::string out;
  out.reserve(55);
  out += "00-";
  out.append(trace_id.data(), trace_id.size());
  out += '-';
  out += infrachat::SpanIdHex(span_id);
  out += sampled ? "-01" : "-00";
  return out;
}

SpanContext SpanContext::OfTraceId(std::string_view id) {
  SpanContext context;
  if (id.size() == context.trace_id.size() && AllLowerHexNotZero(id)) {
    std::copy(id.begin(), id.end(), context.trace_id.begin());
  }
  return context;
}

std::optional<SpanContext> ParseTraceParent(std::string_view header) {
  // version "-" trace-id "-" parent-id "-" trace-flags: 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55.
  if (header.size() < 55) return std::nullopt;
  const std::string_view version = header.substr(0, 2);
  if (!AllLowerHexNotZero(version) && version != "00") return std::nullopt;
  if (version == "ff") return std::nullopt;
  // Version 00 is exactly 55 characters; a later version may append fields after a '-'.
  if (version == "00" ? header.size() != 55 : (header.size() > 55 && header[55] != '-')) {
    return std::nullopt;
  }
  if (header[2] != '-' || header[35] != '-' || header[52] != '-') return std::nullopt;
  const std::string_view trace_id = header.substr(3, 32);
  const std::string_view parent_id = header.substr(36, 16);
  const std::string_view flags = header.substr(53, 2);
  if (!AllLowerHexNotZero(trace_id) || !AllLowerHexNotZero(parent_id)) return std::nullopt;
  if (!IsLowerHex(flags[0]) || !IsLowerHex(flags[1])) return std::nullopt;
  SpanContext context;
  std::copy(trace_id.begin(), trace_id.end(), context.trace_id.begin());
  for (char c : parent_id) context.span_id = (context.span_id << 4) | HexValue(c);
  context.sampled = (HexValue(flags[1]) & 1) != 0;
  return context;
}

std::array<char, 32> NewTraceIdHex() {
  std::array<char, 32> id{};
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  while (hi == 0 && lo == 0) {
    hi = Random64();
    lo = Random64();
  }
  for (int i = 0; i < 16; ++i, hi >>= 4, lo >>= 4) {
    id[static_cast<std::size_t>(15 - i)] = kHex[hi & 0xf];
    id[static_cast<std::size_t>(31 - i)] = kHex[lo & 0xf];
  }
  return id;
}

std::uint64_t NewSpanId() {
  std::uint64_t id = 0;
  while (id == 0) id = Random64();
  return id;
}

}  // namespace infrachat
