// Catch2's listener interface is only in the header with this switch.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include "daemon_process.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <pqxx/pqxx>
#include <set>
#include <stdexcept>
#include <thread>

namespace infrachat::testing {

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- what a failing assertion shows: the logs of the processes the test runs -------------------

std::mutex g_context_mu;
std::map<const FailureContext*, std::function<std::string()>> g_contexts;

class FailureContextListener : public Catch::TestEventListenerBase {
 public:
  using TestEventListenerBase::TestEventListenerBase;

  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    TestEventListenerBase::testCaseStarting(info);
    logs_.clear();
    captured_ = false;
  }

  // The processes are gone by the end of the test case: take their logs at the first failure
  // (the interesting one), print them after the reporter's failure messages.
  bool assertionEnded(const Catch::AssertionStats& stats) override {
    if (!stats.assertionResult.isOk() && !captured_) {
      captured_ = true;
      std::lock_guard lock(g_context_mu);
      for (const auto& [context, describe] : g_contexts) logs_ += describe();
    }
    return TestEventListenerBase::assertionEnded(stats);
  }

  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    if (!logs_.empty()) {
      std::cout.flush();
      std::cerr << logs_ << std::flush;
    }
    TestEventListenerBase::testCaseEnded(stats);
  }

 private:
  bool captured_ = false;
  std::string logs_;
};

CATCH_REGISTER_LISTENER(FailureContextListener)

}  // namespace

FailureContext::FailureContext(std::function<std::string()> describe) {
  std::lock_guard lock(g_context_mu);
  g_contexts.emplace(this, std::move(describe));
}

FailureContext::~FailureContext() {
  std::lock_guard lock(g_context_mu);
  g_contexts.erase(this);
}

// ---- DaemonProcess ------------------------------------------------------------------------------

DaemonProcess::DaemonProcess(const TestDatabase& db, std::vector<std::string> overrides,
                             std::chrono::milliseconds ready_timeout)
    : DaemonProcess(db.url(), std::move(overrides), ready_timeout) {}

DaemonProcess::DaemonProcess(std::string database_url, std::vector<std::string> overrides,
                             std::chrono::milliseconds ready_timeout)
    : database_url_(std::move(database_url)),
      overrides_(std::move(overrides)),
      ready_timeout_(ready_timeout) {
  dir_ = MakeTempDir("infrachatd-e2e");
  log_path_ = dir_ + "/infrachatd.log";
  ready_path_ = dir_ + "/ready.json";
  failure_context_ = std::make_unique<FailureContext>([this] {
    return "---- infrachatd (pid " + std::to_string(pid_) + ", " + log_path_ +
           "), last lines at the first failure ----\n" + LogTail(80) +
           "---- end of infrachatd log ----\n";
  });
  try {
    Start();
  } catch (...) {
    Kill9();
    throw;
  }
}

DaemonProcess::~DaemonProcess() {
  failure_context_.reset();
  Kill9();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void DaemonProcess::Start() {
  ::unlink(ready_path_.c_str());
  std::vector<std::string> argv = {INFRACHATD_PATH,
                                   "--config",
                                   std::string(INFRACHAT_SOURCE_DIR) + "/config/all-in-one.yaml",
                                   "--ready-file",
                                   ready_path_,
                                   "--set",
                                   "grpc.listen_address=" + listen_address_,
                                   "--set",
                                   "auth.argon2_ops_limit=1",
                                   "--set",
                                   "auth.argon2_mem_limit_kib=8"};
  for (const std::string& o : overrides_) {
    argv.push_back("--set");
    argv.push_back(o);
  }
  if (!internal_address_.empty()) {
    // A restart keeps the internal port too, so that peers find it again.
    argv.push_back("--set");
    argv.push_back("grpc.internal_listen_address=" + internal_address_);
  }
  auto env = ChildEnvironment({{"INFRACHAT_DATABASE_URL", database_url_}});

  const int log_fd = OpenOrThrow(log_path_, O_WRONLY | O_CREAT | O_APPEND);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  {
    std::string banner = "==== test harness: starting infrachatd";
    for (std::size_t i = 1; i < argv.size(); ++i) banner += " " + argv[i];
    banner += "\n";
    (void)!::write(log_fd, banner.data(), banner.size());
  }
  try {
    pid_ = Spawn(argv, env, null_fd, log_fd, log_fd);
  } catch (...) {
    ::close(log_fd);
    ::close(null_fd);
    throw;
  }
  ::close(log_fd);
  ::close(null_fd);

  const auto deadline = Clock::now() + ready_timeout_;
  for (;;) {
    if (std::filesystem::exists(ready_path_)) {
      try {
        auto ready = nlohmann::json::parse(ReadFile(ready_path_));
        address_ = ready.at("address").get<std::string>();
        internal_address_ = ready.value("internal_address", std::string());
        metrics_address_ = ready.value("metrics_address", std::string());
        if (ready.at("pid").get<pid_t>() != pid_) {
          throw std::runtime_error("ready file names another pid");
        }
      } catch (const std::exception& e) {
        throw std::runtime_error(std::string("bad ready file: ") + e.what() + "\n" + LogTail());
      }
      listen_address_ = address_;  // restarts keep the port
      return;
    }
    if (auto status = WaitPid(pid_, 0ms)) {
      pid_ = -1;
      throw std::runtime_error("infrachatd exited with status " + std::to_string(*status) +
                               " before it was ready; log:\n" + LogTail());
    }
    if (Clock::now() >= deadline) {
      throw std::runtime_error("infrachatd not ready within " +
                               std::to_string(ready_timeout_.count()) + " ms; log:\n" + LogTail());
    }
    std::this_thread::sleep_for(10ms);  // polling for the ready file against a deadline
  }
}

bool DaemonProcess::running() {
  if (pid_ <= 0) return false;
  if (WaitPid(pid_, 0ms)) {
    pid_ = -1;
    return false;
  }
  return true;
}

void DaemonProcess::SignalTerminate() {
  if (pid_ > 0) ::kill(pid_, SIGTERM);
}

std::optional<int> DaemonProcess::Wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  auto status = WaitPid(pid_, timeout);
  if (status) pid_ = -1;
  return status;
}

int DaemonProcess::Terminate(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  SignalTerminate();
  if (auto status = Wait(timeout)) return *status;
  std::cerr << "infrachatd did not exit within " << timeout.count()
            << " ms after SIGTERM; killing it. Log:\n"
            << LogTail();
  Kill9();
  return -1;
}

void DaemonProcess::Kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  WaitPid(pid_, 10s);
  pid_ = -1;
}

void DaemonProcess::Restart(bool kill9) {
  if (kill9) {
    Kill9();
  } else if (pid_ > 0) {
    const int status = Terminate();
    if (status != 0) {
      throw std::runtime_error("infrachatd exited with " + std::to_string(status) +
                               " on SIGTERM before a restart; log:\n" + LogTail());
    }
  }
  Start();
}

std::string DaemonProcess::LogTail(std::size_t lines) const {
  return LastLines(ReadFile(log_path_), lines);
}

// ---- infrachat ----------------------------------------------------------------------------------

CliResult RunCli(const std::vector<std::string>& args,
                 const std::map<std::string, std::string>& env, std::chrono::milliseconds timeout,
                 const std::string& stdin_text) {
  const std::string dir = MakeTempDir("infrachat-cli");
  const std::string in_path = dir + "/stdin", out_path = dir + "/stdout",
                    err_path = dir + "/stderr";
  { std::ofstream(in_path, std::ios::binary) << stdin_text; }
  std::vector<std::string> argv = {INFRACHAT_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  std::map<std::string, std::string> all_env = env;
  all_env["NO_COLOR"] = "1";

  const int in_fd = OpenOrThrow(in_path, O_RDONLY);
  const int out_fd = OpenOrThrow(out_path, O_WRONLY | O_CREAT | O_TRUNC);
  const int err_fd = OpenOrThrow(err_path, O_WRONLY | O_CREAT | O_TRUNC);
  pid_t pid = -1;
  try {
    pid = Spawn(argv, ChildEnvironment(all_env), in_fd, out_fd, err_fd);
  } catch (...) {
    ::close(in_fd);
    ::close(out_fd);
    ::close(err_fd);
    throw;
  }
  ::close(in_fd);
  ::close(out_fd);
  ::close(err_fd);

  CliResult result;
  if (auto status = WaitPid(pid, timeout)) {
    result.exit_code = *status;
  } else {
    ::kill(pid, SIGKILL);
    WaitPid(pid, 10s);
    result.exit_code = -1;
  }
  result.out = ReadFile(out_path);
  result.err = ReadFile(err_path);
  if (result.exit_code == -1) {
    result.err += "[test harness: killed after " + std::to_string(timeout.count()) + " ms]\n";
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return result;
}

// ---- client helpers -----------------------------------------------------------------------------

std::shared_ptr<client::Client> RegisterUser(const std::string& address,
                                             const std::string& username,
                                             client::ClientOptions options) {
  auto c = std::make_shared<client::Client>(address, std::move(options));
  auto session = c->Register(username, kTestPassword);
  if (!session.ok()) {
    throw std::runtime_error("register " + username + ": " + client::ToString(session.error()));
  }
  return c;
}

std::optional<client::v1::ServerFrame> NextMatching(
    client::ChatStream& stream, const std::function<bool(const client::v1::ServerFrame&)>& pred,
    std::chrono::milliseconds timeout, std::vector<client::v1::ServerFrame>* skipped) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto frame = stream.Next(left);
    if (!frame) return std::nullopt;
    if (pred(*frame)) return frame;
    if (skipped != nullptr) skipped->push_back(std::move(*frame));
  }
}

std::uint64_t SubscribeAndWait(client::ChatStream& stream, const std::string& channel,
                               std::optional<std::uint64_t> after_seq,
                               std::chrono::milliseconds timeout) {
  if (!stream.Subscribe(channel, after_seq)) {
    throw std::runtime_error("cannot write Subscribe " + channel);
  }
  auto frame = NextMatching(
      stream,
      [&](const client::v1::ServerFrame& f) {
        return (f.has_subscribed() && f.subscribed().channel() == channel) ||
               (f.has_error() && f.error().channel() == channel);
      },
      timeout);
  if (!frame) {
    const auto status = stream.final_status();
    throw std::runtime_error("no Subscribed for " + channel +
                             (status ? " (stream ended: " + client::ToString(*status) + ")" : ""));
  }
  if (frame->has_error()) {
    throw std::runtime_error("subscribe " + channel + " failed: " + frame->error().message());
  }
  return frame->subscribed().head_seq();
}

std::optional<client::v1::ServerFrame> SendAndWait(client::ChatStream& stream,
                                                   const std::string& channel,
                                                   const std::string& client_msg_id,
                                                   const std::string& body,
                                                   std::chrono::milliseconds timeout) {
  if (!stream.Send(channel, client_msg_id, body)) return std::nullopt;
  return NextMatching(
      stream,
      [&](const client::v1::ServerFrame& f) {
        return (f.has_send_ack() && f.send_ack().client_msg_id() == client_msg_id) ||
               (f.has_error() && f.error().client_msg_id() == client_msg_id);
      },
      timeout);
}

std::vector<client::v1::ChatMessage> CollectMessages(client::ChatStream& stream,
                                                     const std::string& channel,
                                                     std::uint64_t until_seq,
                                                     std::chrono::milliseconds timeout,
                                                     client::v1::ServerFrame* stopped_by) {
  std::vector<client::v1::ChatMessage> messages;
  const auto deadline = Clock::now() + timeout;
  while (messages.empty() || messages.back().seq() < until_seq) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    auto frame = stream.Next(left);
    if (!frame) break;
    if (frame->has_message() && frame->message().channel() == channel) {
      messages.push_back(frame->message());
    } else if ((frame->has_unsubscribed() && frame->unsubscribed().channel() == channel) ||
               (frame->has_error() && frame->error().channel() == channel)) {
      if (stopped_by != nullptr) *stopped_by = std::move(*frame);
      break;
    }
  }
  return messages;
}

std::vector<client::v1::ChatMessage> FullHistory(client::Client& client,
                                                 const std::string& channel) {
  std::vector<client::v1::ChatMessage> all;
  std::uint64_t after = 0;
  for (;;) {
    auto page = client.GetHistory(channel, after, 1000);
    if (!page.ok()) {
      throw std::runtime_error("GetHistory " + channel + ": " + client::ToString(page.error()));
    }
    if (page->messages().empty()) return all;
    for (const auto& m : page->messages()) all.push_back(m);
    after = all.back().seq();
  }
}

std::vector<nlohmann::json> JsonLogEvents(const std::string& log_path, const std::string& msg,
                                          const std::map<std::string, std::string>& where) {
  std::ifstream in(log_path);
  std::vector<nlohmann::json> found;
  for (std::string line; std::getline(in, line);) {
    auto json = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const auto is = [&](const std::string& key, const std::string& value) {
      const auto it = json.find(key);
      return it != json.end() && it->is_string() && it->template get<std::string>() == value;
    };
    if (!json.is_object() || !is("msg", msg)) continue;
    const bool matches = std::all_of(where.begin(), where.end(), [&](const auto& field) {
      return is(field.first, field.second);
    });
    if (matches) found.push_back(std::move(json));
  }
  return found;
}

bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);  // polling a condition against a deadline
  }
}

std::vector<std::uint64_t> Seqs(const std::vector<client::v1::ChatMessage>& messages) {
  std::vector<std::uint64_t> out;
  out.reserve(messages.size());
  for (const auto& m : messages) out.push_back(m.seq());
  return out;
}

std::vector<std::uint64_t> Range(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> out;
  for (std::uint64_t s = first; s <= last; ++s) out.push_back(s);
  return out;
}

}  // namespace infrachat::testing
