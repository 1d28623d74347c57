// CallContext: deadlines, shared cancellation and trace ids
// (include/infrachat/core/call_context.h).
#include "infrachat/core/call_context.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <set>

namespace infrachat {
namespace {

using namespace std::chrono_literals;

TEST_CASE("trace ids are 32 lower-case hex digits, random, and validated strictly", "[unit]") {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string id = CallContext::NewTraceId();
    CHECK(CallContext::IsValidTraceId(id));
    seen.insert(id);
  }
  CHECK(seen.size() == 100);
  CHECK_FALSE(CallContext::IsValidTraceId(""));
  CHECK_FALSE(CallContext::IsValidTraceId(std::string(32, '0')));  // W3C: all zero is invalid
  CHECK_FALSE(CallContext::IsValidTraceId(std::string(31, 'a')));
  CHECK_FALSE(CallContext::IsValidTraceId(std::string(33, 'a')));
  CHECK_FALSE(CallContext::IsValidTraceId(std::string(31, 'a') + "G"));
  CHECK_FALSE(CallContext::IsValidTraceId(std::string(31, 'a') + "A"));  // lower case only
  CHECK(CallContext::IsValidTraceId("4bf92f3577b34da6a3ce929d0e0e4736"));
}

TEST_CASE("a context keeps a valid trace id it is given and replaces an invalid one", "[unit]") {
  const auto kept = CallContext::Unbounded("4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(kept.trace_id() == "4bf92f3577b34da6a3ce929d0e0e4736");
  const auto replaced = CallContext::Unbounded("not a trace id; could be a log injection\n");
  CHECK(CallContext::IsValidTraceId(replaced.trace_id()));
}

TEST_CASE("deadlines: Remaining is capped by the hop's timeout and zero when past", "[unit]") {
  const auto background = CallContext::Background(10s);
  CHECK_FALSE(background.Done());
  CHECK(background.Remaining(2s) == 2s);  // a hop caps a longer deadline
  CHECK(background.Remaining(60s) <= 10s);
  CHECK(background.Remaining(60s) > 9s);

  const auto unbounded = CallContext::Unbounded();
  CHECK(unbounded.Remaining(3s) == 3s);  // no overflow with time_point::max()
  CHECK_FALSE(unbounded.Done());

  const auto past = CallContext::WithDeadline(CallContext::Clock::now() - 1ms);
  CHECK(past.Done());
  CHECK(past.Remaining(3s) == 0ms);
  auto gone = GaveUp(past);
  REQUIRE(gone.has_value());
  CHECK(gone->code == Code::kDeadlineExceeded);
  CHECK_FALSE(GaveUp(background).has_value());
}

TEST_CASE("cancelling a context cancels every copy, but not a detached one", "[unit]") {
  const auto stream = CallContext::Unbounded();
  const CallContext copy = stream;  // what a pending call holds
  const CallContext detached = stream.Detached();
  CHECK_FALSE(copy.cancelled());
  stream.Cancel();
  CHECK(copy.cancelled());
  CHECK(copy.Done());
  auto gone = GaveUp(copy);
  REQUIRE(gone.has_value());
  CHECK(gone->code == Code::kCancelled);
  CHECK_FALSE(detached.cancelled());
  CHECK(detached.trace_id() == stream.trace_id());
  CHECK(detached.deadline() == stream.deadline());
}

TEST_CASE("a cancellation probe is consulted by the context and its copies", "[unit]") {
  bool caller_gone = false;
  const auto parent = CallContext::Background(10s);
  const auto probed = parent.WithCancelProbe([&] { return caller_gone; });
  const CallContext copy = probed;
  CHECK_FALSE(copy.cancelled());
  caller_gone = true;
  CHECK(copy.cancelled());
  CHECK_FALSE(parent.cancelled());  // the probe belongs to the child only

  // Cancelling the parent reaches the probed child too.
  const auto other = parent.WithCancelProbe([] { return false; });
  parent.Cancel();
  CHECK(other.cancelled());
}

}  // namespace
}  // namespace infrachat
