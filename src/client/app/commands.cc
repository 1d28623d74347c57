// The scriptable subcommands: one JSON object per line on stdout, one error line on stderr,
// exit codes from cli_support.h.
#include <cstdio>
#include <iostream>

#include "app.h"
#include "infrachat/client/resilient_session.h"
#include "infrachat/core/validation.h"

namespace infrachat::cli {

namespace {

using client::DumpJsonLine;
using client::SessionEvent;
using EK = client::SessionEvent::Kind;

void PrintJson(const nlohmann::json& value) {
  std::fputs(DumpJsonLine(value).c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

Result<std::string> Channel(const std::string& raw) {
  if (raw.empty()) return MakeError(Code::kInvalidArgument, "--channel is required");
  return NormalizeChannelName(raw);
}

std::chrono::milliseconds Seconds(double s) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(s * 1000.0));
}

// Logs in and, with `join`, joins `channel`.
Result<std::shared_ptr<client::Client>> LoginAndJoin(const GlobalOptions& options,
                                                     const std::string& channel, bool join) {
  auto client = Connect(options, /*auto_refresh=*/true);
  if (!client.ok()) return client;
  if (join) {
    auto joined = (*client)->JoinChannel(channel);
    if (!joined.ok()) return joined.error();
  }
  return client;
}

}  // namespace

int RunRegister(const GlobalOptions& options) {
  GlobalOptions opts = options;
  opts.register_first = true;
  auto client = Connect(opts, false);
  if (!client.ok()) return Report(FailureFrom(client.error()));
  const auto creds = (*client)->credentials();
  PrintJson({{"user_id", creds.user_id},
             {"username", creds.username},
             {"display_name", creds.display_name}});
  return client::kExitOk;
}

int RunSend(const GlobalOptions& options, const SendArgs& args) {
  auto channel = Channel(args.channel);
  if (!channel.ok()) return Report(UsageFailure(channel.error().message));
  std::string text = args.text;
  if (text == "-") {  // the body from stdin
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  }
  if (auto ok = ValidateBody(text, 1 << 20); !ok.ok()) {
    return Report(UsageFailure(ok.error().message));
  }
  if (!args.client_msg_id.empty()) {
    if (auto ok = ValidateClientMsgId(args.client_msg_id); !ok.ok()) {
      return Report(UsageFailure(ok.error().message));
    }
  }
  auto client = LoginAndJoin(options, *channel, args.join);
  if (!client.ok()) return Report(FailureFrom(client.error()));

  client::ResilientSession session(*client);
  session.Start();
  const std::string id = args.client_msg_id.empty() ? client::NewClientMsgId() : args.client_msg_id;

  const auto deadline = std::chrono::steady_clock::now() + Seconds(args.timeout_s);
  std::optional<client::Status> last_failure;
  bool sent = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto event = session.NextEvent(left);
    if (!event) break;
    if (event->kind == EK::kConnected && !sent) {
      // Connected first, so that the body is checked against the limit this server announces
      // (an older server announces none: its own answer is then final, see session_core.h).
      const client::StreamLimits& limits = event->limits;
      if (limits.announced && text.size() > limits.max_body_bytes) {
        return Report(FailureFrom(MakeError(Code::kInvalidArgument,
                                            "the message is " + std::to_string(text.size()) +
                                                " bytes; the server accepts at most " +
                                                std::to_string(limits.max_body_bytes) +
                                                " bytes per message (infrachat-max-body-bytes)")));
      }
      session.SendWithId(*channel, id, text);
      sent = true;
      continue;
    }
    switch (event->kind) {
      case EK::kSendAcked:
        if (event->send.client_msg_id != id) break;
        PrintJson({{"channel", *channel},
                   {"seq", event->ack.seq()},
                   {"client_msg_id", id},
                   {"duplicate", event->ack.duplicate()}});
        return client::kExitOk;
      case EK::kSendFailed:
        return Report(FailureFrom(MakeError(event->status.code, event->status.message)));
      case EK::kAuthFailed:
        return Report(FailureFrom(MakeError(Code::kUnauthenticated, event->status.message)));
      case EK::kDisconnected:
      case EK::kSendRetrying:
        last_failure = event->status;
        break;
      default:
        break;
    }
  }
  if (last_failure && last_failure->code == Code::kUnavailable) {
    return Report(FailureFrom(MakeError(Code::kUnavailable, last_failure->message)));
  }
  std::string why = "no SendAck within the timeout";
  if (last_failure) why += " (last error: " + client::ToString(*last_failure) + ")";
  return Report(FailureFrom(MakeError(Code::kDeadlineExceeded, why)));
}

int RunTail(const GlobalOptions& options, const TailArgs& args) {
  auto channel = Channel(args.channel);
  if (!channel.ok()) return Report(UsageFailure(channel.error().message));
  auto client = LoginAndJoin(options, *channel, args.join);
  if (!client.ok()) return Report(FailureFrom(client.error()));

  client::ResilientSession session(*client);
  session.Start();
  session.Subscribe(*channel, args.after_seq);

  const bool has_deadline = args.timeout_s > 0;
  const auto deadline = std::chrono::steady_clock::now() + Seconds(args.timeout_s);
  std::uint64_t printed = 0;
  bool subscribed = false;
  std::optional<client::Status> last_failure;
  while (args.count == 0 || printed < args.count) {
    std::chrono::milliseconds wait(1000);
    if (has_deadline) {
      wait = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (wait.count() <= 0) break;
    }
    auto event = session.NextEvent(wait);
    if (!event) continue;
    switch (event->kind) {
      case EK::kMessage:
        PrintJson(client::MessageJson(event->message));
        ++printed;
        break;
      case EK::kSubscribed:
        subscribed = true;
        break;
      case EK::kSubscribeFailed:
        return Report(FailureFrom(MakeError(event->status.code, event->status.message)));
      case EK::kAuthFailed:
        return Report(FailureFrom(MakeError(Code::kUnauthenticated, event->status.message)));
      case EK::kDisconnected:
        last_failure = event->status;
        break;
      default:
        break;
    }
  }
  if (args.count != 0 && printed >= args.count) return client::kExitOk;
  // The timeout passed: fine if the channel was followed, an error if the server never was.
  if (subscribed) return client::kExitOk;
  if (last_failure && last_failure->code != Code::kOk) {
    return Report(FailureFrom(MakeError(last_failure->code, last_failure->message)));
  }
  return Report(
      FailureFrom(MakeError(Code::kDeadlineExceeded, "not subscribed within the timeout")));
}

int RunHistory(const GlobalOptions& options, const HistoryArgs& args) {
  auto channel = Channel(args.channel);
  if (!channel.ok()) return Report(UsageFailure(channel.error().message));
  auto client = Connect(options, true);
  if (!client.ok()) return Report(FailureFrom(client.error()));
  // Without --after-seq: the newest --limit messages (before --before-seq if given), oldest first.
  std::uint64_t after = args.after_seq.value_or(0);
  std::optional<std::uint64_t> before = args.before_seq;
  if (!args.after_seq && !before) {
    auto head = (*client)->GetHistory(*channel, 0, 1);
    if (!head.ok()) return Report(FailureFrom(head.error()));
    before = head->head_seq() + 1;
  }
  auto history = (*client)->GetHistory(*channel, after, args.limit, before);
  if (!history.ok()) return Report(FailureFrom(history.error()));
  for (const auto& message : history->messages()) PrintJson(client::MessageJson(message));
  return client::kExitOk;
}

int RunCreate(const GlobalOptions& options, const CreateArgs& args) {
  auto channel = Channel(args.channel);
  if (!channel.ok()) return Report(UsageFailure(channel.error().message));
  auto client = Connect(options, true);
  if (!client.ok()) return Report(FailureFrom(client.error()));
  auto created = (*client)->CreateChannel(
      *channel, args.is_private ? client::v1::PRIVATE : client::v1::PUBLIC, args.topic);
  if (!created.ok()) return Report(FailureFrom(created.error()));
  PrintJson(client::ChannelJson(*created));
  return client::kExitOk;
}

int RunJoin(const GlobalOptions& options, const std::string& raw_channel) {
  auto channel = Channel(raw_channel);
  if (!channel.ok()) return Report(UsageFailure(channel.error().message));
  auto client = Connect(options, true);
  if (!client.ok()) return Report(FailureFrom(client.error()));
  auto joined = (*client)->JoinChannel(*channel);
  if (!joined.ok()) return Report(FailureFrom(joined.error()));
  PrintJson(client::ChannelJson(*joined));
  return client::kExitOk;
}

int RunInvite(const GlobalOptions& options, const std::string& raw_channel,
              const std::string& username) {
  auto channel = Channel(raw_channel);
  if (!channel.ok()) return Report(UsageFailure(channel.error().message));
  if (auto ok = ValidateUsername(username); !ok.ok()) {
    return Report(UsageFailure(ok.error().message));
  }
  auto client = Connect(options, true);
  if (!client.ok()) return Report(FailureFrom(client.error()));
  auto invited = (*client)->InviteMember(*channel, username);
  if (!invited.ok()) return Report(FailureFrom(invited.error()));
  PrintJson({{"channel", *channel}, {"username", username}, {"invited", true}});
  return client::kExitOk;
}

int RunChannels(const GlobalOptions& options) {
  auto client = Connect(options, true);
  if (!client.ok()) return Report(FailureFrom(client.error()));
  auto channels = (*client)->ListChannels();
  if (!channels.ok()) return Report(FailureFrom(channels.error()));
  for (const auto& channel : *channels) PrintJson(client::ChannelJson(channel));
  return client::kExitOk;
}

int RunHealth(const GlobalOptions& options, const std::string& service) {
  auto client = NewClient(options, /*auto_refresh=*/false);
  if (!client.ok()) return Report(UsageFailure(client.error().message));
  auto status = (*client)->CheckHealth(service);
  if (!status.ok()) return Report(FailureFrom(status.error()));
  const std::string name = ::grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
  PrintJson({{"service", service}, {"status", name}});
  if (*status == ::grpc::health::v1::HealthCheckResponse::SERVING) return client::kExitOk;
  // NOT_SERVING (e.g. draining after SIGTERM) or UNKNOWN: not able to take work now.
  return Report(Failure{client::kExitUnavailable,
                        client::ErrorLine(Code::kUnavailable, "the server reports " + name)});
}

}  // namespace infrachat::cli
