// End-to-end test support: a real `infrachatd` child process, the `infrachat` binary, database
// outages, and small helpers shared by test/e2e/*. Other programs run with ChildProcess
// (child_process.h).
//
// Everything here runs real processes against the private PostgreSQL cluster that CTest starts
// (fixture `pg`, INFRACHAT_TEST_PG). Nothing sleeps as synchronization: waits poll a condition
// (ready file, waitpid, history) against a deadline.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "child_process.h"
#include "infrachat/client/chat_stream.h"
#include "infrachat/client/client.h"
#include "test_db.h"

namespace infrachat::testing {

// ---------------------------------------------------------------------------------------------
// infrachatd
// ---------------------------------------------------------------------------------------------

// One `infrachatd --config config/all-in-one.yaml` child process on `db`, listening on
// 127.0.0.1 with a port chosen by the kernel (the first start; restarts keep that port so that
// clients reconnect to the same address).
//
// Always passed: INFRACHAT_DATABASE_URL = db.url() (other INFRACHAT_* variables of the test's
// environment are not inherited), `--set grpc.listen_address=...`, fast argon2 limits
// (ops 1, 8 KiB: libsodium's minimum), a ready
// file in a private temp dir, then the caller's `overrides` ("key=value", applied last so they
// win). stdout and stderr go to a log file in the temp dir; its tail is printed when a Catch2
// assertion fails while the daemon exists, and is part of the exception when start-up fails.
//
// The child gets SIGKILL if the thread that started it exits (PR_SET_PDEATHSIG), so a crashed
// test leaves no daemon behind. Not thread-safe: drive one DaemonProcess from one thread.
// What a failing assertion shows: while a FailureContext lives, the first failed assertion of
// the running test case calls `describe` (a process's log tail, say) and its text is printed
// after the reporter's messages. Thread-safe; `describe` must stay callable while registered.
class FailureContext {
 public:
  explicit FailureContext(std::function<std::string()> describe);
  ~FailureContext();
  FailureContext(const FailureContext&) = delete;
  FailureContext& operator=(const FailureContext&) = delete;
};

class DaemonProcess {
 public:
  // Starts the daemon and waits (at most `ready_timeout`) until it serves. Throws
  // std::runtime_error, with the log tail, when it exits or does not get ready in time.
  // `db` must outlive the DaemonProcess.
  explicit DaemonProcess(const TestDatabase& db, std::vector<std::string> overrides = {},
                         std::chrono::milliseconds ready_timeout = std::chrono::seconds(20));
  // The same on any database (an HA one from scripts/run-ha-db.sh, say): `database_url` is
  // INFRACHAT_DATABASE_URL.
  DaemonProcess(std::string database_url, std::vector<std::string> overrides,
                std::chrono::milliseconds ready_timeout = std::chrono::seconds(20));
  // SIGKILLs a still running daemon and removes the temp dir.
  ~DaemonProcess();

  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // host:port from the ready file.
  const std::string& address() const { return address_; }
  // The internal listener's host:port (grpc.internal_listen_address), empty without one.
  const std::string& internal_address() const { return internal_address_; }
  // The Prometheus /metrics listener's host:port (metrics.listen_address), empty without one.
  const std::string& metrics_address() const { return metrics_address_; }
  pid_t pid() const { return pid_; }
  // Whether the child has not been reaped yet (reaps it if it exited meanwhile).
  bool running();

  // Sends SIGTERM without waiting (for tests that act while the daemon drains).
  void SignalTerminate();
  // Waits at most `timeout` for the child to exit. Returns its exit status (0-255), 128+signal
  // when a signal killed it, or nullopt on timeout (the child keeps running).
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // SIGTERM, then waits; returns the exit status as Wait() does. On timeout the child is
  // SIGKILLed and -1 is returned.
  int Terminate(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // SIGKILL and reap.
  void Kill9();
  // Stops a running daemon (SIGTERM, or SIGKILL if `kill9`), then starts it again on the same
  // database, port and overrides.
  void Restart(bool kill9 = false);

  const std::string& log_path() const { return log_path_; }
  // The last `lines` lines of the log.
  std::string LogTail(std::size_t lines = 60) const;

 private:
  void Start();

  std::string database_url_;
  std::vector<std::string> overrides_;
  std::chrono::milliseconds ready_timeout_;
  std::string dir_;
  std::string log_path_;
  std::string ready_path_;
  std::string listen_address_ = "127.0.0.1:0";
  std::string address_;
  std::string internal_address_;
  std::string metrics_address_;
  pid_t pid_ = -1;
  std::unique_ptr<FailureContext> failure_context_;  // its log tail, at a failed assertion
};

// ---------------------------------------------------------------------------------------------
// The `infrachat` binary
// ---------------------------------------------------------------------------------------------

// Runs `infrachat args...` with `env` added to the environment (INFRACHAT_* variables of the
// test's environment are not inherited; NO_COLOR is set), stdin from `stdin_text` (empty: an
// empty file, so there is never a terminal to prompt on). Kills it after `timeout`.
CliResult RunCli(const std::vector<std::string>& args,
                 const std::map<std::string, std::string>& env = {},
                 std::chrono::milliseconds timeout = std::chrono::seconds(30),
                 const std::string& stdin_text = {});

// ---------------------------------------------------------------------------------------------
// Database outages
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------------

// The password every test user gets.
inline constexpr const char* kTestPassword = "correct horse battery";

// A Client for `address` with `username` registered (and so logged in). Throws on failure.
std::shared_ptr<client::Client> RegisterUser(const std::string& address,
                                             const std::string& username,
                                             client::ClientOptions options = {});

// Reads frames until `pred` accepts one or `timeout` passes; frames before it are appended to
// `skipped` when given. Returns the accepted frame.
std::optional<client::v1::ServerFrame> NextMatching(
    client::ChatStream& stream, const std::function<bool(const client::v1::ServerFrame&)>& pred,
    std::chrono::milliseconds timeout, std::vector<client::v1::ServerFrame>* skipped = nullptr);

// Subscribes and waits for the Subscribed frame of `channel`; returns its head_seq. Throws when
// the server answers with an Error or nothing comes in time.
std::uint64_t SubscribeAndWait(client::ChatStream& stream, const std::string& channel,
                               std::optional<std::uint64_t> after_seq = {},
                               std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Sends with `client_msg_id` and waits for its SendAck or Error (frames of other kinds, and acks
// or errors of other ids, are dropped). nullopt on timeout.
std::optional<client::v1::ServerFrame> SendAndWait(
    client::ChatStream& stream, const std::string& channel, const std::string& client_msg_id,
    const std::string& body, std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Collects Message frames of `channel` until one with seq >= `until_seq` arrived or `timeout`
// passed. Other frames are ignored, except Unsubscribed/Error of that channel, which stop the
// collection early (they are appended to `stopped_by` when given).
std::vector<client::v1::ChatMessage> CollectMessages(client::ChatStream& stream,
                                                     const std::string& channel,
                                                     std::uint64_t until_seq,
                                                     std::chrono::milliseconds timeout,
                                                     client::v1::ServerFrame* stopped_by = nullptr);

// The whole history of `channel` (pages of 1000), oldest first. Throws on error.
std::vector<client::v1::ChatMessage> FullHistory(client::Client& client,
                                                 const std::string& channel);

// The events of a log.format=json log (DaemonProcess::log_path()) whose msg is `msg` and whose
// fields equal those of `where` (strings), in log order. Lines that are not JSON objects (the
// harness's own markers) are skipped.
std::vector<nlohmann::json> JsonLogEvents(const std::string& log_path, const std::string& msg,
                                          const std::map<std::string, std::string>& where = {});

// Polls `condition` every 20 ms until it holds or `timeout` passes; returns its last value.
bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// The seqs of `messages`, in order.
std::vector<std::uint64_t> Seqs(const std::vector<client::v1::ChatMessage>& messages);
// first, first + 1, ..., last (empty when last < first).
std::vector<std::uint64_t> Range(std::uint64_t first, std::uint64_t last);

}  // namespace infrachat::testing
