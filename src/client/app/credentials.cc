#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "app.h"
#include "infrachat/client/cli_support.h"
#include "infrachat/core/validation.h"

namespace infrachat::cli {

namespace {

// Reads one line from the controlling terminal, without echo when `secret`.
std::optional<std::string> PromptTty(const std::string& prompt, bool secret) {
  const int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  termios saved{};
  const bool have_termios = ::tcgetattr(fd, &saved) == 0;
  if (secret && have_termios) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ECHONL;
    ::tcsetattr(fd, TCSAFLUSH, &quiet);
  }
  (void)!::write(fd, prompt.data(), prompt.size());
  std::string line;
  char c;
  bool got_any = false;
  while (::read(fd, &c, 1) == 1) {
    got_any = true;
    if (c == '\n' || c == '\r') break;
    line.push_back(c);
  }
  if (secret && have_termios) ::tcsetattr(fd, TCSAFLUSH, &saved);
  ::close(fd);
  if (!got_any) return std::nullopt;
  return line;
}

}  // namespace

Failure FailureFrom(const Error& error) {
  return Failure{client::ExitCodeFor(error.code), client::ErrorLine(error.code, error.message)};
}

Failure UsageFailure(const std::string& message) {
  return Failure{client::kExitUsage, "infrachat: " + message};
}

int Report(const Failure& failure) {
  std::fprintf(stderr, "%s\n", failure.line.c_str());
  return failure.exit_code;
}

Result<std::string> ReadPassword(const GlobalOptions& options, bool confirm) {
  if (!options.password_file.empty()) {
    std::ifstream in(options.password_file);
    if (!in) {
      return MakeError(Code::kInvalidArgument,
                       "cannot read --password-file " + options.password_file);
    }
    std::string password;
    std::getline(in, password);
    if (!password.empty() && password.back() == '\r') password.pop_back();
    return password;
  }
  if (const char* env = std::getenv("INFRACHAT_PASSWORD"); env != nullptr && *env != '\0') {
    return std::string(env);
  }
  if (::isatty(STDIN_FILENO) == 0) {
    return MakeError(Code::kInvalidArgument,
                     "no password: set INFRACHAT_PASSWORD or use --password-file FILE");
  }
  auto password = PromptTty("password: ", true);
  if (!password) return MakeError(Code::kInvalidArgument, "no password entered");
  if (confirm) {
    auto again = PromptTty("password again: ", true);
    if (!again || *again != *password) {
      return MakeError(Code::kInvalidArgument, "the passwords do not match");
    }
  }
  return *password;
}

Result<std::string> ReadUsername(const GlobalOptions& options) {
  if (!options.user.empty()) return options.user;
  if (::isatty(STDIN_FILENO) == 0) {
    return MakeError(Code::kInvalidArgument, "no user: use --user NAME or set INFRACHAT_USER");
  }
  auto user = PromptTty("username: ", false);
  if (!user || user->empty()) return MakeError(Code::kInvalidArgument, "no username entered");
  return *user;
}

Result<std::shared_ptr<client::Client>> Connect(const GlobalOptions& options, bool auto_refresh) {
  auto user = ReadUsername(options);
  if (!user.ok()) return user.error();
  auto password = ReadPassword(options, options.register_first);
  if (!password.ok()) return password.error();
  return ConnectAs(options, auto_refresh, *user, *password);
}

Result<std::shared_ptr<client::Client>> NewClient(const GlobalOptions& options, bool auto_refresh) {
  client::ClientOptions client_options;
  if (!options.ca_file.empty()) {
    auto tls = client::TlsTrustingCaFile(options.ca_file);
    if (!tls.ok()) return tls.error();
    client_options.tls = std::move(tls).value();
  } else {
    client_options.tls.enabled = options.tls;
  }
  client_options.call_timeout = std::chrono::seconds(options.call_timeout_s);
  client_options.auto_refresh = auto_refresh;
  return std::make_shared<client::Client>(options.server, client_options);
}

Result<std::shared_ptr<client::Client>> ConnectAs(const GlobalOptions& options, bool auto_refresh,
                                                  const std::string& user,
                                                  const std::string& password) {
  auto made = NewClient(options, auto_refresh);
  if (!made.ok()) return made;
  auto& client = *made;
  auto session = options.register_first ? client->Register(user, password, options.display_name)
                                        : client->Login(user, password);
  if (!session.ok()) return session.error();
  return client;
}

}  // namespace infrachat::cli
