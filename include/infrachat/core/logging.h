// Per-module logging: one named spdlog logger per module, all writing to one stderr sink, as
// text or as JSON lines (`log.format`), with structured events (LogEvent) and the trace of the
// work at hand (LogTraceScope).
//
// Module names: gateway, auth, router, shard, fanout (the roles) and core, bus, storage,
// cluster. A module's level is `log.modules[name]` if set, else `log.level`.
//
// Line formats (docs/OPERATIONS.md "Logs"):
//   text: `2026-12-03 10:00:00.123 info  [gateway] [t42] stream closed user_id=u1 frames_in=3
//          trace_id=4bf9...` (fields as key=value, values with spaces or quotes JSON-quoted);
//   json: one object per line: `ts` (UTC, RFC 3339 with milliseconds), `level`, `module`,
//          `msg`, `trace_id`, `span_id` (both "" when the work has none), then the event's
//          fields with their JSON types. Event fields named like a fixed field are dropped.
//
// Lifecycle: loggers may be fetched at any time, also before ConfigureLogging (static
// initialisation, tests); until then they log text at "info". ConfigureLogging re-levels every
// logger already handed out and sets the sink's format, so callers may keep the shared_ptr for
// as long as they like.
//
// Thread-safety: ModuleLogger and ConfigureLogging may be called from any thread, concurrently.
// Logging through the returned loggers is thread-safe (spdlog's *_mt sink). The loggers and the
// sink are never destroyed, so threads still logging during process exit stay safe. The
// loggers are synchronous: the formatter runs on the logging thread, which is how it sees the
// event fields and trace scope of that thread (never make them async).
#pragma once

#include <spdlog/formatter.h>
#include <spdlog/logger.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "infrachat/config/config.h"

namespace infrachat {

// Applies `config` (levels and format assumed validated by LoadConfig; an unknown level name
// means "off", an unknown format "text") to every module logger, existing and future.
void ConfigureLogging(const LogConfig& config);

// The logger named `module`, created on first use. Always the same object for the same name.
// Names outside the list above are accepted and get the default level.
std::shared_ptr<spdlog::logger> ModuleLogger(std::string_view module);

// The value of one event field: a string, a signed or unsigned integer, a double or a bool.
// Strings are viewed, not copied: the value lives only for the LogEvent call.
class LogValue {
 public:
  using Variant = std::variant<std::string_view, std::int64_t, std::uint64_t, double, bool>;

  LogValue(std::string_view value) : value_(value) {}                      // NOLINT: implicit
  LogValue(const char* value) : value_(std::string_view(value)) {}         // NOLINT: implicit
  LogValue(const std::string& value) : value_(std::string_view(value)) {}  // NOLINT: implicit
  LogValue(bool value) : value_(value) {}                                  // NOLINT: implicit
  template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>,
                                         int> = 0>
  LogValue(T value) {  // NOLINT: implicit
    if constexpr (std::is_signed_v<T>) {
      value_ = static_cast<std::int64_t>(value);
    } else {
      value_ = static_cast<std::uint64_t>(value);
    }
  }
  template <typename T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
  LogValue(T value) : value_(static_cast<double>(value)) {}  // NOLINT: implicit

  const Variant& value() const { return value_; }

 private:
  Variant value_;
};

// One event field. Keys are snake_case constants of the call site (never user input).
struct LogField {
  std::string_view key;
  LogValue value;
};

// Logs one event: `msg` (a constant phrase such as "stream closed") plus `fields`, rendered as
// key=value pairs in text and as JSON fields in json. Nothing is formatted when `level` is
// below the logger's. Never pass a message body, password or token as a field.
//
//   LogEvent(log_, spdlog::level::info, "stream closed",
//            {{"user_id", user_id}, {"duration_ms", ms}, {"reason", "client_closed"}});
void LogEvent(spdlog::logger& logger, spdlog::level::level_enum level, std::string_view msg,
              std::initializer_list<LogField> fields = {});
inline void LogEvent(const std::shared_ptr<spdlog::logger>& logger, spdlog::level::level_enum level,
                     std::string_view msg, std::initializer_list<LogField> fields = {}) {
  LogEvent(*logger, level, msg, fields);
}
// The same with fields assembled at run time (AvailabilityLog's fixed fields plus its own).
void LogEvent(spdlog::logger& logger, spdlog::level::level_enum level, std::string_view msg,
              const std::vector<LogField>& fields);

// While it lives, every line logged on this thread carries `trace_id` (and `span_id`): the
// trace of the work being done (CallContext::trace_id(), or a span's: SpanScope in tracing.h
// makes one). Scopes nest; the innermost wins and the outer one is back when it ends. The ids
// are copied into the scope (at most 32 and 16 characters, the W3C sizes; longer ones are cut),
// so a scope costs no allocation. Not movable: a stack object of one thread.
class LogTraceScope {
 public:
  explicit LogTraceScope(std::string_view trace_id, std::string_view span_id = {});
  ~LogTraceScope();
  LogTraceScope(const LogTraceScope&) = delete;
  LogTraceScope& operator=(const LogTraceScope&) = delete;

 private:
  std::array<char, 32> trace_id_{};
  std::array<char, 16> span_id_{};
  std::uint8_t trace_id_size_ = 0;
  std::uint8_t span_id_size_ = 0;
  const LogTraceScope* outer_;
  friend class LogFormatterAccess;
};

// `time` as the JSON lines' `ts`: UTC, RFC 3339 with milliseconds (2026-12-03T10:00:00.123Z).
std::string FormatLogTimestamp(std::chrono::system_clock::time_point time);

// The formatter the sink uses for `format` ("text" or "json"; anything else: text). Exposed
// for tests, which put it on a sink of their own.
std::unique_ptr<spdlog::formatter> MakeLogFormatter(std::string_view format);

}  // namespace infrachat
