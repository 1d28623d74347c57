// Test support for the metrics endpoint: a plain HTTP/1.0 GET (what Prometheus does to
// /metrics, and what a test does to Prometheus's own HTTP API), readers of the text
// exposition format, and a free loopback port (for a Prometheus, or a refused connection).
#pragma once

#include <set>
#include <string>

namespace infrachat::testing {

struct HttpResponse {
  int status = 0;  // 0 when the request failed (connect, timeout, malformed answer)
  std::string body;
};

// A loopback address ("127.0.0.1:port") nothing listens on right now: a port the kernel
// picked, bound and released (another program may still take it before the caller does).
// Throws std::runtime_error when no socket can be bound.
std::string UnusedLoopbackAddress();

// GET http://<address><target> ("127.0.0.1:9464", "/metrics"); 5 s receive timeout. IPv4 only.
HttpResponse HttpGet(const std::string& address, const std::string& target);

// The body of GET /metrics at `address`, "" when the request fails.
std::string Scrape(const std::string& address);

// The value of the sample whose line starts with `series` (the name and, when it has labels,
// exactly the labels as the exposition prints them), or -1 when there is none.
double Sample(const std::string& text, const std::string& series);

// The sum of the samples of `name` whose labels contain every `name="value"` of `matchers`
// (e.g. {"peer=\"a\"", "grpc_code=\"OK\""}); -1 when no sample matches.
double SampleSum(const std::string& text, const std::string& name,
                 const std::set<std::string>& matchers = {});

// The metric names of every sample line (histogram series as exposed: x_bucket, x_sum,
// x_count).
std::set<std::string> SampleNames(const std::string& text);

}  // namespace infrachat::testing
