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
#include "test_db.h"

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

  // The database goes away for a while: logins (the pool) and sends (the shard's group
  // committer) fail several times each, yet each logs the outage once and its end once.
  const std::string kOutageBody = "outage-body-5512-qzx";
  secrets.push_back(kOutageBody);
  {
    auto stream = alice->Connect();
    {
      testing::DatabaseOutage outage(db);
      for (int i = 0; i < 3; ++i) {
        CHECK(client::Client(daemon.address()).Login("alice", testing::kTestPassword).code() ==
              Code::kUnavailable);
      }
      for (int i = 0; i < 2; ++i) {  // within the stream's burst: no rate limiting
        auto answer =
            testing::SendAndWait(*stream, kChannel, "outage-" + std::to_string(i), kOutageBody);
        REQUIRE(answer.has_value());
        CHECK(answer->has_error());
      }
    }
    REQUIRE(testing::WaitUntil(
        [&] {
          return client::Client(daemon.address()).Login("alice", testing::kTestPassword).ok();
        },
        10s));
    auto acked = testing::SendAndWait(*stream, kChannel, "outage-0", kOutageBody);
    REQUIRE(acked.has_value());
    CHECK(acked->has_send_ack());
  }

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
        return count >= 3;
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

  std::vector<nlohmann::json> failed;  // the failures of the intruder, not of the outage
  std::size_t unavailable = 0;
  for (const auto& line : Events(lines, "login failed")) {
    if (line["reason"] == "unavailable") {
      CHECK(line["code"] == "UNAVAILABLE");
      ++unavailable;
    } else {
      failed.push_back(line);
    }
  }
  CHECK(unavailable == 3);
  REQUIRE(failed.size() == 2);
  CHECK(failed[0]["reason"] == "wrong_password");
  CHECK(failed[0]["username"] == "alice");
  CHECK(failed[1]["reason"] == "unknown_user");
  CHECK(failed[1]["username"] == "");  // could be a password typed into the wrong field
  for (const auto& line : failed) CHECK(line["trace_id"].get<std::string>().size() == 32);

  const auto opened = Events(lines, "stream opened");
  REQUIRE(opened.size() == 3);
  CHECK(opened[0]["user_id"] == alice_id);
  CHECK(opened[0]["peer"].get<std::string>().find("127.0.0.1") != std::string::npos);
  CHECK_FALSE(opened[0]["session"].get<std::string>().empty());
  CHECK(opened[0]["trace_id"].get<std::string>().size() == 32);

  const auto closed = Events(lines, "stream closed");
  REQUIRE(closed.size() == 3);
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

  std::vector<nlohmann::json> limited;  // of the first stream
  for (const auto& line : Events(lines, "sends rate limited")) {
    if (line["trace_id"] == opened[0]["trace_id"]) limited.push_back(line);
  }
  REQUIRE(limited.size() == 1);  // once per burst, not per frame
  CHECK(limited[0]["user_id"] == alice_id);
  CHECK(limited[0]["trace_id"] == opened[0]["trace_id"]);

  const auto refused = Events(lines, "frame refused");
  REQUIRE(refused.size() == 2);
  CHECK(refused[0]["reason"] == "body_too_large");
  CHECK(refused[0]["user_id"] == alice_id);
  CHECK(refused[0]["session"] == opened[0]["session"]);
  CHECK(refused[0]["size"] == 1500);
  CHECK(refused[0]["limit"] == 1000);  // limits.max_body_bytes
  CHECK(refused[1]["reason"] == "malformed");
  CHECK(refused[1]["code"] == "INVALID_ARGUMENT");
  CHECK(refused[1]["size"] == garbage.size());
  CHECK(refused[1]["limit"] == 64 * 1024);  // grpc.max_receive_message_bytes
  CHECK(refused[1]["peer"].get<std::string>().find("127.0.0.1") != std::string::npos);

  // The outage: one line per component when it began, one when it ended; no line per failure.
  for (const auto& [component, module] :
       {std::pair<std::string, std::string>{"pool", "storage"}, {"group_committer", "shard"}}) {
    INFO(component);
    const auto down = testing::JsonLogEvents(daemon.log_path(), "database unavailable",
                                             {{"component", component}});
    const auto up = testing::JsonLogEvents(daemon.log_path(), "database available again",
                                           {{"component", component}});
    REQUIRE(down.size() == 1);
    REQUIRE(up.size() == 1);
    INFO(down[0].dump() << "\n" << up[0].dump());
    CHECK(down[0]["level"] == "warn");
    CHECK(down[0]["module"] == module);
    CHECK(down[0]["error"].is_string());
    CHECK(down[0]["since"].is_string());
    CHECK(up[0]["level"] == "info");
    CHECK(up[0]["module"] == module);
    CHECK(up[0]["since"] == down[0]["since"]);
    CHECK(up[0]["outage_ms"].get<std::int64_t>() >= 0);
    CHECK(up[0]["failures"].get<std::uint64_t>() >= 2);  // several failed, one line
    CHECK(down[0]["ts"].get<std::string>() <= up[0]["ts"].get<std::string>());
  }

  CHECK_FALSE(Events(lines, "serving").empty());
  CHECK_FALSE(Events(lines, "stopped").empty());
}

}  // namespace
}  // namespace infrachat
