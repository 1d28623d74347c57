#include "infrachat/client/client.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <iterator>
#include <random>

#include "infrachat/client/chat_stream.h"

namespace infrachat::client {

namespace {

constexpr int kMaxReceiveBytes = 4 * 1024 * 1024;

Error ToError(const grpc::Status& status) {
  return MakeError(static_cast<Code>(status.error_code()), status.error_message());
}

}  // namespace

std::string ToString(const Status& status) {
  if (status.ok()) return "OK";
  return fmt::format("{}: {}", CodeName(status.code), status.message);
}

std::string ToString(const Error& error) {
  return fmt::format("{}: {}", CodeName(error.code), error.message);
}

Result<ClientTls> TlsTrustingCaFile(const std::string& ca_file) {
  std::ifstream in(ca_file);
  if (!in) return MakeError(Code::kInvalidArgument, fmt::format("cannot read {}", ca_file));
  ClientTls tls;
  tls.enabled = true;
  tls.root_certificates.assign(std::istreambuf_iterator<char>(in),
                               std::istreambuf_iterator<char>());
  if (tls.root_certificates.find("-----BEGIN CERTIFICATE") == std::string::npos) {
    return MakeError(Code::kInvalidArgument,
                     fmt::format("{} holds no PEM certificate (-----BEGIN CERTIFICATE)", ca_file));
  }
  return tls;
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, const ClientTls& tls) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  // Without this the client stops pinging an idle stream after two pings and keepalive would
  // not detect a dead connection under a long-lived, quiet stream.
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
  // gRPC's own reconnect backoff (default 1 s growing to 120 s) would otherwise hold a channel
  // in TRANSIENT_FAILURE long after the server is back; align it with ResilientSession's.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 10000);
  if (!tls.enabled) {
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tls.root_certificates;
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args);
}

std::string NewClientMsgId() {
  thread_local std::random_device device;
  const std::uint64_t bits =
      (static_cast<std::uint64_t>(device()) << 32) ^ static_cast<std::uint64_t>(device());
  return fmt::format("{:016x}", bits);
}

// `options` is copied, not moved: the order in which the two arguments are initialized is
// unspecified, and MakeChannel reads it.
Client::Client(const std::string& target, ClientOptions options)
    : Client(MakeChannel(target, options.tls), options) {}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      auth_(v1::AuthService::NewStub(channel_)),
      router_(v1::RouterService::NewStub(channel_)),
      channels_(v1::ChannelService::NewStub(channel_)),
      health_(::grpc::health::v1::Health::NewStub(channel_)) {}

Client::~Client() = default;

template <typename Response, typename Request, typename Call>
Result<Response> Client::Unary(const Request& request, bool with_token, Call call) {
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options_.call_timeout);
    std::string token;
    if (with_token) {
      token = access_token();
      if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    }
    Response response;
    const grpc::Status status = call(&context, request, &response);
    if (status.ok()) return response;
    if (with_token && attempt == 0 && options_.auto_refresh &&
        status.error_code() == grpc::StatusCode::UNAUTHENTICATED &&
        !credentials().refresh_token.empty() && RefreshIfStale(token).ok()) {
      continue;
    }
    return ToError(status);
  }
}

void Client::Store(const v1::Session& session) {
  std::lock_guard lock(mu_);
  creds_.user_id = session.user_id();
  creds_.username = session.username();
  creds_.display_name = session.display_name();
  creds_.access_token = session.access_token();
  creds_.refresh_token = session.refresh_token();
  creds_.access_expires_at_unix = session.access_expires_at_unix();
}

Result<v1::Session> Client::Register(const std::string& username, const std::string& password,
                                     const std::string& display_name) {
  v1::RegisterRequest request;
  request.set_username(username);
  request.set_password(password);
  request.set_display_name(display_name);
  request.set_device_id(options_.device_id);
  auto result = Unary<v1::Session>(request, false, [&](auto* ctx, const auto& req, auto* resp) {
    return auth_->Register(ctx, req, resp);
  });
  if (result.ok()) Store(*result);
  return result;
}

Result<v1::Session> Client::Login(const std::string& username, const std::string& password) {
  v1::LoginRequest request;
  request.set_username(username);
  request.set_password(password);
  request.set_device_id(options_.device_id);
  auto result = Unary<v1::Session>(request, false, [&](auto* ctx, const auto& req, auto* resp) {
    return auth_->Login(ctx, req, resp);
  });
  if (result.ok()) Store(*result);
  return result;
}

Result<v1::Session> Client::RefreshLocked(const std::string& refresh_token) {
  v1::RefreshRequest request;
  request.set_refresh_token(refresh_token);
  auto result = Unary<v1::Session>(request, false, [&](auto* ctx, const auto& req, auto* resp) {
    return auth_->Refresh(ctx, req, resp);
  });
  if (result.ok()) Store(*result);
  return result;
}

Result<v1::Session> Client::Refresh(const std::string& refresh_token) {
  std::lock_guard refresh_lock(refresh_mu_);
  return RefreshLocked(refresh_token.empty() ? credentials().refresh_token : refresh_token);
}

Result<void> Client::RefreshIfStale(const std::string& stale_token) {
  std::lock_guard refresh_lock(refresh_mu_);
  const Credentials current = credentials();
  if (current.access_token != stale_token) return Ok();
  if (current.refresh_token.empty()) {
    return MakeError(Code::kUnauthenticated, "no refresh token stored");
  }
  auto result = RefreshLocked(current.refresh_token);
  if (!result.ok()) return result.error();
  return Ok();
}

Result<void> Client::Logout(const std::string& refresh_token) {
  v1::LogoutRequest request;
  const std::string token = refresh_token.empty() ? credentials().refresh_token : refresh_token;
  request.set_refresh_token(token);
  auto result = Unary<v1::LogoutResponse>(
      request, true,
      [&](auto* ctx, const auto& req, auto* resp) { return auth_->Logout(ctx, req, resp); });
  if (!result.ok()) return result.error();
  {
    std::lock_guard lock(mu_);
    if (creds_.refresh_token == token) creds_ = Credentials{};
  }
  return Ok();
}

Result<v1::RouteResponse> Client::Route(const std::string& channel) {
  v1::RouteRequest request;
  request.set_channel(channel);
  return Unary<v1::RouteResponse>(request, true, [&](auto* ctx, const auto& req, auto* resp) {
    return router_->Route(ctx, req, resp);
  });
}

Result<Client::ServingStatus> Client::CheckHealth(const std::string& service) {
  ::grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  auto response = Unary<::grpc::health::v1::HealthCheckResponse>(
      request, false,
      [&](auto* ctx, const auto& req, auto* resp) { return health_->Check(ctx, req, resp); });
  if (!response.ok()) return response.error();
  return response->status();
}

Result<v1::Channel> Client::CreateChannel(const std::string& name, v1::Visibility visibility,
                                          const std::string& topic) {
  v1::CreateChannelRequest request;
  request.set_name(name);
  request.set_visibility(visibility);
  request.set_topic(topic);
  return Unary<v1::Channel>(request, true, [&](auto* ctx, const auto& req, auto* resp) {
    return channels_->CreateChannel(ctx, req, resp);
  });
}

Result<v1::Channel> Client::JoinChannel(const std::string& channel) {
  v1::JoinChannelRequest request;
  request.set_channel(channel);
  return Unary<v1::Channel>(request, true, [&](auto* ctx, const auto& req, auto* resp) {
    return channels_->JoinChannel(ctx, req, resp);
  });
}

Result<void> Client::LeaveChannel(const std::string& channel) {
  v1::LeaveChannelRequest request;
  request.set_channel(channel);
  auto result =
      Unary<v1::LeaveChannelResponse>(request, true, [&](auto* ctx, const auto& req, auto* resp) {
        return channels_->LeaveChannel(ctx, req, resp);
      });
  if (!result.ok()) return result.error();
  return Ok();
}

Result<void> Client::InviteMember(const std::string& channel, const std::string& username) {
  v1::InviteMemberRequest request;
  request.set_channel(channel);
  request.set_username(username);
  auto result =
      Unary<v1::InviteMemberResponse>(request, true, [&](auto* ctx, const auto& req, auto* resp) {
        return channels_->InviteMember(ctx, req, resp);
      });
  if (!result.ok()) return result.error();
  return Ok();
}

Result<std::vector<v1::Channel>> Client::ListChannels() {
  v1::ListChannelsRequest request;
  auto result =
      Unary<v1::ListChannelsResponse>(request, true, [&](auto* ctx, const auto& req, auto* resp) {
        return channels_->ListChannels(ctx, req, resp);
      });
  if (!result.ok()) return result.error();
  return std::vector<v1::Channel>(result->channels().begin(), result->channels().end());
}

Result<std::vector<v1::Member>> Client::ListMembers(const std::string& channel) {
  v1::ListMembersRequest request;
  request.set_channel(channel);
  auto result =
      Unary<v1::ListMembersResponse>(request, true, [&](auto* ctx, const auto& req, auto* resp) {
        return channels_->ListMembers(ctx, req, resp);
      });
  if (!result.ok()) return result.error();
  return std::vector<v1::Member>(result->members().begin(), result->members().end());
}

Result<v1::GetHistoryResponse> Client::GetHistory(const std::string& channel,
                                                  std::uint64_t after_seq, std::uint32_t limit,
                                                  std::optional<std::uint64_t> before_seq) {
  v1::GetHistoryRequest request;
  request.set_channel(channel);
  request.set_after_seq(after_seq);
  request.set_limit(limit);
  if (before_seq) request.set_before_seq(*before_seq);
  return Unary<v1::GetHistoryResponse>(request, true, [&](auto* ctx, const auto& req, auto* resp) {
    return channels_->GetHistory(ctx, req, resp);
  });
}

std::unique_ptr<ChatStream> Client::Connect() { return Connect(ChatStreamOptions{}); }

std::unique_ptr<ChatStream> Client::Connect(ChatStreamOptions options) {
  return std::make_unique<ChatStream>(channel_, access_token(), std::move(options));
}

Credentials Client::credentials() const {
  std::lock_guard lock(mu_);
  return creds_;
}

std::string Client::access_token() const {
  std::lock_guard lock(mu_);
  return creds_.access_token;
}

void Client::SetAccessToken(std::string token) {
  std::lock_guard lock(mu_);
  creds_.access_token = std::move(token);
}

void Client::SetCredentials(Credentials credentials) {
  std::lock_guard lock(mu_);
  creds_ = std::move(credentials);
}

void Client::ClearCredentials() {
  std::lock_guard lock(mu_);
  creds_ = Credentials{};
}

}  // namespace infrachat::client
