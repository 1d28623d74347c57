// `infrachat`: the terminal client. Without a subcommand it is interactive; the subcommands are
// for scripts and tests (JSON lines on stdout, one error line on stderr, documented exit codes).
#include <CLI/CLI.hpp>
#include <cstdlib>

#include "app.h"

namespace {

constexpr const char* kFooter = R"(Credentials:
  The user comes from --user or INFRACHAT_USER. The password comes from --password-file FILE,
  else INFRACHAT_PASSWORD, else a prompt on the terminal (no echo). There is no --password flag
  on purpose: command lines end up in shell history and in `ps`.

Exit codes:
  0  ok
  1  other error (e.g. ALREADY_EXISTS)
  2  usage error, or INVALID_ARGUMENT from the server
  3  authentication failed (UNAUTHENTICATED)
  4  permission denied or not found (PERMISSION_DENIED, NOT_FOUND)
  5  server unavailable (UNAVAILABLE)
  6  timeout (DEADLINE_EXCEEDED, or the command's own --timeout-s)
  health: 0 only when SERVING; 5 when NOT_SERVING (draining) or unreachable; 4 unknown service
  Errors are printed on stderr as one line: "infrachat: CODE_NAME: message".

Interactive mode (no subcommand): /join #c, /part [#c], /create #c [private] [topic...],
  /invite user, /who, /history [n], /channels, /switch #c, /quit, /help; other text is sent to
  the current channel.)";

}  // namespace

int main(int argc, char** argv) {
  using namespace infrachat::cli;
  CLI::App app{"infrachat: the InfraChat terminal client", "infrachat"};
  app.footer(kFooter);
  app.require_subcommand(0, 1);
  app.fallthrough();  // global options may also follow the subcommand

  GlobalOptions options;
  app.add_option("--server", options.server, "gateway address host:port")
      ->envname("INFRACHAT_SERVER")
      ->capture_default_str();
  app.add_flag("--tls", options.tls,
               "connect with TLS, verifying the server with the system's CA certificates")
      ->envname("INFRACHAT_TLS");
  app.add_option("--ca", options.ca_file,
                 "connect with TLS, trusting only the CA certificate in FILE (PEM; implies --tls)")
      ->type_name("FILE")
      ->envname("INFRACHAT_CA");
  app.add_option("--user", options.user, "username")->envname("INFRACHAT_USER");
  app.add_option("--password-file", options.password_file,
                 "read the password from the first line of FILE");
  app.add_option("--display-name", options.display_name, "display name (register)");
  app.add_option("--call-timeout-s", options.call_timeout_s, "deadline of each request, seconds")
      ->check(CLI::Range(1, 600))
      ->capture_default_str();
  app.add_option("--quit-timeout-s", options.quit_timeout_s,
                 "interactive: at the end of input (Ctrl-D, /quit, end of a pipe) wait this long "
                 "for every message to be stored; exit 6 naming those that were not")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();
  app.add_flag("--register", options.register_first,
               "interactive: register the user first (then logged in)");
  app.add_option("--join", options.joins, "interactive: join these channels at start");
  bool no_color = false;
  app.add_flag("--no-color", no_color, "no ANSI colors (also when NO_COLOR is set)");

  auto* reg = app.add_subcommand("register", "create a user (uses --display-name)");

  SendArgs send_args;
  auto* send = app.add_subcommand("send", "send one message, wait for its SendAck, print it");
  send->add_option("--channel,-c", send_args.channel, "channel")->required();
  send->add_flag("--join", send_args.join, "join the channel first");
  send->add_option("--client-msg-id", send_args.client_msg_id,
                   "idempotency key (default: random); retrying with it never duplicates");
  send->add_option("--timeout-s", send_args.timeout_s, "give up after this many seconds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  send->add_option("text", send_args.text, "message text ('-' reads stdin)")->required();

  TailArgs tail_args;
  std::uint64_t tail_after = 0;
  auto* tail = app.add_subcommand("tail", "print messages as JSON lines");
  tail->add_option("--channel,-c", tail_args.channel, "channel")->required();
  auto* tail_after_opt =
      tail->add_option("--after-seq", tail_after, "replay messages with seq > n first");
  tail->add_option("--count", tail_args.count, "exit 0 after this many messages");
  tail->add_option("--timeout-s", tail_args.timeout_s, "exit after this many seconds (0: never)")
      ->check(CLI::NonNegativeNumber);
  tail->add_flag("--join", tail_args.join, "join the channel first");

  HistoryArgs history_args;
  std::uint64_t before = 0;
  std::uint64_t history_after = 0;
  auto* history = app.add_subcommand(
      "history",
      "print stored messages as JSON lines, oldest first: by default the newest --limit ones");
  history->add_option("--channel,-c", history_args.channel, "channel")->required();
  auto* history_after_opt = history->add_option(
      "--after-seq", history_after, "read forward: the first --limit messages with seq > n");
  auto* before_opt =
      history->add_option("--before-seq", before, "the newest --limit messages with seq < n");
  history->add_option("--limit", history_args.limit, "at most this many (server max 1000)")
      ->capture_default_str();

  CreateArgs create_args;
  auto* create = app.add_subcommand("create", "create a channel (the creator joins it)");
  create->add_option("--channel,-c", create_args.channel, "channel")->required();
  create->add_flag("--private", create_args.is_private, "joinable by invitation only");
  create->add_option("--topic", create_args.topic, "topic");

  std::string join_channel;
  auto* join = app.add_subcommand("join", "join a channel");
  join->add_option("--channel,-c", join_channel, "channel")->required();

  std::string invite_channel;
  std::string invite_user;
  auto* invite = app.add_subcommand("invite", "invite a user into a channel");
  invite->add_option("--channel,-c", invite_channel, "channel")->required();
  invite->add_option("--username,-u", invite_user, "user to invite")->required();

  auto* channels = app.add_subcommand("channels", "list visible channels as JSON lines");

  std::string health_service;
  auto* health = app.add_subcommand(
      "health",
      "ask the server's grpc.health.v1 service whether it is SERVING (no login; the container "
      "image's health check); prints {\"service\", \"status\"}");
  health->add_option("--service", health_service,
                     "one service, e.g. infrachat.v1.ChatService (default: the whole server)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : infrachat::client::kExitUsage;
  }
  options.color = !no_color && std::getenv("NO_COLOR") == nullptr;
  if (*tail_after_opt) tail_args.after_seq = tail_after;
  if (*before_opt) history_args.before_seq = before;
  if (*history_after_opt) history_args.after_seq = history_after;

  if (*reg) return RunRegister(options);
  if (*send) return RunSend(options, send_args);
  if (*tail) return RunTail(options, tail_args);
  if (*history) return RunHistory(options, history_args);
  if (*create) return RunCreate(options, create_args);
  if (*join) return RunJoin(options, join_channel);
  if (*invite) return RunInvite(options, invite_channel, invite_user);
  if (*channels) return RunChannels(options);
  if (*health) return RunHealth(options, health_service);
  return RunInteractive(options);
}
