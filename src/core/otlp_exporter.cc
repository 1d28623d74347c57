#include "infrachat/core/otlp_exporter.h"

#include <curl/curl.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>

#include <mutex>
#include <nlohmann/json.hpp>

#include "infrachat/core/logging.h"
#include "infrachat/core/metrics.h"

namespace infrachat {

namespace {

nlohmann::json StringAttribute(const std::string& key, const std::string& value) {
  return {{"key", key}, {"value", {{"stringValue", value}}}};
}

nlohmann::json AttributeJson(const SpanData::Attribute& attribute) {
  nlohmann::json value = std::visit(
      [](const auto& v) -> nlohmann::json {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return {{"stringValue", v}};
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          return {{"intValue", std::to_string(v)}};  // int64 is a string in protobuf JSON
        } else if constexpr (std::is_same_v<T, bool>) {
          return {{"boolValue", v}};
        } else {
          return {{"doubleValue", v}};
        }
      },
      attribute.value);
  return {{"key", attribute.key}, {"value", std::move(value)}};
}

nlohmann::json SpanJson(const SpanData& span) {
  nlohmann::json out = {
      {"traceId", span.context.TraceIdHex()},
      {"spanId", span.context.SpanIdHex()},
      {"name", span.name},
      {"kind", static_cast<int>(span.kind)},
      {"startTimeUnixNano", std::to_string(span.start_unix_ns)},
      {"endTimeUnixNano", std::to_string(span.end_unix_ns)},
  };
  if (span.parent_span_id != 0) out["parentSpanId"] = SpanIdHex(span.parent_span_id);
  nlohmann::json attributes = nlohmann::json::array();
  for (const auto& attribute : span.attributes) attributes.push_back(AttributeJson(attribute));
  out["attributes"] = std::move(attributes);
  if (!span.events.empty()) {
    nlohmann::json events = nlohmann::json::array();
    for (const auto& event : span.events) {
      events.push_back(
          {{"timeUnixNano", std::to_string(event.time_unix_ns)}, {"name", event.name}});
    }
    out["events"] = std::move(events);
  }
  // STATUS_CODE_UNSET = 0, STATUS_CODE_ERROR = 2: a span that did not fail stays unset, as the
  // OpenTelemetry spec asks of instrumentation.
  if (span.error) out["status"] = {{"code", 2}, {"message", span.status_message}};
  return out;
}

std::size_t Discard(char* /*data*/, std::size_t size, std::size_t count, void* /*user*/) {
  return size * count;
}

prometheus::Counter* DroppedCounter(const char* reason) {
  return &prometheus::BuildCounter()
              .Name("infrachat_tracing_spans_dropped_total")
              .Help(
                  "Finished spans not exported, by reason: queue_full, export_failed (the "
                  "collector was slow, down or answered an error), stopped")
              .Register(MetricsRegistry())
              .Add({{"reason", reason}});
}

}  // namespace

std::string EncodeOtlpJson(const std::vector<std::shared_ptr<const SpanData>>& spans,
                           const std::vector<std::pair<std::string, std::string>>& resource) {
  nlohmann::json attributes = nlohmann::json::array();
  for (const auto& [key, value] : resource) attributes.push_back(StringAttribute(key, value));
  nlohmann::json span_list = nlohmann::json::array();
  for (const auto& span : spans) span_list.push_back(SpanJson(*span));
  const nlohmann::json request = {
      {"resourceSpans",
       {{{"resource", {{"attributes", std::move(attributes)}}},
         {"scopeSpans",
          {{{"scope", {{"name", "infrachat"}}}, {"spans", std::move(span_list)}}}}}}}};
  return request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

OtlpExporter::OtlpExporter(OtlpExporterOptions options)
    : options_(std::move(options)),
      metrics_{&prometheus::BuildCounter()
                    .Name("infrachat_tracing_spans_exported_total")
                    .Help("Finished spans the OTLP collector accepted")
                    .Register(MetricsRegistry())
                    .Add({}),
               DroppedCounter("queue_full"), DroppedCounter("export_failed"),
               DroppedCounter("stopped")} {
  static std::once_flag curl_init;
  std::call_once(curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  thread_ = std::thread([this] { Run(); });
}

OtlpExporter::~OtlpExporter() { Stop(); }

bool OtlpExporter::Enqueue(std::shared_ptr<const SpanData> span) {
  std::unique_lock lock(mu_);
  if (stopping_) {
    ++stats_.dropped_stopped;
    lock.unlock();
    metrics_.stopped->Increment();
    return false;
  }
  if (queue_.size() >= options_.max_queue_spans) {
    ++stats_.dropped_queue_full;
    lock.unlock();
    metrics_.queue_full->Increment();
    return false;
  }
  queue_.push_back(std::move(span));
  // The thread waits for the first span, then for a full batch or the interval.
  const bool wake = queue_.size() == 1 || queue_.size() == options_.max_batch_spans;
  lock.unlock();
  if (wake) cv_.notify_one();
  return true;
}

void OtlpExporter::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

OtlpExporter::Stats OtlpExporter::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void OtlpExporter::Run() {
  CURL* curl = curl_easy_init();
  curl_ = curl;
  auto log = ModuleLogger("core");
  bool failing = false;
  std::optional<std::chrono::steady_clock::time_point> flush_until;
  for (;;) {
    Batch batch;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (!stopping_ && queue_.size() < options_.max_batch_spans) {
        cv_.wait_for(lock, options_.interval,
                     [&] { return stopping_ || queue_.size() >= options_.max_batch_spans; });
      }
      if (stopping_ && !flush_until) {
        flush_until = std::chrono::steady_clock::now() + options_.timeout;
      }
      if (queue_.empty()) break;  // stopping with nothing left
      const std::size_t n = std::min(queue_.size(), options_.max_batch_spans);
      batch.assign(std::make_move_iterator(queue_.begin()),
                   std::make_move_iterator(queue_.begin() + static_cast<std::ptrdiff_t>(n)));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    }
    const bool ok = curl != nullptr && Send(batch);
    {
      std::lock_guard lock(mu_);
      ++stats_.requests;
      (ok ? stats_.exported : stats_.dropped_export_failed) += batch.size();
    }
    (ok ? metrics_.exported : metrics_.export_failed)->Increment(static_cast<double>(batch.size()));
    // One line when exports start failing and one when they work again: a collector that is
    // down must not fill the log.
    if (ok == failing) {
      failing = !ok;
      if (failing) {
        LogEvent(log, spdlog::level::warn, "trace export failing",
                 {{"endpoint", options_.endpoint}, {"dropped_spans", batch.size()}});
      } else {
        LogEvent(log, spdlog::level::info, "trace export recovered",
                 {{"endpoint", options_.endpoint}});
      }
    }
    // Stopping: what is left goes while the collector answers, for one timeout at most.
    if (flush_until && (!ok || std::chrono::steady_clock::now() >= *flush_until)) break;
  }
  std::size_t left = 0;
  {
    std::lock_guard lock(mu_);
    left = queue_.size();
    queue_.clear();
    stats_.dropped_stopped += left;
  }
  metrics_.stopped->Increment(static_cast<double>(left));
  if (curl != nullptr) curl_easy_cleanup(curl);
  curl_ = nullptr;
}

bool OtlpExporter::Send(const Batch& batch) {
  CURL* curl = static_cast<CURL*>(curl_);
  const std::string body = EncodeOtlpJson(batch, options_.resource);
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Content-Type: application/json");
  // Without this, curl asks "Expect: 100-continue" for bodies over 1 KiB and waits up to a
  // second for an answer that a collector may never send.
  headers = curl_slist_append(headers, "Expect:");
  curl_easy_setopt(curl, CURLOPT_URL, options_.endpoint.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POST, 1L);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout.count()));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.timeout.count()));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for timeouts
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Discard);
  const CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
  curl_slist_free_all(headers);
  return rc == CURLE_OK && status >= 200 && status < 300;
}

}  // namespace infrachat
