// The pure state machine behind ResilientSession: no I/O, no threads, no clock of its own.
//
// SessionCore takes inputs (user commands, server frames, "connected", "disconnected", timer
// ticks with an explicit `now`) and appends outputs (ClientFrames to write on the current stream,
// SessionEvents to report). ResilientSession is only the shell that owns the stream, the thread
// and the reconnect timer; everything that decides *what* to send or display lives here and is
// unit-tested without a server.
//
// Semantics it implements:
//   - Exactly-once display: per subscribed channel it keeps a cursor (last seq seen on the live
//     stream) and drops any message with a seq already shown, including the echo of one's own
//     message already shown through its SendAck.
//   - Resume: on (re)connect every subscribed channel is subscribed again with
//     after_seq = last seen seq (absent if none seen yet and none asked for).
//   - Idempotent retry: unacknowledged sends stay pending and are written again with the SAME
//     client_msg_id after a reconnect or after a retryable in-stream Error (with backoff).
//     INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND (and other non-transient codes) are final.
//   - Order: one channel's sends are written strictly in order. A send is written only when
//     every earlier pending send of its channel is written on the current stream; a send waiting
//     for its retry (e.g. after RESOURCE_EXHAUSTED) holds back every later send of its channel,
//     which are then written after it, in order. At most `send window` sends are in flight on a
//     stream: the server's announced infrachat-max-inflight-sends (the server then shapes a
//     stream's sends in arrival order), or 1 when the server announced no limits (an older server
//     refuses over-rate sends, and with one send in flight nothing can overtake a refused one).
//   - Oversized sends are final: a body over the announced max_body_bytes fails at once
//     (INVALID_ARGUMENT) without being written, and a stream that ends with RESOURCE_EXHAUSTED
//     "Received message larger than max" fails the largest send in flight instead of rewriting it
//     forever.
//   - Slow consumer: an Unsubscribed frame for a channel still wanted is answered with a new
//     Subscribe from the resume point.
//
// Not thread-safe: ResilientSession serializes access with a mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "infrachat/client/chat_stream.h"
#include "infrachat/client/client.h"

namespace infrachat::client {

using SteadyClock = std::chrono::steady_clock;

// Capped exponential backoff with jitter (parameters: BackoffParams). The ceiling of attempt n
// (0-based) is min(max, initial * multiplier^n); the delay is ceiling * (1 - jitter * u) with u
// uniform in [0, 1), so it lies in [ceiling * (1 - jitter), ceiling] (whole milliseconds, rounded
// down) and never exceeds `max`.
struct BackoffParams {
  std::chrono::milliseconds initial{200};
  std::chrono::milliseconds max{10000};
  double multiplier = 2.0;
  double jitter = 0.5;
};

class Backoff {
 public:
  using Params = BackoffParams;

  explicit Backoff(Params params = {});
  Backoff(Params params, std::uint64_t seed);

  // The ceiling for 0-based attempt `attempt`.
  static std::chrono::milliseconds Ceiling(const Params& params, int attempt);
  // The delay for `attempt` given a uniform draw u in [0, 1).
  static std::chrono::milliseconds Delay(const Params& params, int attempt, double u);

  // The next delay (random jitter) and advances the attempt counter.
  std::chrono::milliseconds Next();
  // Same with an explicit draw u in [0, 1) (deterministic, for tests).
  std::chrono::milliseconds Next(double u);
  void Reset() { attempt_ = 0; }
  int attempt() const { return attempt_; }
  const Params& params() const { return params_; }

 private:
  Params params_;
  int attempt_ = 0;
  std::mt19937_64 rng_;
};

// Whether an in-stream Error for a Send is final (drop the send, report it) or transient
// (retry it later with the same client_msg_id). Transient: UNAVAILABLE, RESOURCE_EXHAUSTED,
// DEADLINE_EXCEEDED, ABORTED, CANCELLED, UNAUTHENTICATED (the stream ends and the token is
// refreshed), INTERNAL and UNKNOWN (safe to retry: sends are idempotent). Everything else, in
// particular INVALID_ARGUMENT, PERMISSION_DENIED and NOT_FOUND, is final.
bool IsRetryableSendError(Code code);

// Per-channel display cursor: which seqs were already shown.
class ChannelCursor {
 public:
  ChannelCursor() = default;
  explicit ChannelCursor(std::optional<std::uint64_t> last_seen) : last_seen_(last_seen) {}

  // A message with `seq` arrived on the live stream. Returns true if it was not shown before
  // (display it). Advances the cursor either way.
  bool Observe(std::uint64_t seq);
  // `seq` was shown through a SendAck before the live stream delivered it: its echo is dropped.
  // Does not advance the cursor (earlier messages may still be on their way).
  void MarkShown(std::uint64_t seq);
  // Sets the cursor when it is not set yet (Subscribed{head_seq} of a live-only subscription).
  void SetBaselineIfUnset(std::uint64_t seq);
  // Forgets everything and starts at `last_seen`.
  void Reset(std::optional<std::uint64_t> last_seen);

  // The last seq seen on the live stream: the resume point (after_seq) of a resubscribe.
  std::optional<std::uint64_t> last_seen() const { return last_seen_; }
  // Seqs shown through SendAcks and not yet seen on the stream.
  const std::set<std::uint64_t>& shown_ahead() const { return shown_ahead_; }

 private:
  void Prune();

  std::optional<std::uint64_t> last_seen_;
  std::set<std::uint64_t> shown_ahead_;
};

// The after_seq to resubscribe with after the server sent Unsubscribed{resume_after_seq}: the
// local cursor (everything up to it was displayed, in order), or the server's resume point when
// nothing was seen locally yet.
std::uint64_t ResumeAfterUnsubscribed(std::optional<std::uint64_t> last_seen,
                                      std::uint64_t resume_after_seq);

// A send that was not acknowledged yet.
struct PendingSend {
  std::string client_msg_id;
  std::string channel;
  std::string body;
  int attempts = 0;                        // times written to a stream
  bool in_flight = false;                  // written on the current stream, no answer yet
  SteadyClock::time_point next_attempt{};  // when not in flight: earliest time to write again
  Status last_error;                       // the last retryable error, if any
};

struct SessionEvent {
  enum class Kind {
    kConnected,        // the stream works (first frame received); `resumed` after a reconnect
    kDisconnected,     // the stream ended: `status`; reconnecting in `retry_in`
    kAuthFailed,       // the session cannot be refreshed (`status`); no more reconnects
    kTokenRefreshed,   // the access token was refreshed
    kSubscribed,       // `channel`, `seq` = head_seq
    kSubscribeFailed,  // `channel`, `status`; the channel is no longer subscribed
    kResubscribing,    // server stopped live delivery (`reason`); resubscribing after `seq`
    kMessage,          // `message`: a new message from someone (or own, sent elsewhere)
    kSendAcked,        // `send`, `ack` (seq, duplicate, sent_at): own message is durable
    kSendRetrying,     // `send`, `status`, `retry_in`
    kSendFailed,       // `send`, `status`: final, the message was not stored
    kError,            // an in-stream Error not tied to a pending send: `status`, `channel`
    kTyping,           // `frame.typing()`
    kReceipt,          // `frame.receipt()`
    kPresence,         // `frame.presence()`
  };

  Kind kind = Kind::kError;
  std::string channel;
  std::uint64_t seq = 0;
  Status status;
  std::chrono::milliseconds retry_in{0};
  std::string reason;
  bool resumed = false;
  StreamLimits limits;  // kConnected: the stream's limits
  v1::ChatMessage message;
  v1::SendAck ack;
  PendingSend send;
  v1::ServerFrame frame;
};

const char* KindName(SessionEvent::Kind kind);

class SessionCore {
 public:
  struct Output {
    std::vector<v1::ClientFrame> frames;
    std::vector<SessionEvent> events;
  };

  // `uniform` draws from [0, 1) for retry jitter (default: a seeded PRNG); tests pass a
  // constant to make delays exact.
  explicit SessionCore(Backoff::Params send_retry = {}, std::function<double()> uniform = {});

  // --- Commands -------------------------------------------------------------------------------
  // Subscribes (or re-subscribes) `channel`. An explicit after_seq resets its cursor to it;
  // absent keeps the existing cursor (live-only for a new channel).
  void Subscribe(const std::string& channel, std::optional<std::uint64_t> after_seq, Output& out);
  void Unsubscribe(const std::string& channel, Output& out);
  // Queues a send; written now when connected, otherwise on the next connect.
  void Send(const std::string& client_msg_id, const std::string& channel, const std::string& body,
            SteadyClock::time_point now, Output& out);
  // Ack/Typing are best-effort: written only when connected.
  void Ack(const std::string& channel, std::uint64_t seq, v1::AckKind kind, Output& out);
  void Typing(const std::string& channel, Output& out);

  // --- Connection -----------------------------------------------------------------------------
  // A new stream is open: resubscribes every channel from its cursor, rewrites every pending send.
  void OnConnected(SteadyClock::time_point now, Output& out);
  // The stream ended: nothing is in flight any more; everything is redone on the next connect.
  // A stream ended by the frame size limit fails the largest send in flight (kSendFailed).
  void OnDisconnected(const Status& status, Output& out);
  void OnDisconnected();
  // The limits the server announced for the current stream: sets the send window and the body
  // size checked before writing. Kept across reconnects until the next stream announces its own.
  void SetLimits(const StreamLimits& limits, SteadyClock::time_point now, Output& out);
  const StreamLimits& limits() const { return limits_; }
  // How many sends may be in flight at once on a stream (see the header comment).
  std::size_t SendWindow() const;
  void OnFrame(const v1::ServerFrame& frame, SteadyClock::time_point now, Output& out);
  // Rewrites the sends and subscribes whose retry time has come.
  void OnTimer(SteadyClock::time_point now, Output& out);
  // The earliest time OnTimer has something to do (only while connected).
  std::optional<SteadyClock::time_point> NextTimer() const;

  // --- Queries --------------------------------------------------------------------------------
  bool connected() const { return connected_; }
  bool IsSubscribed(const std::string& channel) const;
  // Channels in subscription order.
  std::vector<std::string> Channels() const;
  // The after_seq a resubscribe of `channel` would use (its last seen seq), if any.
  std::optional<std::uint64_t> ResumeAfterSeq(const std::string& channel) const;
  const ChannelCursor* Cursor(const std::string& channel) const;
  const std::deque<PendingSend>& pending() const { return pending_; }
  const PendingSend* FindPending(const std::string& client_msg_id) const;

 private:
  struct Subscription {
    ChannelCursor cursor;
    bool active = false;  // Subscribed received on the current stream
    int failures = 0;     // consecutive retryable subscribe errors / fruitless resubscribes
    std::optional<SteadyClock::time_point> retry_at;
    std::optional<std::uint64_t> last_unsubscribed_at;  // resume point of the last Unsubscribed
  };

  void WriteSubscribe(const std::string& channel, Subscription& sub, Output& out);
  void WriteSend(PendingSend& send, Output& out);
  // Writes the pending sends that may go now, in order, within the send window.
  void Pump(SteadyClock::time_point now, Output& out);
  void FailSend(std::deque<PendingSend>::iterator it, Status status, Output& out);
  void OnMessage(const v1::ChatMessage& message, Output& out);
  void OnSendAck(const v1::SendAck& ack, Output& out);
  void OnError(const v1::Error& error, SteadyClock::time_point now, Output& out);
  void OnUnsubscribed(const v1::Unsubscribed& frame, SteadyClock::time_point now, Output& out);
  std::chrono::milliseconds RetryDelay(int attempt);
  std::deque<PendingSend>::iterator PendingById(const std::string& client_msg_id);
  Subscription* FindSub(const std::string& channel);

  Backoff::Params send_retry_;
  std::function<double()> uniform_;
  bool connected_ = false;
  StreamLimits limits_;
  std::map<std::string, Subscription> subs_;
  std::vector<std::string> order_;   // subscription order
  std::deque<PendingSend> pending_;  // creation order
};

}  // namespace infrachat::client
