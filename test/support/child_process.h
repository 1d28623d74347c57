// Child processes for end-to-end tests: the fork/exec/wait primitives that DaemonProcess and
// RunCli are built on, and ChildProcess, any program run with its stdout and stderr in files of a
// private temp dir (the benchmark smoke tests run infrachat-bench and infrachat-ceiling with it).
//
// Between fork and exec only async-signal-safe calls are made (the test process has gRPC threads).
// Every child gets SIGKILL if the thread that started it exits (PR_SET_PDEATHSIG), so a crashed
// test leaves nothing running. Nothing sleeps as synchronization: waits poll against a deadline.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace infrachat::testing {

// What a child printed and how it ended.
struct CliResult {
  int exit_code = -1;  // -1: killed after the timeout
  std::string out;
  std::string err;
  // stdout parsed as one JSON object per non-empty line; throws if a line is not JSON.
  std::vector<nlohmann::json> JsonLines() const;
  // "exit N, stdout: ..., stderr: ..." for failure messages.
  std::string Describe() const;
};

// A new directory /tmp/<prefix>-XXXXXX. Throws std::runtime_error on failure.
std::string MakeTempDir(const std::string& prefix);
// The content of `path`; empty when it cannot be read.
std::string ReadFile(const std::string& path);
// The last `lines` lines of `text` (all of it when it has fewer).
std::string LastLines(const std::string& text, std::size_t lines);
// open(path, flags | O_CLOEXEC, mode); throws std::runtime_error naming the path on failure.
int OpenOrThrow(const std::string& path, int flags, mode_t mode = 0600);
// The environment of a child: the test's without INFRACHAT_* (hermetic), plus `extra`, which wins.
std::vector<std::string> ChildEnvironment(const std::map<std::string, std::string>& extra);
// fork + execve of `argv` (argv[0] is a path) with `env` and stdin/stdout/stderr on the given
// descriptors (the caller keeps and closes them). Throws std::runtime_error when fork fails.
pid_t Spawn(std::vector<std::string> argv, std::vector<std::string> env, int in_fd, int out_fd,
            int err_fd);
// Waits at most `timeout` for child `pid`: its exit status (0-255), 128+signal when a signal
// killed it, -1 when it is not our child (any more); nullopt when it still runs.
std::optional<int> WaitPid(pid_t pid, std::chrono::milliseconds timeout);

// One program run as a child, stdin from /dev/null, stdout and stderr in files of a private temp
// dir, with ChildEnvironment({}). Not thread-safe: drive it from one thread. Lifetime: the
// destructor SIGKILLs a child that still runs, reaps it and removes the temp dir.
class ChildProcess {
 public:
  // Starts `argv` (argv[0] is a path; "{dir}" in an argument is replaced by the temp dir, which is
  // named /tmp/<temp_prefix>-XXXXXX). Throws std::runtime_error when it cannot start.
  explicit ChildProcess(std::vector<std::string> argv, const std::string& temp_prefix = "child");
  ~ChildProcess();

  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  const std::string& dir() const { return dir_; }
  // What the child wrote so far.
  std::string out() const { return ReadFile(out_path()); }
  std::string err() const { return ReadFile(err_path()); }

  // Sends `sig` unless the child has been reaped.
  void Signal(int sig);
  // The exit status (0-255, or 128+signal), or nullopt if still running after `timeout`. Once
  // reaped, returns that status again.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // Waits for `path` to appear (the child renames it into place complete) and returns its
  // content. Throws with the child's stderr when it exits first or nothing comes in time.
  std::string WaitForFile(const std::string& path, std::chrono::milliseconds timeout);
  // Runs to completion (SIGKILL after `timeout`: exit_code -1) and collects what it printed.
  CliResult Finish(std::chrono::milliseconds timeout);

 private:
  std::string out_path() const { return dir_ + "/stdout"; }
  std::string err_path() const { return dir_ + "/stderr"; }

  std::string name_;  // argv[0], for messages
  std::string dir_;
  pid_t pid_ = -1;
  std::optional<int> exit_;
};

}  // namespace infrachat::testing
