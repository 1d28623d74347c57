// End-to-end: the Prometheus endpoint (metrics.listen_address, docs/adr/0010) of a real
// infrachatd, read over HTTP like Prometheus reads it, checked with the real `promtool`.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <regex>
#include <string>

#include "child_process.h"
#include "daemon_process.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;
using testing::RegisterUser;
using testing::SendAndWait;
using testing::TestDatabase;

// GET http://<address>/metrics; the response body ("" when the request fails).
std::string Scrape(const std::string& address) {
  const auto colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1))));
  if (::inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr) != 1) return {};
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string request =
        "GET /metrics HTTP/1.0\r\nHost: " + address + "\r\nConnection: close\r\n\r\n";
    if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[8192];
      for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) response.append(buffer, n);
    }
  }
  ::close(fd);
  const auto body = response.find("\r\n\r\n");
  return body == std::string::npos ? std::string() : response.substr(body + 4);
}

// The value of the sample whose line starts with `series` (name and labels), or -1.
double Sample(const std::string& text, const std::string& series) {
  std::size_t pos = 0;
  while ((pos = text.find(series + " ", pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') return std::stod(text.substr(pos + series.size() + 1));
    pos += series.size();
  }
  return -1;
}

TEST_CASE("metrics: /metrics counts streams and sends by outcome, and promtool accepts it",
          "[e2e]") {
  TestDatabase db;
  DaemonProcess server(db, {"metrics.listen_address=127.0.0.1:0"});
  REQUIRE_FALSE(server.metrics_address().empty());
  auto alice = RegisterUser(server.address(), "alice");
  REQUIRE(alice->CreateChannel("general").ok());

  const std::string before = Scrape(server.metrics_address());
  REQUIRE_FALSE(before.empty());
  CHECK(Sample(before, "infrachat_gateway_streams_active") == 0);
  CHECK(Sample(before, "infrachat_gateway_sends_total{result=\"acked\"}") == 0);
  CHECK(std::regex_search(before, std::regex("infrachat_build_info\\{[^}]*roles=\"[^\"]*gateway")));

  auto watcher = alice->Connect();  // a subscriber; SendAndWait skips the frames of `stream`
  REQUIRE(testing::SubscribeAndWait(*watcher, "general") == 0);
  auto stream = alice->Connect();
  const std::string id = client::NewClientMsgId();
  for (int i = 0; i < 3; ++i) {
    auto ack = SendAndWait(*stream, "general", client::NewClientMsgId(), "hello");
    REQUIRE(ack.has_value());
    REQUIRE(ack->has_send_ack());
  }
  REQUIRE(SendAndWait(*stream, "general", id, "once")->has_send_ack());
  REQUIRE(SendAndWait(*stream, "general", id, "once")->send_ack().duplicate());
  auto refused = SendAndWait(*stream, "no-such-channel", client::NewClientMsgId(), "x");
  REQUIRE(refused.has_value());
  REQUIRE(refused->has_error());

  // Every stored message reaches the one subscriber (live, or from the log at the switch-over).
  REQUIRE(testing::CollectMessages(*watcher, "general", 4, 10s).size() == 4);

  const std::string during = Scrape(server.metrics_address());
  CHECK(Sample(during, "infrachat_fanout_deliveries_total{path=\"live\"}") +
            Sample(during, "infrachat_fanout_deliveries_total{path=\"log\"}") ==
        4);
  CHECK(Sample(during, "infrachat_fanout_log_reads_total") >= 1);  // the switch-over probe
  CHECK(Sample(during, "infrachat_fanout_slow_consumer_cuts_total") == 0);
  // Four stored sends in at least one batch, at most four; the duplicate is found inside one.
  const double batches = Sample(during, "infrachat_shard_batch_size_count");
  CHECK(batches >= 1);
  CHECK(Sample(during, "infrachat_shard_batch_size_sum") >= 4);
  CHECK(Sample(during, "infrachat_shard_commit_seconds_count") == batches);
  CHECK(Sample(during, "infrachat_shard_batches_failed_total") == 0);
  CHECK(Sample(during, "infrachat_gateway_streams_active") == 2);
  CHECK(Sample(during, "infrachat_gateway_sends_total{result=\"acked\"}") == 4);
  CHECK(Sample(during, "infrachat_gateway_sends_total{result=\"duplicate\"}") == 1);
  CHECK(Sample(during, "infrachat_gateway_sends_total{result=\"not_found\"}") == 1);

  // The exposition is valid for Prometheus's own checker (names, help, types, units).
  const std::string dir = testing::MakeTempDir("metrics");
  { std::ofstream(dir + "/metrics.txt") << during; }
  testing::ChildProcess promtool(
      {"/bin/sh", "-c", "promtool check metrics < " + dir + "/metrics.txt"}, "promtool");
  const auto checked = promtool.Finish(30s);
  INFO(checked.Describe());
  CHECK(checked.exit_code == 0);

  stream.reset();  // the streams end: the gauge follows
  watcher.reset();
  CHECK(testing::WaitUntil(
      [&] {
        return Sample(Scrape(server.metrics_address()), "infrachat_gateway_streams_active") == 0;
      },
      10s));
}

TEST_CASE("metrics: without metrics.listen_address nothing listens for them", "[e2e]") {
  TestDatabase db;
  DaemonProcess server(db);
  CHECK(server.metrics_address().empty());
}

}  // namespace
}  // namespace infrachat
