// End-to-end with a real Prometheus server (Debian's `prometheus`): it scrapes a running
// infrachatd every second and evaluates deploy/prometheus/infrachat-rules.yml; the test drives
// chat traffic and reads counters, a histogram and a recording rule back through Prometheus's
// HTTP API (/api/v1/query), as a dashboard would.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "child_process.h"
#include "daemon_process.h"
#include "prometheus_text.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;
using testing::TestDatabase;

constexpr const char* kPrometheus = "/usr/bin/prometheus";

std::string UrlEncode(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// A Prometheus server of our own: private storage, loopback port, 1 s scrape and rule interval.
class Prometheus {
 public:
  explicit Prometheus(const std::string& target)
      : config_dir_(testing::MakeTempDir("prometheus-config")),
        address_(testing::UnusedLoopbackAddress()) {
    std::ofstream(config_dir_ + "/prometheus.yml") << "global:\n"
                                                      "  scrape_interval: 1s\n"
                                                      "  evaluation_interval: 1s\n"
                                                      "rule_files:\n"
                                                      "  - "
                                                   << INFRACHAT_SOURCE_DIR
                                                   << "/deploy/prometheus/infrachat-rules.yml\n"
                                                      "scrape_configs:\n"
                                                      "  - job_name: infrachat\n"
                                                      "    static_configs:\n"
                                                      "      - targets: [\""
                                                   << target << "\"]\n";
    process_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{kPrometheus, "--config.file=" + config_dir_ + "/prometheus.yml",
                                 "--storage.tsdb.path={dir}/data",
                                 "--web.listen-address=" + address_, "--log.level=warn"},
        "prometheus");
  }
  ~Prometheus() {
    process_.reset();
    std::filesystem::remove_all(config_dir_);
  }

  // The value of an instant query's first sample (nullopt: no sample, or the API failed).
  std::optional<double> Query(const std::string& promql) {
    const auto response = testing::HttpGet(address_, "/api/v1/query?query=" + UrlEncode(promql));
    if (response.status != 200) return std::nullopt;
    const auto json = nlohmann::json::parse(response.body, nullptr, false);
    if (json.is_discarded() || json.value("status", "") != "success") return std::nullopt;
    const auto& result = json["data"]["result"];
    if (!result.is_array() || result.empty()) return std::nullopt;
    return std::stod(result[0]["value"][1].get<std::string>());
  }

  // Polls `promql` until `accept` holds for its value (at most `timeout`); the last value.
  std::optional<double> QueryUntil(const std::string& promql,
                                   const std::function<bool(double)>& accept,
                                   std::chrono::milliseconds timeout = 15s) {
    std::optional<double> value;
    testing::WaitUntil(
        [&] {
          value = Query(promql);
          return value.has_value() && accept(*value);
        },
        timeout);
    return value;
  }

  std::string Describe() const {
    return "prometheus at " + address_ + ", stderr:\n" + testing::LastLines(process_->err(), 30);
  }

 private:
  std::string config_dir_;
  std::string address_;
  std::unique_ptr<testing::ChildProcess> process_;
};

TEST_CASE("prometheus: a real Prometheus scrapes infrachatd and sees counters and histograms move",
          "[e2e]") {
  REQUIRE(access(kPrometheus, X_OK) == 0);  // Debian's prometheus (scripts/setup.sh)
  TestDatabase db;
  DaemonProcess server(db, {"metrics.listen_address=127.0.0.1:0"});
  Prometheus prometheus(server.metrics_address());
  INFO(prometheus.Describe());

  // Scraped, healthy, and nothing sent yet.
  REQUIRE(prometheus.QueryUntil("up{job=\"infrachat\"}", [](double v) { return v == 1; }) == 1);
  REQUIRE(prometheus.QueryUntil("infrachat_gateway_sends_total{result=\"acked\"}",
                                [](double) { return true; }) == 0);
  CHECK(prometheus.Query("infrachat_build_info{job=\"infrachat\"}") == 1);

  // Chat: five acknowledged sends, one refused login.
  auto alice = testing::RegisterUser(server.address(), "alice");
  CHECK_FALSE(client::Client(server.address()).Login("alice", "not the password").ok());
  REQUIRE(alice->CreateChannel("general").ok());
  auto stream = alice->Connect();
  for (int i = 0; i < 5; ++i) {
    auto ack = testing::SendAndWait(*stream, "general", client::NewClientMsgId(), "hello");
    REQUIRE(ack.has_value());
    REQUIRE(ack->has_send_ack());
  }

  // Counters, as Prometheus stored them.
  CHECK(prometheus.QueryUntil("infrachat_gateway_sends_total{result=\"acked\"}",
                              [](double v) { return v == 5; }) == 5);
  CHECK(prometheus.QueryUntil("infrachat_auth_logins_total{result=\"wrong_password\"}",
                              [](double v) { return v == 1; }) == 1);
  CHECK(prometheus.QueryUntil(
            "sum(grpc_server_handled_total{grpc_method=\"Login\",grpc_code=\"Unauthenticated\"})",
            [](double v) { return v == 1; }) == 1);
  // A histogram: every stored message in some batch, and a commit time Prometheus can take a
  // percentile of.
  CHECK(prometheus.QueryUntil("infrachat_shard_batch_size_sum", [](double v) { return v == 5; }) ==
        5);
  const auto p99 = prometheus.QueryUntil(
      "histogram_quantile(0.99, sum by (le) (rate(infrachat_shard_commit_seconds_bucket[1m])))",
      [](double v) { return std::isfinite(v) && v > 0; });
  REQUIRE(p99.has_value());
  CHECK(*p99 > 0);
  CHECK(*p99 < 10);
  // The rules run on the real series: no server-side send errors.
  CHECK(prometheus.QueryUntil("job:infrachat_send_errors:ratio_rate5m{job=\"infrachat\"}",
                              [](double v) { return v == 0; }) == 0);
  CHECK(prometheus.Query("ALERTS{alertstate=\"firing\"}") == std::nullopt);
  // process_* moved with the work.
  CHECK(prometheus.QueryUntil("process_cpu_seconds_total{job=\"infrachat\"}",
                              [](double v) { return v > 0; }) > 0);
}

}  // namespace
}  // namespace infrachat
