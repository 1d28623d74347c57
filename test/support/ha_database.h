// The HA PostgreSQL of scripts/run-ha-db.sh for end-to-end tests (docs/HA.md): start, find
// the leader and the synchronous standby through Patroni's REST API, and fail nodes (kill -9,
// SIGSTOP, patronictl switchover).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "daemon_process.h"

namespace infrachat::testing {

// One node of the HA database, as DIR/ha.json lists it now.
struct HaNode {
  std::string name;
  int pg_port = 0;
  std::string rest;
  pid_t patroni_pid = 0;
  pid_t postmaster_pid = 0;
  std::string config;
};

// `pid` and its children (a postmaster's children call setsid: there is no process group).
std::vector<pid_t> ProcessTree(pid_t pid);

// scripts/run-ha-db.sh as a child process: etcd and three Patroni-managed PostgreSQL nodes on
// loopback (ports xx70-xx77 of a random hundred in 20070-32777), started by the constructor
// (which waits until a leader and a synchronous standby run, at most 180 s, and throws
// otherwise) and stopped by Stop() or the destructor. When an assertion fails while it exists,
// its directory is kept and the script's output and each node's log tail are printed.
// Not thread-safe: drive it from the test's thread.
class HaDatabase {
 public:
  HaDatabase() {
    root_ = MakeTempDir("infrachat-ha");
    std::filesystem::permissions(
        root_, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                   std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                   std::filesystem::perms::others_exec);
    dir_ = root_ + "/ha";
    std::random_device random;
    // 8 ports from base; xx70-xx77 never meets the cluster tests' xx00-xx11 and xx50-xx61, and
    // the top stays below the kernel's ephemeral ports (32768-60999).
    const int base = 20070 + static_cast<int>(random() % 127) * 100;
    script_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{std::string(INFRACHAT_SOURCE_DIR) + "/scripts/run-ha-db.sh",
                                 "--dir", dir_, "--base-port", std::to_string(base), "--timeout",
                                 "150"},
        "infrachat-ha-script");
    failure_context_ = std::make_unique<FailureContext>([this] { return Describe(); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
    while (script_->out().find("HA database is up") == std::string::npos) {
      if (auto status = script_->Wait(std::chrono::milliseconds(0))) {
        failed_ = true;
        Shutdown();
        throw std::runtime_error("run-ha-db.sh exited with " + std::to_string(*status) +
                                 "; stdout:\n" + script_->out() + "stderr:\n" + script_->err());
      }
      if (std::chrono::steady_clock::now() > deadline) {
        failed_ = true;
        Shutdown();
        throw std::runtime_error("the HA database was not up within 180 s");
      }
      std::this_thread::sleep_for(
          std::chrono::milliseconds(100));  // polling the script's output against a deadline
    }
  }
  ~HaDatabase() { Shutdown(); }
  HaDatabase(const HaDatabase&) = delete;
  HaDatabase& operator=(const HaDatabase&) = delete;

  // SIGTERM to the script (it stops Patroni, PostgreSQL and etcd); its exit status.
  std::optional<int> Stop() {
    if (!script_) return std::nullopt;
    if (auto status = script_->Wait(std::chrono::milliseconds(0))) return status;
    script_->Signal(SIGTERM);
    return script_->Wait(
        std::chrono::seconds(150));  // the script gives each Patroni 30 s, then a postmaster 15 s
  }

  nlohmann::json Json() const { return nlohmann::json::parse(ReadFile(dir_ + "/ha.json")); }
  std::string url() const { return Json().at("url").get<std::string>(); }
  std::vector<HaNode> Nodes() const {
    std::vector<HaNode> out;
    const nlohmann::json json = Json();  // not in the for: at() of a temporary would dangle
    for (const auto& n : json.at("nodes")) {
      out.push_back({n.at("name").get<std::string>(), n.at("pg_port").get<int>(),
                     n.at("rest").get<std::string>(), n.at("patroni_pid").get<pid_t>(),
                     n.at("postmaster_pid").get<pid_t>(), n.at("config").get<std::string>()});
    }
    return out;
  }
  HaNode NodeNamed(const std::string& name) const {
    for (const HaNode& n : Nodes()) {
      if (n.name == name) return n;
    }
    FAIL("no node " << name << " in ha.json");
    return {};
  }

  // Patroni's view (GET /cluster), asked of each node's REST API in turn until one answers.
  std::optional<nlohmann::json> ClusterView() const {
    for (const HaNode& n : Nodes()) {
      auto r =
          ChildProcess({"/usr/bin/curl", "-sf", "--max-time", "2", "http://" + n.rest + "/cluster"},
                       "infrachat-ha-curl")
              .Finish(std::chrono::seconds(5));
      if (r.exit_code != 0) continue;
      try {
        return nlohmann::json::parse(r.out);
      } catch (const std::exception&) {
        continue;
      }
    }
    return std::nullopt;
  }
  // The member with `role` ("leader", "sync_standby"), empty when there is none now.
  std::string MemberWithRole(const std::string& role) const {
    auto view = ClusterView();
    if (!view) return {};
    for (const auto& m : view->at("members")) {
      if (m.value("role", "") == role) return m.at("name").get<std::string>();
    }
    return {};
  }
  // Three members running on one timeline, a leader and a synchronous standby.
  bool Healthy() const {
    auto view = ClusterView();
    if (!view) return false;
    int running = 0, leaders = 0, sync = 0;
    std::set<int> timelines;
    for (const auto& m : view->at("members")) {
      running += m.value("state", "") == "running" ? 1 : 0;
      leaders += m.value("role", "") == "leader" ? 1 : 0;
      sync += m.value("role", "") == "sync_standby" ? 1 : 0;
      timelines.insert(m.value("timeline", 0));
    }
    return running == 3 && leaders == 1 && sync >= 1 && timelines.size() == 1;
  }
  bool WaitHealthy(std::chrono::milliseconds timeout) const {
    return WaitUntil([&] { return Healthy(); }, timeout);
  }

  // kill -9 of `node`'s postmaster and all its processes (as a crash of the machine would).
  void KillPostgres(const HaNode& node) {
    REQUIRE(node.postmaster_pid > 0);
    for (pid_t pid : ProcessTree(node.postmaster_pid)) ::kill(pid, SIGKILL);
  }
  // SIGSTOP / SIGCONT of `node`'s Patroni (a hung Patroni; its PostgreSQL runs on).
  void PausePatroni(const HaNode& node) { REQUIRE(::kill(node.patroni_pid, SIGSTOP) == 0); }
  void ResumePatroni(const HaNode& node) { REQUIRE(::kill(node.patroni_pid, SIGCONT) == 0); }
  // SIGSTOP / SIGCONT of `node`'s postmaster and all its processes (a hung server).
  void Pause(const HaNode& node) { Signal(node, SIGSTOP); }
  void Resume(const HaNode& node) { Signal(node, SIGCONT); }
  // `patronictl switchover` from `leader` to `candidate`; its result.
  CliResult Switchover(const HaNode& leader, const std::string& candidate) {
    return ChildProcess({"/usr/bin/patronictl", "-c", leader.config, "switchover", "--leader",
                         leader.name, "--candidate", candidate, "--force"},
                        "infrachat-ha-patronictl")
        .Finish(std::chrono::seconds(60));
  }

  // The script's output so far.
  std::string Output() const { return script_->out(); }

 private:
  void Signal(const HaNode& node, int sig) {
    REQUIRE(node.postmaster_pid > 0);
    for (pid_t pid : ProcessTree(node.postmaster_pid)) ::kill(pid, sig);
  }

  std::string Describe() {
    failed_ = true;
    std::string out = "---- run-ha-db.sh (" + dir_ + ") stdout ----\n" + script_->out() +
                      "---- stderr ----\n" + LastLines(script_->err(), 20);
    for (const char* node : {"node1", "node2", "node3"}) {
      out += std::string("---- ") + node + " Patroni and PostgreSQL log, last lines ----\n" +
             LastLines(ReadFile(dir_ + "/" + node + "/patroni.log"), 25);
    }
    return out + "---- end of HA database logs ----\n";
  }

  void Shutdown() {
    Stop();
    failure_context_.reset();
    if (root_.empty()) return;
    if (failed_ || std::uncaught_exceptions() > 0 || std::getenv("INFRACHAT_TEST_KEEP_HA")) {
      std::cerr << "HA database directory kept: " << dir_ << "\n";
    } else {
      std::error_code ignored;
      std::filesystem::remove_all(root_, ignored);
    }
    root_.clear();
  }

  std::string root_;
  std::string dir_;
  std::unique_ptr<ChildProcess> script_;
  bool failed_ = false;
  std::unique_ptr<FailureContext> failure_context_;
};

}  // namespace infrachat::testing
