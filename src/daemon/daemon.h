// The infrachatd daemon: the explicit list of built-in modules and their lifecycle.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "infrachat/config/config.h"

namespace infrachat {

// Runs infrachatd with its command line:
//   infrachatd --config FILE [--set key.path=value ...] [--ready-file PATH]
//   infrachatd --check-config FILE [--set ...]
// Returns the process exit code: 0 after a clean shutdown (SIGTERM/SIGINT), 1 when start-up
// fails, 2 for usage or configuration errors. SIGINT and SIGTERM must be blocked in every thread
// before the call (main does it first thing); the daemon waits for them with sigwait.
int RunDaemon(int argc, char** argv);

class Daemon {
 public:
  explicit Daemon(DaemonConfig config);
  ~Daemon();  // stops whatever is still running

  // Starts the modules in dependency order and the gRPC server. Throws std::exception with a
  // message on failure, after stopping what had started.
  void Start();
  // The address the gRPC server listens at (host:port, with the real port when 0 was asked).
  const std::string& address() const { return address_; }
  // The internal listener's address (grpc.internal_listen_address), empty when there is none.
  const std::string& internal_address() const { return internal_address_; }
  // The Prometheus /metrics listener's host:port (metrics.listen_address), empty without one.
  const std::string& metrics_address() const { return metrics_address_; }
  // Drains streams, stops the server (waiting at most grpc.shutdown_grace_s), then stops the
  // modules in reverse order. Idempotent.
  void Shutdown();

 private:
  void StartInternalServer();
  void StartMetrics();
  void StartTraceExport();

  struct State;
  std::unique_ptr<State> state_;
  std::string address_;
  std::string internal_address_;
  std::string metrics_address_;
};

}  // namespace infrachat
