// `infrachat-ceiling grpc-relay`: the raw transport ceiling. A server of the same service as
// infrachatd (infrachat.v1.ChatService/Connect, ClientFrame/ServerFrame) with no logic behind it:
// no authentication, no storage, no limits. A send gets the next per-channel seq from an
// in-memory counter and is relayed at once to the channel's subscribers. infrachat-bench --raw
// drives it with the same client code and message sizes as the real server, so the difference
// between the two figures is what InfraChat's logic, storage and limits cost.
//
// Frames handled on a stream (anything else is ignored):
//   subscribe{channel}   -> subscribed{channel, head_seq = the channel's counter}, always the
//                           first frame of that subscription
//   unsubscribe{channel} -> no answer; live delivery of the channel to this stream stops
//   send{channel, client_msg_id, body}
//                        -> send_ack{client_msg_id, channel, seq, sent_at_unix_ms} to the
//                           sender, then message{channel, seq, sender_id 0, sender "relay", body,
//                           sent_at_unix_ms, client_msg_id} to every subscriber of the channel
//                           (the sender too when it is subscribed), in seq order. Ack before
//                           message, as infrachatd answers the sender before it publishes.
//   ping{nonce}          -> pong{nonce}
// Channel names are taken as they come (no normalization); the seq counters start at 0 and live
// as long as the server.
//
// Two ways of writing, so that the ceiling keeps pace with what infrachatd does (RelayOptions):
// by default every delivery is encoded for its stream and written as its own message, the write
// starting on the relaying thread, as infrachatd did before issue 9; with `shared_frames` a
// message is encoded once for all its subscribers, idle streams' writes start on a
// WriteScheduler thread, and a stream whose client asks for batches (`infrachat-capabilities:
// batch`) gets what piled up during a write as one FrameBatch, exactly as infrachatd does now.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace infrachat::bench {

struct RelayOptions {
  std::string listen = "127.0.0.1:0";  // host:port; port 0 lets the kernel choose
  bool shared_frames = false;          // encode once per message, batches on request
};

// What a relay did, for the report printed at exit. Updated with relaxed atomics from gRPC's
// threads and read once the server has stopped, so no ordering between them is needed.
struct RelayCounters {
  std::atomic<std::uint64_t> streams{0};     // streams opened
  std::atomic<std::uint64_t> frames_in{0};   // client frames read
  std::atomic<std::uint64_t> sends{0};       // sends relayed (each got a seq)
  std::atomic<std::uint64_t> deliveries{0};  // message frames queued to subscribers
};

// The relay server: binds, serves on gRPC's callback threads, stops on Shutdown().
//
// Thread-safety: construct, Shutdown() and destroy from one thread (main); address() and
// counters() may be read from any thread. Lifetime: every stream is finished and deleted before
// Shutdown() returns, so nothing of the server runs after it.
class RelayServer {
 public:
  // Binds `options.listen` and starts serving. Throws std::runtime_error when the address cannot
  // be bound.
  explicit RelayServer(const RelayOptions& options);
  // Shuts down with a short grace if Shutdown() was not called.
  ~RelayServer();

  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;

  // "host:port" actually bound.
  const std::string& address() const { return address_; }

  // Stops taking calls, lets open streams end by themselves for at most `grace`, then cancels
  // the rest and waits until every stream is deleted. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);

  const RelayCounters& counters() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
  std::string address_;
};

}  // namespace infrachat::bench
