#include "infrachat/core/availability_log.h"

#include "infrachat/core/logging.h"

namespace infrachat {

AvailabilityLog::AvailabilityLog(std::shared_ptr<spdlog::logger> logger, Messages messages,
                                 Fields fields, Initially initially)
    : AvailabilityLog(std::move(logger), std::move(messages), std::move(fields), initially,
                      [] { return Clock::now(); }) {}

AvailabilityLog::AvailabilityLog(std::shared_ptr<spdlog::logger> logger, Messages messages,
                                 Fields fields, Initially initially,
                                 std::function<Clock::time_point()> now)
    : log_(std::move(logger)),
      messages_(std::move(messages)),
      fields_(std::move(fields)),
      now_(std::move(now)),
      state_(initially == Initially::kAvailable ? kUp : kUnknown) {}

bool AvailabilityLog::Failed(std::string_view error_class, std::string_view detail) {
  std::lock_guard lock(mu_);
  const int state = state_.load(std::memory_order_relaxed);
  if (state == kDown) {
    ++failures_;
    return false;
  }
  down_at_ = now_();
  since_ = FormatLogTimestamp(std::chrono::system_clock::now());
  error_class_ = std::string(error_class);
  failures_ = 1;
  state_.store(kDown, std::memory_order_release);
  std::vector<LogField> fields;
  fields.reserve(fields_.size() + 4);
  for (const auto& [key, value] : fields_) fields.push_back({key, value});
  fields.push_back({"error", error_class_});
  if (!detail.empty()) fields.push_back({"detail", detail});
  fields.push_back({"since", since_});
  if (state == kUnknown) fields.push_back({"first", true});
  LogEvent(*log_, spdlog::level::warn, messages_.down, fields);
  return true;
}

bool AvailabilityLog::Succeeded() {
  if (state_.load(std::memory_order_acquire) == kUp) return false;
  std::lock_guard lock(mu_);
  const int state = state_.load(std::memory_order_relaxed);
  if (state == kUp) return false;  // another thread logged it first
  state_.store(kUp, std::memory_order_release);
  std::vector<LogField> fields;
  fields.reserve(fields_.size() + 4);
  for (const auto& [key, value] : fields_) fields.push_back({key, value});
  if (state == kUnknown) {
    fields.push_back({"first", true});
  } else {
    const auto outage =
        std::chrono::duration_cast<std::chrono::milliseconds>(now_() - down_at_).count();
    fields.push_back({"error", error_class_});
    fields.push_back({"since", since_});
    fields.push_back({"outage_ms", static_cast<std::int64_t>(outage)});
    fields.push_back({"failures", failures_});
  }
  LogEvent(*log_, spdlog::level::info, messages_.up, fields);
  return true;
}

}  // namespace infrachat
