#include "child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace infrachat::testing {

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

int DecodeStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

std::string MakeTempDir(const std::string& prefix) {
  std::string pattern = "/tmp/" + prefix + "-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
  }
  return pattern;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string LastLines(const std::string& text, std::size_t lines) {
  std::size_t pos = text.size();
  std::size_t seen = 0;
  while (pos > 0) {
    const std::size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text;
    if (nl + 1 < text.size() && ++seen > lines) return text.substr(nl + 1);
    pos = nl;
  }
  return text;
}

int OpenOrThrow(const std::string& path, int flags, mode_t mode) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) {
    throw std::runtime_error("cannot open " + path + ": " + std::string(std::strerror(errno)));
  }
  return fd;
}

std::vector<std::string> ChildEnvironment(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry(*e);
    if (entry.rfind("INFRACHAT_", 0) == 0) continue;
    const std::string key = entry.substr(0, entry.find('='));
    if (extra.count(key) > 0) continue;
    env.push_back(entry);
  }
  for (const auto& [key, value] : extra) env.push_back(key + "=" + value);
  return env;
}

pid_t Spawn(std::vector<std::string> argv, std::vector<std::string> env, int in_fd, int out_fd,
            int err_fd) {
  // Everything the child needs is prepared before fork.
  std::vector<char*> argv_p = Pointers(argv);
  std::vector<char*> env_p = Pointers(env);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    ::dup2(in_fd, STDIN_FILENO);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    // Dies with the thread that started it, so a crashed test leaves nothing running.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(argv_p[0], argv_p.data(), env_p.data());
    static const char kMsg[] = "exec failed\n";
    (void)!::write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
    ::_exit(127);
  }
  return pid;
}

std::optional<int> WaitPid(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return DecodeStatus(status);
    if (r < 0 && errno != EINTR) return -1;  // not our child any more
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(5ms);  // polling a condition (child exit) against a deadline
  }
}

std::vector<nlohmann::json> CliResult::JsonLines() const {
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

std::string CliResult::Describe() const {
  return "exit " + std::to_string(exit_code) + "\nstdout:\n" + out + "stderr:\n" + err;
}

// ---- ChildProcess -------------------------------------------------------------------------------

ChildProcess::ChildProcess(std::vector<std::string> argv, const std::string& temp_prefix) {
  if (argv.empty()) throw std::invalid_argument("ChildProcess: empty argv");
  name_ = std::filesystem::path(argv[0]).filename().string();
  dir_ = MakeTempDir(temp_prefix);
  for (std::string& a : argv) {
    if (const auto at = a.find("{dir}"); at != std::string::npos) a.replace(at, 5, dir_);
  }
  int fds[3] = {-1, -1, -1};
  try {
    fds[0] = OpenOrThrow("/dev/null", O_RDONLY);
    fds[1] = OpenOrThrow(out_path(), O_WRONLY | O_CREAT | O_TRUNC);
    fds[2] = OpenOrThrow(err_path(), O_WRONLY | O_CREAT | O_TRUNC);
    pid_ = Spawn(std::move(argv), ChildEnvironment({}), fds[0], fds[1], fds[2]);
  } catch (...) {
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
    throw;
  }
  for (int fd : fds) ::close(fd);
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    Wait(10s);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void ChildProcess::Signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

std::optional<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return exit_;
  auto status = WaitPid(pid_, timeout);
  if (status) {
    pid_ = -1;
    exit_ = status;
  }
  return status;
}

std::string ChildProcess::WaitForFile(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (std::filesystem::exists(path)) return ReadFile(path);
    if (auto status = Wait(0ms)) {
      throw std::runtime_error(name_ + " exited with " + std::to_string(*status) +
                               " before writing " + path + "; stderr:\n" + err());
    }
    if (Clock::now() >= deadline) {
      throw std::runtime_error(name_ + " did not write " + path + " in time; stderr:\n" + err());
    }
    std::this_thread::sleep_for(10ms);  // polling for the file against a deadline
  }
}

CliResult ChildProcess::Finish(std::chrono::milliseconds timeout) {
  CliResult result;
  if (auto status = Wait(timeout)) {
    result.exit_code = *status;
  } else {
    Signal(SIGKILL);
    Wait(10s);
    result.exit_code = -1;
  }
  result.out = out();
  result.err = err();
  return result;
}

}  // namespace infrachat::testing
