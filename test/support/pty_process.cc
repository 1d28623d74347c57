#include "pty_process.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace infrachat::testing {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::chrono::milliseconds Left(Clock::time_point deadline) {
  return std::max(0ms,
                  std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
}

}  // namespace

PtyProcess::PtyProcess(const std::vector<std::string>& argv,
                       const std::map<std::string, std::string>& env, unsigned short columns,
                       unsigned short rows) {
  if (argv.empty()) throw std::invalid_argument("PtyProcess: empty argv");
  // Everything the child needs is built before the fork: after it, only exec.
  std::map<std::string, std::string> vars;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry(*e);
    const auto eq = entry.find('=');
    if (eq == std::string::npos || entry.rfind("INFRACHAT_", 0) == 0) continue;
    vars[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  vars["TERM"] = "xterm";
  for (const auto& [key, value] : env) vars[key] = value;
  std::vector<std::string> env_strings;
  for (const auto& [key, value] : vars) env_strings.push_back(key + "=" + value);
  std::vector<char*> c_env;
  for (auto& s : env_strings) c_env.push_back(s.data());
  c_env.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> c_argv;
  for (auto& s : args) c_argv.push_back(s.data());
  c_argv.push_back(nullptr);

  winsize size{};
  size.ws_col = columns;
  size.ws_row = rows;
  const pid_t parent = ::getpid();
  pid_ = ::forkpty(&master_, nullptr, nullptr, &size);
  if (pid_ < 0) throw std::runtime_error(std::string("forkpty: ") + std::strerror(errno));
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    ::execve(c_argv[0], c_argv.data(), c_env.data());
    ::_exit(127);
  }
}

PtyProcess::~PtyProcess() {
  if (pid_ > 0 && !exit_status_) {
    ::kill(pid_, SIGKILL);
    Reap(/*block=*/true);
  }
  if (master_ >= 0) ::close(master_);
}

bool PtyProcess::Type(const std::string& keys) {
  // The program echoes what is typed: a long paste fills the terminal's output buffer, and a
  // program blocked writing its echo stops reading its input. So output is collected while the
  // keys are written (non-blocking), as a terminal emulator does.
  const int flags = ::fcntl(master_, F_GETFL);
  ::fcntl(master_, F_SETFL, flags | O_NONBLOCK);
  const auto deadline = Clock::now() + 60s;
  std::size_t done = 0;
  bool ok = true;
  while (done < keys.size()) {
    if (Left(deadline).count() == 0) {
      ok = false;
      break;
    }
    pollfd fd{master_, POLLIN | POLLOUT, 0};
    const int ready = ::poll(&fd, 1, 100);
    if (ready < 0 && errno != EINTR) {
      ok = false;
      break;
    }
    if (ready <= 0) continue;
    if (fd.revents & POLLIN) {
      char buf[4096];
      const ssize_t n = ::read(master_, buf, sizeof buf);
      if (n > 0) output_.append(buf, static_cast<std::size_t>(n));
    }
    if (fd.revents & POLLOUT) {
      const ssize_t n =
          ::write(master_, keys.data() + done, std::min<std::size_t>(keys.size() - done, 512));
      if (n > 0) {
        done += static_cast<std::size_t>(n);
      } else if (n < 0 && errno != EINTR && errno != EAGAIN) {
        ok = false;
        break;
      }
    }
    if ((fd.revents & (POLLHUP | POLLERR)) && !(fd.revents & (POLLIN | POLLOUT))) {
      ok = false;
      break;
    }
  }
  ::fcntl(master_, F_SETFL, flags);
  return ok;
}

bool PtyProcess::Pump(std::chrono::milliseconds timeout) {
  pollfd fd{master_, POLLIN, 0};
  const int ready = ::poll(&fd, 1, static_cast<int>(timeout.count()));
  if (ready < 0) return errno == EINTR;
  if (ready == 0) return true;
  char buf[4096];
  const ssize_t n = ::read(master_, buf, sizeof buf);
  if (n > 0) {
    output_.append(buf, static_cast<std::size_t>(n));
    return true;
  }
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  return false;  // EIO (Linux) or EOF: every slave side is closed
}

std::optional<std::size_t> PtyProcess::WaitForText(const std::string& text, std::size_t from,
                                                   std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (auto at = output_.find(text, std::min(from, output_.size())); at != std::string::npos) {
      return at + text.size();
    }
    const auto left = Left(deadline);
    if (left.count() == 0) return std::nullopt;
    if (!Pump(std::min(left, 100ms))) {
      // Nothing more will come; one last look at what arrived.
      auto at = output_.find(text, std::min(from, output_.size()));
      return at == std::string::npos ? std::nullopt : std::optional(at + text.size());
    }
  }
}

void PtyProcess::Collect(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Left(deadline).count() > 0 && Pump(Left(deadline))) {
  }
}

bool PtyProcess::Reap(bool block) {
  if (exit_status_) return true;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (r < 0 && errno == EINTR) continue;
    if (r == pid_) {
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return true;
    }
    if (r < 0) {
      exit_status_ = -1;  // not our child any more
      return true;
    }
    return false;
  }
}

std::optional<int> PtyProcess::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  bool open = true;
  while (!Reap(/*block=*/false)) {
    const auto left = Left(deadline);
    if (left.count() == 0) return std::nullopt;
    if (open) {
      open = Pump(std::min(left, 50ms));
    } else {
      std::this_thread::sleep_for(5ms);  // polling for the child's exit against a deadline
    }
  }
  // What the child wrote just before exiting.
  while (open) {
    const std::size_t before = output_.size();
    open = Pump(0ms);
    if (output_.size() == before) break;
  }
  return exit_status_;
}

std::string PtyProcess::PlainOutput() const {
  std::string out;
  for (std::size_t i = 0; i < output_.size(); ++i) {
    const char c = output_[i];
    if (c == '\x1b') {
      if (i + 1 < output_.size() && output_[i + 1] == '[') {
        i += 2;
        while (i < output_.size() && !(output_[i] >= 0x40 && output_[i] <= 0x7e)) ++i;
      } else {
        ++i;  // a two-byte sequence
      }
      continue;
    }
    if (c == '\r' || c == '\a') continue;
    out.push_back(c);
  }
  return out;
}

}  // namespace infrachat::testing
