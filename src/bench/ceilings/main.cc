// infrachat-ceiling: the limits InfraChat's benchmark figures are compared against, measured on
// the same machine in the same run (scripts/bench.sh prints each InfraChat figure as a ratio to
// its ceiling).
//
//   infrachat-ceiling grpc-relay [--listen 127.0.0.1:0] [--ready-file PATH] [--threads N]
//                                [--shared-frames]
//       raw gRPC: the ChatService with no logic (relay_server.h), driven by infrachat-bench --raw
//   infrachat-ceiling pg-insert --url URL [--connections 1] [--batch 100] [--body-bytes 64]
//                               [--duration 5] [--warmup 1] [--table-prefix ceiling]
//       raw PostgreSQL: durable inserts of message rows (pg_insert.h)
//
// Each subcommand prints its report as one JSON line on stdout and as a table on stderr, and
// exits non-zero with a message on stderr on bad flags (CLI11's exit codes, 2 for values CLI11
// does not check) or failures (1).
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>

#include "bench/common/report.h"
#include "infrachat/core/process_setup.h"
#include "pg_insert.h"
#include "relay_server.h"

namespace infrachat::bench {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct RelayFlags {
  std::string listen = "127.0.0.1:0";
  std::string ready_file;
  int threads = 0;
  bool shared_frames = false;
};

// Readers poll for the file: they must never see it half written, hence a temp file + rename.
void WriteReadyFile(const std::string& path, const std::string& address) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << address << "\n";
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + path);
  }
}

// gRPC 1.51's callback API has no setting for its thread count (infrachatd does not set one
// either), so --threads limits what those threads can use instead: the process is pinned to its
// first N allowed CPUs, which gives the server a fixed share of the machine and leaves the rest
// to the benchmark client.
void PinToCpus(int n) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    throw std::runtime_error("sched_getaffinity failed");
  }
  if (CPU_COUNT(&allowed) < n) {
    throw std::runtime_error("--threads " + std::to_string(n) + " but only " +
                             std::to_string(CPU_COUNT(&allowed)) + " CPUs are available");
  }
  cpu_set_t pinned;
  CPU_ZERO(&pinned);
  int taken = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE && taken < n; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) {
      CPU_SET(cpu, &pinned);
      ++taken;
    }
  }
  if (::sched_setaffinity(0, sizeof(pinned), &pinned) != 0) {
    throw std::runtime_error("sched_setaffinity failed");
  }
}

// gRPC takes a port above 65535 modulo 65536 and binds somewhere else: refuse it here.
bool ValidListen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  const std::string port = listen.substr(colon + 1);
  if (port.empty() || port.size() > 5) return false;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
  }
  return std::stoi(port) <= 65535;
}

int RunRelay(const RelayFlags& flags) {
  if (!ValidListen(flags.listen)) {
    std::cerr << "infrachat-ceiling grpc-relay: --listen must be host:port with a port of "
                 "0-65535, not '"
              << flags.listen << "'\n";
    return kExitUsage;
  }
  // Blocked before gRPC starts its threads, so they inherit the mask and only sigwait below
  // receives the signals.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  if (flags.threads > 0) PinToCpus(flags.threads);
  // Every client connection is a descriptor; infrachatd raises its soft limit to the hard one
  // too, so both servers can hold the same number of connections.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  RelayOptions options;
  options.listen = flags.listen;
  options.shared_frames = flags.shared_frames;
  RelayServer server(options);
  const auto started = std::chrono::steady_clock::now();
  if (!flags.ready_file.empty()) WriteReadyFile(flags.ready_file, server.address());
  std::fprintf(stdout, "%s\n", server.address().c_str());
  std::fflush(stdout);
  std::cerr << "infrachat-ceiling grpc-relay: serving on " << server.address()
            << " (SIGTERM or SIGINT stops)" << std::endl;

  int signal = 0;
  while (sigwait(&stop_signals, &signal) != 0) {
  }
  const double serving_s = SecondsSince(started);
  server.Shutdown(std::chrono::milliseconds(500));
  // A stale file would point the next reader at a dead address.
  if (!flags.ready_file.empty()) std::remove(flags.ready_file.c_str());

  const RelayCounters& c = server.counters();
  ScenarioReport report;
  report.scenario = "ceiling-grpc-relay";
  report.params = {
      {"listen", flags.listen}, {"threads", flags.threads}, {"shared_frames", flags.shared_frames}};
  // Averaged over the whole serving time, idle moments included: a sanity check of what the
  // client reports, not a figure to compare.
  report.duration_s = serving_s;
  report.count = c.deliveries.load();
  report.rate_unit = "deliveries/s";
  report.extra = {
      {"address", server.address()},       {"streams", c.streams.load()},
      {"frames_in", c.frames_in.load()},   {"sends", c.sends.load()},
      {"deliveries", c.deliveries.load()}, {"stopped_by", signal == SIGINT ? "SIGINT" : "SIGTERM"}};
  PrintJsonLine(report);
  std::cerr << FormatTable({report});
  return 0;
}

int RunPg(const PgInsertOptions& options) {
  if (auto problem = ValidatePgInsertOptions(options); !problem.empty()) {
    std::cerr << "infrachat-ceiling pg-insert: " << problem << "\n";
    return kExitUsage;
  }
  const ScenarioReport report = RunPgInsert(options);
  PrintJsonLine(report);
  std::cerr << FormatTable({report});
  if (report.extra.value("fsync", "") != "on" ||
      report.extra.value("synchronous_commit", "") != "on") {
    std::cerr << "infrachat-ceiling pg-insert: WARNING: fsync or synchronous_commit is not on; "
                 "these commits are not durable and the figure is not a durability ceiling\n";
  }
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{
      "infrachat-ceiling: raw gRPC and raw PostgreSQL ceilings for InfraChat's benchmarks"};
  app.require_subcommand(1);

  RelayFlags relay;
  CLI::App* relay_cmd = app.add_subcommand(
      "grpc-relay",
      "Serve infrachat.v1.ChatService with no logic (no auth, storage or limits) until SIGTERM");
  relay_cmd->add_option("--listen", relay.listen, "host:port to listen on; port 0 picks one")
      ->capture_default_str();
  relay_cmd->add_option("--ready-file", relay.ready_file,
                        "Once serving, write \"host:port\\n\" here (atomically)");
  relay_cmd
      ->add_option("--threads", relay.threads,
                   "Pin the server to its first N CPUs (0: all, as infrachatd runs)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  relay_cmd->add_flag("--shared-frames", relay.shared_frames,
                      "Encode each message once for all its subscribers and send FrameBatch to "
                      "clients that ask (what infrachatd does); default: one encoding and one "
                      "write per delivery");

  PgInsertOptions pg;
  CLI::App* pg_cmd = app.add_subcommand(
      "pg-insert", "Insert message rows in durable batches as fast as PostgreSQL allows");
  pg_cmd->add_option("--url", pg.url, "libpq connection string or URI")->required();
  pg_cmd->add_option("--connections", pg.connections, "Connections, one thread each")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  pg_cmd->add_option("--batch", pg.batch, "Rows per transaction")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  pg_cmd->add_option("--body-bytes", pg.body_bytes, "Bytes of text per message body")
      ->check(CLI::Range(0, 1024 * 1024))
      ->capture_default_str();
  pg_cmd->add_option("--duration", pg.duration_s, "Seconds measured")->capture_default_str();
  pg_cmd->add_option("--warmup", pg.warmup_s, "Seconds before measuring, not counted")
      ->capture_default_str();
  pg_cmd->add_option("--table-prefix", pg.table_prefix, "The table is <prefix>_messages")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  const char* name = relay_cmd->parsed() ? "grpc-relay" : "pg-insert";
  try {
    if (relay_cmd->parsed()) return RunRelay(relay);
    return RunPg(pg);
  } catch (const std::exception& e) {
    std::cerr << "infrachat-ceiling " << name << ": " << e.what() << "\n";
    return kExitFailure;
  }
}

}  // namespace
}  // namespace infrachat::bench

int main(int argc, char** argv) {
  infrachat::DisableMutexDeadlockDetection();  // as in infrachatd, so the ceiling is comparable
  return infrachat::bench::Main(argc, argv);
}
