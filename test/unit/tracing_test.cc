// Tracing (include/infrachat/core/tracing.h, span_context.h, otlp_exporter.h): traceparent
// parsing and formatting, sampling, spans and their scope (logs, the in-process bus), and the
// OTLP/HTTP exporter against a real HTTP receiver (test/support/otlp_receiver.h): the JSON it
// sends, and spans dropped and counted, never waited for, when the receiver is slow or absent.
#include "infrachat/core/tracing.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <future>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "bus/local/local_event_bus.h"
#include "infrachat/core/call_context.h"
#include "infrachat/core/logging.h"
#include "infrachat/core/otlp_exporter.h"
#include "infrachat/core/span_context.h"
#include "otlp_receiver.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using testing::OtlpAttribute;
using testing::OtlpReceiver;

constexpr const char* kExample = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// Turns tracing on for one test case, off at its end (tests share the process).
struct TracingOn {
  explicit TracingOn(const std::string& endpoint, double ratio = 1.0) {
    TracingOptions options;
    options.otlp_endpoint = endpoint;
    options.sample_ratio = ratio;
    options.resource = {{"service.name", "infrachatd"}};
    options.export_interval = 50ms;
    options.export_timeout = 1000ms;
    StartTracing(options);
  }
  ~TracingOn() { StopTracing(); }
};

// A port nothing listens on: bound by the kernel's choice, then closed.
int ClosedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), size) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0);
  ::close(fd);
  return ntohs(address.sin_port);
}

std::shared_ptr<SpanData> MakeSpan(const std::string& name) {
  auto span = std::make_shared<SpanData>();
  span->context = SpanContext::OfTraceId("4bf92f3577b34da6a3ce929d0e0e4736");
  span->context.span_id = NewSpanId();
  span->name = name;
  span->start_unix_ns = UnixNanosNow();
  span->end_unix_ns = span->start_unix_ns + 1000;
  return span;
}

TEST_CASE("traceparent: the W3C example parses and formats back", "[tracing]") {
  const auto parsed = ParseTraceParent(kExample);
  REQUIRE(parsed.has_value());
  CHECK(parsed->trace_id_view() == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(parsed->span_id == 0x00f067aa0ba902b7u);
  CHECK(parsed->SpanIdHex() == "00f067aa0ba902b7");
  CHECK(parsed->sampled);
  CHECK(parsed->TraceParent() == kExample);

  const auto unsampled =
      ParseTraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  REQUIRE(unsampled.has_value());
  CHECK_FALSE(unsampled->sampled);
  // Only bit 0 of the flags is the sampled flag.
  CHECK(ParseTraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03")->sampled);
  CHECK_FALSE(ParseTraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02")->sampled);
  // A later version may carry more fields; its first four are read as version 00's.
  CHECK(ParseTraceParent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
            .has_value());

  // No traceparent without both ids.
  CHECK(SpanContext{}.TraceParent().empty());
  CHECK(SpanContext::OfTraceId("4bf92f3577b34da6a3ce929d0e0e4736").TraceParent().empty());
}

TEST_CASE("traceparent: malformed values are refused", "[tracing]") {
  for (const char* bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",       // no flags
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  // v00 is exactly 55
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    // upper case
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    // zero parent id
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // forbidden version
           "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",    // separators
           "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",    // not hex
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",    // flags not hex
           "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // version not hex
           "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",   // later version, no '-'
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",  // trailing newline
       }) {
    INFO("'" << bad << "'");
    CHECK_FALSE(ParseTraceParent(bad).has_value());
  }
  CHECK_FALSE(SpanContext::OfTraceId("not a trace id").has_trace());
  CHECK_FALSE(SpanContext::OfTraceId(std::string(32, '0')).has_trace());
}

TEST_CASE("a context without a valid trace gets a new trace id; WithSpan carries a span",
          "[tracing]") {
  const auto deadline = CallContext::Clock::now() + 10s;
  const auto fresh = CallContext::WithDeadline(deadline, SpanContext{});
  CHECK(CallContext::IsValidTraceId(fresh.trace_id()));
  CHECK(fresh.span().span_id == 0);
  CHECK_FALSE(fresh.span().sampled);

  const auto parent = *ParseTraceParent(kExample);
  const auto child = CallContext::WithDeadline(deadline, parent);
  CHECK(child.trace_id() == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(child.span().span_id == parent.span_id);
  CHECK(child.span().sampled);

  // WithSpan shares the cancellation; Detached keeps the span but not the cancellation.
  SpanContext other = parent;
  other.span_id = 42;
  const auto with = fresh.WithSpan(other);
  CHECK(with.trace_id() == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(with.span().span_id == 42);
  const auto detached = with.Detached();
  fresh.Cancel();
  CHECK(with.cancelled());
  CHECK_FALSE(detached.cancelled());
  CHECK(detached.span().span_id == 42);
  // A span without a trace keeps the context's trace id.
  CHECK(fresh.WithSpan(SpanContext{}).trace_id() == fresh.trace_id());
}

TEST_CASE("ids: trace ids and span ids are random and never zero", "[tracing]") {
  std::set<std::string> traces;
  std::set<std::uint64_t> spans;
  for (int i = 0; i < 200; ++i) {
    const auto id = NewTraceIdHex();
    CHECK(CallContext::IsValidTraceId(std::string(id.data(), id.size())));
    traces.emplace(id.data(), id.size());
    const auto span = NewSpanId();
    CHECK(span != 0);
    CHECK(SpanIdHex(span).size() == 16);
    spans.insert(span);
  }
  CHECK(traces.size() == 200);
  CHECK(spans.size() == 200);
  CHECK(SpanIdHex(1) == "0000000000000001");
}

TEST_CASE("sampling: off records nothing; the ratio decides new traces; parents decide children",
          "[tracing]") {
  const auto parent = *ParseTraceParent(kExample);
  SECTION("tracing off") {
    CHECK_FALSE(TracingEnabled());
    CHECK_FALSE(SampleNewTrace());
    Span span = StartSpan("x", SpanKind::kInternal, parent);
    CHECK_FALSE(span.recording());
    // It still carries the parent's context along.
    CHECK(span.context().TraceParent() == kExample);
  }
  OtlpReceiver receiver;
  SECTION("ratio 0 and 1") {
    {
      TracingOn on(receiver.url(), 0.0);
      for (int i = 0; i < 100; ++i) CHECK_FALSE(SampleNewTrace());
    }
    TracingOn on(receiver.url(), 1.0);
    for (int i = 0; i < 100; ++i) CHECK(SampleNewTrace());
  }
  SECTION("ratio 0.25") {
    TracingOn on(receiver.url(), 0.25);
    int sampled = 0;
    for (int i = 0; i < 8000; ++i) sampled += SampleNewTrace() ? 1 : 0;
    // Binomial(8000, 0.25): mean 2000, sd about 39; 6 sd either side.
    CHECK(sampled > 1760);
    CHECK(sampled < 2240);
  }
  SECTION("children follow the parent's flag") {
    TracingOn on(receiver.url(), 0.0);  // the ratio is for new traces only
    Span child = StartSpan("child", SpanKind::kClient, parent);
    REQUIRE(child.recording());
    CHECK(child.context().trace_id_view() == parent.trace_id_view());
    CHECK(child.context().span_id != parent.span_id);
    CHECK(child.context().sampled);
    SpanContext unsampled = parent;
    unsampled.sampled = false;
    CHECK_FALSE(StartSpan("child", SpanKind::kClient, unsampled).recording());
    CHECK_FALSE(StartSpan("child", SpanKind::kClient, SpanContext{}).recording());
  }
}

TEST_CASE("SpanScope: the current span, nested, and in log lines", "[tracing]") {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  sink->set_formatter(MakeLogFormatter("json"));
  spdlog::logger log("shard", sink);
  CHECK_FALSE(CurrentSpan().has_trace());
  const auto outer = *ParseTraceParent(kExample);
  {
    SpanScope scope(outer);
    CHECK(CurrentSpan().span_id == outer.span_id);
    log.info("outer");
    {
      SpanContext inner = outer;
      inner.span_id = 0xabc;
      SpanScope nested(inner);
      CHECK(CurrentSpan().span_id == 0xabc);
      log.info("inner");
    }
    CHECK(CurrentSpan().span_id == outer.span_id);
  }
  CHECK_FALSE(CurrentSpan().has_trace());
  log.info("none");
  std::istringstream lines(out.str());
  std::vector<nlohmann::json> parsed;
  for (std::string line; std::getline(lines, line);) parsed.push_back(nlohmann::json::parse(line));
  REQUIRE(parsed.size() == 3);
  CHECK(parsed[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(parsed[0]["span_id"] == "00f067aa0ba902b7");
  CHECK(parsed[1]["span_id"] == "0000000000000abc");
  CHECK(parsed[2]["trace_id"] == "");
  CHECK(parsed[2]["span_id"] == "");
}

TEST_CASE("the in-process bus runs handlers in the publisher's span context", "[tracing]") {
  LocalEventBus bus;
  std::promise<std::pair<SpanContext, SpanContext>> seen;
  int calls = 0;
  SpanContext first;
  bus.Subscribe([&](const BusEvent&) {
    if (++calls == 1) {
      first = CurrentSpan();
    } else {
      seen.set_value({first, CurrentSpan()});
    }
  });
  v1::ChatMessage message;
  message.set_channel("general");
  const auto publisher = *ParseTraceParent(kExample);
  {
    SpanScope scope(publisher);
    bus.Publish(message);
  }
  bus.Publish(message);  // outside any scope: no trace
  auto future = seen.get_future();
  REQUIRE(future.wait_for(5s) == std::future_status::ready);
  const auto [traced, untraced] = future.get();
  CHECK(traced.TraceParent() == kExample);
  CHECK_FALSE(untraced.has_trace());
}

TEST_CASE("exporter: OTLP/HTTP JSON with ids, times, kinds, attributes, events, status",
          "[tracing]") {
  OtlpReceiver receiver;
  OtlpExporter exporter({receiver.url(),
                         {{"service.name", "infrachatd"}, {"infrachat.roles", "gateway"}},
                         100,
                         10,
                         20ms,
                         2000ms});
  auto root = MakeSpan("gateway send");
  root->kind = SpanKind::kServer;
  root->attributes.push_back({"rpc.system", std::string("grpc")});
  root->attributes.push_back({"infrachat.seq", std::int64_t{7}});
  root->attributes.push_back({"infrachat.duplicate", false});
  root->events.push_back({"dispatched", root->start_unix_ns + 10});
  auto child = MakeSpan("group commit");
  child->parent_span_id = root->context.span_id;
  child->error = true;
  child->status_message = "UNAVAILABLE";
  REQUIRE(exporter.Enqueue(root));
  REQUIRE(exporter.Enqueue(child));
  const auto spans = receiver.WaitForSpans([](const auto& s) { return s.size() >= 2; }, 10s);
  REQUIRE(spans.size() == 2);
  CHECK(receiver.Paths().front() == "/v1/traces");
  CHECK(receiver.ContentTypes().front() == "application/json");
  const nlohmann::json request = receiver.Requests().front();
  CHECK(request["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"] == "infrachat");
  CHECK(OtlpAttribute(request["resourceSpans"][0]["resource"]["attributes"], "service.name") ==
        "infrachatd");
  const std::regex trace_hex("[0-9a-f]{32}");
  const std::regex span_hex("[0-9a-f]{16}");
  const std::regex decimal("[0-9]+");
  for (const auto& span : spans) {
    INFO(span.dump());
    CHECK(std::regex_match(span["traceId"].get<std::string>(), trace_hex));
    CHECK(std::regex_match(span["spanId"].get<std::string>(), span_hex));
    CHECK(std::regex_match(span["startTimeUnixNano"].get<std::string>(), decimal));
    CHECK(std::regex_match(span["endTimeUnixNano"].get<std::string>(), decimal));
    CHECK(span["resource"]["infrachat.roles"] == "gateway");
  }
  const auto& sent_root = spans[0]["name"] == "gateway send" ? spans[0] : spans[1];
  const auto& sent_child = spans[0]["name"] == "gateway send" ? spans[1] : spans[0];
  CHECK(sent_root["kind"] == 2);  // SPAN_KIND_SERVER
  CHECK_FALSE(sent_root.contains("parentSpanId"));
  CHECK_FALSE(sent_root.contains("status"));  // unset: not failed
  CHECK(OtlpAttribute(sent_root["attributes"], "rpc.system") == "grpc");
  CHECK(OtlpAttribute(sent_root["attributes"], "infrachat.seq") == "7");  // int64 as a string
  CHECK(OtlpAttribute(sent_root["attributes"], "infrachat.duplicate") == "false");
  CHECK(sent_root["events"][0]["name"] == "dispatched");
  CHECK(sent_root["events"][0]["timeUnixNano"] == std::to_string(root->start_unix_ns + 10));
  CHECK(sent_child["kind"] == 1);  // SPAN_KIND_INTERNAL
  CHECK(sent_child["parentSpanId"] == sent_root["spanId"]);
  CHECK(sent_child["status"]["code"] == 2);  // STATUS_CODE_ERROR
  CHECK(sent_child["status"]["message"] == "UNAVAILABLE");
  exporter.Stop();
  CHECK(exporter.stats().exported == 2);
  CHECK(exporter.stats().dropped_export_failed == 0);
}

TEST_CASE("exporter: an absent collector costs dropped spans, counted, never a wait", "[tracing]") {
  OtlpExporter exporter({"http://127.0.0.1:" + std::to_string(ClosedPort()) + "/v1/traces",
                         {{"service.name", "infrachatd"}},
                         64,
                         16,
                         10ms,
                         500ms});
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) exporter.Enqueue(MakeSpan("s"));
  const auto enqueue_time = std::chrono::steady_clock::now() - started;
  CHECK(enqueue_time < 200ms);  // 1000 pushes; no network wait among them
  // Wait for the exporter to fail what it took, then stop it.
  for (int i = 0; i < 200 && exporter.stats().dropped_export_failed == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  const auto stop_started = std::chrono::steady_clock::now();
  exporter.Stop();
  CHECK(std::chrono::steady_clock::now() - stop_started < 2s);  // one timeout at most
  const auto stats = exporter.stats();
  CHECK(stats.exported == 0);
  CHECK(stats.dropped_export_failed > 0);
  CHECK(stats.dropped_queue_full > 0);
  // Every span is accounted for exactly once.
  CHECK(stats.dropped_export_failed + stats.dropped_queue_full + stats.dropped_stopped == 1000);
  CHECK_FALSE(exporter.Enqueue(MakeSpan("late")));
  CHECK(exporter.stats().dropped_stopped == stats.dropped_stopped + 1);
}

TEST_CASE("exporter: a slow collector times out; the queue stays bounded and chat never waits",
          "[tracing]") {
  OtlpReceiver slow(OtlpReceiver::Options{5s, 200});
  OtlpExporter exporter({slow.url(), {{"service.name", "infrachatd"}}, 50, 10, 10ms, 300ms});
  const auto started = std::chrono::steady_clock::now();
  std::uint64_t refused = 0;
  for (int i = 0; i < 500; ++i) refused += exporter.Enqueue(MakeSpan("s")) ? 0 : 1;
  CHECK(std::chrono::steady_clock::now() - started < 200ms);
  CHECK(refused >= 440);  // 500 - (50 queued + a batch of 10 taken)
  // The first request waits for the receiver and times out: its batch is dropped.
  for (int i = 0; i < 300 && exporter.stats().dropped_export_failed == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  const auto stats = exporter.stats();
  CHECK(stats.dropped_export_failed >= 10);
  CHECK(stats.dropped_queue_full == refused);
  CHECK(stats.exported == 0);
  CHECK(slow.Requests().size() >= 1);  // it did reach the receiver
  exporter.Stop();
}

TEST_CASE("exporter: a collector answering an error drops the batch", "[tracing]") {
  OtlpReceiver failing(OtlpReceiver::Options{0ms, 503});
  OtlpExporter exporter({failing.url(), {}, 100, 10, 10ms, 1000ms});
  for (int i = 0; i < 5; ++i) exporter.Enqueue(MakeSpan("s"));
  for (int i = 0; i < 300 && exporter.stats().dropped_export_failed < 5; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  exporter.Stop();
  CHECK(exporter.stats().dropped_export_failed == 5);
  CHECK(exporter.stats().exported == 0);
}

TEST_CASE("spans end once and reach the collector through the process tracer", "[tracing]") {
  OtlpReceiver receiver;
  {
    TracingOn on(receiver.url(), 1.0);
    SpanContext root{NewTraceIdHex(), 0, true};
    Span span = StartSpan("gateway send", SpanKind::kServer, root);
    REQUIRE(span.recording());
    span.SetAttribute("infrachat.deliveries", std::uint64_t{3});
    Span copy = span;  // a callback's copy: the first End counts
    span.End();
    copy.End();
  }  // StopTracing flushes
  const auto spans = receiver.Spans();
  REQUIRE(spans.size() == 1);
  CHECK(spans[0]["name"] == "gateway send");
  CHECK_FALSE(spans[0].contains("parentSpanId"));  // a root: no parent span id
  CHECK(OtlpAttribute(spans[0]["attributes"], "infrachat.deliveries") == "3");
  CHECK(spans[0]["resource"]["service.name"] == "infrachatd");
}

}  // namespace
}  // namespace infrachat
