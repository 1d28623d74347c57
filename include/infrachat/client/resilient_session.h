// ResilientSession: a live chat session that survives disconnects, for the terminal client and
// for tests of resume semantics.
//
//   auto client = std::make_shared<Client>(server, ClientOptions{.auto_refresh = true});
//   client->Login(user, password);
//   ResilientSession session(client, [](const SessionEvent& e) { ... });   // or no callback:
//   session.Start();                                                       // NextEvent()
//   session.Subscribe("general", after_seq);
//   std::string id = session.Send("general", "hi");   // kSendAcked / kSendFailed later
//
// What it does on its own (the rules are in session_core.h, unit-tested there):
//   - reconnects with capped exponential backoff with jitter (200 ms doubling to 10 s by
//     default), reset once a new stream delivers its first frame;
//   - after a reconnect resubscribes every channel with after_seq = last seen seq, and writes
//     every unacknowledged send again with the same client_msg_id;
//   - shows each message once (dedupe by channel and seq, own echo included);
//   - when the stream ends with UNAUTHENTICATED (token expired or revoked), refreshes the access
//     token with the refresh token (Client::RefreshIfStale) and reconnects at once; when the
//     refresh itself is refused it reports kAuthFailed and stops reconnecting. It also refreshes
//     before connecting when the access token expires within `refresh_margin`.
//   - answers Unsubscribed (slow consumer) with a resubscribe from the resume point.
//
// Threading: one internal session thread owns the stream, the state machine and the timers.
// Public methods may be called from any thread (also from inside the event callback); they only
// enqueue a command and return. Events are delivered in order either to the callback, on the
// session thread (keep it short, never call Stop() or the destructor from it), or, without a
// callback, to a queue drained with NextEvent().
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "infrachat/client/chat_stream.h"
#include "infrachat/client/client.h"
#include "infrachat/client/session_core.h"

namespace infrachat::client {

struct SessionOptions {
  Backoff::Params reconnect_backoff{};  // 200 ms doubling to 10 s, jitter 0.5
  Backoff::Params send_retry_backoff{};
  // Refresh the access token before connecting when it expires within this margin.
  std::chrono::seconds refresh_margin{30};
};

class ResilientSession {
 public:
  using EventCallback = std::function<void(const SessionEvent&)>;

  // `client` must hold a logged-in session (Login/Register). Nothing happens before Start().
  ResilientSession(std::shared_ptr<Client> client, EventCallback on_event = {},
                   SessionOptions options = {});
  // Stop()s.
  ~ResilientSession();

  ResilientSession(const ResilientSession&) = delete;
  ResilientSession& operator=(const ResilientSession&) = delete;

  // Starts the session thread, which connects at once.
  void Start();
  // Cancels the stream and joins the session thread. Pending sends are abandoned (their
  // client_msg_ids are in pending_snapshot() for a later retry). Idempotent.
  void Stop();

  // See SessionCore::Subscribe: an explicit after_seq sets the channel's cursor.
  void Subscribe(const std::string& channel, std::optional<std::uint64_t> after_seq = {});
  void Unsubscribe(const std::string& channel);
  // Queues a message; returns its client_msg_id. Reported later as kSendAcked or kSendFailed.
  std::string Send(const std::string& channel, const std::string& body);
  // Same with a caller-chosen client_msg_id (to resume a send from an earlier process).
  void SendWithId(const std::string& channel, const std::string& client_msg_id,
                  const std::string& body);
  // Best-effort, dropped while disconnected.
  void Ack(const std::string& channel, std::uint64_t seq, v1::AckKind kind = v1::DELIVERED);
  void Typing(const std::string& channel);

  // Queue mode only (no callback): the next event, waiting at most `timeout`.
  std::optional<SessionEvent> NextEvent(std::chrono::milliseconds timeout);

  // Snapshots of the state machine (thread-safe, may lag queued commands by a moment).
  bool connected() const;
  std::optional<std::uint64_t> LastSeen(const std::string& channel) const;
  std::vector<std::string> Channels() const;
  std::vector<PendingSend> pending_snapshot() const;
  // The limits the server announced on the last stream that worked (defaults before that, or
  // when the server announces none). Also in every kConnected event.
  StreamLimits limits() const;

  Client& client() { return *client_; }

 private:
  struct Command {
    enum class Kind { kSubscribe, kUnsubscribe, kSend, kAck, kTyping } kind = Kind::kSubscribe;
    std::string channel;
    std::optional<std::uint64_t> after_seq;
    std::string client_msg_id;
    std::string body;
    std::uint64_t seq = 0;
    v1::AckKind ack_kind = v1::DELIVERED;
  };
  struct Item {
    enum class Kind { kCommand, kFrame, kLimits, kEnd } kind = Kind::kCommand;
    std::uint64_t generation = 0;
    Command command;
    v1::ServerFrame frame;
    Status status;
    StreamLimits limits;
  };

  void Push(Item item);
  void Run();
  void Connect();
  void HandleEnd(const Status& status);
  bool RefreshToken(const std::string& stale_token);
  void Apply(SessionCore::Output& out);
  void Emit(SessionEvent event);
  void ScheduleReconnect(const Status& status);

  std::shared_ptr<Client> client_;
  EventCallback on_event_;
  SessionOptions options_;

  // Session-thread state (touched only by the session thread).
  Backoff backoff_;
  std::uint64_t generation_ = 0;
  bool confirmed_ = false;  // current stream delivered a frame
  bool ever_connected_ = false;
  int auth_failures_ = 0;  // consecutive UNAUTHENTICATED ends without a confirmed stream
  bool need_refresh_ = false;
  bool auth_dead_ = false;
  std::string stream_token_;
  std::optional<StreamLimits> stream_limits_;  // announced by the current stream, not applied yet
  SteadyClock::time_point reconnect_at_{};

  mutable std::mutex core_mu_;  // guards core_
  SessionCore core_;

  std::mutex mu_;  // guards inbox_, stop_, stream_ (stream_ is written by the session thread)
  std::condition_variable cv_;
  std::deque<Item> inbox_;
  bool stop_ = false;
  bool started_ = false;
  std::shared_ptr<ChatStream> stream_;

  std::mutex events_mu_;
  std::condition_variable events_cv_;
  std::deque<SessionEvent> events_;

  std::thread thread_;
};

}  // namespace infrachat::client
