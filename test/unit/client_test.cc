// Unit tests of the client library's pure parts: slash-command parsing, backoff, display
// dedupe, pending-send bookkeeping and resume points. No server, no threads, no sleeps.
#include <catch2/catch.hpp>
#include <set>

#include "infrachat/client/cli_support.h"
#include "infrachat/client/session_core.h"
#include "infrachat/client/slash_command.h"
#include "infrachat/core/validation.h"

using namespace infrachat;
using namespace infrachat::client;
using namespace std::chrono_literals;
using K = SlashCommand::Kind;
using EK = SessionEvent::Kind;

namespace {

// ---- helpers to build server frames -----------------------------------------------------------

v1::ServerFrame Msg(const std::string& channel, std::uint64_t seq, const std::string& body,
                    const std::string& client_msg_id = {}) {
  v1::ServerFrame f;
  auto* m = f.mutable_message();
  m->set_channel(channel);
  m->set_seq(seq);
  m->set_sender("bob");
  m->set_body(body);
  m->set_client_msg_id(client_msg_id);
  return f;
}

v1::ServerFrame AckFrame(const std::string& channel, const std::string& id, std::uint64_t seq,
                         bool duplicate = false) {
  v1::ServerFrame f;
  auto* a = f.mutable_send_ack();
  a->set_channel(channel);
  a->set_client_msg_id(id);
  a->set_seq(seq);
  a->set_duplicate(duplicate);
  return f;
}

v1::ServerFrame ErrorFrame(Code code, const std::string& channel, const std::string& id = {}) {
  v1::ServerFrame f;
  auto* e = f.mutable_error();
  e->set_code(static_cast<int>(code));
  e->set_message("boom");
  e->set_channel(channel);
  e->set_client_msg_id(id);
  return f;
}

v1::ServerFrame SubscribedFrame(const std::string& channel, std::uint64_t head) {
  v1::ServerFrame f;
  f.mutable_subscribed()->set_channel(channel);
  f.mutable_subscribed()->set_head_seq(head);
  return f;
}

v1::ServerFrame UnsubscribedFrame(const std::string& channel, std::uint64_t resume) {
  v1::ServerFrame f;
  f.mutable_unsubscribed()->set_channel(channel);
  f.mutable_unsubscribed()->set_resume_after_seq(resume);
  f.mutable_unsubscribed()->set_reason("slow consumer");
  return f;
}

std::vector<EK> Kinds(const SessionCore::Output& out) {
  std::vector<EK> kinds;
  for (const auto& e : out.events) kinds.push_back(e.kind);
  return kinds;
}

// Deterministic core: no jitter, 200 ms doubling to 10 s.
SessionCore MakeCore() {
  return SessionCore(BackoffParams{}, [] { return 0.0; });
}

const SteadyClock::time_point kT0 = SteadyClock::time_point{} + 1h;

// What a server that shapes sends announces (infrachat-max-inflight-sends 256).
StreamLimits Announced(std::uint32_t max_body = 8192) {
  StreamLimits limits;
  limits.announced = true;
  limits.send_rate_per_s = 50;
  limits.send_burst = 100;
  limits.max_inflight_sends = 256;
  limits.max_body_bytes = max_body;
  return limits;
}

std::vector<std::string> SentIds(const SessionCore::Output& out) {
  std::vector<std::string> ids;
  for (const auto& f : out.frames) {
    if (f.has_send()) ids.push_back(f.send().client_msg_id());
  }
  return ids;
}

}  // namespace

// ================================================================================================
// Slash commands
// ================================================================================================

TEST_CASE("plain text and blank lines", "[client][slash]") {
  auto say = ParseSlashCommand("hello world");
  CHECK(say.kind == K::kSay);
  CHECK(say.text == "hello world");

  CHECK(ParseSlashCommand("  indented ").text == "  indented ");
  CHECK(ParseSlashCommand("trailing newline\n").text == "trailing newline");
  CHECK(ParseSlashCommand("").kind == K::kEmpty);
  CHECK(ParseSlashCommand("   \t ").kind == K::kEmpty);

  auto escaped = ParseSlashCommand("//join is a command");
  CHECK(escaped.kind == K::kSay);
  CHECK(escaped.text == "/join is a command");
}

TEST_CASE("join, switch and part take channel names", "[client][slash]") {
  auto join = ParseSlashCommand("/join #general");
  CHECK(join.kind == K::kJoin);
  CHECK(join.channel == "general");
  CHECK(ParseSlashCommand("/JOIN random").channel == "random");
  CHECK(ParseSlashCommand("/j dev").kind == K::kJoin);

  CHECK(ParseSlashCommand("/join").kind == K::kInvalid);
  auto bad = ParseSlashCommand("/join #Bad!Name");
  CHECK(bad.kind == K::kInvalid);
  CHECK_FALSE(bad.text.empty());
  CHECK(ParseSlashCommand("/join a b").kind == K::kInvalid);

  auto sw = ParseSlashCommand("/switch #dev");
  CHECK(sw.kind == K::kSwitch);
  CHECK(sw.channel == "dev");
  CHECK(ParseSlashCommand("/switch").kind == K::kInvalid);

  auto part = ParseSlashCommand("/part");
  CHECK(part.kind == K::kPart);
  CHECK(part.channel.empty());
  auto part2 = ParseSlashCommand("/part #dev");
  CHECK(part2.kind == K::kPart);
  CHECK(part2.channel == "dev");
}

TEST_CASE("create parses visibility and topic", "[client][slash]") {
  auto priv = ParseSlashCommand("/create #ops private on-call  talk");
  CHECK(priv.kind == K::kCreate);
  CHECK(priv.channel == "ops");
  CHECK(priv.is_private);
  CHECK(priv.text == "on-call  talk");

  auto pub = ParseSlashCommand("/create lobby");
  CHECK(pub.kind == K::kCreate);
  CHECK_FALSE(pub.is_private);
  CHECK(pub.text.empty());

  auto topic_only = ParseSlashCommand("/create lobby welcome all");
  CHECK_FALSE(topic_only.is_private);
  CHECK(topic_only.text == "welcome all");

  auto explicit_public = ParseSlashCommand("/create lobby PUBLIC hi");
  CHECK_FALSE(explicit_public.is_private);
  CHECK(explicit_public.text == "hi");

  CHECK(ParseSlashCommand("/create").kind == K::kInvalid);
}

TEST_CASE("invite, history and argument-less commands", "[client][slash]") {
  auto invite = ParseSlashCommand("/invite carol");
  CHECK(invite.kind == K::kInvite);
  CHECK(invite.username == "carol");
  CHECK(ParseSlashCommand("/invite").kind == K::kInvalid);
  CHECK(ParseSlashCommand("/invite Not Valid").kind == K::kInvalid);

  auto history = ParseSlashCommand("/history");
  CHECK(history.kind == K::kHistory);
  CHECK(history.count == kDefaultHistoryCount);
  CHECK(ParseSlashCommand("/history 50").count == 50);
  CHECK(ParseSlashCommand("/history 0").kind == K::kInvalid);
  CHECK(ParseSlashCommand("/history 1001").kind == K::kInvalid);
  CHECK(ParseSlashCommand("/history 5x").kind == K::kInvalid);
  CHECK(ParseSlashCommand("/history -3").kind == K::kInvalid);

  CHECK(ParseSlashCommand("/who").kind == K::kWho);
  CHECK(ParseSlashCommand("/who extra").kind == K::kInvalid);
  CHECK(ParseSlashCommand("/channels").kind == K::kChannels);
  CHECK(ParseSlashCommand("/list").kind == K::kChannels);
  CHECK(ParseSlashCommand("/quit").kind == K::kQuit);
  CHECK(ParseSlashCommand("/Quit bye all").kind == K::kQuit);
  CHECK(ParseSlashCommand("/help").kind == K::kHelp);

  auto unknown = ParseSlashCommand("/frobnicate");
  CHECK(unknown.kind == K::kInvalid);
  CHECK(unknown.text.find("frobnicate") != std::string::npos);
  CHECK(ParseSlashCommand("/").kind == K::kInvalid);
}

// ================================================================================================
// Backoff
// ================================================================================================

TEST_CASE("backoff doubles from 200 ms and is capped at 10 s", "[client][backoff]") {
  Backoff backoff(BackoffParams{}, 42);
  std::vector<long> delays;
  for (int i = 0; i < 10; ++i) delays.push_back(static_cast<long>(backoff.Next(0.0).count()));
  CHECK(delays == std::vector<long>{200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000, 10000});

  backoff.Reset();
  CHECK(backoff.Next(0.0) == 200ms);
  CHECK(backoff.attempt() == 1);
}

TEST_CASE("backoff jitter stays within [ceiling/2, ceiling]", "[client][backoff]") {
  const BackoffParams params;
  CHECK(Backoff::Delay(params, 3, 0.0) == 1600ms);
  CHECK(Backoff::Delay(params, 3, 0.5) == 1200ms);
  CHECK(Backoff::Delay(params, 3, 0.999) >= 800ms);

  Backoff backoff(params, 7);
  std::set<long> distinct;
  for (int attempt = 0; attempt < 50; ++attempt) {
    const auto ceiling = Backoff::Ceiling(params, attempt);
    const auto delay = backoff.Next();
    CHECK(delay <= ceiling);
    CHECK(delay <= 10000ms);
    CHECK(delay * 2 >= ceiling);
    distinct.insert(static_cast<long>(delay.count()));
  }
  CHECK(distinct.size() > 5);                        // jitter actually varies
  CHECK(Backoff::Ceiling(params, 1000) == 10000ms);  // no overflow
}

// ================================================================================================
// Dedupe and cursors
// ================================================================================================

TEST_CASE("cursor shows each seq once", "[client][dedupe]") {
  ChannelCursor cursor;
  CHECK_FALSE(cursor.last_seen().has_value());
  CHECK(cursor.Observe(1));
  CHECK(cursor.Observe(2));
  CHECK_FALSE(cursor.Observe(2));
  CHECK_FALSE(cursor.Observe(1));
  CHECK(cursor.Observe(3));
  CHECK(cursor.last_seen() == 3u);
}

TEST_CASE("cursor: an own message shown by its ack does not hide earlier ones",
          "[client][dedupe]") {
  ChannelCursor cursor(std::uint64_t{10});
  cursor.MarkShown(12);              // own message acked before 11 arrived
  CHECK(cursor.last_seen() == 10u);  // the resume point does not jump
  CHECK(cursor.Observe(11));         // someone else's message still displays
  CHECK_FALSE(cursor.Observe(12));   // own echo is dropped
  CHECK(cursor.last_seen() == 12u);
  CHECK(cursor.shown_ahead().empty());
  CHECK(cursor.Observe(13));
}

TEST_CASE("cursor baseline only when unset", "[client][dedupe]") {
  ChannelCursor cursor;
  cursor.SetBaselineIfUnset(5);
  CHECK(cursor.last_seen() == 5u);
  CHECK_FALSE(cursor.Observe(5));
  cursor.SetBaselineIfUnset(1);
  CHECK(cursor.last_seen() == 5u);
  cursor.Reset(std::uint64_t{2});
  CHECK(cursor.Observe(3));
}

// ================================================================================================
// SessionCore: resume
// ================================================================================================

TEST_CASE("subscribe is deferred until connected and resumes from the last seen seq",
          "[client][resume]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.Subscribe("general", std::nullopt, out);
  CHECK(out.frames.empty());  // not connected yet

  core.OnConnected(kT0, out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0].subscribe().channel() == "general");
  CHECK_FALSE(out.frames[0].subscribe().has_after_seq());  // live only: nothing seen yet

  out = {};
  core.OnFrame(SubscribedFrame("general", 0), kT0, out);
  core.OnFrame(Msg("general", 1, "a"), kT0, out);
  core.OnFrame(Msg("general", 2, "b"), kT0, out);
  core.OnFrame(Msg("general", 3, "c"), kT0, out);
  CHECK(Kinds(out) == std::vector<EK>{EK::kSubscribed, EK::kMessage, EK::kMessage, EK::kMessage});
  CHECK(core.ResumeAfterSeq("general") == 3u);

  core.OnDisconnected();
  out = {};
  core.OnConnected(kT0, out);
  REQUIRE(out.frames.size() == 1);
  REQUIRE(out.frames[0].subscribe().has_after_seq());
  CHECK(out.frames[0].subscribe().after_seq() == 3);

  // The log replays from after_seq; an overlapping replay is not displayed twice.
  out = {};
  core.OnFrame(Msg("general", 3, "c"), kT0, out);
  core.OnFrame(Msg("general", 4, "d"), kT0, out);
  REQUIRE(Kinds(out) == std::vector<EK>{EK::kMessage});
  CHECK(out.events[0].message.seq() == 4);
}

TEST_CASE("live-only subscription resumes from the head it was given", "[client][resume]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.OnConnected(kT0, out);
  core.Subscribe("general", std::nullopt, out);
  core.OnFrame(SubscribedFrame("general", 41), kT0, out);
  CHECK(core.ResumeAfterSeq("general") == 41u);
  core.OnDisconnected();
  out = {};
  core.OnConnected(kT0, out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0].subscribe().after_seq() == 41);
}

TEST_CASE("explicit after_seq sets the cursor, several channels resume independently",
          "[client][resume]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.OnConnected(kT0, out);
  core.Subscribe("a", std::uint64_t{7}, out);
  core.Subscribe("b", std::uint64_t{0}, out);
  REQUIRE(out.frames.size() == 2);
  CHECK(out.frames[0].subscribe().after_seq() == 7);
  CHECK(out.frames[1].subscribe().has_after_seq());
  CHECK(out.frames[1].subscribe().after_seq() == 0);

  core.OnFrame(Msg("a", 8, "x"), kT0, out);
  core.OnFrame(Msg("b", 1, "y"), kT0, out);
  core.OnFrame(Msg("b", 2, "z"), kT0, out);
  core.OnDisconnected();
  out = {};
  core.OnConnected(kT0, out);
  REQUIRE(out.frames.size() == 2);
  CHECK(out.frames[0].subscribe().channel() == "a");
  CHECK(out.frames[0].subscribe().after_seq() == 8);
  CHECK(out.frames[1].subscribe().channel() == "b");
  CHECK(out.frames[1].subscribe().after_seq() == 2);
  CHECK(core.Channels() == std::vector<std::string>{"a", "b"});
}

TEST_CASE("Unsubscribed (slow consumer) resubscribes from the last seen seq", "[client][resume]") {
  CHECK(ResumeAfterUnsubscribed(std::uint64_t{17}, 17) == 17);
  CHECK(ResumeAfterUnsubscribed(std::nullopt, 9) == 9);
  CHECK(ResumeAfterUnsubscribed(std::uint64_t{20}, 12) == 20);  // seen up to 20 locally

  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.OnConnected(kT0, out);
  core.Subscribe("general", std::uint64_t{0}, out);
  core.OnFrame(Msg("general", 1, "a"), kT0, out);
  core.OnFrame(Msg("general", 2, "b"), kT0, out);
  out = {};
  core.OnFrame(UnsubscribedFrame("general", 2), kT0, out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0].subscribe().channel() == "general");
  CHECK(out.frames[0].subscribe().after_seq() == 2);
  REQUIRE(Kinds(out) == std::vector<EK>{EK::kResubscribing});
  CHECK(out.events[0].reason == "slow consumer");

  // A second Unsubscribed without any progress is answered after a delay, not at once.
  out = {};
  core.OnFrame(UnsubscribedFrame("general", 2), kT0, out);
  CHECK(out.frames.empty());
  REQUIRE(core.NextTimer().has_value());
  CHECK(*core.NextTimer() == kT0 + 200ms);
  core.OnTimer(kT0 + 200ms, out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0].subscribe().after_seq() == 2);

  // Unsubscribed for a channel we left ourselves is ignored.
  out = {};
  core.Unsubscribe("general", out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0].has_unsubscribe());
  out = {};
  core.OnFrame(UnsubscribedFrame("general", 2), kT0, out);
  core.OnFrame(Msg("general", 3, "late"), kT0, out);
  CHECK(out.frames.empty());
  CHECK(out.events.empty());
}

TEST_CASE("a refused subscribe is dropped, a transient one is retried", "[client][resume]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.OnConnected(kT0, out);
  core.Subscribe("secret", std::nullopt, out);
  core.Subscribe("busy", std::nullopt, out);
  out = {};
  core.OnFrame(ErrorFrame(Code::kPermissionDenied, "secret"), kT0, out);
  REQUIRE(Kinds(out) == std::vector<EK>{EK::kSubscribeFailed});
  CHECK(out.events[0].status.code == Code::kPermissionDenied);
  CHECK_FALSE(core.IsSubscribed("secret"));

  out = {};
  core.OnFrame(ErrorFrame(Code::kUnavailable, "busy"), kT0, out);
  CHECK(core.IsSubscribed("busy"));
  CHECK(out.frames.empty());
  core.OnTimer(kT0 + 199ms, out);
  CHECK(out.frames.empty());
  core.OnTimer(kT0 + 200ms, out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0].subscribe().channel() == "busy");

  core.OnDisconnected();
  out = {};
  core.OnConnected(kT0, out);
  REQUIRE(out.frames.size() == 1);  // only "busy"
  CHECK(out.frames[0].subscribe().channel() == "busy");
}

TEST_CASE("subscription edge cases", "[client][resume]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.OnConnected(kT0, out);
  core.Subscribe("general", std::uint64_t{0}, out);
  core.OnFrame(Msg("general", 1, "a"), kT0, out);
  core.OnFrame(Msg("general", 2, "b"), kT0, out);

  // An explicit after_seq on an existing subscription moves its cursor back: replay shows again.
  out = {};
  core.Subscribe("general", std::uint64_t{1}, out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0].subscribe().after_seq() == 1);
  core.OnFrame(Msg("general", 2, "b"), kT0, out);
  CHECK(Kinds(out) == std::vector<EK>{EK::kMessage});

  // Without after_seq the cursor is kept.
  out = {};
  core.Subscribe("general", std::nullopt, out);
  CHECK(out.frames.at(0).subscribe().after_seq() == 2);

  // Messages of channels not subscribed are not displayed.
  out = {};
  core.OnFrame(Msg("elsewhere", 1, "stray"), kT0, out);
  CHECK(out.events.empty());

  // UNAUTHENTICATED on a subscribe keeps the channel: it is redone after the token refresh.
  out = {};
  core.OnFrame(ErrorFrame(Code::kUnauthenticated, "general"), kT0, out);
  CHECK(Kinds(out) == std::vector<EK>{EK::kError});
  CHECK(core.IsSubscribed("general"));

  // No timers while disconnected.
  core.Send("p", "general", "x", kT0, out);
  core.OnFrame(ErrorFrame(Code::kUnavailable, "general", "p"), kT0, out);
  CHECK(core.NextTimer().has_value());
  core.OnDisconnected();
  CHECK_FALSE(core.NextTimer().has_value());
  out = {};
  core.OnTimer(kT0 + 1h, out);
  CHECK(out.frames.empty());
}

// ================================================================================================
// SessionCore: own messages and pending sends
// ================================================================================================

TEST_CASE("own message: ack then echo displays once", "[client][pending]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.OnConnected(kT0, out);
  core.Subscribe("general", std::uint64_t{0}, out);
  out = {};
  core.Send("id-1", "general", "hi", kT0, out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0].send().client_msg_id() == "id-1");
  CHECK(out.frames[0].send().body() == "hi");
  REQUIRE(core.FindPending("id-1") != nullptr);
  CHECK(core.FindPending("id-1")->in_flight);

  out = {};
  core.OnFrame(AckFrame("general", "id-1", 2), kT0, out);
  REQUIRE(Kinds(out) == std::vector<EK>{EK::kSendAcked});
  CHECK(out.events[0].seq == 2);
  CHECK(out.events[0].send.body == "hi");
  CHECK(core.pending().empty());

  out = {};
  core.OnFrame(Msg("general", 1, "someone else first"), kT0, out);  // earlier seq still shows
  core.OnFrame(Msg("general", 2, "hi", "id-1"), kT0, out);          // own echo does not
  REQUIRE(Kinds(out) == std::vector<EK>{EK::kMessage});
  CHECK(out.events[0].message.seq() == 1);
}

TEST_CASE("own message: echo before ack counts as the ack", "[client][pending]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.OnConnected(kT0, out);
  core.Subscribe("general", std::uint64_t{0}, out);
  core.Send("id-1", "general", "hi", kT0, out);
  out = {};
  core.OnFrame(Msg("general", 1, "hi", "id-1"), kT0, out);
  REQUIRE(Kinds(out) == std::vector<EK>{EK::kSendAcked});
  CHECK(out.events[0].seq == 1);
  CHECK(out.events[0].send.client_msg_id == "id-1");
  CHECK(core.pending().empty());
  out = {};
  core.OnFrame(AckFrame("general", "id-1", 1), kT0, out);
  CHECK(out.events.empty());
}

TEST_CASE("pending sends are retried with the same client_msg_id after a reconnect",
          "[client][pending]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.SetLimits(Announced(), kT0, out);  // a window of 256: both are written at once
  core.Send("early", "general", "queued while offline", kT0, out);
  CHECK(out.frames.empty());
  core.OnConnected(kT0, out);
  core.Send("second", "general", "two", kT0, out);
  REQUIRE(out.frames.size() == 2);
  CHECK(out.frames[0].send().client_msg_id() == "early");
  CHECK(out.frames[1].send().client_msg_id() == "second");

  core.OnDisconnected();  // no ack for either
  CHECK_FALSE(core.FindPending("early")->in_flight);
  out = {};
  core.OnConnected(kT0 + 1s, out);
  REQUIRE(out.frames.size() == 2);
  CHECK(out.frames[0].send().client_msg_id() == "early");  // same ids, same order
  CHECK(out.frames[0].send().body() == "queued while offline");
  CHECK(out.frames[1].send().client_msg_id() == "second");
  CHECK(core.FindPending("early")->attempts == 2);

  out = {};
  core.OnFrame(AckFrame("general", "early", 5, /*duplicate=*/true), kT0, out);
  REQUIRE(Kinds(out) == std::vector<EK>{EK::kSendAcked});
  CHECK(out.events[0].ack.duplicate());
  CHECK(core.pending().size() == 1);
}

TEST_CASE("retryable send errors are retried with backoff, final ones dropped",
          "[client][pending]") {
  CHECK(IsRetryableSendError(Code::kUnavailable));
  CHECK(IsRetryableSendError(Code::kResourceExhausted));
  CHECK_FALSE(IsRetryableSendError(Code::kInvalidArgument));
  CHECK_FALSE(IsRetryableSendError(Code::kPermissionDenied));
  CHECK_FALSE(IsRetryableSendError(Code::kNotFound));

  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.OnConnected(kT0, out);
  core.Send("r", "general", "retry me", kT0, out);
  core.Send("f", "general", "doomed", kT0, out);
  out = {};

  core.OnFrame(ErrorFrame(Code::kResourceExhausted, "general", "r"), kT0, out);
  REQUIRE(Kinds(out) == std::vector<EK>{EK::kSendRetrying});
  CHECK(out.events[0].retry_in == 200ms);
  CHECK_FALSE(core.FindPending("r")->in_flight);
  CHECK(core.NextTimer() == kT0 + 200ms);

  out = {};
  core.OnTimer(kT0 + 100ms, out);
  CHECK(out.frames.empty());
  core.OnTimer(kT0 + 200ms, out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0].send().client_msg_id() == "r");

  // The second failure waits longer.
  out = {};
  core.OnFrame(ErrorFrame(Code::kUnavailable, "general", "r"), kT0 + 200ms, out);
  CHECK(out.events.at(0).retry_in == 400ms);

  out = {};
  core.OnFrame(ErrorFrame(Code::kPermissionDenied, "general", "f"), kT0, out);
  REQUIRE(Kinds(out) == std::vector<EK>{EK::kSendFailed});
  CHECK(out.events[0].send.client_msg_id == "f");
  CHECK(out.events[0].status.code == Code::kPermissionDenied);
  CHECK(core.FindPending("f") == nullptr);

  for (Code final_code : {Code::kInvalidArgument, Code::kNotFound}) {
    core.Send("x", "general", "bad", kT0, out);
    out = {};
    core.OnFrame(ErrorFrame(final_code, "general", "x"), kT0, out);
    REQUIRE(Kinds(out) == std::vector<EK>{EK::kSendFailed});
    CHECK(core.FindPending("x") == nullptr);
  }

  // After a reconnect only the retryable one is sent again.
  core.OnDisconnected();
  out = {};
  core.OnConnected(kT0 + 1s, out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0].send().client_msg_id() == "r");
}

// Issue 7: a rate-limited paste was stored as 101 102 103 116 121 ... 104 120: a refused send
// was overtaken by later ones of the same channel.
TEST_CASE("without announced limits one send is in flight at a time, in order",
          "[client][pending][order]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.OnConnected(kT0, out);
  core.Send("a", "general", "1", kT0, out);
  core.Send("b", "general", "2", kT0, out);
  core.Send("c", "general", "3", kT0, out);
  CHECK(SentIds(out) == std::vector<std::string>{"a"});
  CHECK(core.SendWindow() == 1);
  CHECK_FALSE(core.NextTimer().has_value());  // nothing to do before an answer

  // An older server refuses a: nothing else is written until a is stored.
  out = {};
  core.OnFrame(ErrorFrame(Code::kResourceExhausted, "general", "a"), kT0, out);
  CHECK(SentIds(out).empty());
  CHECK(core.NextTimer() == kT0 + 200ms);
  core.OnTimer(kT0 + 200ms, out);
  CHECK(SentIds(out) == std::vector<std::string>{"a"});
  out = {};
  core.OnFrame(AckFrame("general", "a", 1), kT0 + 200ms, out);
  CHECK(SentIds(out) == std::vector<std::string>{"b"});
  out = {};
  core.OnFrame(AckFrame("general", "b", 2), kT0 + 200ms, out);
  CHECK(SentIds(out) == std::vector<std::string>{"c"});

  // Announced limits open the window; the stream's next sends go out together.
  core.Send("d", "general", "4", kT0, out);
  core.Send("e", "general", "5", kT0, out);
  out = {};
  core.SetLimits(Announced(), kT0 + 200ms, out);
  CHECK(SentIds(out) == std::vector<std::string>{"d", "e"});
}

TEST_CASE("a refused send holds back the later sends of its channel, which follow it in order",
          "[client][pending][order]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.SetLimits(Announced(), kT0, out);
  core.OnConnected(kT0, out);
  core.Subscribe("general", std::uint64_t{0}, out);
  out = {};
  for (std::string id : {"a", "b", "c", "d"}) core.Send(id, "general", id, kT0, out);
  CHECK(SentIds(out) == std::vector<std::string>{"a", "b", "c", "d"});

  // a is refused twice (its retry waits 400 ms), b once (200 ms): b must not overtake a.
  out = {};
  core.OnFrame(ErrorFrame(Code::kResourceExhausted, "general", "a"), kT0, out);
  core.OnTimer(kT0 + 200ms, out);
  CHECK(SentIds(out) == std::vector<std::string>{"a"});
  out = {};
  core.OnFrame(ErrorFrame(Code::kResourceExhausted, "general", "a"), kT0 + 200ms, out);
  core.OnFrame(ErrorFrame(Code::kResourceExhausted, "general", "b"), kT0 + 200ms, out);
  core.OnFrame(ErrorFrame(Code::kUnavailable, "general", "c"), kT0 + 200ms, out);
  CHECK(SentIds(out).empty());
  // Another channel is not held back.
  core.Send("x", "other", "x", kT0 + 200ms, out);
  CHECK(SentIds(out) == std::vector<std::string>{"x"});
  out = {};
  REQUIRE(core.NextTimer().has_value());
  CHECK(*core.NextTimer() == kT0 + 600ms);  // a's retry: b's earlier time does not count
  core.OnTimer(kT0 + 400ms, out);
  CHECK(SentIds(out).empty());
  core.OnTimer(kT0 + 600ms, out);
  CHECK(SentIds(out) == std::vector<std::string>{"a", "b", "c"});  // d is still in flight

  // After a reconnect everything pending is written again in the original order.
  core.OnDisconnected();
  out = {};
  core.OnConnected(kT0 + 1s, out);
  CHECK(SentIds(out) == std::vector<std::string>{"a", "b", "c", "d", "x"});
}

TEST_CASE("oversized sends fail at once instead of being retried", "[client][pending][limits]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.OnConnected(kT0, out);
  // An older server (no limits announced): the send goes out, the stream ends because the frame
  // is over gRPC's receive limit. That send is final; the next stream does not rewrite it.
  core.Send("big", "general", std::string(70000, 'w'), kT0, out);
  REQUIRE(SentIds(out) == std::vector<std::string>{"big"});
  out = {};
  core.OnDisconnected(
      Status{Code::kResourceExhausted, "Received message larger than max (70021 vs. 65536)"}, out);
  REQUIRE(Kinds(out) == std::vector<EK>{EK::kSendFailed});
  CHECK(out.events[0].send.client_msg_id == "big");
  CHECK(out.events[0].status.code == Code::kInvalidArgument);
  CHECK(core.pending().empty());
  out = {};
  core.OnConnected(kT0 + 1s, out);
  CHECK(SentIds(out).empty());

  // Any other stream end keeps the send.
  core.Send("ok", "general", "fine", kT0, out);
  core.OnDisconnected(Status{Code::kResourceExhausted, "too many streams"}, out);
  CHECK(core.pending().size() == 1);

  // Announced limits: a body over max_body_bytes is refused without being written.
  out = {};
  core.OnConnected(kT0 + 2s, out);
  core.SetLimits(Announced(/*max_body=*/10), kT0 + 2s, out);
  core.Send("long", "general", std::string(11, 'x'), kT0 + 2s, out);
  CHECK(SentIds(out) == std::vector<std::string>{"ok"});
  REQUIRE(Kinds(out) == std::vector<EK>{EK::kSendFailed});
  CHECK(out.events[0].status.code == Code::kInvalidArgument);
  CHECK_THAT(out.events[0].status.message, Catch::Contains("at most 10"));
  core.Send("short", "general", std::string(10, 'x'), kT0 + 2s, out);
  CHECK(SentIds(out) == std::vector<std::string>{"ok", "short"});
}

TEST_CASE("stream limits are parsed from the initial metadata", "[client][limits]") {
  const StreamLimits none = ParseStreamLimits({});
  CHECK_FALSE(none.announced);
  CHECK(none.max_body_bytes == 8192);
  CHECK(none.max_inflight_sends == 0);
  CHECK(none.send_rate_per_s == 0);

  const StreamLimits all = ParseStreamLimits({{"infrachat-send-rate-per-s", "0.5"},
                                              {"infrachat-send-burst", "20"},
                                              {"infrachat-max-inflight-sends", "256"},
                                              {"infrachat-max-body-bytes", "16384"},
                                              {"infrachat-max-frame-bytes", "65536"},
                                              {"other", "x"}});
  CHECK(all.announced);
  CHECK(all.send_rate_per_s == 0.5);
  CHECK(all.send_burst == 20);
  CHECK(all.max_inflight_sends == 256);
  CHECK(all.max_body_bytes == 16384);
  CHECK(all.max_frame_bytes == 65536);

  // Malformed values keep the defaults.
  const StreamLimits bad = ParseStreamLimits({{"infrachat-send-rate-per-s", "-1"},
                                              {"infrachat-max-body-bytes", "12abc"},
                                              {"infrachat-max-inflight-sends", "0"},
                                              {"infrachat-send-burst", "99999999999"}});
  CHECK_FALSE(bad.announced);
  CHECK(bad.max_body_bytes == 8192);
  CHECK(bad.max_inflight_sends == 0);
}

TEST_CASE("acks and typing are dropped while disconnected", "[client][pending]") {
  SessionCore core = MakeCore();
  SessionCore::Output out;
  core.Ack("general", 3, v1::READ, out);
  core.Typing("general", out);
  CHECK(out.frames.empty());
  core.OnConnected(kT0, out);
  core.Ack("general", 3, v1::READ, out);
  REQUIRE(out.frames.size() == 1);
  CHECK(out.frames[0].ack().kind() == v1::READ);
}

// ================================================================================================
// CLI helpers
// ================================================================================================

TEST_CASE("exit codes follow the documented table", "[client][cli]") {
  CHECK(ExitCodeFor(Code::kOk) == 0);
  CHECK(ExitCodeFor(Code::kUnauthenticated) == 3);
  CHECK(ExitCodeFor(Code::kPermissionDenied) == 4);
  CHECK(ExitCodeFor(Code::kNotFound) == 4);
  CHECK(ExitCodeFor(Code::kUnavailable) == 5);
  CHECK(ExitCodeFor(Code::kDeadlineExceeded) == 6);
  CHECK(ExitCodeFor(Code::kInvalidArgument) == 2);
  CHECK(ExitCodeFor(Code::kAlreadyExists) == 1);
  CHECK(ErrorLine(Code::kNotFound, "no such\nchannel") == "infrachat: NOT_FOUND: no such channel");
}

TEST_CASE("JSON output never throws and terminal output is sanitized", "[client][cli]") {
  v1::ChatMessage m;
  m.set_channel("general");
  m.set_seq(7);
  m.set_sender("alice");
  m.set_body("bad \xff utf8");
  m.set_sent_at_unix_ms(1700000000000);
  m.set_client_msg_id("abc");
  const std::string line = DumpJsonLine(MessageJson(m));
  const auto parsed = nlohmann::json::parse(line);
  CHECK(parsed["seq"] == 7);
  CHECK(parsed["channel"] == "general");
  CHECK(parsed["sender"] == "alice");
  CHECK(parsed["client_msg_id"] == "abc");
  CHECK(parsed["sent_at_unix_ms"] == 1700000000000);
  CHECK(parsed["body"] == "bad \xEF\xBF\xBD utf8");

  CHECK(SanitizeForTerminal("hi\x1b[2Jthere") == "hi\xEF\xBF\xBD[2Jthere");
  CHECK(SanitizeForTerminal("a\tb") == "a b");
  CHECK(SanitizeForTerminal("caf\xC3\xA9") == "caf\xC3\xA9");
  CHECK(SanitizeForTerminal("\xC2\x9B"
                            "31m") ==
        "\xEF\xBF\xBD"
        "31m");  // C1 CSI
  CHECK(DisplayWidth("caf\xC3\xA9") == 4);
}

// Issue 7: bidi overrides and zero-width characters passed the sanitizer ("Trojan Source").
TEST_CASE("terminal output neutralizes bidi controls and zero-width characters", "[client][cli]") {
  const std::string fffd = "\xEF\xBF\xBD";
  // RLO makes "txt.exe" after it display reversed; it must not reach the terminal.
  CHECK(SanitizeForTerminal("evil\u202Eexe.txt") == "evil" + fffd + "exe.txt");
  for (const char* c :
       {"\u202A", "\u202B", "\u202C", "\u202D", "\u202E", "\u2066", "\u2067", "\u2068", "\u2069",
        "\u200E", "\u200F", "\u061C", "\u200B", "\u200C", "\u200D", "\u2060", "\uFEFF"}) {
    INFO("character " << c);
    CHECK(SanitizeForTerminal(std::string("a") + c + "b") == "a" + fffd + "b");
  }
  // Neighbours that are ordinary text stay.
  CHECK(SanitizeForTerminal("\u2010\u2070\u05D0\u0627") == "\u2010\u2070\u05D0\u0627");
}

TEST_CASE("client_msg_ids are 16 hex characters and unique", "[client][cli]") {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = NewClientMsgId();
    REQUIRE(id.size() == 16);
    CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(ValidateClientMsgId(id).ok());
    ids.insert(id);
  }
  CHECK(ids.size() == 1000);
}
