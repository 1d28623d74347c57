#include "setup.h"

#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "infrachat/client/client.h"

namespace infrachat::bench {

namespace {

// Users exist only for the benchmark: one fixed password (the server's minimum is 8 bytes).
constexpr const char* kPassword = "bench-password";

std::string Base36(std::uint64_t value) {
  std::string out;
  do {
    out.insert(out.begin(), "0123456789abcdefghijklmnopqrstuvwxyz"[value % 36]);
    value /= 36;
  } while (value != 0);
  return out;
}

client::ClientOptions SetupClientOptions() {
  client::ClientOptions options;
  options.call_timeout = std::chrono::seconds(30);  // a loaded server answers setup slowly
  options.device_id = "infrachat-bench";
  return options;
}

}  // namespace

std::uint64_t RaiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur;
}

std::string DefaultPrefix() {
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  return "b" + Base36(static_cast<std::uint64_t>(now)) +
         Base36(static_cast<std::uint64_t>(getpid()));
}

Result<void> ValidatePrefix(const std::string& prefix) {
  // Usernames are at most 32 characters: the prefix plus "-s" and up to 6 digits must fit.
  if (prefix.empty() || prefix.size() > 20) {
    return MakeError(Code::kInvalidArgument, "--prefix must be 1-20 characters");
  }
  for (char c : prefix) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return MakeError(Code::kInvalidArgument, "--prefix may only hold [a-z0-9._-]");
  }
  const char first = prefix.front();
  if (first == '.' || first == '_' || first == '-') {
    return MakeError(Code::kInvalidArgument, "--prefix must start with a letter or digit");
  }
  return Ok();
}

Result<void> ParallelFor(std::size_t n, std::size_t threads,
                         const std::function<Result<void>(std::size_t)>& fn) {
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::optional<Error> first_error;
  const auto worker = [&] {
    for (;;) {
      const std::size_t i = next.fetch_add(1);
      if (i >= n || failed.load()) return;
      auto result = fn(i);
      if (!result.ok()) {
        std::lock_guard lock(mu);
        if (!first_error) first_error = result.error();
        failed.store(true);
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  const std::size_t count = std::max<std::size_t>(1, std::min(threads, n));
  for (std::size_t t = 0; t < count; ++t) pool.emplace_back(worker);
  for (auto& thread : pool) thread.join();
  if (first_error) return *first_error;
  return Ok();
}

Result<std::vector<BenchUser>> RegisterUsers(const CommonOptions& options, const std::string& tag,
                                             std::size_t n) {
  std::vector<BenchUser> users(n);
  for (std::size_t i = 0; i < n; ++i)
    users[i].name = fmt::format("{}-{}{}", options.prefix, tag, i);
  if (options.raw) return users;
  // One connection for all setup calls: unary calls multiplex on it.
  const auto channel = client::MakeChannel(options.target);
  auto result = ParallelFor(n, options.setup_threads, [&](std::size_t i) -> Result<void> {
    client::Client client(channel, SetupClientOptions());
    auto session = client.Register(users[i].name, kPassword);
    if (!session.ok()) {
      return MakeError(session.error().code, fmt::format("register {}: {}", users[i].name,
                                                         client::ToString(session.error())));
    }
    users[i].token = session->access_token();
    return Ok();
  });
  if (!result.ok()) return result.error();
  return users;
}

Result<void> CreateAndJoin(const CommonOptions& options, const std::vector<BenchUser>& users,
                           const std::function<std::string(std::size_t)>& channel_of) {
  if (options.raw) return Ok();
  std::map<std::string, std::size_t> creator;  // channel -> first user in it
  std::vector<std::size_t> creators;
  std::vector<std::size_t> joiners;
  for (std::size_t i = 0; i < users.size(); ++i) {
    if (creator.emplace(channel_of(i), i).second) {
      creators.push_back(i);
    } else {
      joiners.push_back(i);
    }
  }
  const auto channel = client::MakeChannel(options.target);
  const auto as_user = [&](std::size_t i) {
    auto client = std::make_unique<client::Client>(channel, SetupClientOptions());
    client->SetAccessToken(users[i].token);
    return client;
  };
  auto created = ParallelFor(creators.size(), options.setup_threads, [&](std::size_t k) {
    const std::size_t i = creators[k];
    auto result = as_user(i)->CreateChannel(channel_of(i));
    if (result.ok()) return Ok();
    return Result<void>(MakeError(
        result.error().code,
        fmt::format("create channel {}: {}", channel_of(i), client::ToString(result.error()))));
  });
  if (!created.ok()) return created;
  return ParallelFor(joiners.size(), options.setup_threads, [&](std::size_t k) {
    const std::size_t i = joiners[k];
    auto result = as_user(i)->JoinChannel(channel_of(i));
    if (result.ok()) return Ok();
    return Result<void>(MakeError(
        result.error().code,
        fmt::format("join channel {}: {}", channel_of(i), client::ToString(result.error()))));
  });
}

std::optional<std::uint64_t> ReadRssKib(pid_t pid) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      std::uint64_t kib = 0;
      if (status >> kib) return kib;
      return std::nullopt;
    }
    std::getline(status, key);
  }
  return std::nullopt;
}

}  // namespace infrachat::bench
