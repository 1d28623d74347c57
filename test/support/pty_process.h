// PtyProcess: a child process on a pseudo-terminal, for end-to-end tests of interactive programs
// (the `infrachat` terminal client) as a person at a terminal would drive them: what the test
// writes is typed, what the program prints is collected as raw terminal output.
//
// The output keeps the program's escape sequences (line editing, cursor moves); tests look for
// text that the program prints in one piece, e.g. a whole message line.
//
// Waits poll the terminal against a deadline; nothing sleeps. Not thread-safe: drive one
// PtyProcess from one thread. Lifetime: the destructor SIGKILLs a child that still runs and reaps
// it; the child also gets SIGKILL if the thread that started it exits (PR_SET_PDEATHSIG), so a
// crashed test leaves nothing behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace infrachat::testing {

class PtyProcess {
 public:
  // Starts `argv` (argv[0] is a path) on a new terminal of `columns` x `rows`, with the test's
  // environment minus INFRACHAT_* variables, plus TERM=xterm, plus `env` (which wins). Throws
  // std::runtime_error when the terminal or the process cannot be created.
  PtyProcess(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
             unsigned short columns = 200, unsigned short rows = 50);
  ~PtyProcess();

  PtyProcess(const PtyProcess&) = delete;
  PtyProcess& operator=(const PtyProcess&) = delete;

  // Types `keys` (use "\r" for Enter), collecting the program's output meanwhile (so a long
  // paste cannot deadlock on the program's echo). Returns false if the terminal is gone or the
  // program did not take the keys within 60 s.
  bool Type(const std::string& keys);

  // Collects output until `text` appears at or after output offset `from`, or `timeout` passes.
  // Returns the offset just after the match (for the next wait), or nullopt on timeout.
  std::optional<std::size_t> WaitForText(const std::string& text, std::size_t from,
                                         std::chrono::milliseconds timeout);

  // Collects output for `timeout` (the program blocks when its output is not read).
  void Collect(std::chrono::milliseconds timeout);

  // Waits at most `timeout` for the child to exit, collecting output meanwhile. Returns its exit
  // status (0-255), 128+signal when a signal killed it, or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);

  // Everything the program wrote so far, raw.
  const std::string& output() const { return output_; }
  // The output with escape sequences and carriage returns removed, for failure messages.
  std::string PlainOutput() const;
  pid_t pid() const { return pid_; }

 private:
  // Reads what the terminal has, waiting at most `timeout` for something. False once the
  // terminal has no writer left (the child and its children closed it).
  bool Pump(std::chrono::milliseconds timeout);
  bool Reap(bool block);

  int master_ = -1;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::string output_;
};

}  // namespace infrachat::testing
