// FanoutService: the in-process FanoutApi.
#pragma once

#include <prometheus/counter.h>
#include <spdlog/logger.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include "infrachat/api/fanout_api.h"
#include "infrachat/api/shard_api.h"
#include "infrachat/bus/event_bus.h"
#include "infrachat/core/availability_log.h"
#include "infrachat/core/executor.h"
#include "infrachat/core/metrics.h"

namespace infrachat::fanout {

struct FanoutOptions {
  int workers = 2;
  std::uint32_t catchup_batch = 256;
  // A catch-up that cannot hand a single message to its stream for this long ends as a slow
  // consumer, so a stalled reader cannot pin a worker or memory.
  std::chrono::milliseconds stalled_limit{30000};
  // Presence frames go only to channels with at most this many live subscribers here: a change
  // costs one frame per subscriber, so N people arriving cost N^2/2 frames. Bigger channels keep
  // the merged view for OnlineUsers (ListMembers) but get no frames. 0: no presence frames.
  std::size_t presence_max_subscribers = 256;
};

// Delivers bus events to subscribed streams, per channel in seq order, without gap or duplicate.
//
// Each subscription remembers `delivered`, the last seq handed to its stream. A live message
// with seq == delivered + 1 is handed over directly; one further ahead means a gap (the
// subscriber is behind, or events overtook each other), which starts a catch-up from the log on
// a worker thread. While catching up, live messages are only noted (their seq); when a log read
// comes back short (the head was reached) and no newer live seq was noted, live delivery resumes.
// Every message therefore comes either from the log or live, exactly once, in order.
//
// The switch-over: every subscription is confirmed by a log read that starts after it was
// registered for live events and the bus said that the channel's events flow here (Watch's
// `ready`: at once in process, after the owner's answer across processes), even when the
// caller's head_seq says there is nothing to read.
// Behind the head, that is the catch-up. At the head, the subscription is live at once and a
// worker reads what follows its starting point (a probe, normally empty); what it finds that
// live delivery has not handed over yet is handed over from there, in order. A message
// committed around the subscribe is thus either seen by that read or committed after the read
// began, in which case its event arrives after the registration; whatever the order of head
// read, registration and the message's event, nothing is skipped and no later message is needed
// to reveal a gap. The cost is one indexed read per subscribe. A cross-process bus keeps the
// same rule: the read starts once the remote interest is registered.
//
// Slow consumers: when a stream's bounded queue refuses a message, the subscription ends with
// an Unsubscribed{resume_after_seq} frame (from the queue's reserve); the client resubscribes
// with after_seq and catches up from the log at the pace it reads. Memory per stream stays bounded.
//
// Presence: each instance counts its live subscriptions per (channel, user) and publishes a
// PresenceChanged on the bus when a count goes 0 -> 1 or 1 -> 0, while holding mu_ so that the
// reports of one instance reach the bus in the order the counts changed. Every instance (this
// one included) merges the reports by origin and sends a Presence frame to the channel's other
// subscribers when the first origin reports a user online or the last one reports them offline.
// Presence frames are ephemeral: offered like typing, dropped when the stream is behind.
//
// Thread-safety: all public methods may be called from any thread. One mutex guards the
// subscription tables; it is never held while calling the database. Lock order: this mutex,
// then a sink's own lock (a sink must never call into fanout while holding its lock).
class FanoutService final : public FanoutApi {
 public:
  FanoutService(FanoutOptions options, EventBus* bus, LogReader* log,
                std::shared_ptr<spdlog::logger> logger);
  ~FanoutService() override;  // unsubscribes from the bus and stops the workers

  void Subscribe(const std::shared_ptr<SessionSink>& sink, const Principal& principal,
                 std::string_view channel, std::uint64_t head_seq,
                 std::optional<std::uint64_t> after_seq) override;
  void Unsubscribe(const SessionSink* sink, std::string_view channel) override;
  void UnsubscribeAll(const SessionSink* sink) override;
  bool IsSubscribed(const SessionSink* sink, std::string_view channel) const override;
  std::size_t CountSubscriptions(const SessionSink* sink) const override;
  std::vector<std::uint64_t> OnlineUsers(std::string_view channel) const override;

  std::size_t subscription_count() const;
  std::uint64_t slow_consumer_cuts() const;
  // The id this instance puts in its PresenceChanged reports.
  std::uint64_t presence_origin() const { return origin_; }

 private:
  struct Subscription {
    std::weak_ptr<SessionSink> sink;
    const SessionSink* key = nullptr;
    std::uint64_t user_id = 0;
    std::string username;
    std::string channel;
    std::uint64_t delivered = 0;    // last seq offered to the stream
    std::uint64_t newest_live = 0;  // highest live seq seen while catching up
    bool catching_up = false;
    // Registered, but the bus has not said that the channel's events flow here yet: nothing is
    // read or delivered until then (live events are only noted).
    bool awaiting_watch = false;
    bool start_behind = false;  // subscribed behind the head: the switch-over is a catch-up
    bool reread = false;        // the watch was re-established: a catch-up reads once more
    bool active = true;
    std::chrono::steady_clock::time_point stalled_since{};
  };
  using SubPtr = std::shared_ptr<Subscription>;

  void OnEvent(const BusEvent& event);
  // The bus says the channel's events flow to this instance (first watch or re-established).
  void OnWatchReady(const std::string& channel);
  // Requires mu_. Starts the switch-over read of a registered subscription.
  void StartSwitchOverLocked(const SubPtr& sub);
  // Traces: a message published in a sampled trace gets a "fanout deliver" span here (one per
  // message, with the number of streams it was queued for: infrachat.deliveries).
  void OnMessage(const v1::ChatMessage& message);
  // Queues a live message for its subscribers; returns how many streams took it.
  std::uint64_t DeliverLive(const v1::ChatMessage& message);
  void OnMembership(const MembershipChanged& change);
  void OnPresence(const PresenceChanged& change);
  void Broadcast(const std::string& channel, const v1::ServerFrame& frame, std::uint64_t skip_user);

  // Requires mu_. Ends the subscription, telling the stream where to resume.
  void EndLocked(const SubPtr& sub, const std::string& reason);
  void RemoveLocked(const SubPtr& sub);
  // Requires mu_. Ends the subscription when a log read was refused because the subscriber is
  // no longer a member; returns whether it did.
  bool EndIfRefusedLocked(const SubPtr& sub, const Error& error);
  // Require mu_. Count sub's user in (out of) its channel; report the user's first (last) one.
  void CountInLocked(const Subscription& sub);
  void CountOutLocked(const Subscription& sub);
  void StartCatchUpLocked(const SubPtr& sub);
  // Requires mu_. Confirms the switch-over of a subscription that starts live at the head: a
  // read of what follows `delivered`, made after the registration (see the class comment).
  void StartProbeLocked(const SubPtr& sub);
  void Probe(const SubPtr& sub);
  using ReadHandler = void (FanoutService::*)(const SubPtr& sub, std::uint64_t from,
                                              std::uint32_t limit,
                                              Result<std::vector<v1::ChatMessage>> messages);
  // Reads the log of sub's channel after `from` without blocking on a remote shard, then runs
  // `handler` (inline in process, on a gRPC thread across processes; never with mu_ held).
  void ReadLogThen(const SubPtr& sub, std::uint64_t from, std::uint32_t limit, ReadHandler handler);
  void OnProbeRead(const SubPtr& sub, std::uint64_t from, std::uint32_t limit,
                   Result<std::vector<v1::ChatMessage>> missed);
  // The stream's queue has no room: retry the catch-up shortly, or end the subscription as a
  // slow consumer once it has been stalled for longer than options_.stalled_limit.
  void RetryStalledLocked(const SubPtr& sub);
  void CatchUp(const SubPtr& sub);
  void OnCatchUpRead(const SubPtr& sub, std::uint64_t from, std::uint32_t want,
                     Result<std::vector<v1::ChatMessage>> messages);

  const FanoutOptions options_;
  EventBus* bus_;
  LogReader* shard_;  // the log of the channels, in process or the shards' over gRPC
  std::shared_ptr<spdlog::logger> log_;
  // "catch-up reads failing" / "catch-up reads recovered": once per outage of the log (the
  // database, or the shard process), not once per subscription and retry (those are at debug).
  AvailabilityLog reads_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, std::vector<SubPtr>> by_channel_;
  std::unordered_map<const SessionSink*, std::unordered_map<std::string, SubPtr>> by_sink_;
  std::uint64_t slow_consumer_cuts_ = 0;
  // Counters in MetricsRegistry(), shared by every FanoutService of the process.
  struct Metrics {
    Metrics();
    prometheus::Counter* live;
    prometheus::Counter* from_log;
    prometheus::Counter* cuts;
    prometheus::Counter* log_reads;
  };
  const Metrics metrics_;
  // Presence. local_: this instance's live subscriptions per channel and user. online_: per
  // channel and user, the origins (fanout instances) that report the user online.
  const std::uint64_t origin_;
  std::unordered_map<std::string, std::unordered_map<std::uint64_t, std::size_t>> local_;
  std::unordered_map<std::string, std::unordered_map<std::uint64_t, std::set<std::uint64_t>>>
      online_;

  // Channels with live subscriptions here, watched on the bus; true once the bus said ready.
  std::unordered_map<std::string, bool> watched_;
  // Lets a `ready` callback that the bus runs late find out that this service is gone: the
  // destructor clears `self` under `mu` (waiting for a running callback).
  struct Life {
    std::mutex mu;
    FanoutService* self = nullptr;
  };
  std::shared_ptr<Life> life_ = std::make_shared<Life>();

  Executor workers_;
  EventBus::SubscriptionId bus_subscription_ = 0;
};

}  // namespace infrachat::fanout
