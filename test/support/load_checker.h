// Clients under load and the checker of what they were told, for chaos tests (cluster_test,
// ha_test): sessions that are ResilientSessions (they reconnect, resume every subscription from
// the last seq seen and resend unacknowledged sends with the same client_msg_id by themselves),
// an Observer of everything they were told, and a checker that compares that with every
// channel's full history: acknowledged-but-lost, duplicates, gaps, reorders, undelivered. The
// checker has a test of its own on synthetic data (cluster_test.cc), so that a zero it reports
// is not a zero it cannot help reporting.
#pragma once

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon_process.h"
#include "infrachat/client/client.h"
#include "infrachat/client/resilient_session.h"

namespace infrachat::testing {

using Clock = std::chrono::steady_clock;

// =============================================================================================
// The checker: what clients were told and what they received, against the durable log.
// =============================================================================================

// One message of a channel: its seq and client_msg_id.
struct Seen {
  std::uint64_t seq = 0;
  std::string client_msg_id;
};

// A send its sender got a SendAck for.
struct Acked {
  std::string channel;
  std::string client_msg_id;
  std::uint64_t seq = 0;  // from the ack
};

// What one subscriber received of one channel, in arrival order, having subscribed after
// `after_seq` and stayed subscribed to the end.
struct Delivery {
  std::string subscriber;
  std::string channel;
  std::uint64_t after_seq = 0;
  std::vector<Seen> received;
};

struct Report {
  std::size_t channels = 0;
  std::size_t stored = 0;
  std::size_t acked = 0;
  std::size_t delivered = 0;
  std::size_t lost = 0;             // acknowledged, not in its channel's history
  std::size_t duplicates = 0;       // extra copies of a client_msg_id in a channel's history
  std::size_t history_gaps = 0;     // history positions whose seq is not 1, 2, ... N
  std::size_t ack_mismatches = 0;   // the ack's seq holds another message in history
  std::size_t unacked = 0;          // stored, but its sender never got the ack
  std::size_t reordered = 0;        // a subscriber got a seq not above the one before it
  std::size_t gapped = 0;           // a subscriber skipped seqs between two it got
  std::size_t misdelivered = 0;     // a subscriber got a seq whose message differs in history
  std::size_t never_delivered = 0;  // acknowledged, never reached a subscriber of its channel
  std::vector<std::string> examples;

  std::size_t faults() const {
    return lost + duplicates + history_gaps + ack_mismatches + unacked + reordered + gapped +
           misdelivered + never_delivered;
  }
};

// The checker's verdict, one CHECK per kind of fault so that a failure names it: every
// acknowledged message stored once, in a gapless order, and delivered to every subscriber.
void CheckClean(const Report& report);

std::ostream& operator<<(std::ostream& out, const Report& r);

// `history`: every channel's full history, oldest first. `acked`: every SendAck of every
// sender. `deliveries`: what each subscriber got. Counts every way they disagree.
Report CheckDelivery(const std::map<std::string, std::vector<Seen>>& history,
                     const std::vector<Acked>& acked, const std::vector<Delivery>& deliveries);

// =============================================================================================
// Clients under load.
// =============================================================================================

// Client sessions reconnect and retry sends quickly (the defaults back off to 10 s, which would
// measure the client's patience rather than the cluster's recovery).
client::SessionOptions FastSession();

inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Latency percentiles of `values` (seconds), for printing.
std::string Percentiles(std::vector<double> values);

// Prints how long each phase of a test took, to see where the time goes on a slow machine.
class Phases {
 public:
  void operator()(const std::string& done) {
    const auto now = Clock::now();
    std::cout << std::fixed << std::setprecision(1) << "  [" << Seconds(now - start_) << " s] "
              << done << " (" << Seconds(now - last_) << " s)" << std::endl;
    last_ = now;
  }

 private:
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_ = start_;
};

// Everything the sessions of a test were told, recorded from their callbacks (session threads).
class Observer {
 public:
  struct Ack {
    Acked acked;
    Clock::time_point at;
    Clock::duration latency{};  // from Send() to the ack
  };
  struct Retry {
    std::string channel;
    Code code = Code::kOk;
    Clock::time_point at;
  };

  // A callback for a session named `who`. Subscribers record messages, every session acks.
  client::ResilientSession::EventCallback For(const std::string& who) {
    return [this, who](const client::SessionEvent& e) { On(who, e); };
  }
  // Records when a send was issued (for its latency).
  void Issued(const std::string& client_msg_id) {
    std::lock_guard lock(mu_);
    issued_[client_msg_id] = Clock::now();
  }
  // Waits until `client_msg_id` is acked; returns when, or nullopt on timeout.
  std::optional<Clock::time_point> WaitAcked(const std::string& client_msg_id,
                                             std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    std::optional<Clock::time_point> at;
    cv_.wait_for(lock, timeout, [&] {
      auto it = ack_at_.find(client_msg_id);
      if (it != ack_at_.end()) at = it->second;
      return at.has_value();
    });
    return at;
  }

  std::vector<Ack> acks() const {
    std::lock_guard lock(mu_);
    return acks_;
  }
  std::vector<Acked> acked() const {
    std::lock_guard lock(mu_);
    std::vector<Acked> out;
    for (const auto& a : acks_) out.push_back(a.acked);
    return out;
  }
  std::vector<Retry> retries() const {
    std::lock_guard lock(mu_);
    return retries_;
  }
  std::vector<std::string> failures() const {
    std::lock_guard lock(mu_);
    return failures_;
  }
  std::size_t disconnects() const {
    std::lock_guard lock(mu_);
    return disconnects_;
  }
  // How many channels session `who` got a Subscribed for (on any stream).
  std::size_t subscribed(const std::string& who) const {
    std::lock_guard lock(mu_);
    auto it = subscribed_.find(who);
    return it == subscribed_.end() ? 0 : it->second.size();
  }
  // How long after its ack each delivery to a subscriber came (0 when before the ack), in
  // seconds, for every delivery of an acknowledged message (of the channels `which` accepts).
  std::vector<double> DeliveryLags(
      const std::function<bool(const std::string& channel)>& which = {}) const {
    std::lock_guard lock(mu_);
    std::vector<double> out;
    for (const auto& a : arrivals_) {
      if (which && !which(a.channel)) continue;
      if (auto acked = ack_at_.find(a.client_msg_id); acked != ack_at_.end()) {
        out.push_back(std::max(0.0, Seconds(a.at - acked->second)));
      }
    }
    return out;
  }
  // subscriber -> channel -> received
  std::map<std::string, std::map<std::string, std::vector<Seen>>> received() const {
    std::lock_guard lock(mu_);
    return received_;
  }

 private:
  void On(const std::string& who, const client::SessionEvent& e) {
    using K = client::SessionEvent::Kind;
    const auto now = Clock::now();
    std::lock_guard lock(mu_);
    switch (e.kind) {
      case K::kMessage:
        received_[who][e.channel].push_back({e.message.seq(), e.message.client_msg_id()});
        arrivals_.push_back({e.channel, e.message.client_msg_id(), now});
        break;
      case K::kSubscribed:
        subscribed_[who].insert(e.channel);
        break;
      case K::kSendAcked: {
        Ack a{{e.channel, e.send.client_msg_id, e.ack.seq()}, now, {}};
        if (auto it = issued_.find(e.send.client_msg_id); it != issued_.end()) {
          a.latency = now - it->second;
        }
        acks_.push_back(a);
        ack_at_[e.send.client_msg_id] = now;
        cv_.notify_all();
        break;
      }
      case K::kSendRetrying:
        retries_.push_back({e.channel, e.status.code, now});
        break;
      case K::kSendFailed:
        failures_.push_back(who + ": " + e.channel + " " + e.send.client_msg_id + ": " +
                            client::ToString(e.status));
        break;
      case K::kSubscribeFailed:
        failures_.push_back(who + ": subscribe " + e.channel + ": " + client::ToString(e.status));
        break;
      case K::kAuthFailed:
        failures_.push_back(who + ": auth failed: " + client::ToString(e.status));
        break;
      case K::kDisconnected:
        ++disconnects_;
        break;
      default:
        break;
    }
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Clock::time_point> issued_;
  std::map<std::string, Clock::time_point> ack_at_;
  std::vector<Ack> acks_;
  std::vector<Retry> retries_;
  std::vector<std::string> failures_;
  std::size_t disconnects_ = 0;
  std::map<std::string, std::set<std::string>> subscribed_;
  std::map<std::string, std::map<std::string, std::vector<Seen>>> received_;
  struct Arrival {
    std::string channel;
    std::string client_msg_id;
    Clock::time_point at;
  };
  std::vector<Arrival> arrivals_;
};

// Users, channels (every user a member of every channel), and sessions spread over the
// gateways: senders that send steadily round-robin over the channels, and subscribers of every
// channel that only receive. The gateways are named (a region, say); sessions alternate over
// them in the order given.
//
// Thread-safety: drive it from the test's thread; the senders' thread and the sessions'
// callbacks only touch the Observer. Lifetime: the destructor stops the sender and the sessions.
class Load {
 public:
  static constexpr int kUsers = 6;

  // Registers kUsers users (through the gateways in turn: auth is global) and creates
  // `channels`, every user a member. `gateways`: (name, host:port), at least one.
  Load(std::vector<std::pair<std::string, std::string>> gateways,
       std::vector<std::string> channels);

  ~Load() { Stop(); }

  static client::ClientOptions Options() {
    client::ClientOptions options;
    options.auto_refresh = true;
    options.call_timeout = std::chrono::seconds(5);
    return options;
  }

  const std::vector<std::string>& channels() const { return channels_; }
  Observer& observer() { return observer_; }

  // A new logged-in session of user `user` on gateway `gateway`, started.
  client::ResilientSession& Session(const std::string& name, int user, const std::string& gateway) {
    auto c = std::make_shared<client::Client>(Gateway(gateway), Options());
    const auto login = c->Login(users_[user], kTestPassword);
    REQUIRE(login.ok());
    sessions_.push_back(
        std::make_unique<client::ResilientSession>(c, observer_.For(name), FastSession()));
    names_.push_back(name);
    sessions_.back()->Start();
    return *sessions_.back();
  }

  // Starts `subscribers` sessions (alternating gateways), each subscribed to every channel from
  // the start of its log, and waits until each is subscribed everywhere.
  void StartSubscribers(int subscribers) {
    std::vector<std::string> started;
    for (int i = 0; i < subscribers; ++i) {
      const std::string region = gateways_[i % gateways_.size()].first;
      started.push_back("subscriber" + std::to_string(i) + "@" + region);
      auto& s = Session(started.back(), (i + 3) % kUsers, region);
      for (const auto& c : channels_) s.Subscribe(c, 0);
      subscribers_.push_back(&s);
    }
    REQUIRE(WaitUntil(
        [&] {
          for (const auto& who : started) {
            if (observer_.subscribed(who) < channels_.size()) return false;
          }
          return true;
        },
        std::chrono::seconds(30)));
  }

  // Starts `senders` sessions (alternating gateways) and one thread that sends from them in
  // turn, round-robin over the channels, one message every `every`.
  void StartSenders(int senders, std::chrono::milliseconds every) {
    std::vector<client::ResilientSession*> mine;
    for (int i = 0; i < senders; ++i) {
      const std::string region = gateways_[i % gateways_.size()].first;
      mine.push_back(&Session("sender" + std::to_string(i) + "@" + region, i % kUsers, region));
    }
    running_ = true;
    thread_ = std::thread([this, mine, every] {
      std::size_t n = 0;
      auto next = Clock::now();
      while (running_) {
        auto* s = mine[n % mine.size()];
        const std::string& channel = channels_[(n / mine.size()) % channels_.size()];
        const std::string id = client::NewClientMsgId();
        observer_.Issued(id);
        s->SendWithId(channel, id, "load " + std::to_string(n));
        ++n;
        sent_ = n;
        next += every;
        std::this_thread::sleep_until(next);  // the pace of the load
      }
    });
  }

  // Stops issuing sends (the sessions keep retrying what is pending).
  void StopSending() {
    running_ = false;
    if (thread_.joinable()) thread_.join();
  }
  std::size_t sent() const { return sent_; }

  // Waits until no session has a send pending.
  bool WaitDrained(std::chrono::milliseconds timeout) {
    return WaitUntil(
        [&] {
          for (const auto& s : sessions_) {
            if (!s->pending_snapshot().empty()) return false;
          }
          return true;
        },
        timeout);
  }
  // Waits until every subscriber has seen, in every channel, the highest acknowledged seq.
  bool WaitDelivered(std::chrono::milliseconds timeout) {
    std::map<std::string, std::uint64_t> head;
    for (const auto& a : observer_.acked()) head[a.channel] = std::max(head[a.channel], a.seq);
    return WaitUntil(
        [&] {
          for (auto* s : subscribers_) {
            for (const auto& [channel, seq] : head) {
              const auto seen = s->LastSeen(channel);
              if (!seen || *seen < seq) return false;
            }
          }
          return true;
        },
        timeout);
  }

  // Reads every channel's full history and compares it with what the sessions saw.
  Report Check() {
    std::map<std::string, std::vector<Seen>> history;
    for (const auto& c : channels_) {
      auto& h = history[c];
      for (const auto& m : FullHistory(*clients_[0], c)) h.push_back({m.seq(), m.client_msg_id()});
    }
    std::vector<Delivery> deliveries;
    const auto received = observer_.received();
    for (std::size_t i = 0; i < sessions_.size(); ++i) {
      if (std::find(subscribers_.begin(), subscribers_.end(), sessions_[i].get()) ==
          subscribers_.end())
        continue;
      for (const auto& c : channels_) {
        Delivery d{names_[i], c, 0, {}};
        if (auto s = received.find(names_[i]); s != received.end()) {
          if (auto r = s->second.find(c); r != s->second.end()) d.received = r->second;
        }
        deliveries.push_back(std::move(d));
      }
    }
    return CheckDelivery(history, observer_.acked(), deliveries);
  }

  void Stop() {
    StopSending();
    for (auto& s : sessions_) s->Stop();
  }

 private:
  // The address of gateway `name`.
  std::string Gateway(const std::string& name) const;

  std::vector<std::pair<std::string, std::string>> gateways_;
  std::vector<std::string> users_;
  std::vector<std::shared_ptr<client::Client>> clients_;
  std::vector<std::string> channels_;
  Observer observer_;
  std::vector<std::unique_ptr<client::ResilientSession>> sessions_;
  std::vector<std::string> names_;
  std::vector<client::ResilientSession*> subscribers_;
  std::atomic<bool> running_{false};
  std::atomic<std::size_t> sent_{0};
  std::thread thread_;
};

}  // namespace infrachat::testing
