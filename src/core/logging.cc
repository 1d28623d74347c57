#include "infrachat/core/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

namespace infrachat {

// The formatter's view of the calling thread's LogEvent fields and trace scope.
class LogFormatterAccess {
 public:
  static std::string_view TraceId(const LogTraceScope* scope) {
    return scope ? std::string_view(scope->trace_id_.data(), scope->trace_id_size_)
                 : std::string_view();
  }
  static std::string_view SpanId(const LogTraceScope* scope) {
    return scope ? std::string_view(scope->span_id_.data(), scope->span_id_size_)
                 : std::string_view();
  }
};

namespace {

// Set by LogEvent for the duration of its (synchronous) logger call; read by the formatter on
// the same thread. Plain lines (logger->info(...)) see no fields.
struct FieldSpan {
  const LogField* begin;
  const LogField* end;
};
thread_local const FieldSpan* current_fields = nullptr;
thread_local const LogTraceScope* current_trace = nullptr;

constexpr const char* kTextPattern = "%Y-%m-%d %H:%M:%S.%e %^%-5l%$ [%n] [t%t] %v";

// The names log.level accepts (spdlog's own say "warning").
std::string_view LevelName(spdlog::level::level_enum level) {
  static constexpr std::array<std::string_view, 7> kNames = {"trace", "debug",    "info", "warn",
                                                             "error", "critical", "off"};
  const auto index = static_cast<std::size_t>(level);
  return index < kNames.size() ? kNames[index] : "off";
}

nlohmann::json ToJson(const LogValue& value) {
  return std::visit(
      [](const auto& v) -> nlohmann::json {
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::string_view>) {
          return std::string(v);
        } else {
          return v;
        }
      },
      value.value());
}

std::string Dump(const nlohmann::json& json) {
  // replace: a string that is not UTF-8 (a peer's name, say) must not lose the whole line.
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A value for key=value text: bare when it is a plain token, else JSON-quoted so that a
// reader can split the line on spaces.
void AppendTextValue(const LogValue& value, spdlog::memory_buf_t& dest) {
  std::string text;
  if (const auto* s = std::get_if<std::string_view>(&value.value())) {
    const bool plain = !s->empty() && s->find_first_of(" \"=\\\t\r\n") == std::string_view::npos;
    text = plain ? std::string(*s) : Dump(std::string(*s));
  } else {
    text = Dump(ToJson(value));
  }
  dest.append(text.data(), text.data() + text.size());
}

void AppendText(std::string_view text, spdlog::memory_buf_t& dest) {
  dest.append(text.data(), text.data() + text.size());
}

class TextFormatter : public spdlog::formatter {
 public:
  TextFormatter()
      : prefix_(std::make_unique<spdlog::pattern_formatter>(
            kTextPattern, spdlog::pattern_time_type::local, std::string())) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    prefix_->format(msg, dest);
    if (current_fields != nullptr) {
      for (const LogField* field = current_fields->begin; field != current_fields->end; ++field) {
        AppendText(" ", dest);
        AppendText(field->key, dest);
        AppendText("=", dest);
        AppendTextValue(field->value, dest);
      }
    }
    if (current_trace != nullptr) {
      AppendText(" trace_id=", dest);
      AppendText(LogFormatterAccess::TraceId(current_trace), dest);
      if (!LogFormatterAccess::SpanId(current_trace).empty()) {
        AppendText(" span_id=", dest);
        AppendText(LogFormatterAccess::SpanId(current_trace), dest);
      }
    }
    AppendText("\n", dest);
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<TextFormatter>();
  }

 private:
  std::unique_ptr<spdlog::pattern_formatter> prefix_;
};

class JsonFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    nlohmann::ordered_json line;
    line["ts"] = FormatLogTimestamp(msg.time);
    line["level"] = LevelName(msg.level);
    line["module"] = std::string(msg.logger_name.data(), msg.logger_name.size());
    line["msg"] = std::string(msg.payload.data(), msg.payload.size());
    line["trace_id"] = LogFormatterAccess::TraceId(current_trace);
    line["span_id"] = LogFormatterAccess::SpanId(current_trace);
    if (current_fields != nullptr) {
      for (const LogField* field = current_fields->begin; field != current_fields->end; ++field) {
        std::string key(field->key);
        if (line.contains(key)) continue;  // the fixed fields stay what they are
        line[key] = ToJson(field->value);
      }
    }
    const std::string text =
        line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    AppendText(text, dest);
    AppendText("\n", dest);
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

struct LoggingState {
  std::mutex mutex;
  LogConfig config;
  std::shared_ptr<spdlog::sinks::stderr_color_sink_mt> sink;
  std::map<std::string, std::shared_ptr<spdlog::logger>, std::less<>> loggers;
};

// Leaked on purpose: threads may still log while static destructors run at exit.
LoggingState& State() {
  static LoggingState* state = [] {
    auto* created = new LoggingState;
    created->sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    created->sink->set_formatter(MakeLogFormatter("text"));
    return created;
  }();
  return *state;
}

spdlog::level::level_enum LevelFor(const LogConfig& config, std::string_view module) {
  const auto it = config.modules.find(std::string(module));
  return spdlog::level::from_str(it == config.modules.end() ? config.level : it->second);
}

}  // namespace

void ConfigureLogging(const LogConfig& config) {
  LoggingState& state = State();
  std::lock_guard lock(state.mutex);
  if (config.format != state.config.format)
    state.sink->set_formatter(MakeLogFormatter(config.format));
  state.config = config;
  for (const auto& [name, logger] : state.loggers) logger->set_level(LevelFor(config, name));
}

std::shared_ptr<spdlog::logger> ModuleLogger(std::string_view module) {
  LoggingState& state = State();
  std::lock_guard lock(state.mutex);
  const auto it = state.loggers.find(module);
  if (it != state.loggers.end()) return it->second;
  auto logger = std::make_shared<spdlog::logger>(std::string(module), state.sink);
  logger->set_level(LevelFor(state.config, module));
  state.loggers.emplace(std::string(module), logger);
  return logger;
}

namespace {

void LogFields(spdlog::logger& logger, spdlog::level::level_enum level, std::string_view msg,
               const FieldSpan& fields) {
  if (!logger.should_log(level)) return;
  const auto* outer = current_fields;
  current_fields = &fields;
  logger.log(level, "{}", msg);
  current_fields = outer;
}

}  // namespace

void LogEvent(spdlog::logger& logger, spdlog::level::level_enum level, std::string_view msg,
              std::initializer_list<LogField> fields) {
  LogFields(logger, level, msg, FieldSpan{fields.begin(), fields.end()});
}

void LogEvent(spdlog::logger& logger, spdlog::level::level_enum level, std::string_view msg,
              const std::vector<LogField>& fields) {
  LogFields(logger, level, msg, FieldSpan{fields.data(), fields.data() + fields.size()});
}

LogTraceScope::LogTraceScope(std::string_view trace_id, std::string_view span_id)
    : outer_(current_trace) {
  trace_id_size_ = static_cast<std::uint8_t>(std::min(trace_id.size(), trace_id_.size()));
  span_id_size_ = static_cast<std::uint8_t>(std::min(span_id.size(), span_id_.size()));
  std::copy_n(trace_id.data(), trace_id_size_, trace_id_.data());
  std::copy_n(span_id.data(), span_id_size_, span_id_.data());
  current_trace = this;
}

LogTraceScope::~LogTraceScope() { current_trace = outer_; }

std::string FormatLogTimestamp(std::chrono::system_clock::time_point time) {
  const auto since_epoch = time.time_since_epoch();
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - seconds).count();
  const std::time_t t = static_cast<std::time_t>(seconds.count());
  std::tm utc{};
  gmtime_r(&t, &utc);
  std::array<char, 32> buffer{};
  const std::size_t n = std::strftime(buffer.data(), buffer.size(), "%Y-%m-%dT%H:%M:%S", &utc);
  return fmt::format("{}.{:03}Z", std::string_view(buffer.data(), n), millis);
}

std::unique_ptr<spdlog::formatter> MakeLogFormatter(std::string_view format) {
  if (format == "json") return std::make_unique<JsonFormatter>();
  return std::make_unique<TextFormatter>();
}

}  // namespace infrachat
