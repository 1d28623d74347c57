// Internals of the `infrachat` binary: options shared by every subcommand, credential input,
// the subcommands and the interactive mode.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "infrachat/client/cli_support.h"
#include "infrachat/client/client.h"

namespace infrachat::cli {

struct GlobalOptions {
  std::string server = "127.0.0.1:7400";
  bool tls = false;     // TLS, verifying the server with the system's CA certificates
  std::string ca_file;  // TLS, trusting only this CA (PEM); implies tls
  std::string user;
  std::string password_file;
  std::string display_name;
  bool register_first = false;     // interactive: register instead of logging in
  std::vector<std::string> joins;  // interactive: channels to join at start
  int call_timeout_s = 5;
  int quit_timeout_s = 10;  // interactive: wait this long for the acks at the end of input
  bool color = true;
};

// A failure to report: one stderr line and an exit code.
struct Failure {
  int exit_code = client::kExitOther;
  std::string line;
};

Failure FailureFrom(const Error& error);
Failure UsageFailure(const std::string& message);

// The password from --password-file, else INFRACHAT_PASSWORD, else a no-echo prompt on the
// terminal (asked twice when `confirm`). A usage failure when none is available.
Result<std::string> ReadPassword(const GlobalOptions& options, bool confirm);
// The username from --user / INFRACHAT_USER, else a prompt on the terminal.
Result<std::string> ReadUsername(const GlobalOptions& options);

// A client for --server with the TLS settings and call timeout of `options`, not logged in.
// INVALID_ARGUMENT when --ca cannot be read.
Result<std::shared_ptr<client::Client>> NewClient(const GlobalOptions& options, bool auto_refresh);
// Logs in (or registers, when `register_first`) and returns a client holding the session.
// Errors come with their gRPC code (UNAUTHENTICATED, UNAVAILABLE, ...).
Result<std::shared_ptr<client::Client>> Connect(const GlobalOptions& options, bool auto_refresh);
// Logs in (or registers) with credentials already read.
Result<std::shared_ptr<client::Client>> ConnectAs(const GlobalOptions& options, bool auto_refresh,
                                                  const std::string& user,
                                                  const std::string& password);

// Subcommands: each returns the process exit code.
struct SendArgs {
  std::string channel;
  std::string text;
  std::string client_msg_id;
  bool join = false;
  double timeout_s = 10;
};
struct TailArgs {
  std::string channel;
  std::optional<std::uint64_t> after_seq;
  std::uint64_t count = 0;  // 0 = unlimited
  double timeout_s = 0;     // 0 = none
  bool join = false;
};
struct HistoryArgs {
  std::string channel;
  std::optional<std::uint64_t> after_seq;  // absent: the newest messages
  std::optional<std::uint64_t> before_seq;
  std::uint32_t limit = 100;
};
struct CreateArgs {
  std::string channel;
  bool is_private = false;
  std::string topic;
};

int RunRegister(const GlobalOptions& options);
int RunSend(const GlobalOptions& options, const SendArgs& args);
int RunTail(const GlobalOptions& options, const TailArgs& args);
int RunHistory(const GlobalOptions& options, const HistoryArgs& args);
int RunCreate(const GlobalOptions& options, const CreateArgs& args);
int RunJoin(const GlobalOptions& options, const std::string& channel);
int RunInvite(const GlobalOptions& options, const std::string& channel,
              const std::string& username);
int RunChannels(const GlobalOptions& options);
// grpc.health.v1 Check of `service` ("" = the server), no login: exit 0 only when SERVING.
int RunHealth(const GlobalOptions& options, const std::string& service);
int RunInteractive(const GlobalOptions& options);

// Prints the failure line on stderr and returns its exit code.
int Report(const Failure& failure);

}  // namespace infrachat::cli
