// FanoutService: catch-up from the log then live, without gap or duplicate; slow consumers;
// membership changes; (un)subscription; typing; presence, also over two fanout instances on one
// bus. Against a fake ShardApi (an in-memory log per channel) and a fake SessionSink with a
// bounded queue.
//
// Synchronization: LocalEventBus::Drain() for live events (handled on the bus thread), and
// condition variables with a deadline for what fanout's workers do. At the end of a test the
// service is destroyed (its workers run every task that is due) before the final assertions, so
// a late duplicate from a stray catch-up would be seen.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bus/local/local_event_bus.h"
#include "captured_log.h"
#include "infrachat/core/logging.h"
#include "modules/fanout/fanout_service.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 10s;          // upper bound for anything a test waits for
constexpr std::size_t kReserve = 8;  // control frames a fake stream takes beyond its capacity

const Principal kAlice{1, "alice", "", 0};
const Principal kBob{2, "bob", "", 0};

// An in-memory message log per channel: all fanout needs from the shard is a LogReader.
// Reads can be held (to put a catch-up in a known state) and can be made to fail.
class FakeShard final : public LogReader {
 public:
  v1::ChatMessage Append(const std::string& channel) {
    std::lock_guard lock(mu_);
    auto& log = logs_[channel];
    v1::ChatMessage m;
    m.set_channel(channel);
    m.set_seq(log.size() + 1);
    m.set_sender_id(kAlice.user_id);
    m.set_sender(kAlice.username);
    m.set_body("message " + std::to_string(log.size() + 1));
    m.set_client_msg_id("id-" + std::to_string(log.size() + 1));
    log.push_back(m);
    return m;
  }
  std::uint64_t Head(const std::string& channel) {
    std::lock_guard lock(mu_);
    return logs_[channel].size();
  }

  // While held, ReadLog blocks. `snapshot_first`: the read sees the log as it was when the read
  // started (a transaction that began before later commits), otherwise as it is when released.
  void Hold(bool snapshot_first) {
    std::lock_guard lock(mu_);
    held_ = true;
    snapshot_first_ = snapshot_first;
  }
  void Release() {
    {
      std::lock_guard lock(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }
  // Waits until `n` reads are blocked in ReadLog.
  bool WaitForBlockedReads(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return blocked_ >= n; });
  }
  void FailNextReads(int n) {
    std::lock_guard lock(mu_);
    fail_reads_ = n;
  }
  int reads() {
    std::lock_guard lock(mu_);
    return reads_;
  }
  // Waits until `n` reads have started (a read that was not held has then also finished with
  // the log: it reads under the same lock).
  bool WaitForReads(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return reads_ >= n; });
  }

  // Everyone is a member of every channel until they leave it.
  void Leave(const std::string& channel, std::uint64_t user_id) {
    std::lock_guard lock(mu_);
    left_.insert({channel, user_id});
  }

  Result<std::vector<v1::ChatMessage>> ReadLog(const CallContext&, std::string_view channel,
                                               std::uint64_t reader_id, std::uint64_t after_seq,
                                               std::uint32_t limit) override {
    std::unique_lock lock(mu_);
    ++reads_;
    cv_.notify_all();
    if (fail_reads_ > 0) {
      --fail_reads_;
      return MakeError(Code::kUnavailable, "database unavailable (fake)");
    }
    auto read = [&]() -> Result<std::vector<v1::ChatMessage>> {
      // Membership and messages from the same snapshot, as the shard reads them.
      if (left_.count({std::string(channel), reader_id}) > 0) {
        return MakeError(Code::kPermissionDenied, "not a member (fake)");
      }
      std::vector<v1::ChatMessage> out;
      for (const auto& m : logs_[std::string(channel)]) {
        if (m.seq() > after_seq && out.size() < limit) out.push_back(m);
      }
      return out;
    };
    std::optional<Result<std::vector<v1::ChatMessage>>> snapshot;
    if (held_ && snapshot_first_) snapshot = read();
    ++blocked_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !held_; });
    --blocked_;
    return snapshot ? *snapshot : read();
  }

  // Every other read answers from a thread of its own, as a remote shard answers on a gRPC
  // thread; the others inline on fanout's worker, as the in-process shard does. Both paths run
  // in every test.
  void ReadLogAsync(const CallContext& call, std::string channel, std::uint64_t reader_id,
                    std::uint64_t after_seq, std::uint32_t limit,
                    Done<std::vector<v1::ChatMessage>> done) override {
    {
      std::lock_guard lock(threads_mu_);
      if (++async_reads_ % 2 == 0) {
        threads_.emplace_back(
            [this, call, channel, reader_id, after_seq, limit, done = std::move(done)] {
              done(ReadLog(call, channel, reader_id, after_seq, limit));
            });
        return;
      }
    }
    done(ReadLog(call, channel, reader_id, after_seq, limit));
  }

  ~FakeShard() override {
    std::lock_guard lock(threads_mu_);
    for (auto& t : threads_) t.join();
  }

 private:
  std::mutex threads_mu_;  // guards threads_ and async_reads_ (not mu_: a held read keeps that)
  std::vector<std::thread> threads_;
  int async_reads_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<v1::ChatMessage>> logs_;
  bool held_ = false;
  bool snapshot_first_ = false;
  int blocked_ = 0;
  int fail_reads_ = 0;
  int reads_ = 0;
  std::set<std::pair<std::string, std::uint64_t>> left_;
};

// A stream with a bounded queue of `capacity` data frames plus `reserve` control frames, like
// the gateway's. Records every frame it accepted; `Consume` is the client reading the queue.
class FakeSink final : public SessionSink {
 public:
  explicit FakeSink(std::size_t capacity = 100000, std::size_t reserve = kReserve)
      : capacity_(capacity), reserve_(reserve) {}

  bool Offer(const EncodedFrame& encoded, bool reserved) override {
    v1::ServerFrame frame = encoded.Decode();
    std::lock_guard lock(mu_);
    if (reserved ? reserved_held_ >= reserve_ : data_held_ >= capacity_) {
      ++refused_;
      cv_.notify_all();
      return false;
    }
    ++(reserved ? reserved_held_ : data_held_);
    max_held_ = std::max(max_held_, data_held_ + reserved_held_);
    frames_.push_back(std::move(frame));
    cv_.notify_all();
    return true;
  }
  std::size_t FreeSlots() const override {
    std::lock_guard lock(mu_);
    return capacity_ - data_held_;
  }

  // The client reads everything queued so far.
  void Consume() {
    std::lock_guard lock(mu_);
    data_held_ = 0;
    reserved_held_ = 0;
  }

  std::vector<v1::ServerFrame> Frames() const {
    std::lock_guard lock(mu_);
    return frames_;
  }
  std::size_t max_held() const {
    std::lock_guard lock(mu_);
    return max_held_;
  }
  std::size_t refused() const {
    std::lock_guard lock(mu_);
    return refused_;
  }

  // Waits (bounded) until `n` offers were refused.
  bool WaitForRefusals(std::size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return refused_ >= n; });
  }

  // Waits (bounded) until `pred(frames)` holds; with `consume`, reads the queue meanwhile.
  bool WaitUntil(const std::function<bool(const std::vector<v1::ServerFrame>&)>& pred,
                 bool consume = false) {
    std::unique_lock lock(mu_);
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    for (;;) {
      if (consume) data_held_ = reserved_held_ = 0;
      if (pred(frames_)) return true;
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) return pred(frames_);
    }
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  const std::size_t capacity_;
  const std::size_t reserve_;
  std::size_t data_held_ = 0;
  std::size_t reserved_held_ = 0;
  std::size_t max_held_ = 0;
  std::size_t refused_ = 0;
  std::vector<v1::ServerFrame> frames_;
};

std::vector<std::uint64_t> Seqs(const std::vector<v1::ServerFrame>& frames,
                                const std::string& channel) {
  std::vector<std::uint64_t> out;
  for (const auto& f : frames) {
    if (f.has_message() && f.message().channel() == channel) out.push_back(f.message().seq());
  }
  return out;
}

std::vector<v1::Unsubscribed> Unsubscribes(const std::vector<v1::ServerFrame>& frames,
                                           const std::string& channel) {
  std::vector<v1::Unsubscribed> out;
  for (const auto& f : frames) {
    if (f.has_unsubscribed() && f.unsubscribed().channel() == channel) {
      out.push_back(f.unsubscribed());
    }
  }
  return out;
}

std::vector<std::uint64_t> Range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> out;
  for (std::uint64_t i = from; i <= to; ++i) out.push_back(i);
  return out;
}

// Waits until the sink got message `seq` of `channel`.
bool WaitForSeq(FakeSink& sink, const std::string& channel, std::uint64_t seq,
                bool consume = false) {
  return sink.WaitUntil(
      [&](const auto& frames) {
        auto seqs = Seqs(frames, channel);
        return std::find(seqs.begin(), seqs.end(), seq) != seqs.end();
      },
      consume);
}

struct FanoutFixture {
  LocalEventBus bus;
  FakeShard shard;
  std::unique_ptr<fanout::FanoutService> fanout;

  explicit FanoutFixture(fanout::FanoutOptions options = {},
                         std::shared_ptr<spdlog::logger> logger = ModuleLogger("fanout-test")) {
    fanout = std::make_unique<fanout::FanoutService>(options, &bus, &shard, std::move(logger));
  }
  ~FanoutFixture() { Stop(); }

  // Destroys the service: its workers finish every task that is due. Then nothing more can
  // reach the sinks.
  void Stop() {
    if (!fanout) return;
    shard.Release();
    bus.Drain();
    fanout.reset();
  }

  // A message committed to the log and published on the bus, as the shard does.
  v1::ChatMessage Commit(const std::string& channel) {
    auto m = shard.Append(channel);
    bus.Publish(m);
    return m;
  }
  void CommitMany(const std::string& channel, int n) {
    for (int i = 0; i < n; ++i) Commit(channel);
  }
  // A member leaves: the shard's membership changes, then the event is published.
  void Leave(const std::string& channel, const Principal& who) {
    shard.Leave(channel, who.user_id);
    bus.Publish(MembershipChanged{channel, who.user_id, who.username, false});
  }
  // Committed but the bus lost the event (at-most-once).
  v1::ChatMessage CommitSilently(const std::string& channel) { return shard.Append(channel); }

  void Subscribe(const std::shared_ptr<FakeSink>& sink, const Principal& who,
                 const std::string& channel, std::optional<std::uint64_t> after_seq) {
    fanout->Subscribe(sink, who, channel, shard.Head(channel), after_seq);
  }
};

TEST_CASE("Subscribed comes first, with the head", "[fanout]") {
  FanoutFixture f;
  for (int i = 0; i < 5; ++i) f.CommitSilently("general");
  auto sink = std::make_shared<FakeSink>();
  f.Subscribe(sink, kAlice, "general", 0);
  REQUIRE(WaitForSeq(*sink, "general", 5));
  f.Stop();
  auto frames = sink->Frames();
  REQUIRE(!frames.empty());
  REQUIRE(frames[0].has_subscribed());
  CHECK(frames[0].subscribed().channel() == "general");
  CHECK(frames[0].subscribed().head_seq() == 5);
  CHECK(Seqs(frames, "general") == Range(1, 5));
  CHECK(frames.size() == 6);
}

TEST_CASE("subscribe with after_seq: the log, then live, no gap and no duplicate", "[fanout]") {
  FanoutFixture f;
  for (int i = 0; i < 10; ++i) f.CommitSilently("general");
  auto sink = std::make_shared<FakeSink>();
  f.Subscribe(sink, kAlice, "general", 3);
  REQUIRE(WaitForSeq(*sink, "general", 10));
  f.bus.Drain();
  f.CommitMany("general", 5);
  f.bus.Drain();
  CHECK(Seqs(sink->Frames(), "general") == Range(4, 15));  // 11..15 live, at once
  f.Stop();
  auto frames = sink->Frames();
  CHECK(frames[0].has_subscribed());
  CHECK(Seqs(frames, "general") == Range(4, 15));
  CHECK(Unsubscribes(frames, "general").empty());
}

TEST_CASE("a long catch-up reads the log in batches", "[fanout]") {
  fanout::FanoutOptions options;
  options.catchup_batch = 7;
  FanoutFixture f(options);
  for (int i = 0; i < 100; ++i) f.CommitSilently("general");
  auto sink = std::make_shared<FakeSink>();
  f.Subscribe(sink, kAlice, "general", 0);
  REQUIRE(WaitForSeq(*sink, "general", 100));
  f.Commit("general");
  f.bus.Drain();
  REQUIRE(WaitForSeq(*sink, "general", 101));
  f.Stop();
  CHECK(Seqs(sink->Frames(), "general") == Range(1, 101));
  CHECK(f.shard.reads() >= 100 / 7);
}

TEST_CASE("live messages that arrive during catch-up are delivered once, in order", "[fanout]") {
  // The read of the log is held while live messages are published; they are only noted, then
  // come from the log (or are skipped as already delivered).
  const bool snapshot_first = GENERATE(true, false);
  INFO("the read sees the log as of its start: " << snapshot_first);
  FanoutFixture f;
  for (int i = 0; i < 10; ++i) f.CommitSilently("general");
  f.shard.Hold(snapshot_first);
  auto sink = std::make_shared<FakeSink>();
  f.Subscribe(sink, kAlice, "general", 2);
  REQUIRE(f.shard.WaitForBlockedReads(1));
  f.CommitMany("general", 5);  // 11..15 while the catch-up is in the log
  f.bus.Drain();
  CHECK(Seqs(sink->Frames(), "general").empty());  // nothing overtakes the log
  f.shard.Release();
  REQUIRE(WaitForSeq(*sink, "general", 15));
  f.bus.Drain();
  f.CommitMany("general", 3);  // live again
  f.bus.Drain();
  REQUIRE(WaitForSeq(*sink, "general", 18));
  f.Stop();
  CHECK(Seqs(sink->Frames(), "general") == Range(3, 18));
}

TEST_CASE("out-of-order live events: no gap, no duplicate", "[fanout]") {
  FanoutFixture f;
  for (int i = 0; i < 4; ++i) f.CommitSilently("general");
  auto sink = std::make_shared<FakeSink>();
  f.Subscribe(sink, kAlice, "general", std::nullopt);  // live from head 4
  REQUIRE(f.shard.WaitForReads(1));                    // its switch-over read found nothing

  SECTION("6 published before 5") {
    auto m5 = f.shard.Append("general");
    auto m6 = f.shard.Append("general");
    f.bus.Publish(m6);
    f.bus.Publish(m5);
    f.bus.Drain();
    REQUIRE(WaitForSeq(*sink, "general", 6));
    f.bus.Publish(m6);  // and a stray re-publication
    f.Commit("general");
    f.bus.Drain();
    REQUIRE(WaitForSeq(*sink, "general", 7));
  }
  SECTION("5 lost by the bus, 6 arrives") {
    f.CommitSilently("general");
    f.Commit("general");
    f.bus.Drain();
    REQUIRE(WaitForSeq(*sink, "general", 6));
    f.Commit("general");
    f.bus.Drain();
    REQUIRE(WaitForSeq(*sink, "general", 7));
  }
  SECTION("6 arrives while the gap is being read") {
    auto m5 = f.shard.Append("general");
    auto m6 = f.shard.Append("general");
    auto m7 = f.shard.Append("general");
    f.shard.Hold(/*snapshot_first=*/true);
    f.bus.Publish(m6);
    REQUIRE(f.shard.WaitForBlockedReads(1));
    f.bus.Publish(m7);
    f.bus.Publish(m5);
    f.bus.Drain();
    f.shard.Release();
    REQUIRE(WaitForSeq(*sink, "general", 7));
  }
  f.Stop();
  auto frames = sink->Frames();
  CHECK(frames[0].subscribed().head_seq() == 4);
  CHECK(Seqs(frames, "general") == Range(5, 7));
}

TEST_CASE("subscribe without after_seq delivers only what comes after the head", "[fanout]") {
  FanoutFixture f;
  std::vector<v1::ChatMessage> old;
  for (int i = 0; i < 5; ++i) old.push_back(f.CommitSilently("general"));
  auto sink = std::make_shared<FakeSink>();
  f.Subscribe(sink, kAlice, "general", std::nullopt);
  for (const auto& m : old) f.bus.Publish(m);  // late events of old messages are ignored
  f.Commit("general");
  f.bus.Drain();
  f.Stop();
  auto frames = sink->Frames();
  REQUIRE(frames.size() == 2);
  CHECK(frames[0].subscribed().head_seq() == 5);
  CHECK(Seqs(frames, "general") == std::vector<std::uint64_t>{6});
  CHECK(f.shard.reads() == 1);  // the one read that confirms the switch-over to live
}

// The race of issue 7: the head was read (AuthorizeSubscribe), then a message was committed and
// its event handled before the subscription was registered. Nothing else is sent afterwards, so
// only the switch-over itself can deliver it.
TEST_CASE("a message committed between the head read and the registration is delivered",
          "[fanout][switchover]") {
  const bool resume_at_head = GENERATE(false, true);
  CAPTURE(resume_at_head);
  FanoutFixture f;
  for (int i = 0; i < 3; ++i) f.CommitSilently("general");
  const std::uint64_t head = f.shard.Head("general");  // what AuthorizeSubscribe answered
  const auto racing = f.Commit("general");             // seq 4: committed and published...
  f.bus.Drain();                                       // ...and its event already handled
  auto sink = std::make_shared<FakeSink>();
  f.fanout->Subscribe(sink, kAlice, "general", head,
                      resume_at_head ? std::optional<std::uint64_t>(head) : std::nullopt);
  REQUIRE(WaitForSeq(*sink, "general", racing.seq()));
  f.Commit("general");  // live delivery goes on after it
  REQUIRE(WaitForSeq(*sink, "general", racing.seq() + 1));
  f.Stop();
  auto frames = sink->Frames();
  CHECK(frames[0].subscribed().head_seq() == head);
  CHECK(Seqs(frames, "general") == Range(head + 1, head + 2));
}

// The other order: the message commits while the switch-over's own log read is in progress and
// that read does not see it (its snapshot began first); the event arrives meanwhile.
TEST_CASE("a message committed during the switch-over read is delivered once",
          "[fanout][switchover]") {
  FanoutFixture f;
  for (int i = 0; i < 3; ++i) f.CommitSilently("general");
  f.shard.Hold(/*snapshot_first=*/true);
  auto sink = std::make_shared<FakeSink>();
  f.Subscribe(sink, kAlice, "general", std::nullopt);
  REQUIRE(f.shard.WaitForBlockedReads(1));
  f.Commit("general");  // seq 4: not in the held read, its event is noted
  f.bus.Drain();
  f.shard.Release();
  REQUIRE(WaitForSeq(*sink, "general", 4));
  f.Stop();
  CHECK(Seqs(sink->Frames(), "general") == std::vector<std::uint64_t>{4});
}

TEST_CASE("after_seq beyond the head is treated as the head", "[fanout]") {
  FanoutFixture f;
  for (int i = 0; i < 3; ++i) f.CommitSilently("general");
  auto sink = std::make_shared<FakeSink>();
  f.Subscribe(sink, kAlice, "general", 1000);
  f.Commit("general");
  f.bus.Drain();
  f.Stop();
  CHECK(Seqs(sink->Frames(), "general") == std::vector<std::uint64_t>{4});
}

TEST_CASE("a catch-up survives failed log reads", "[fanout]") {
  FanoutFixture f;
  for (int i = 0; i < 5; ++i) f.CommitSilently("general");
  f.shard.FailNextReads(1);
  auto sink = std::make_shared<FakeSink>();
  f.Subscribe(sink, kAlice, "general", 0);
  REQUIRE(WaitForSeq(*sink, "general", 5));
  f.Stop();
  CHECK(Seqs(sink->Frames(), "general") == Range(1, 5));
  CHECK(f.shard.reads() >= 2);
}

TEST_CASE("failed log reads are logged once per outage, not per subscription and retry",
          "[fanout]") {
  testing::CapturedLog log("fanout");
  FanoutFixture f({}, log.logger());
  for (int i = 0; i < 5; ++i) f.CommitSilently("general");
  f.shard.FailNextReads(4);
  auto first = std::make_shared<FakeSink>();
  auto second = std::make_shared<FakeSink>();
  f.Subscribe(first, kAlice, "general", 0);
  f.Subscribe(second, kBob, "general", 0);
  REQUIRE(WaitForSeq(*first, "general", 5));
  REQUIRE(WaitForSeq(*second, "general", 5));
  f.Stop();
  const auto failing = log.Json("catch-up reads failing");
  const auto recovered = log.Json("catch-up reads recovered");
  REQUIRE(failing.size() == 1);
  REQUIRE(recovered.size() == 1);
  CHECK(failing[0]["level"] == "warn");
  CHECK(failing[0]["error"] == "UNAVAILABLE");
  CHECK(failing[0]["detail"] == "database unavailable (fake)");
  CHECK(recovered[0]["failures"] == 4);  // both subscriptions' failed reads, one line
  CHECK(recovered[0]["outage_ms"].get<std::int64_t>() >= 0);
}

TEST_CASE("a slow live consumer is cut with its resume point, memory stays bounded",
          "[fanout][slow]") {
  FanoutFixture f;
  constexpr std::size_t kCapacity = 5;
  auto slow = std::make_shared<FakeSink>(kCapacity);
  auto fast = std::make_shared<FakeSink>();
  // fast first, and its presence delivered before slow subscribes: slow's queue then holds only
  // messages (no "bob is online" frame).
  f.Subscribe(fast, kBob, "general", std::nullopt);
  f.bus.Drain();
  f.Subscribe(slow, kAlice, "general", std::nullopt);
  f.CommitMany("general", 200);
  f.bus.Drain();

  auto frames = slow->Frames();
  CHECK(Seqs(frames, "general") == Range(1, kCapacity));
  auto cuts = Unsubscribes(frames, "general");
  REQUIRE(cuts.size() == 1);
  CHECK(cuts[0].resume_after_seq() == kCapacity);
  CHECK_FALSE(cuts[0].reason().empty());
  CHECK(frames.back().has_unsubscribed());  // nothing after the cut
  CHECK(slow->max_held() <= kCapacity + kReserve);
  CHECK_FALSE(f.fanout->IsSubscribed(slow.get(), "general"));
  CHECK(f.fanout->slow_consumer_cuts() == 1);
  // Other subscribers are not affected.
  CHECK(Seqs(fast->Frames(), "general") == Range(1, 200));
  CHECK(f.fanout->IsSubscribed(fast.get(), "general"));

  // The client reads its queue and resubscribes from its resume point: it catches up at its
  // own pace (catch-up reads only as much as the queue has room for), then continues live.
  slow->Consume();
  f.Subscribe(slow, kAlice, "general", cuts[0].resume_after_seq());
  REQUIRE(WaitForSeq(*slow, "general", 200, /*consume=*/true));
  f.bus.Drain();
  f.Commit("general");
  f.bus.Drain();
  REQUIRE(WaitForSeq(*slow, "general", 201, /*consume=*/true));
  f.Stop();
  frames = slow->Frames();
  CHECK(Seqs(frames, "general") == Range(1, 201));
  CHECK(Unsubscribes(frames, "general").size() == 1);
  CHECK(slow->max_held() <= kCapacity + kReserve);
}

TEST_CASE("a catch-up into a stream that stops reading ends with its resume point",
          "[fanout][slow]") {
  fanout::FanoutOptions options;
  options.stalled_limit = 50ms;
  FanoutFixture f(options);
  for (int i = 0; i < 50; ++i) f.CommitSilently("general");
  constexpr std::size_t kCapacity = 3;
  auto sink = std::make_shared<FakeSink>(kCapacity);
  f.Subscribe(sink, kAlice, "general", 0);
  REQUIRE(
      sink->WaitUntil([](const auto& frames) { return !Unsubscribes(frames, "general").empty(); }));
  f.CommitMany("general", 10);  // live messages after the cut are not delivered
  f.bus.Drain();
  f.Stop();
  auto frames = sink->Frames();
  CHECK(Seqs(frames, "general") == Range(1, kCapacity));
  auto cuts = Unsubscribes(frames, "general");
  REQUIRE(cuts.size() == 1);
  CHECK(cuts[0].resume_after_seq() == kCapacity);
  CHECK(sink->max_held() <= kCapacity + kReserve);
}

TEST_CASE("a catch-up whose queue fills up meanwhile neither skips nor stalls silently",
          "[fanout][slow]") {
  // The stream's queue is shared with its other channels: between FreeSlots() and the Offers
  // after the log read, live messages of another channel took the room. The catch-up must not
  // end as if it were complete: either it delivers the rest once the client reads, or it ends the
  // subscription with the resume point.
  fanout::FanoutOptions options;
  options.stalled_limit = 5s;
  FanoutFixture f(options);
  for (int i = 0; i < 8; ++i) f.CommitSilently("a");
  auto sink = std::make_shared<FakeSink>(10);
  f.Subscribe(sink, kAlice, "b", std::nullopt);
  REQUIRE(f.shard.WaitForReads(1));  // b's switch-over read is done: the held read will be a's
  f.shard.Hold(/*snapshot_first=*/true);
  f.Subscribe(sink, kAlice, "a", 0);  // catch-up of a: room for 10, reads 8
  REQUIRE(f.shard.WaitForBlockedReads(1));
  f.CommitMany("b", 7);  // live b takes 7 of the 10 slots
  f.bus.Drain();
  f.shard.Release();
  REQUIRE(sink->WaitForRefusals(1));  // a's catch-up hit the full queue (after a1..a3)
  CHECK(Seqs(sink->Frames(), "a") == Range(1, 3));
  // Now the client reads, and keeps reading; no more messages are committed to `a`.
  const bool settled = sink->WaitUntil(
      [](const auto& frames) {
        auto seqs = Seqs(frames, "a");
        return (!seqs.empty() && seqs.back() == 8) || !Unsubscribes(frames, "a").empty();
      },
      /*consume=*/true);
  f.Stop();
  auto frames = sink->Frames();
  INFO("a got " << Seqs(frames, "a").size() << " messages");
  CHECK(settled);
  auto seqs = Seqs(frames, "a");
  auto cuts = Unsubscribes(frames, "a");
  if (cuts.empty()) {
    CHECK(seqs == Range(1, 8));
  } else {
    CHECK(seqs == Range(1, cuts[0].resume_after_seq()));
  }
  CHECK(Seqs(frames, "b") == Range(1, 7));
}

TEST_CASE("the frames a slow stream holds stay bounded under a flood", "[fanout][slow]") {
  FanoutFixture f;
  constexpr std::size_t kCapacity = 16;
  std::vector<std::shared_ptr<FakeSink>> sinks;
  for (int i = 0; i < 4; ++i) {
    sinks.push_back(std::make_shared<FakeSink>(kCapacity));
    for (const char* channel : {"a", "b", "c"}) f.Subscribe(sinks.back(), kAlice, channel, 0);
  }
  for (int i = 0; i < 300; ++i) {
    for (const char* channel : {"a", "b", "c"}) f.Commit(channel);
  }
  v1::TypingEvent typing;
  typing.set_channel("a");
  typing.set_user_id(kBob.user_id);
  for (int i = 0; i < 100; ++i) f.bus.Publish(typing);
  f.bus.Drain();
  f.Stop();
  for (const auto& sink : sinks) {
    CHECK(sink->max_held() <= kCapacity + kReserve);
    auto frames = sink->Frames();
    CHECK(frames.size() <= kCapacity + kReserve);
    for (const char* channel : {"a", "b", "c"}) {
      INFO(channel);
      CHECK(Unsubscribes(frames, channel).size() == 1);  // every channel was cut, and told
    }
  }
}

TEST_CASE("leaving a channel ends that user's subscriptions to it only", "[fanout]") {
  FanoutFixture f;
  auto alice_phone = std::make_shared<FakeSink>();
  auto alice_laptop = std::make_shared<FakeSink>();
  auto bob = std::make_shared<FakeSink>();
  f.Subscribe(alice_phone, kAlice, "general", std::nullopt);
  f.Subscribe(alice_laptop, kAlice, "general", std::nullopt);
  f.Subscribe(alice_phone, kAlice, "random", std::nullopt);
  f.Subscribe(bob, kBob, "general", std::nullopt);
  f.CommitMany("general", 3);
  f.bus.Publish(MembershipChanged{"general", kAlice.user_id, "alice", true});     // no effect
  f.bus.Publish(MembershipChanged{"general", kBob.user_id + 100, "zed", false});  // someone else
  f.bus.Drain();
  CHECK(f.fanout->CountSubscriptions(alice_phone.get()) == 2);

  f.Leave("general", kAlice);
  f.CommitMany("general", 2);
  f.Commit("random");
  f.bus.Drain();

  for (const auto& sink : {alice_phone, alice_laptop}) {
    auto frames = sink->Frames();
    CHECK(Seqs(frames, "general") == Range(1, 3));
    auto cuts = Unsubscribes(frames, "general");
    REQUIRE(cuts.size() == 1);
    CHECK(cuts[0].resume_after_seq() == 3);
    CHECK_FALSE(f.fanout->IsSubscribed(sink.get(), "general"));
  }
  CHECK(Seqs(alice_phone->Frames(), "random") == std::vector<std::uint64_t>{1});
  CHECK(f.fanout->IsSubscribed(alice_phone.get(), "random"));
  CHECK(Seqs(bob->Frames(), "general") == Range(1, 5));
  CHECK(Unsubscribes(bob->Frames(), "general").empty());
  f.Stop();
}

// A bus whose Watch readiness the test controls, as a bus across processes would give it: the
// owner answers later, and answers again after a lost connection. Events pass through a
// LocalEventBus.
class ControlledBus final : public EventBus {
 public:
  void Publish(BusEvent event) override { inner.Publish(std::move(event)); }
  SubscriptionId Subscribe(Handler handler) override { return inner.Subscribe(std::move(handler)); }
  void Unsubscribe(SubscriptionId id) override { inner.Unsubscribe(id); }
  void Watch(const std::string& channel, Ready ready) override {
    std::lock_guard lock(mu);
    ready_[channel] = std::move(ready);
  }
  void Unwatch(const std::string& channel) override {
    std::lock_guard lock(mu);
    ready_.erase(channel);
  }
  // The owner says the interest is in place (again).
  void FireReady(const std::string& channel) {
    Ready ready;
    {
      std::lock_guard lock(mu);
      REQUIRE(ready_.count(channel) == 1);
      ready = ready_[channel];
    }
    ready();
  }
  bool Watched(const std::string& channel) {
    std::lock_guard lock(mu);
    return ready_.count(channel) == 1;
  }

  LocalEventBus inner;

 private:
  std::mutex mu;
  std::map<std::string, Ready> ready_;
};

TEST_CASE(
    "across processes: nothing is read before the watch is ready, and a re-established "
    "watch repairs what was lost",
    "[fanout][switchover]") {
  ControlledBus bus;
  FakeShard shard;
  auto fanout = std::make_unique<fanout::FanoutService>(fanout::FanoutOptions{}, &bus, &shard,
                                                        ModuleLogger("fanout-test"));
  for (int i = 0; i < 3; ++i) shard.Append("general");
  auto sink = std::make_shared<FakeSink>();
  fanout->Subscribe(sink, kAlice, "general", shard.Head("general"), std::nullopt);
  CHECK(bus.Watched("general"));
  shard.Append("general");  // seq 4, its event published before the owner watched for us
  bus.inner.Drain();
  CHECK(shard.reads() == 0);  // no switch-over read before the interest is in place
  bus.FireReady("general");
  REQUIRE(WaitForSeq(*sink, "general", 4));
  CHECK(shard.WaitForReads(1));

  // Live from here; then the connection to the owner is lost, seq 5 with it, and re-made.
  auto m5 = shard.Append("general");
  bus.inner.Drain();
  bus.FireReady("general");
  REQUIRE(WaitForSeq(*sink, "general", 5));
  // Later events are live again, and a late copy of 5 is not delivered twice.
  bus.Publish(m5);
  bus.Publish(shard.Append("general"));
  REQUIRE(WaitForSeq(*sink, "general", 6));
  bus.inner.Drain();

  // Resubscribing (as after a slow-consumer cut) keeps the channel's watch: live delivery goes
  // on without waiting for the owner to say ready again.
  fanout->Subscribe(sink, kAlice, "general", shard.Head("general"), shard.Head("general"));
  CHECK(bus.Watched("general"));
  bus.Publish(shard.Append("general"));
  REQUIRE(WaitForSeq(*sink, "general", 7));
  bus.inner.Drain();

  // The last subscription ends: the channel is no longer watched.
  fanout->UnsubscribeAll(sink.get());
  CHECK_FALSE(bus.Watched("general"));
  fanout.reset();
  CHECK(Seqs(sink->Frames(), "general") == Range(4, 7));
}

// Authorization on every read: the log read itself checks membership, so a read that runs
// after the subscriber left, but before the leave's event reached fanout, returns nothing.
TEST_CASE("a log read after the subscriber left delivers nothing and ends the subscription",
          "[fanout]") {
  const bool behind = GENERATE(true, false);  // a catch-up, or the switch-over read at the head
  CAPTURE(behind);
  FanoutFixture f;
  for (int i = 0; i < 5; ++i) f.CommitSilently("general");
  const std::uint64_t head = f.shard.Head("general");
  f.shard.Hold(/*snapshot_first=*/false);
  auto sink = std::make_shared<FakeSink>();
  f.fanout->Subscribe(sink, kAlice, "general", head,
                      behind ? std::optional<std::uint64_t>(0) : std::nullopt);
  REQUIRE(f.shard.WaitForBlockedReads(1));
  f.shard.Leave("general", kAlice.user_id);  // left; its event is still on its way
  f.CommitSilently("general");               // and the channel goes on without her
  f.shard.Release();
  REQUIRE(
      sink->WaitUntil([](const auto& frames) { return !Unsubscribes(frames, "general").empty(); }));
  CHECK_FALSE(f.fanout->IsSubscribed(sink.get(), "general"));
  f.Stop();
  auto frames = sink->Frames();
  CHECK(Seqs(frames, "general").empty());
  auto cuts = Unsubscribes(frames, "general");
  REQUIRE(cuts.size() == 1);
  CHECK(cuts[0].reason() == "no longer a member of the channel");
  CHECK(cuts[0].resume_after_seq() == (behind ? 0 : head));
}

TEST_CASE("Unsubscribe and UnsubscribeAll stop delivery", "[fanout]") {
  FanoutFixture f;
  auto sink = std::make_shared<FakeSink>();
  f.Subscribe(sink, kAlice, "a", std::nullopt);
  f.Subscribe(sink, kAlice, "b", std::nullopt);
  f.Subscribe(sink, kAlice, "c", std::nullopt);
  CHECK(f.fanout->CountSubscriptions(sink.get()) == 3);
  CHECK(f.fanout->subscription_count() == 3);
  f.Commit("a");
  f.Commit("b");
  f.bus.Drain();

  f.fanout->Unsubscribe(sink.get(), "a");
  f.fanout->Unsubscribe(sink.get(), "nope");  // harmless
  CHECK_FALSE(f.fanout->IsSubscribed(sink.get(), "a"));
  CHECK(f.fanout->CountSubscriptions(sink.get()) == 2);
  f.Commit("a");
  f.Commit("b");
  f.bus.Drain();
  CHECK(Seqs(sink->Frames(), "a") == std::vector<std::uint64_t>{1});
  CHECK(Seqs(sink->Frames(), "b") == Range(1, 2));

  f.fanout->UnsubscribeAll(sink.get());
  CHECK(f.fanout->CountSubscriptions(sink.get()) == 0);
  CHECK(f.fanout->subscription_count() == 0);
  f.CommitMany("b", 3);
  f.CommitMany("c", 3);
  f.bus.Drain();
  f.Stop();
  CHECK(Seqs(sink->Frames(), "b") == Range(1, 2));
  CHECK(Seqs(sink->Frames(), "c").empty());
}

TEST_CASE("UnsubscribeAll during a catch-up stops it", "[fanout]") {
  FanoutFixture f;
  for (int i = 0; i < 20; ++i) f.CommitSilently("general");
  f.shard.Hold(/*snapshot_first=*/true);
  auto sink = std::make_shared<FakeSink>();
  f.Subscribe(sink, kAlice, "general", 0);
  REQUIRE(f.shard.WaitForBlockedReads(1));
  f.fanout->UnsubscribeAll(sink.get());
  f.shard.Release();
  f.Stop();
  CHECK(Seqs(sink->Frames(), "general").empty());
}

TEST_CASE("resubscribing replaces the old subscription: no double delivery", "[fanout]") {
  FanoutFixture f;
  for (int i = 0; i < 10; ++i) f.CommitSilently("general");
  auto sink = std::make_shared<FakeSink>();

  SECTION("live, twice") {
    f.Subscribe(sink, kAlice, "general", std::nullopt);
    f.Subscribe(sink, kAlice, "general", std::nullopt);
    CHECK(f.fanout->CountSubscriptions(sink.get()) == 1);
    CHECK(f.fanout->subscription_count() == 1);
    f.CommitMany("general", 3);
    f.bus.Drain();
    f.Stop();
    CHECK(Seqs(sink->Frames(), "general") == Range(11, 13));
  }
  SECTION("while the first one is catching up") {
    f.shard.Hold(/*snapshot_first=*/true);
    f.Subscribe(sink, kAlice, "general", 0);
    REQUIRE(f.shard.WaitForBlockedReads(1));
    f.Subscribe(sink, kAlice, "general", 5);  // the new one also catches up, from 5
    REQUIRE(f.shard.WaitForBlockedReads(2));
    f.shard.Release();
    REQUIRE(WaitForSeq(*sink, "general", 10));
    f.Commit("general");
    f.bus.Drain();
    REQUIRE(WaitForSeq(*sink, "general", 11));
    f.Stop();
    // Only the second subscription delivered anything.
    CHECK(Seqs(sink->Frames(), "general") == Range(6, 11));
    int subscribed = 0;
    for (const auto& frame : sink->Frames()) subscribed += frame.has_subscribed();
    CHECK(subscribed == 2);
  }
}

TEST_CASE("typing is not echoed to the typist, receipts go to everyone", "[fanout]") {
  FanoutFixture f;
  auto alice = std::make_shared<FakeSink>();
  auto bob = std::make_shared<FakeSink>();
  auto outsider = std::make_shared<FakeSink>();
  f.Subscribe(alice, kAlice, "general", std::nullopt);
  f.Subscribe(bob, kBob, "general", std::nullopt);
  f.Subscribe(outsider, Principal{9, "zed", "", 0}, "random", std::nullopt);

  v1::TypingEvent typing;
  typing.set_channel("general");
  typing.set_user_id(kAlice.user_id);
  typing.set_username("alice");
  f.bus.Publish(typing);
  v1::Receipt receipt;
  receipt.set_channel("general");
  receipt.set_user_id(kAlice.user_id);
  receipt.set_seq(1);
  receipt.set_kind(v1::READ);
  f.bus.Publish(receipt);
  f.bus.Drain();
  f.Stop();

  auto count = [](const std::shared_ptr<FakeSink>& sink, bool typing_frames) {
    int n = 0;
    for (const auto& frame : sink->Frames()) {
      n += typing_frames ? frame.has_typing() : frame.has_receipt();
    }
    return n;
  };
  CHECK(count(alice, true) == 0);
  CHECK(count(bob, true) == 1);
  CHECK(count(outsider, true) == 0);
  CHECK(count(alice, false) == 1);
  CHECK(count(bob, false) == 1);
  CHECK(count(outsider, false) == 0);
  for (const auto& frame : bob->Frames()) {
    if (frame.has_typing()) CHECK(frame.typing().username() == "alice");
  }
}

// Presence frames a sink received, as "user:on" / "user:off", in order.
std::vector<std::string> Presences(const std::vector<v1::ServerFrame>& frames,
                                   const std::string& channel) {
  std::vector<std::string> out;
  for (const auto& f : frames) {
    if (f.has_presence() && f.presence().channel() == channel) {
      out.push_back(f.presence().username() + (f.presence().online() ? ":on" : ":off"));
    }
  }
  return out;
}

using Strings = std::vector<std::string>;

TEST_CASE("presence: a user is online from their first subscription until their last one ends",
          "[fanout][presence]") {
  FanoutFixture f;
  auto alice = std::make_shared<FakeSink>();
  auto bob_phone = std::make_shared<FakeSink>();
  auto bob_laptop = std::make_shared<FakeSink>();
  auto elsewhere = std::make_shared<FakeSink>();
  f.Subscribe(alice, kAlice, "general", std::nullopt);
  f.Subscribe(elsewhere, Principal{9, "zed", "", 0}, "random", std::nullopt);
  f.bus.Drain();  // alice:on went by before bob subscribes (presence travels on the bus)

  f.Subscribe(bob_phone, kBob, "general", std::nullopt);
  f.bus.Drain();
  CHECK(Presences(alice->Frames(), "general") == Strings{"bob:on"});

  // A second device, and a resubscription that replaces a subscription: no change.
  f.Subscribe(bob_laptop, kBob, "general", std::nullopt);
  f.Subscribe(bob_phone, kBob, "general", 0);
  f.fanout->Unsubscribe(bob_phone.get(), "general");
  f.bus.Drain();
  CHECK(Presences(alice->Frames(), "general") == Strings{"bob:on"});

  // The last device goes away (its stream ended).
  f.fanout->UnsubscribeAll(bob_laptop.get());
  f.bus.Drain();
  CHECK(Presences(alice->Frames(), "general") == Strings{"bob:on", "bob:off"});

  // And comes back.
  f.Subscribe(bob_laptop, kBob, "general", std::nullopt);
  f.bus.Drain();
  f.Stop();
  CHECK(Presences(alice->Frames(), "general") == Strings{"bob:on", "bob:off", "bob:on"});
  const v1::ServerFrame frame = alice->Frames().back();
  REQUIRE(frame.has_presence());
  CHECK(frame.presence().user_id() == kBob.user_id);

  // Nobody is told about themselves; no snapshot of who is already online; other channels see
  // nothing.
  for (const auto& sink : {bob_phone, bob_laptop, elsewhere}) {
    CHECK(Presences(sink->Frames(), "general").empty());
    CHECK(Presences(sink->Frames(), "random").empty());
  }
}

TEST_CASE("presence: a slow-consumer cut and leaving the channel end a subscription too",
          "[fanout][presence]") {
  FanoutFixture f;
  auto alice = std::make_shared<FakeSink>();
  f.Subscribe(alice, kAlice, "general", std::nullopt);
  constexpr std::size_t kCapacity = 3;
  auto slow_bob = std::make_shared<FakeSink>(kCapacity);
  f.Subscribe(slow_bob, kBob, "general", std::nullopt);
  auto carol = std::make_shared<FakeSink>();
  const Principal kCarol{3, "carol", "", 0};
  f.Subscribe(carol, kCarol, "general", std::nullopt);

  f.CommitMany("general", 10);  // bob (who also got carol:on) is cut
  f.bus.Drain();
  REQUIRE(Unsubscribes(slow_bob->Frames(), "general").size() == 1);
  f.Leave("general", kCarol);
  f.bus.Drain();
  f.Stop();
  CHECK(Presences(alice->Frames(), "general") ==
        Strings{"bob:on", "carol:on", "bob:off", "carol:off"});
}

TEST_CASE("presence is dropped, not queued, when the stream is behind", "[fanout][presence]") {
  FanoutFixture f;
  auto alice = std::make_shared<FakeSink>(/*capacity=*/1);
  f.Subscribe(alice, kAlice, "general", std::nullopt);
  auto bob = std::make_shared<FakeSink>();
  f.Subscribe(bob, kBob, "general", std::nullopt);  // fills alice's only data slot
  f.bus.Drain();
  f.fanout->Unsubscribe(bob.get(), "general");  // refused by alice's full queue
  f.bus.Drain();
  f.Stop();
  CHECK(Presences(alice->Frames(), "general") == Strings{"bob:on"});
  CHECK(alice->refused() == 1);
  // The drop cost alice nothing: she is still subscribed, not cut.
  CHECK(Unsubscribes(alice->Frames(), "general").empty());
}

TEST_CASE("presence frames stop above presence_max_subscribers, who is online does not",
          "[fanout][presence]") {
  fanout::FanoutOptions options;
  options.presence_max_subscribers = 2;
  FanoutFixture f(options);
  const Principal kCarol{3, "carol", "", 0};
  auto alice = std::make_shared<FakeSink>();
  auto bob = std::make_shared<FakeSink>();
  auto carol = std::make_shared<FakeSink>();
  f.Subscribe(alice, kAlice, "general", std::nullopt);
  f.bus.Drain();
  f.Subscribe(bob, kBob, "general", std::nullopt);  // 2 subscribers: still told
  f.bus.Drain();
  f.Subscribe(carol, kCarol, "general", std::nullopt);  // 3: over the limit, nobody is told
  f.bus.Drain();
  CHECK(Presences(alice->Frames(), "general") == Strings{"bob:on"});
  CHECK(Presences(bob->Frames(), "general").empty());
  CHECK(f.fanout->OnlineUsers("general") == std::vector<std::uint64_t>{1, 2, 3});

  f.fanout->UnsubscribeAll(alice.get());  // 2 subscribers remain: within the limit again
  f.bus.Drain();
  f.Stop();
  // So they are told alice left, though carol never heard she came: a hint may lack its pair.
  CHECK(Presences(bob->Frames(), "general") == Strings{"alice:off"});
  CHECK(Presences(carol->Frames(), "general") == Strings{"alice:off"});
}

TEST_CASE("presence_max_subscribers 0 turns presence frames off", "[fanout][presence]") {
  fanout::FanoutOptions options;
  options.presence_max_subscribers = 0;
  FanoutFixture f(options);
  auto alice = std::make_shared<FakeSink>();
  auto bob = std::make_shared<FakeSink>();
  f.Subscribe(alice, kAlice, "general", std::nullopt);
  f.Subscribe(bob, kBob, "general", std::nullopt);
  f.bus.Drain();
  CHECK(f.fanout->OnlineUsers("general") == std::vector<std::uint64_t>{1, 2});
  f.Stop();
  CHECK(Presences(alice->Frames(), "general").empty());
  CHECK(Presences(bob->Frames(), "general").empty());
}

TEST_CASE("presence over two fanout instances: online until the user is gone from both",
          "[fanout][presence]") {
  FanoutFixture f;  // instance A
  auto b = std::make_unique<fanout::FanoutService>(fanout::FanoutOptions{}, &f.bus, &f.shard,
                                                   ModuleLogger("fanout-test"));
  REQUIRE(b->presence_origin() != f.fanout->presence_origin());
  auto alice = std::make_shared<FakeSink>();  // on A
  auto carol = std::make_shared<FakeSink>();  // on B
  auto bob_a = std::make_shared<FakeSink>();
  auto bob_b = std::make_shared<FakeSink>();
  f.Subscribe(alice, kAlice, "general", std::nullopt);
  f.bus.Drain();  // carol subscribes after alice:on went by
  b->Subscribe(carol, Principal{3, "carol", "", 0}, "general", 0, std::nullopt);
  f.bus.Drain();

  f.Subscribe(bob_a, kBob, "general", std::nullopt);
  b->Subscribe(bob_b, kBob, "general", 0, std::nullopt);
  f.bus.Drain();
  f.fanout->UnsubscribeAll(bob_a.get());  // still on B
  f.bus.Drain();
  CHECK(Presences(alice->Frames(), "general") == Strings{"carol:on", "bob:on"});
  CHECK(Presences(carol->Frames(), "general") == Strings{"bob:on"});
  // Both instances answer "who is online" from the merged reports; nobody is online elsewhere.
  using Ids = std::vector<std::uint64_t>;
  CHECK(f.fanout->OnlineUsers("general") == Ids{1, 2, 3});
  CHECK(b->OnlineUsers("general") == Ids{1, 2, 3});
  CHECK(b->OnlineUsers("random").empty());

  b->UnsubscribeAll(bob_b.get());
  f.bus.Drain();
  CHECK(f.fanout->OnlineUsers("general") == Ids{1, 3});
  CHECK(b->OnlineUsers("general") == Ids{1, 3});
  b.reset();
  f.Stop();
  CHECK(Presences(alice->Frames(), "general") == Strings{"carol:on", "bob:on", "bob:off"});
  CHECK(Presences(carol->Frames(), "general") == Strings{"bob:on", "bob:off"});
}

TEST_CASE("a stream that went away without unsubscribing is skipped safely", "[fanout]") {
  FanoutFixture f;
  auto gone = std::make_shared<FakeSink>();
  auto stays = std::make_shared<FakeSink>();
  f.Subscribe(gone, kAlice, "general", std::nullopt);
  f.Subscribe(stays, kBob, "general", std::nullopt);
  const SessionSink* gone_key = gone.get();
  gone.reset();
  f.CommitMany("general", 3);
  v1::TypingEvent typing;
  typing.set_channel("general");
  f.bus.Publish(typing);
  f.bus.Drain();
  CHECK(Seqs(stays->Frames(), "general") == Range(1, 3));
  f.fanout->UnsubscribeAll(gone_key);
  CHECK(f.fanout->subscription_count() == 1);
}

TEST_CASE("concurrent subscribers and publishers: each stream gets 1..N exactly once",
          "[fanout][concurrency]") {
  fanout::FanoutOptions options;
  options.catchup_batch = 16;
  FanoutFixture f(options);
  constexpr int kMessages = 400;
  constexpr int kSubscribers = 12;
  std::vector<std::shared_ptr<FakeSink>> sinks;
  for (int i = 0; i < kSubscribers; ++i) sinks.push_back(std::make_shared<FakeSink>());
  // Publishing and subscribing (from seq 0, so through a catch-up) interleave.
  std::thread publisher([&] {
    for (int i = 0; i < kMessages; ++i) f.Commit("general");
  });
  for (int i = 0; i < kSubscribers; ++i) {
    f.Subscribe(sinks[i], Principal{100 + static_cast<std::uint64_t>(i), "u", "", 0}, "general", 0);
  }
  publisher.join();
  f.bus.Drain();
  for (auto& sink : sinks) REQUIRE(WaitForSeq(*sink, "general", kMessages));
  f.Stop();
  for (auto& sink : sinks) CHECK(Seqs(sink->Frames(), "general") == Range(1, kMessages));
}

}  // namespace
}  // namespace infrachat
