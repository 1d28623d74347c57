// Smoke test of `infrachat-ceiling`, the benchmark ceilings (src/bench/ceilings): each subcommand
// runs as a real child process and does what scripts/bench.sh relies on. Not how fast, only that
// the figures are real and the servers behave:
//
//   - pg-insert commits rows on the private PostgreSQL with fsync and synchronous_commit on,
//     reports one JSON line whose counts and percentiles agree with each other, and leaves no
//     table behind (a stale table of the same name is replaced, not appended to);
//   - grpc-relay serves infrachat.v1.ChatService to the client library: per-channel seqs 1, 2, 3
//     in the sender's acks, every subscriber gets the messages in seq order with their bodies,
//     unsubscribe stops delivery, ping is answered, a half-close ends the stream with OK after
//     the queued frames; SIGTERM stops it with exit 0 and a JSON line of its counters;
//   - bad flags and unreachable databases exit non-zero with a message on stderr.
//
// The tool runs as a child through test/support's ChildProcess.
// Nothing sleeps as synchronization: waits poll a condition against a deadline.
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <pqxx/pqxx>
#include <sstream>
#include <string>
#include <vector>

#include "daemon_process.h"
#include "infrachat/client/chat_stream.h"
#include "infrachat/client/client.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using client::ChatStream;
using nlohmann::json;
using testing::ChildProcess;
using testing::CliResult;
using testing::NextMatching;
using testing::TestDatabase;
namespace v1 = client::v1;
using Clock = std::chrono::steady_clock;

constexpr auto kWait = 15s;  // upper bound for anything a test waits for

// One `infrachat-ceiling args...` child ("{dir}" in an argument is replaced by its temp dir).
ChildProcess StartCeiling(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {INFRACHAT_CEILING_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return ChildProcess(std::move(argv), "ceiling-smoke");
}

CliResult RunCeiling(const std::vector<std::string>& args,
                     std::chrono::milliseconds timeout = 60s) {
  return StartCeiling(args).Finish(timeout);
}

bool TableExists(const std::string& url, const std::string& table) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  return !tx.exec_params("SELECT to_regclass($1) IS NULL", table)[0][0].as<bool>();
}

// Frames of `stream` until `done` says enough or `timeout` passes; all of them, in order.
std::vector<v1::ServerFrame> ReadUntil(
    ChatStream& stream, const std::function<bool(const std::vector<v1::ServerFrame>&)>& done,
    std::chrono::milliseconds timeout) {
  std::vector<v1::ServerFrame> frames;
  const auto deadline = Clock::now() + timeout;
  while (!done(frames)) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    auto frame = stream.Next(left);
    if (!frame) break;
    frames.push_back(std::move(*frame));
  }
  return frames;
}

std::size_t CountOf(const std::vector<v1::ServerFrame>& frames, v1::ServerFrame::FrameCase kind) {
  std::size_t n = 0;
  for (const auto& f : frames) n += f.frame_case() == kind ? 1 : 0;
  return n;
}

std::vector<v1::ChatMessage> MessagesOf(const std::vector<v1::ServerFrame>& frames) {
  std::vector<v1::ChatMessage> out;
  for (const auto& f : frames) {
    if (f.has_message()) out.push_back(f.message());
  }
  return out;
}

// ---- pg-insert ------------------------------------------------------------------------------

TEST_CASE("pg-insert commits durable batches and reports them in one JSON line", "[ceiling][pg]") {
  TestDatabase db;
  {
    // A stale table of the same name (an interrupted run) is dropped and recreated, not reused.
    pqxx::connection conn(db.url());
    pqxx::nontransaction tx(conn);
    tx.exec("CREATE TABLE smoke_messages (stale int)");
  }
  const CliResult r = RunCeiling({"pg-insert", "--url", db.url(), "--duration", "1", "--warmup",
                                  "0.2", "--batch", "10", "--table-prefix", "smoke"});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  const auto lines = r.JsonLines();
  REQUIRE(lines.size() == 1);
  const json& report = lines[0];

  CHECK(report.at("scenario") == "ceiling-pg-insert");
  CHECK(report.at("params") == json{{"connections", 1}, {"batch", 10}, {"body_bytes", 64}});
  CHECK(report.at("duration_s").get<double>() == Approx(1.0));
  CHECK(report.at("rate_unit") == "rows/s");

  const auto count = report.at("count").get<std::uint64_t>();
  const auto transactions = report.at("extra").at("transactions").get<std::uint64_t>();
  CHECK(count > 0);
  CHECK(count == 10 * transactions);  // whole batches only
  CHECK(report.at("rate").get<double>() == Approx(static_cast<double>(count)));
  CHECK(report.at("extra").at("transactions_per_s").get<double>() ==
        Approx(static_cast<double>(transactions)));
  CHECK(report.at("extra").at("fsync") == "on");
  CHECK(report.at("extra").at("synchronous_commit") == "on");
  CHECK(report.at("extra").at("table") == "smoke_messages");

  const json& latency = report.at("latency");
  CHECK(latency.at("name") == "commit");
  CHECK(latency.at("unit") == "ms");
  CHECK(latency.at("count").get<std::uint64_t>() == transactions);
  const double p50 = latency.at("p50"), p90 = latency.at("p90"), p99 = latency.at("p99"),
               max = latency.at("max");
  CHECK(p50 > 0);
  CHECK(p50 <= p90);
  CHECK(p90 <= p99);
  CHECK(p99 <= max);
  // A durable commit takes at least an fsync and a round trip, never a second at this size.
  CHECK(max < 1000);

  CHECK(r.err.find("ceiling-pg-insert") != std::string::npos);  // the table on stderr
  CHECK_FALSE(TableExists(db.url(), "smoke_messages"));
}

TEST_CASE("pg-insert with several connections and batch 1 counts every row once", "[ceiling][pg]") {
  TestDatabase db;
  const CliResult r = RunCeiling({"pg-insert", "--url", db.url(), "--duration", "0.5", "--warmup",
                                  "0", "--batch", "1", "--connections", "2", "--body-bytes", "0"});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  const auto lines = r.JsonLines();
  REQUIRE(lines.size() == 1);
  const json& report = lines[0];
  CHECK(report.at("params") == json{{"connections", 2}, {"batch", 1}, {"body_bytes", 0}});
  CHECK(report.at("count").get<std::uint64_t>() > 0);
  CHECK(report.at("count") == report.at("extra").at("transactions"));
  CHECK(report.at("extra").at("channels") == 8);
  CHECK_FALSE(TableExists(db.url(), "ceiling_messages"));
}

TEST_CASE("pg-insert exits 1 with a message when the database is unreachable", "[ceiling][pg]") {
  const std::string missing = "/tmp/ceiling-smoke-no-such-dir";
  const CliResult r = RunCeiling(
      {"pg-insert", "--url", "host=" + missing + " port=5432 dbname=postgres", "--duration", "1"});
  INFO(r.Describe());
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("cannot connect to the database") != std::string::npos);
}

// ---- flags ----------------------------------------------------------------------------------

TEST_CASE("bad flags exit non-zero with a message on stderr", "[ceiling]") {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"no-such-subcommand"},
      {"pg-insert"},  // --url is required
      {"pg-insert", "--url", "host=/nowhere", "--batch", "0"},
      {"pg-insert", "--url", "host=/nowhere", "--connections", "0"},
      {"pg-insert", "--url", "host=/nowhere", "--body-bytes", "-1"},
      {"pg-insert", "--url", "host=/nowhere", "--duration", "0"},
      {"pg-insert", "--url", "host=/nowhere", "--warmup", "-1"},
      {"pg-insert", "--url", "host=/nowhere", "--table-prefix", "Bad-Name"},
      {"pg-insert", "--url", "host=/nowhere", "--batch", "ten"},
      {"grpc-relay", "--no-such-flag"},
      {"grpc-relay", "--threads", "-1"},
      {"grpc-relay", "--listen", "127.0.0.1:99999"},
      {"grpc-relay", "--listen", "127.0.0.1"},
      {"grpc-relay", "--listen", "no-such-host.invalid:1"},
  };
  for (const auto& args : cases) {
    std::string joined;
    for (const auto& a : args) joined += " " + a;
    INFO("infrachat-ceiling" << joined);
    const CliResult r = RunCeiling(args, 30s);
    INFO(r.Describe());
    CHECK(r.exit_code > 0);
    CHECK(r.exit_code < 128);  // an exit, not a crash or the harness's kill
    CHECK(r.out.empty());
    CHECK_FALSE(r.err.empty());
  }
}

// ---- grpc-relay -----------------------------------------------------------------------------

TEST_CASE("grpc-relay relays sends in seq order to every subscriber and stops on SIGTERM",
          "[ceiling][relay]") {
  ChildProcess relay =
      StartCeiling({"grpc-relay", "--listen", "127.0.0.1:0", "--ready-file", "{dir}/ready"});
  const std::string ready_path = relay.dir() + "/ready";
  const std::string ready = relay.WaitForFile(ready_path, kWait);
  REQUIRE(ready.size() > std::string("127.0.0.1:\n").size());
  REQUIRE(ready.rfind("127.0.0.1:", 0) == 0);
  REQUIRE(ready.back() == '\n');
  const std::string address = ready.substr(0, ready.size() - 1);
  CHECK(std::stoi(address.substr(address.find(':') + 1)) > 0);
  const auto subscribed_to = [](const std::string& channel, std::uint64_t head_seq) {
    return [=](const v1::ServerFrame& f) {
      return f.has_subscribed() && f.subscribed().channel() == channel &&
             f.subscribed().head_seq() == head_seq;
    };
  };
  const auto pong = [](std::uint64_t nonce) {
    return [=](const v1::ServerFrame& f) { return f.has_pong() && f.pong().nonce() == nonce; };
  };

  // Two clients on their own connections, no token: the relay checks nothing.
  ChatStream a(client::MakeChannel(address), "");
  ChatStream b(client::MakeChannel(address), "");
  REQUIRE(a.Subscribe("room"));
  REQUIRE(b.Subscribe("room"));
  std::vector<v1::ServerFrame> skipped;
  REQUIRE(NextMatching(a, subscribed_to("room", 0), kWait, &skipped));
  REQUIRE(NextMatching(b, subscribed_to("room", 0), kWait, &skipped));
  CHECK(skipped.empty());  // Subscribed is the first frame

  const std::vector<std::string> bodies = {"first", "zweite Nachricht \xc3\xa4",
                                           std::string(500, 'x')};
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    REQUIRE(a.Send("room", "id-" + std::to_string(i + 1), bodies[i]));
  }

  // The sender: acks with seq 1, 2, 3 in order, each before its own message.
  const auto a_frames = ReadUntil(
      a,
      [](const auto& frames) {
        return CountOf(frames, v1::ServerFrame::kSendAck) == 3 &&
               CountOf(frames, v1::ServerFrame::kMessage) == 3;
      },
      kWait);
  std::vector<std::uint64_t> ack_seqs;
  for (std::size_t i = 0; i < a_frames.size(); ++i) {
    const auto& f = a_frames[i];
    if (f.has_send_ack()) {
      const auto& ack = f.send_ack();
      ack_seqs.push_back(ack.seq());
      CHECK(ack.client_msg_id() == "id-" + std::to_string(ack.seq()));
      CHECK(ack.channel() == "room");
      CHECK_FALSE(ack.duplicate());
      CHECK(ack.sent_at_unix_ms() > 0);
    } else {
      REQUIRE(f.has_message());
      // The ack of this seq came before the message.
      CHECK(std::find(ack_seqs.begin(), ack_seqs.end(), f.message().seq()) != ack_seqs.end());
    }
  }
  CHECK(ack_seqs == std::vector<std::uint64_t>{1, 2, 3});

  // Both subscribers: messages 1, 2, 3 in order, with the bodies sent.
  const auto b_frames = ReadUntil(
      b, [](const auto& frames) { return CountOf(frames, v1::ServerFrame::kMessage) == 3; }, kWait);
  CHECK(b_frames.size() == 3);  // nothing but the messages
  for (const auto& messages : {MessagesOf(a_frames), MessagesOf(b_frames)}) {
    REQUIRE(messages.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
      CHECK(messages[i].seq() == i + 1);
      CHECK(messages[i].channel() == "room");
      CHECK(messages[i].body() == bodies[i]);
      CHECK(messages[i].client_msg_id() == "id-" + std::to_string(i + 1));
      CHECK(messages[i].sender() == "relay");
      CHECK(messages[i].sender_id() == 0);
      CHECK(messages[i].sent_at_unix_ms() > 0);
    }
  }

  // Typing and Ack are ignored: the next frame after them is the Pong.
  REQUIRE(a.Typing("room"));
  REQUIRE(a.Ack("room", 3));
  REQUIRE(a.Ping(42));
  auto next = a.Next(kWait);
  REQUIRE(next);
  CHECK(pong(42)(*next));

  // After Unsubscribe (done once its later Ping is answered) b gets no more messages: a's 4th
  // message is acked after the relay queued it, so b's next Pong would come after it.
  REQUIRE(b.Unsubscribe("room"));
  REQUIRE(b.Ping(1));
  REQUIRE(NextMatching(b, pong(1), kWait));
  REQUIRE(a.Send("room", "id-4", "fourth"));
  auto ack4 = NextMatching(
      a, [](const auto& f) { return f.has_send_ack(); }, kWait);
  REQUIRE(ack4);
  CHECK(ack4->send_ack().seq() == 4);
  skipped.clear();
  REQUIRE(b.Ping(2));
  REQUIRE(NextMatching(b, pong(2), kWait, &skipped));
  CHECK(skipped.empty());

  // A new subscriber learns the head; channels count independently.
  ChatStream c(client::MakeChannel(address), "");
  REQUIRE(c.Subscribe("room"));
  REQUIRE(NextMatching(c, subscribed_to("room", 4), kWait));
  REQUIRE(c.Subscribe("other"));
  REQUIRE(NextMatching(c, subscribed_to("other", 0), kWait));

  // A half-close ends the stream with OK once what is queued for it has been written.
  {
    ChatStream d(client::MakeChannel(address), "");
    REQUIRE(d.Subscribe("solo"));
    REQUIRE(d.Send("solo", "last", "bye"));
    REQUIRE(d.CloseWrites());
    const auto status = d.WaitForEnd(kWait);
    REQUIRE(status);
    CHECK(status->ok());
    std::vector<v1::ServerFrame> rest;
    while (auto f = d.Next(0ms)) rest.push_back(std::move(*f));
    REQUIRE(rest.size() == 3);
    CHECK(rest[0].has_subscribed());
    CHECK(rest[1].has_send_ack());
    CHECK(rest[1].send_ack().seq() == 1);
    REQUIRE(rest[2].has_message());
    CHECK(rest[2].message().body() == "bye");
  }

  // SIGTERM with a, b and c still open: exit 0, the address then one JSON line of counters.
  relay.Signal(SIGTERM);
  const CliResult r = relay.Finish(kWait);
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  CHECK(a.WaitForEnd(kWait));
  CHECK_FALSE(std::filesystem::exists(ready_path));  // no stale address left behind
  std::istringstream out(r.out);
  std::string first_line, second_line, third_line;
  std::getline(out, first_line);
  std::getline(out, second_line);
  CHECK_FALSE(std::getline(out, third_line));
  CHECK(first_line == address);
  const json report = json::parse(second_line);
  CHECK(report.at("scenario") == "ceiling-grpc-relay");
  CHECK(report.at("rate_unit") == "deliveries/s");
  const json& extra = report.at("extra");
  CHECK(extra.at("address") == address);
  CHECK(extra.at("streams") == 4);
  CHECK(extra.at("sends") == 5);
  // 3 sends to a and b, the 4th to a only, d's to d.
  CHECK(extra.at("deliveries") == 3 * 2 + 1 + 1);
  CHECK(report.at("count") == extra.at("deliveries"));
  // a: subscribe, 3 sends, typing, ack, ping, send; b: subscribe, unsubscribe, 2 pings;
  // c: 2 subscribes; d: subscribe, send.
  CHECK(extra.at("frames_in") == 8 + 4 + 2 + 2);
  CHECK(extra.at("stopped_by") == "SIGTERM");
  CHECK(r.err.find("ceiling-grpc-relay") != std::string::npos);
}

TEST_CASE("grpc-relay fails clearly when its port is taken", "[ceiling][relay]") {
  ChildProcess first = StartCeiling({"grpc-relay", "--ready-file", "{dir}/ready"});
  const std::string ready = first.WaitForFile(first.dir() + "/ready", kWait);
  const std::string address = ready.substr(0, ready.size() - 1);
  const CliResult second = RunCeiling({"grpc-relay", "--listen", address}, 30s);
  INFO(second.Describe());
  CHECK(second.exit_code == 1);
  CHECK(second.out.empty());
  CHECK(second.err.find("cannot listen on " + address) != std::string::npos);
  first.Signal(SIGINT);
  const CliResult r = first.Finish(kWait);
  INFO(r.Describe());
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("\"stopped_by\":\"SIGINT\"") != std::string::npos);
}

}  // namespace
}  // namespace infrachat
