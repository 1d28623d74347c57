#include "load_checker.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <sstream>

namespace infrachat::testing {

using namespace std::chrono_literals;

void CheckClean(const Report& report) {
  CHECK(report.stored == report.acked);
  CHECK(report.lost == 0);
  CHECK(report.duplicates == 0);
  CHECK(report.history_gaps == 0);
  CHECK(report.ack_mismatches == 0);
  CHECK(report.unacked == 0);
  CHECK(report.reordered == 0);
  CHECK(report.gapped == 0);
  CHECK(report.misdelivered == 0);
  CHECK(report.never_delivered == 0);
}

std::ostream& operator<<(std::ostream& out, const Report& r) {
  out << r.channels << " channels, " << r.stored << " messages stored, " << r.acked
      << " acknowledged, " << r.delivered << " deliveries to subscribers\n"
      << "  acknowledged-but-lost " << r.lost << ", duplicates " << r.duplicates
      << ", history gaps " << r.history_gaps << ", ack seq mismatches " << r.ack_mismatches
      << ", stored-but-unacknowledged " << r.unacked << "\n"
      << "  subscribers: reordered " << r.reordered << ", gapped " << r.gapped << ", misdelivered "
      << r.misdelivered << ", acknowledged-but-never-delivered " << r.never_delivered << "\n";
  for (const auto& e : r.examples) out << "  e.g. " << e << "\n";
  return out;
}

Report CheckDelivery(const std::map<std::string, std::vector<Seen>>& history,
                     const std::vector<Acked>& acked, const std::vector<Delivery>& deliveries) {
  Report r;
  const auto note = [&](std::size_t& counter, const std::string& what) {
    ++counter;
    if (r.examples.size() < 12) r.examples.push_back(what);
  };
  // Per channel: client_msg_id -> seq of its first copy.
  std::map<std::string, std::map<std::string, std::uint64_t>> index;
  for (const auto& [channel, messages] : history) {
    ++r.channels;
    r.stored += messages.size();
    auto& ids = index[channel];
    for (std::size_t i = 0; i < messages.size(); ++i) {
      const Seen& m = messages[i];
      if (m.seq != i + 1) {
        note(r.history_gaps, channel + ": history position " + std::to_string(i + 1) +
                                 " holds seq " + std::to_string(m.seq));
      }
      if (!ids.emplace(m.client_msg_id, m.seq).second) {
        note(r.duplicates, channel + ": " + m.client_msg_id + " stored at seq " +
                               std::to_string(ids.at(m.client_msg_id)) + " and " +
                               std::to_string(m.seq));
      }
    }
  }
  // channel -> acknowledged ids
  std::map<std::string, std::set<std::string>> acked_ids;
  for (const auto& a : acked) {
    ++r.acked;
    acked_ids[a.channel].insert(a.client_msg_id);
    const auto channel = index.find(a.channel);
    const auto it = channel == index.end() ? std::map<std::string, std::uint64_t>::const_iterator{}
                                           : channel->second.find(a.client_msg_id);
    if (channel == index.end() || it == channel->second.end()) {
      note(r.lost, a.channel + ": " + a.client_msg_id + " acknowledged with seq " +
                       std::to_string(a.seq) + ", not in history");
    } else if (it->second != a.seq) {
      note(r.ack_mismatches, a.channel + ": " + a.client_msg_id + " acknowledged with seq " +
                                 std::to_string(a.seq) + ", stored at " +
                                 std::to_string(it->second));
    }
  }
  for (const auto& [channel, messages] : history) {
    for (const auto& m : messages) {
      if (acked_ids[channel].count(m.client_msg_id) == 0) {
        note(r.unacked, channel + ": seq " + std::to_string(m.seq) + " (" + m.client_msg_id +
                            ") was never acknowledged");
      }
    }
  }
  for (const auto& d : deliveries) {
    const std::string who = d.subscriber + " in " + d.channel;
    static const std::vector<Seen> kNone;
    const auto h = history.find(d.channel);
    const std::vector<Seen>& log = h == history.end() ? kNone : h->second;
    std::set<std::uint64_t> got;
    std::uint64_t last = d.after_seq;
    for (const auto& m : d.received) {
      ++r.delivered;
      if (m.seq <= last) {
        note(r.reordered,
             who + ": seq " + std::to_string(m.seq) + " after " + std::to_string(last));
      } else {
        if (m.seq > last + 1) {
          note(r.gapped, who + ": seq " + std::to_string(m.seq) + " after " + std::to_string(last) +
                             " (missing " + std::to_string(last + 1) + ".." +
                             std::to_string(m.seq - 1) + ")");
        }
        last = m.seq;
      }
      if (m.seq == 0 || m.seq > log.size() || log[m.seq - 1].client_msg_id != m.client_msg_id) {
        note(r.misdelivered, who + ": seq " + std::to_string(m.seq) + " carried " +
                                 m.client_msg_id + ", history has " +
                                 (m.seq == 0 || m.seq > log.size() ? std::string("nothing there")
                                                                   : log[m.seq - 1].client_msg_id));
      } else {
        got.insert(m.seq);
      }
    }
    for (const auto& m : log) {
      if (m.seq > d.after_seq && got.count(m.seq) == 0 &&
          acked_ids[d.channel].count(m.client_msg_id) > 0) {
        note(r.never_delivered, who + ": acknowledged seq " + std::to_string(m.seq) + " (" +
                                    m.client_msg_id + ") never arrived");
      }
    }
  }
  return r;
}

// Client sessions reconnect and retry sends quickly (the defaults back off to 10 s, which would
// measure the client's patience rather than the cluster's recovery).
client::SessionOptions FastSession() {
  client::SessionOptions options;
  options.reconnect_backoff = {100ms, 1000ms, 2.0, 0.5};
  options.send_retry_backoff = {100ms, 1000ms, 2.0, 0.5};
  return options;
}

std::string Percentiles(std::vector<double> values) {
  if (values.empty()) return "no samples";
  std::sort(values.begin(), values.end());
  const auto at = [&](double q) {
    return values[std::min(values.size() - 1, static_cast<std::size_t>(q * values.size()))];
  };
  std::ostringstream out;
  out << std::fixed << std::setprecision(3) << values.size() << " samples, p50 " << at(0.5)
      << " s, p99 " << at(0.99) << " s, max " << values.back() << " s";
  return out.str();
}

Load::Load(std::vector<std::pair<std::string, std::string>> gateways,
           std::vector<std::string> channels)
    : gateways_(std::move(gateways)) {
  REQUIRE_FALSE(gateways_.empty());
  for (int i = 0; i < kUsers; ++i) {
    users_.push_back("user" + std::to_string(i));
    clients_.push_back(
        RegisterUser(gateways_[i % gateways_.size()].second, users_.back(), Options()));
  }
  for (std::size_t i = 0; i < channels.size(); ++i) {
    const std::string& name = channels[i];
    const auto created = clients_[i % kUsers]->CreateChannel(name);
    REQUIRE(created.ok());
    for (std::size_t u = 0; u < kUsers; ++u) {
      if (u != i % kUsers) REQUIRE(clients_[u]->JoinChannel(name).ok());
    }
    channels_.push_back(name);
  }
}

std::string Load::Gateway(const std::string& name) const {
  for (const auto& [n, address] : gateways_) {
    if (n == name) return address;
  }
  FAIL("no gateway named " << name);
  return {};
}

}  // namespace infrachat::testing
