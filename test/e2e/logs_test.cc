// JSON logs of a real infrachatd (log.format=json): every line parses, carries the fixed
// fields, the events an operator needs are there with their fields, and no message body,
// password or token the test used appears anywhere in the log.
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon_process.h"
#include "grpc_wire.h"
#include "infrachat/client/chat_stream.h"
#include "infrachat/client/client.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;
using testing::RegisterUser;
using testing::TestDatabase;
namespace v1 = client::v1;

std::vector<nlohmann::json> ReadJsonLines(const std::string& path, std::string* text) {
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) {
    *text += line + "\n";
    if (line.rfind("==== test harness:", 0) == 0) continue;  // DaemonProcess's own marker
    INFO("line " << lines.size() + 1 << ": " << line);
    REQUIRE_NOTHROW(lines.push_back(nlohmann::json::parse(line)));
    REQUIRE(lines.back().is_object());
  }
  return lines;
}

// The lines whose msg is `msg`.
std::vector<nlohmann::json> Events(const std::vector<nlohmann::json>& lines,
                                   const std::string& msg) {
  std::vector<nlohmann::json> found;
  for (const auto& line : lines) {
    if (line.value("msg", "") == msg) found.push_back(line);
  }
  return found;
}

TEST_CASE("json logs: stable fields, the events with their fields, no bodies or secrets",
          "[e2e][logs]") {
  TestDatabase db;
  DaemonProcess daemon(db, {"log.format=json", "log.level=info", "limits.send_rate_per_s=5",
                            "limits.send_burst=2", "limits.max_body_bytes=1000"});
  const std::string kChannel = "logs-room";
  const std::string kWrongPassword = "wrong-horse-staple-7431";
  std::vector<std::string> secrets = {testing::kTestPassword, kWrongPassword};

  auto alice = RegisterUser(daemon.address(), "alice");
  const std::uint64_t alice_id = alice->credentials().user_id;
  secrets.push_back(alice->credentials().access_token);
  secrets.push_back(alice->credentials().refresh_token);
  client::Client intruder(daemon.address());
  REQUIRE_FALSE(intruder.Login("alice", kWrongPassword).ok());
  REQUIRE_FALSE(intruder.Login("nobody-here", kWrongPassword).ok());
  REQUIRE(alice->CreateChannel(kChannel).ok());

  {
    auto stream = alice->Connect();
    testing::SubscribeAndWait(*stream, kChannel);
    // 8 sends at 5/s with a burst of 2: most wait for a token, in one burst.
    constexpr int kSends = 8;
    std::vector<std::string> ids;
    for (int i = 0; i < kSends; ++i) {
      const std::string body = "secret-body-" + std::to_string(i) + "-qzx";
      secrets.push_back(body);
      ids.push_back(stream->Send(kChannel, body));
    }
    int acked = 0;
    while (acked < kSends) {
      auto frame = stream->Next(10s);
      REQUIRE(frame.has_value());
      REQUIRE_FALSE(frame->has_error());
      if (frame->has_send_ack()) ++acked;
    }
    // A body over limits.max_body_bytes: refused with an Error, the stream goes on.
    const std::string oversized(1500, 'O');
    auto refused = testing::SendAndWait(*stream, kChannel, "oversized-1", oversized);
    REQUIRE(refused.has_value());
    CHECK(refused->has_error());
    secrets.push_back(oversized.substr(0, 64));
  }

  // Bytes that are not a ClientFrame (as test/e2e/batch_test.cc sends them).
  v1::ClientFrame ping;
  ping.mutable_ping()->set_nonce(7);
  const std::string garbage("\x0a\x64\x01\x02\x03", 5);
  const auto answers = testing::CallStream(daemon.address(), "/infrachat.v1.ChatService/Connect",
                                           {garbage, ping.SerializeAsString()},
                                           /*pipelined=*/false, testing::kWireDeadline,
                                           {{"authorization", "Bearer " + alice->access_token()}});
  REQUIRE(answers.size() == 2);

  // Both streams have closed (their OnDone ran) before shutdown; then the stop milestones.
  std::string text;
  REQUIRE(testing::WaitUntil(
      [&] {
        text.clear();
        std::ifstream in(daemon.log_path());
        std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::size_t count = 0;
        for (std::size_t at = all.find("\"stream closed\""); at != std::string::npos;
             at = all.find("\"stream closed\"", at + 1)) {
          ++count;
        }
        return count >= 2;
      },
      10s));
  REQUIRE(daemon.Terminate() == 0);

  text.clear();
  const auto lines = ReadJsonLines(daemon.log_path(), &text);
  REQUIRE(lines.size() > 10);
  for (const auto& line : lines) {
    INFO(line.dump());
    for (const char* key : {"ts", "level", "module", "msg", "trace_id", "span_id"}) {
      CHECK(line.contains(key));
    }
  }

  // Nothing the client kept secret, anywhere (not even escaped: the values are plain ASCII).
  for (const std::string& secret : secrets) {
    INFO("secret: " << secret);
    CHECK(text.find(secret) == std::string::npos);
  }

  const auto registered = Events(lines, "user registered");
  REQUIRE(registered.size() == 1);
  CHECK(registered[0]["user_id"] == alice_id);
  CHECK(registered[0]["module"] == "auth");

  const auto failed = Events(lines, "login failed");
  REQUIRE(failed.size() == 2);
  CHECK(failed[0]["reason"] == "wrong_password");
  CHECK(failed[0]["username"] == "alice");
  CHECK(failed[1]["reason"] == "unknown_user");
  CHECK(failed[1]["username"] == "");  // could be a password typed into the wrong field
  for (const auto& line : failed) CHECK(line["trace_id"].get<std::string>().size() == 32);

  const auto opened = Events(lines, "stream opened");
  REQUIRE(opened.size() == 2);
  CHECK(opened[0]["user_id"] == alice_id);
  CHECK(opened[0]["peer"].get<std::string>().find("127.0.0.1") != std::string::npos);
  CHECK_FALSE(opened[0]["session"].get<std::string>().empty());
  CHECK(opened[0]["trace_id"].get<std::string>().size() == 32);

  const auto closed = Events(lines, "stream closed");
  REQUIRE(closed.size() == 2);
  const auto& first = closed[0];
  INFO(first.dump());
  CHECK(first["user_id"] == alice_id);
  CHECK(first["trace_id"] == opened[0]["trace_id"]);     // the stream's trace, both ends
  CHECK(first["frames_in"].get<std::uint64_t>() >= 10);  // subscribe, 8 sends, oversized
  CHECK(first["frames_out"].get<std::uint64_t>() >= 10);
  CHECK(first["frames_refused"] == 1);
  CHECK(first["rate_limited_bursts"] == 1);
  CHECK(first["duration_ms"].get<std::int64_t>() >= 0);
  CHECK(first["reason"].is_string());
  CHECK(closed[1]["frames_refused"] == 1);  // the malformed frame

  const auto limited = Events(lines, "sends rate limited");
  REQUIRE(limited.size() == 1);  // once per burst, not per frame
  CHECK(limited[0]["user_id"] == alice_id);
  CHECK(limited[0]["trace_id"] == opened[0]["trace_id"]);

  const auto refused = Events(lines, "frame refused");
  REQUIRE(refused.size() == 2);
  CHECK(refused[0]["reason"] == "body_too_large");
  CHECK(refused[1]["reason"] == "malformed");
  CHECK(refused[1]["code"] == "INVALID_ARGUMENT");

  CHECK_FALSE(Events(lines, "serving").empty());
  CHECK_FALSE(Events(lines, "stopped").empty());
}

}  // namespace
}  // namespace infrachat
