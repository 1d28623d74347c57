// The InfraChat client library: unary calls of the public API (infrachat.v1) and the live stream.
//
//   auto client = std::make_shared<infrachat::client::Client>("127.0.0.1:7400");
//   auto session = client->Login("alice", password);       // stores the tokens in `client`
//   if (!session) { ... session.error().code, session.error().message ... }
//   client->JoinChannel("general");
//   auto stream = client->Connect();                       // ChatService.Connect, see
//   chat_stream.h stream->Subscribe("general", /*after_seq=*/0); std::string id =
//   stream->Send("general", "hello"); while (auto frame = stream->Next(std::chrono::seconds(5))) {
//   ... }
//
// Every unary call returns infrachat::Result<T>: the response, or an Error whose `code` is the
// gRPC status code number (infrachat::Code mirrors grpc::StatusCode) and whose `message` is the
// server's status message. Calls carry a deadline (ClientOptions::call_timeout) and, except
// Register/Login/Refresh, `authorization: Bearer <access_token>` metadata with the stored token.
//
// Thread-safety: a Client may be used from any number of threads at once. The stored session
// (tokens) is guarded by a mutex; refreshes are serialized so that two threads that both see
// UNAUTHENTICATED never present the same refresh token twice (the server treats a rotated token
// presented again as theft and revokes the session).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "infrachat/core/result.h"
#include "infrachat/v1/infrachat.grpc.pb.h"
#include "infrachat/v1/infrachat.pb.h"

namespace grpc {
class Channel;
}

namespace infrachat::client {

namespace v1 = ::infrachat::v1;

class ChatStream;
struct ChatStreamOptions;

// The final status of a call or a stream, as the gRPC code number and message.
struct Status {
  Code code = Code::kOk;
  std::string message;
  bool ok() const { return code == Code::kOk; }
};

// "CODE_NAME: message" (or "OK").
std::string ToString(const Status& status);
std::string ToString(const Error& error);

// Transport security of a client's channel. Plaintext by default, as a development server
// listens; a server with tls.public.* needs TLS.
struct ClientTls {
  bool enabled = false;
  // PEM certificates the server's must chain to. Empty: the system's CA certificates (gRPC's
  // default roots; GRPC_DEFAULT_SSL_ROOTS_FILE_PATH overrides them).
  std::string root_certificates;
};

// TLS that trusts only the CA certificate(s) in `ca_file` (PEM), e.g. a cluster's own CA.
// INVALID_ARGUMENT naming the file when it cannot be read or holds no PEM.
Result<ClientTls> TlsTrustingCaFile(const std::string& ca_file);

struct ClientOptions {
  // Deadline of each unary call.
  std::chrono::milliseconds call_timeout{5000};
  // Sent as LoginRequest.device_id / RegisterRequest.device_id.
  std::string device_id = "infrachat-cli";
  // When a call that carries a token fails with UNAUTHENTICATED and a refresh token is stored,
  // refresh once and retry the call. Off by default so that tests of token expiry see the raw
  // status; ResilientSession users typically turn it on.
  bool auto_refresh = false;
  // Channel security; used by Client(target, ...), which makes the channel (a Client given a
  // channel uses that channel's own credentials).
  ClientTls tls;
};

// gRPC channel with the client's settings: keepalive ping every 30 s during calls, 10 s ping
// timeout, no pings without calls, unlimited pings without data (the server must accept a ping
// every 30 s), receive limit 4 MiB, transport reconnect backoff 200 ms to 10 s. Plaintext
// transport unless `tls.enabled`.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, const ClientTls& tls = {});

// A fresh client_msg_id: 16 lower-case hex characters (64 bits from std::random_device).
// Thread-safe.
std::string NewClientMsgId();

// The tokens and identity from the last successful Register/Login/Refresh.
struct Credentials {
  std::uint64_t user_id = 0;
  std::string username;
  std::string display_name;
  std::string access_token;
  std::string refresh_token;
  std::int64_t access_expires_at_unix = 0;
};

class Client {
 public:
  // Connects lazily to `target` ("host:port") with MakeChannel(target, options.tls).
  explicit Client(const std::string& target, ClientOptions options = {});
  // Uses an existing channel (e.g. an in-process channel in tests).
  explicit Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options = {});
  ~Client();

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // --- AuthService. Register, Login and Refresh store the returned session's tokens. ---------
  Result<v1::Session> Register(const std::string& username, const std::string& password,
                               const std::string& display_name = {});
  Result<v1::Session> Login(const std::string& username, const std::string& password);
  // Presents `refresh_token` (the stored one when empty); the server rotates it.
  Result<v1::Session> Refresh(const std::string& refresh_token = {});
  // Revokes the session behind `refresh_token` (the stored one when empty) and forgets the
  // stored tokens if they were the ones revoked.
  Result<void> Logout(const std::string& refresh_token = {});

  // --- RouterService ------------------------------------------------------------------------
  Result<v1::RouteResponse> Route(const std::string& channel);

  // --- ChannelService -----------------------------------------------------------------------
  Result<v1::Channel> CreateChannel(const std::string& name, v1::Visibility visibility = v1::PUBLIC,
                                    const std::string& topic = {});
  Result<v1::Channel> JoinChannel(const std::string& channel);
  Result<void> LeaveChannel(const std::string& channel);
  Result<void> InviteMember(const std::string& channel, const std::string& username);
  Result<std::vector<v1::Channel>> ListChannels();
  Result<std::vector<v1::Member>> ListMembers(const std::string& channel);
  // Messages with seq > after_seq, oldest first, at most `limit` (0 = server default 100).
  // With `before_seq`, the newest `limit` messages with seq < *before_seq.
  Result<v1::GetHistoryResponse> GetHistory(const std::string& channel, std::uint64_t after_seq = 0,
                                            std::uint32_t limit = 0,
                                            std::optional<std::uint64_t> before_seq = {});

  // --- grpc.health.v1.Health ---------------------------------------------------------------
  // The serving status of `service` ("" asks for the server as a whole), without a token: what
  // probes and `infrachat health` ask. NOT_FOUND when the server does not know the service.
  using ServingStatus = ::grpc::health::v1::HealthCheckResponse::ServingStatus;
  Result<ServingStatus> CheckHealth(const std::string& service = {});

  // --- ChatService --------------------------------------------------------------------------
  // Opens ChatService.Connect with the stored access token. Never blocks: a failure to connect
  // shows up as the end of the stream (ChatStream::final_status()). See chat_stream.h.
  std::unique_ptr<ChatStream> Connect();
  std::unique_ptr<ChatStream> Connect(ChatStreamOptions options);

  // --- Stored session -----------------------------------------------------------------------
  Credentials credentials() const;
  std::string access_token() const;
  // Replaces the stored access token (e.g. to test a bad or expired token).
  void SetAccessToken(std::string token);
  void SetCredentials(Credentials credentials);
  void ClearCredentials();

  // Refreshes the session unless the stored access token already differs from `stale_token`
  // (another thread refreshed meanwhile). Returns OK when a newer token is now stored.
  // Serialized: concurrent callers wait for one refresh. Used by auto_refresh and ResilientSession.
  Result<void> RefreshIfStale(const std::string& stale_token);

  const ClientOptions& options() const { return options_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  template <typename Response, typename Request, typename Call>
  Result<Response> Unary(const Request& request, bool with_token, Call call);
  Result<v1::Session> RefreshLocked(const std::string& refresh_token);
  void Store(const v1::Session& session);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AuthService::Stub> auth_;
  std::unique_ptr<v1::RouterService::Stub> router_;
  std::unique_ptr<v1::ChannelService::Stub> channels_;
  std::unique_ptr<::grpc::health::v1::Health::Stub> health_;

  mutable std::mutex mu_;  // guards creds_
  Credentials creds_;
  std::mutex refresh_mu_;  // serializes refreshes
};

}  // namespace infrachat::client
