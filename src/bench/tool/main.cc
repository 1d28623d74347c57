// infrachat-bench: drives a running infrachatd (or, with --raw, the grpc-relay ceiling) through the
// public API like real clients and reports one JSON line per scenario (docs/PERFORMANCE.md).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "infrachat/core/process_setup.h"
#include "scenarios.h"
#include "setup.h"

namespace {

using namespace infrachat::bench;

void AddCommonFlags(CLI::App& command, CommonOptions& common, bool with_raw) {
  command.add_option("--target", common.target, "host:port of the server")->capture_default_str();
  command.add_option("--duration", common.duration_s, "Measured seconds")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  command.add_option("--warmup", common.warmup_s, "Warm-up seconds before measuring")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  command.add_option("--body-bytes", common.body_bytes, "Message body size")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  command.add_option("--prefix", common.prefix,
                     "Prefix of user and channel names (default: unique per run)");
  command
      .add_option("--streams-per-connection", common.streams_per_connection,
                  "Streams sharing one TCP connection")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command
      .add_option("--setup-threads", common.setup_threads,
                  "Threads for registering users and joining channels")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command.add_option(
      "--server-pid", common.server_pid,
      "The server's pid: its CPU seconds (and, for connections, its RSS) from /proc");
  command.add_option("--pg-pid", common.pg_pid,
                     "PostgreSQL's postmaster pid: its and its children's CPU seconds from /proc");
  command.add_flag("!--no-batches", common.batches,
                   "Do not ask for FrameBatch: every frame is its own message, as for a client "
                   "without the `batch` capability");
  if (with_raw) {
    command.add_flag("--raw", common.raw,
                     "Drive a bare relay (infrachat-ceiling grpc-relay): no Register, Login, "
                     "channels or authorization metadata");
  }
}

}  // namespace

int main(int argc, char** argv) {
  infrachat::DisableMutexDeadlockDetection();  // as in infrachatd: the same gRPC costs
  CLI::App app{
      "infrachat-bench: throughput and latency of a running InfraChat, through its "
      "public API"};
  app.require_subcommand(1);

  CommonOptions common;
  DurableSendOptions durable;
  FanoutOptions fanout;
  RoomsOptions rooms;
  ConnectionsOptions connections;
  ResumeOptions resume;

  auto* durable_cmd = app.add_subcommand(
      "durable-send",
      "Senders over channels, each with a bounded window: ACKed msg/s, ACK latency");
  AddCommonFlags(*durable_cmd, common, true);
  durable_cmd->add_option("--senders", durable.senders, "Sender streams (one user each)")
      ->capture_default_str();
  durable_cmd->add_option("--channels", durable.channels, "Channels the senders spread over")
      ->capture_default_str();
  durable_cmd->add_option("--window", durable.window, "Unacknowledged sends per sender")
      ->capture_default_str();
  durable_cmd
      ->add_option("--rate", durable.rate,
                   "Open loop: msg/s offered by all senders together (0: closed loop)")
      ->capture_default_str();

  auto* fanout_cmd = app.add_subcommand(
      "fanout", "One channel, many subscribers: deliveries/s, send-to-receive latency");
  AddCommonFlags(*fanout_cmd, common, true);
  fanout_cmd->add_option("--subscribers", fanout.subscribers, "Subscriber streams")
      ->capture_default_str();
  fanout_cmd->add_option("--senders", fanout.senders, "Sender streams")->capture_default_str();
  fanout_cmd
      ->add_option("--rate", fanout.rate,
                   "Open loop: msg/s sent by all senders together (0: closed loop)")
      ->capture_default_str();
  fanout_cmd
      ->add_option("--max-undelivered", fanout.max_undelivered,
                   "Closed loop: messages not yet received by every subscriber")
      ->capture_default_str();

  auto* rooms_cmd = app.add_subcommand(
      "rooms",
      "Many small channels at a fixed offered load: deliveries/s and latency at that load");
  AddCommonFlags(*rooms_cmd, common, false);
  rooms_cmd->add_option("--rooms", rooms.rooms, "Channels")->capture_default_str();
  rooms_cmd->add_option("--members", rooms.members, "Members per channel")->capture_default_str();
  rooms_cmd->add_option("--rate-per-member", rooms.rate_per_member, "msg/s sent by each member")
      ->capture_default_str();

  auto* connections_cmd = app.add_subcommand(
      "connections",
      "Idle authenticated subscribed sessions: connect time, server RSS per session");
  AddCommonFlags(*connections_cmd, common, false);
  connections_cmd->add_option("--sessions", connections.sessions, "Sessions (one user each)")
      ->capture_default_str();
  connections_cmd
      ->add_option("--channels", connections.channels, "Channels the sessions spread over")
      ->capture_default_str();
  connections_cmd
      ->add_option("--connect-window", connections.connect_window,
                   "Sessions connecting at the same time")
      ->capture_default_str();
  connections_cmd
      ->add_option("--connect-timeout", connections.connect_timeout_s,
                   "Seconds allowed for connecting every session")
      ->capture_default_str();

  auto* resume_cmd =
      app.add_subcommand("resume", "Catch-up from the log after being away for K messages: msg/s");
  AddCommonFlags(*resume_cmd, common, false);
  resume_cmd->add_option("--messages", resume.messages, "Messages to catch up (K)")
      ->capture_default_str();
  resume_cmd->add_option("--repeat", resume.repeat, "Measured catch-up runs")
      ->capture_default_str();
  resume_cmd
      ->add_option("--fill-window", resume.fill_window,
                   "Unacknowledged sends while filling the channel")
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  if (common.prefix.empty()) common.prefix = DefaultPrefix();
  if (auto valid = ValidatePrefix(common.prefix); !valid.ok()) {
    std::fprintf(stderr, "infrachat-bench: %s\n", valid.error().message.c_str());
    return 2;
  }
  RaiseFileLimit();

  if (durable_cmd->parsed()) return RunDurableSend(common, durable);
  if (fanout_cmd->parsed()) return RunFanout(common, fanout);
  if (rooms_cmd->parsed()) return RunRooms(common, rooms);
  if (connections_cmd->parsed()) return RunConnections(common, connections);
  if (resume_cmd->parsed()) return RunResume(common, resume);
  return 2;
}
