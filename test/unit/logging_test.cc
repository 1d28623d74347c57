// The log formatters (text and JSON lines), LogEvent fields and LogTraceScope, on a logger of
// the test's own with an ostream sink, and log.format validation.
#include "infrachat/core/logging.h"

#include <spdlog/sinks/ostream_sink.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sstream>

namespace infrachat {
namespace {

struct CapturedLogger {
  explicit CapturedLogger(std::string_view format)
      : sink(std::make_shared<spdlog::sinks::ostream_sink_mt>(out)),
        logger(std::make_shared<spdlog::logger>("gateway", sink)) {
    sink->set_formatter(MakeLogFormatter(format));
    logger->set_level(spdlog::level::info);
  }
  std::vector<std::string> Lines() const {
    std::vector<std::string> lines;
    std::istringstream in(out.str());
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }
  std::ostringstream out;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink;
  std::shared_ptr<spdlog::logger> logger;
};

TEST_CASE("json lines: fixed fields, event fields with their types, trace scope", "[logging]") {
  CapturedLogger log("json");
  LogEvent(log.logger, spdlog::level::info, "stream closed",
           {{"user_id", "u-1"},
            {"duration_ms", 1500},
            {"frames_in", std::uint64_t{3}},
            {"ratio", 0.5},
            {"clean", true},
            {"msg", "dropped: a fixed field"}});
  {
    LogTraceScope trace("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    log.logger->warn("plain {} line", "formatted");
    LogTraceScope inner("0af7651916cd43dd8448eb211c80319c");
    LogEvent(log.logger, spdlog::level::info, "inner");
  }
  log.logger->info("after the scope");
  LogEvent(log.logger, spdlog::level::debug, "below the level", {{"user_id", "x"}});

  const auto lines = log.Lines();
  REQUIRE(lines.size() == 4);
  std::vector<nlohmann::json> parsed;
  for (const std::string& line : lines) parsed.push_back(nlohmann::json::parse(line));
  for (const auto& json : parsed) {
    for (const char* key : {"ts", "level", "module", "msg", "trace_id", "span_id"}) {
      INFO(json.dump() << " " << key);
      CHECK(json.contains(key));
    }
    CHECK(json["module"] == "gateway");
    // RFC 3339, UTC, milliseconds: 2026-12-03T10:00:00.123Z
    CHECK(json["ts"].get<std::string>().size() == 24);
    CHECK(json["ts"].get<std::string>().back() == 'Z');
  }
  CHECK(parsed[0]["msg"] == "stream closed");
  CHECK(parsed[0]["level"] == "info");
  CHECK(parsed[0]["user_id"] == "u-1");
  CHECK(parsed[0]["duration_ms"] == 1500);
  CHECK(parsed[0]["frames_in"].is_number_unsigned());
  CHECK(parsed[0]["ratio"] == 0.5);
  CHECK(parsed[0]["clean"] == true);
  CHECK(parsed[0]["trace_id"] == "");
  CHECK(lines[0].rfind("{\"ts\":", 0) == 0);  // fixed fields first, in order

  CHECK(parsed[1]["msg"] == "plain formatted line");
  CHECK(parsed[1]["level"] == "warn");
  CHECK(parsed[1]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(parsed[1]["span_id"] == "00f067aa0ba902b7");
  CHECK(parsed[2]["trace_id"] == "0af7651916cd43dd8448eb211c80319c");  // innermost wins
  CHECK(parsed[3]["trace_id"] == "");                                  // scope ended
  CHECK(parsed[3].size() == 6);  // a plain line has the fixed fields only
}

TEST_CASE("json lines escape what they carry and survive bytes that are not UTF-8", "[logging]") {
  CapturedLogger log("json");
  LogEvent(log.logger, spdlog::level::info, "multi\nline \"quoted\"",
           {{"peer", std::string("bad \xff utf8")}});
  const auto lines = log.Lines();
  REQUIRE(lines.size() == 1);
  const auto json = nlohmann::json::parse(lines[0]);
  CHECK(json["msg"] == "multi\nline \"quoted\"");
  CHECK(json["peer"].get<std::string>().rfind("bad ", 0) == 0);
}

TEST_CASE("text lines: key=value fields, quoted when needed, trace id at the end", "[logging]") {
  CapturedLogger log("text");
  {
    LogTraceScope trace("4bf92f3577b34da6a3ce929d0e0e4736");
    LogEvent(
        log.logger, spdlog::level::info, "login failed",
        {{"reason", "wrong_password"}, {"username", "two words"}, {"attempts", 2}, {"empty", ""}});
  }
  log.logger->info("plain");
  const auto lines = log.Lines();
  REQUIRE(lines.size() == 2);
  INFO(lines[0]);
  CHECK(lines[0].find("info  [gateway]") != std::string::npos);
  const std::string tail =
      " login failed reason=wrong_password username=\"two words\" attempts=2 empty=\"\" "
      "trace_id=4bf92f3577b34da6a3ce929d0e0e4736";
  CHECK(lines[0].size() > tail.size());
  CHECK(lines[0].substr(lines[0].size() - tail.size()) == tail);
  CHECK(lines[1].substr(lines[1].size() - 6) == " plain");
}

TEST_CASE("log.format is text or json, anything else is a clear error", "[logging]") {
  const auto load = [](const std::string& set) {
    return LoadConfig(ConfigSources{"roles: [gateway]\n", "test.yaml", {}, {set}});
  };
  CHECK(load("log.format=json").errors.empty());
  CHECK(load("log.format=json").config.log.format == "json");
  CHECK(LoadConfig(ConfigSources{"roles: [gateway]\n", "test.yaml", {}, {}}).config.log.format ==
        "text");
  const auto bad = load("log.format=jsno").errors;
  REQUIRE(bad.size() == 1);
  INFO(bad[0]);
  CHECK(bad[0].find("log.format") != std::string::npos);
  CHECK(bad[0].find("json") != std::string::npos);
}

}  // namespace
}  // namespace infrachat
