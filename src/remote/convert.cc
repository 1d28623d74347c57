#include "convert.h"

#include "infrachat/core/grpc_metrics.h"

namespace infrachat::remote {

grpc::Status ToStatus(const Error& error) {
  return grpc::Status(static_cast<grpc::StatusCode>(error.code), error.message);
}

Error FromStatus(const grpc::Status& status) {
  return MakeError(static_cast<Code>(status.error_code()), status.error_message());
}

Error FromStatus(const grpc::Status& status, const std::string& trace_id) {
  Error error = FromStatus(status);
  if (error.code == Code::kUnavailable || error.code == Code::kDeadlineExceeded) {
    error.message += " [trace " + trace_id + "]";
  }
  return error;
}

internal::v1::Principal ToProto(const Principal& principal) {
  internal::v1::Principal out;
  out.set_user_id(principal.user_id);
  out.set_username(principal.username);
  out.set_session_id(principal.session_id);
  out.set_expires_at_unix(principal.expires_at_unix);
  return out;
}

Principal FromProto(const internal::v1::Principal& principal) {
  return Principal{principal.user_id(), principal.username(), principal.session_id(),
                   principal.expires_at_unix()};
}

void PrepareContext(grpc::ClientContext& context, std::chrono::milliseconds timeout) {
  context.set_deadline(std::chrono::system_clock::now() + timeout);
}

std::shared_ptr<grpc::Channel> MakeInternalChannel(
    const std::string& address, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    const std::string& peer) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // A restarted peer is found again quickly: internal hops are on the path of every send.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> metrics;
  metrics.push_back(MakeClientMetricsInterceptor(peer));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, credentials, args,
                                                                 std::move(metrics));
}

}  // namespace infrachat::remote
