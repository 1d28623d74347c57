// A logger of the test's own whose lines are kept in memory, formatted as the daemon formats
// them (MakeLogFormatter), for unit tests of code that takes a logger.
#pragma once

#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "infrachat/core/logging.h"

namespace infrachat::testing {

// Thread-safety: the logger may be used from any thread, and the lines read meanwhile (each
// read is a snapshot of the whole lines logged so far).
class CapturedLog {
 public:
  explicit CapturedLog(const std::string& module, std::string_view format = "json")
      : sink_(std::make_shared<Sink>()), logger_(std::make_shared<spdlog::logger>(module, sink_)) {
    sink_->set_formatter(MakeLogFormatter(format));
    logger_->set_level(spdlog::level::info);
  }

  const std::shared_ptr<spdlog::logger>& logger() const { return logger_; }

  // The lines so far, without their newlines.
  std::vector<std::string> Lines() const { return sink_->Lines(); }

  // Every line parsed (json format), or those whose msg is `msg`.
  std::vector<nlohmann::json> Json(const std::string& msg = "") const {
    std::vector<nlohmann::json> found;
    for (const std::string& line : Lines()) {
      auto json = nlohmann::json::parse(line);
      if (msg.empty() || json["msg"] == msg) found.push_back(std::move(json));
    }
    return found;
  }

 private:
  class Sink final : public spdlog::sinks::base_sink<std::mutex> {
   public:
    std::vector<std::string> Lines() {
      std::lock_guard lock(mutex_);
      return lines_;
    }

   protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {  // under mutex_
      spdlog::memory_buf_t buffer;
      formatter_->format(msg, buffer);
      std::string line(buffer.data(), buffer.size());
      if (!line.empty() && line.back() == '\n') line.pop_back();
      lines_.push_back(std::move(line));
    }
    void flush_() override {}

   private:
    std::vector<std::string> lines_;
  };

  std::shared_ptr<Sink> sink_;
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace infrachat::testing
