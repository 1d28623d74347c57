// End-to-end: every metric name that deploy/grafana/infrachat.json and
// deploy/prometheus/infrachat-rules.yml use exists in the /metrics of real infrachatd
// processes: a role-split pair (core [auth, shard] and edge [gateway, fanout, router]), so that
// every module's families, the cluster's included, are served, after a little chat traffic.
// Renaming a metric without updating the dashboard and the rules fails here.
#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "daemon_process.h"
#include "prometheus_text.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;
using testing::TestDatabase;

// Series Prometheus itself adds to every target: not in any /metrics.
const std::set<std::string> kFromPrometheus = {"up", "scrape_duration_seconds",
                                               "scrape_samples_scraped"};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The metric names a PromQL expression selects (or a Grafana label_values(...) query): strings,
// label matchers, ranges and grouping label lists are removed, then every identifier that is
// not a function, a keyword, part of a number or duration, or a Grafana variable is a name.
std::set<std::string> MetricNames(std::string expr) {
  // label_values(selector, label): only the selector names a metric.
  expr = std::regex_replace(expr, std::regex(R"(label_values\s*\(([^,()]*),[^)]*\))"), "$1");
  expr = std::regex_replace(expr, std::regex(R"("(\\.|[^"\\])*"|'(\\.|[^'\\])*'|`[^`]*`)"), " ");
  expr = std::regex_replace(expr, std::regex(R"(\{[^}]*\}|\[[^\]]*\])"), " ");
  expr = std::regex_replace(
      expr, std::regex(R"(\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\))"), " ");
  static const std::set<std::string> kKeywords = {
      "by",     "without", "on", "ignoring", "group_left", "group_right", "bool",
      "offset", "and",     "or", "unless",   "inf",        "nan",         "atan2"};
  std::set<std::string> names;
  const std::regex identifier(R"([A-Za-z_:][A-Za-z0-9_:]*)");
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), identifier);
       it != std::sregex_iterator(); ++it) {
    const std::string name = it->str();
    const auto begin = static_cast<std::size_t>(it->position());
    const char before = begin > 0 ? expr[begin - 1] : ' ';
    if (std::isdigit(static_cast<unsigned char>(before)) || before == '.' || before == '$') {
      continue;  // 1e3, 5m, 0.5, $job
    }
    std::size_t after = begin + name.size();
    while (after < expr.size() && expr[after] == ' ') ++after;
    if (after < expr.size() && expr[after] == '(') continue;  // a function or aggregation
    if (kKeywords.count(name) > 0) continue;
    names.insert(name);
  }
  return names;
}

TEST_CASE("observability names: the expression reader finds metric names and nothing else",
          "[e2e]") {
  CHECK(MetricNames(R"(histogram_quantile(0.99, sum by (job, le) (rate(x_bucket{job=~"a|b",)"
                    R"(le!="1"}[5m]))) > 0.25 and y offset 5m)") ==
        std::set<std::string>{"x_bucket", "y"});
  CHECK(MetricNames(R"(job:ratio:rate5m{job=~"$job"} > (14.4 * 0.001) or on (instance) z == 0)") ==
        std::set<std::string>{"job:ratio:rate5m", "z"});
  CHECK(MetricNames(R"(time() - process_start_time_seconds{instance=~"$instance"})") ==
        std::set<std::string>{"process_start_time_seconds"});
  CHECK(MetricNames(R"(rate(a_total[$__rate_interval]) / ignoring(code) group_left b)") ==
        std::set<std::string>{"a_total", "b"});
  CHECK(MetricNames(R"(label_values(infrachat_build_info{job=~"$job"}, instance))") ==
        std::set<std::string>{"infrachat_build_info"});
  CHECK(MetricNames("sum without (path) (c) unless d bool e").count("path") == 0);
}

TEST_CASE("observability names: every metric the dashboard and the rules use is served",
          "[e2e][cluster]") {
  // What the dashboard and the rules use, and the series the rules record.
  std::map<std::string, std::set<std::string>> used;  // name -> where
  std::set<std::string> recorded;
  const std::string root = INFRACHAT_SOURCE_DIR;
  const auto dashboard = nlohmann::json::parse(ReadFile(root + "/deploy/grafana/infrachat.json"));
  int expressions = 0;
  for (const auto& panel : dashboard.at("panels")) {
    for (const auto& target : panel.value("targets", nlohmann::json::array())) {
      ++expressions;
      for (const auto& name : MetricNames(target.at("expr").get<std::string>())) {
        used[name].insert("dashboard panel \"" + panel.at("title").get<std::string>() + "\"");
      }
    }
  }
  for (const auto& variable : dashboard.at("templating").at("list")) {
    if (variable.at("type") != "query") continue;
    for (const auto& name : MetricNames(variable.at("query").at("query").get<std::string>())) {
      used[name].insert("dashboard variable $" + variable.at("name").get<std::string>());
    }
  }
  const YAML::Node rules = YAML::LoadFile(root + "/deploy/prometheus/infrachat-rules.yml");
  for (const auto& group : rules["groups"]) {
    for (const auto& rule : group["rules"]) {
      ++expressions;
      if (rule["record"]) recorded.insert(rule["record"].as<std::string>());
      const std::string what = rule["alert"] ? "alert " + rule["alert"].as<std::string>()
                                             : "rule " + rule["record"].as<std::string>();
      for (const auto& name : MetricNames(rule["expr"].as<std::string>())) used[name].insert(what);
    }
  }
  REQUIRE(expressions >= 40);
  REQUIRE(used.size() >= 30);

  // Real processes with a little of everything: a registration, a refused login, a channel,
  // a subscriber, a send committed on the shard and delivered over the event stream.
  TestDatabase db;
  DaemonProcess core(db, {"roles=auth,shard", "grpc.internal_listen_address=127.0.0.1:0",
                          "metrics.listen_address=127.0.0.1:0", "grpc.shutdown_grace_s=1"});
  DaemonProcess edge(
      db, {"roles=gateway,fanout,router", "database.url=", "peers.auth=" + core.internal_address(),
           "peers.shard=" + core.internal_address(), "metrics.listen_address=127.0.0.1:0",
           "shard.lease_heartbeat_ms=100"});
  auto alice = testing::RegisterUser(edge.address(), "alice");
  CHECK_FALSE(client::Client(edge.address()).Login("alice", "not the password").ok());
  REQUIRE(alice->CreateChannel("general").ok());
  auto watcher = alice->Connect();
  REQUIRE(testing::SubscribeAndWait(*watcher, "general") == 0);
  auto stream = alice->Connect();
  auto ack = testing::SendAndWait(*stream, "general", client::NewClientMsgId(), "hello");
  REQUIRE(ack.has_value());
  REQUIRE(ack->has_send_ack());
  REQUIRE(testing::CollectMessages(*watcher, "general", 1, 10s).size() == 1);
  // The edge has read the lease table at least once (the live-shards gauge is set).
  REQUIRE(testing::WaitUntil(
      [&] {
        return testing::Sample(testing::Scrape(edge.metrics_address()),
                               "infrachat_router_live_shards{region=\"local\"}") == 1;
      },
      10s));

  std::set<std::string> served;
  for (const auto* process : {&core, &edge}) {
    const std::string text = testing::Scrape(process->metrics_address());
    REQUIRE_FALSE(text.empty());
    for (const auto& name : testing::SampleNames(text)) served.insert(name);
  }
  for (const auto& [name, where] : used) {
    if (served.count(name) > 0 || recorded.count(name) > 0 || kFromPrometheus.count(name) > 0) {
      continue;
    }
    std::string places;
    for (const auto& w : where) places += "\n    " + w;
    FAIL_CHECK(name << " is not in the /metrics of infrachatd (core or edge); used by:" << places);
  }
  // Every recorded series is used by an alert or the dashboard, and exists as a rule.
  for (const auto& name : recorded) {
    INFO(name << " is recorded but nothing uses it");
    CHECK(used.count(name) == 1);
  }
  for (const auto& [name, where] : used) {
    if (name.find(':') == std::string::npos) continue;
    INFO(name << " looks like a recorded series but no rule records it");
    CHECK(recorded.count(name) == 1);
  }
  WARN("names used: " << used.size() << ", served: " << served.size());
}

}  // namespace
}  // namespace infrachat
