// End-to-end: the role-split pair of split_test.cc with TLS (docs/CONFIG.md, "TLS"):
//   core  [auth, shard]             mutual TLS on its internal listener
//   edge  [gateway, fanout, router] TLS on its public port; mutual TLS on its channels to the core
// Certificates come from scripts/dev-certs.sh at test start (a throwaway CA per run; no key is
// checked in). Users chat through the edge trusting that CA; the internal listener refuses a
// plaintext client and a client whose certificate another CA signed; the public TLS port refuses
// a plaintext client.
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "daemon_process.h"
#include "grpc_wire.h"
#include "infrachat/client/chat_stream.h"
#include "infrachat/client/client.h"

namespace infrachat {
namespace {

using namespace std::chrono_literals;
using testing::CliResult;
using testing::CollectMessages;
using testing::DaemonProcess;
using testing::FullHistory;
using testing::kTestPassword;
using testing::RegisterUser;
using testing::RunCli;
using testing::SendAndWait;
using testing::Seqs;
using testing::SubscribeAndWait;
using testing::TestDatabase;
namespace v1 = client::v1;

constexpr auto kWait = 15s;
constexpr const char* kGeneral = "general";
constexpr int kServing = 1;  // grpc.health.v1.HealthCheckResponse.ServingStatus

// A throwaway CA and a certificate it signed (SAN IP:127.0.0.1, DNS:localhost), made by
// scripts/dev-certs.sh in a temp dir that lives as long as the object.
class Certificates {
 public:
  Certificates() : dir_(testing::MakeTempDir("infrachat-tls")) {
    const std::string log = dir_ + "/dev-certs.log";
    const std::string command =
        std::string(INFRACHAT_SOURCE_DIR) + "/scripts/dev-certs.sh " + dir_ + " >" + log + " 2>&1";
    if (std::system(command.c_str()) != 0) FAIL("scripts/dev-certs.sh: " << testing::ReadFile(log));
  }
  ~Certificates() { std::filesystem::remove_all(dir_); }

  std::string ca() const { return dir_ + "/ca.pem"; }
  std::string cert() const { return dir_ + "/cert.pem"; }
  std::string key() const { return dir_ + "/key.pem"; }
  std::string Read(const std::string& path) const { return testing::ReadFile(path); }

  // Mutual TLS inside the cluster and TLS on the public port, as `--set` overrides.
  std::vector<std::string> Overrides() const {
    return {"tls.internal.cert_file=" + cert(), "tls.internal.key_file=" + key(),
            "tls.internal.ca_file=" + ca(), "tls.public.cert_file=" + cert(),
            "tls.public.key_file=" + key()};
  }

  // Client options that trust only this CA.
  client::ClientOptions Trusting() const {
    auto tls = client::TlsTrustingCaFile(ca());
    REQUIRE(tls.ok());
    client::ClientOptions options;
    options.tls = *tls;
    return options;
  }

  // A channel presenting this CA's certificate, trusting `server_ca`'s certificates.
  std::shared_ptr<grpc::Channel> ClientChannel(const std::string& address,
                                               const Certificates& server_ca) const {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = Read(server_ca.ca());
    ssl.pem_cert_chain = Read(cert());
    ssl.pem_private_key = Read(key());
    return grpc::CreateChannel(address, grpc::SslCredentials(ssl));
  }

 private:
  std::string dir_;
};

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

struct TlsCluster {
  TlsCluster()
      : core(db, Concat({"roles=auth,shard", "grpc.internal_listen_address=127.0.0.1:0",
                         "grpc.shutdown_grace_s=1"},
                        certs.Overrides())),
        edge(db, Concat({"roles=gateway,fanout,router",
                         "database.url=", "peers.auth=" + core.internal_address(),
                         "peers.shard=" + core.internal_address(),
                         "grpc.internal_call_timeout_ms=2000"},
                        certs.Overrides())) {}

  Certificates certs;
  TestDatabase db;
  DaemonProcess core;
  DaemonProcess edge;
};

// grpc.health.v1.Health/Check of the whole server on `channel`: the status, and in `serving`
// whether it answered SERVING.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, bool* serving = nullptr) {
  grpc::Status status;
  const std::string response =
      testing::CallUnary(channel, "/grpc.health.v1.Health/Check", testing::Encode({}), status, 5s);
  if (serving != nullptr) {
    const auto values = testing::VarintField(response, 1);
    *serving = status.ok() && values.size() == 1 && values[0] == kServing;
  }
  return status;
}

TEST_CASE("TLS: users chat through an edge with TLS outside and mutual TLS inside",
          "[e2e][cluster][tls]") {
  TlsCluster c;
  // Each listener says at start how it is secured.
  CHECK_THAT(testing::ReadFile(c.core.log_path()),
             Catch::Contains("internal listener on " + c.core.internal_address() + ": mutual TLS"));
  CHECK_THAT(testing::ReadFile(c.edge.log_path()),
             Catch::Contains("public listener on " + c.edge.address() + ": TLS"));

  auto alice = RegisterUser(c.edge.address(), "alice", c.certs.Trusting());
  auto bob = RegisterUser(c.edge.address(), "bob", c.certs.Trusting());
  REQUIRE(alice->CreateChannel(kGeneral).ok());
  REQUIRE(bob->JoinChannel(kGeneral).ok());
  auto a = alice->Connect();
  auto b = bob->Connect();
  REQUIRE(SubscribeAndWait(*a, kGeneral) == 0);
  REQUIRE(SubscribeAndWait(*b, kGeneral) == 0);

  // Send (edge -> core over mutual TLS), live delivery (the core's event stream back to the
  // edge) and history (the core's log), all through TLS to the client.
  auto ack = SendAndWait(*a, kGeneral, client::NewClientMsgId(), "over TLS");
  REQUIRE(ack.has_value());
  REQUIRE(ack->has_send_ack());
  CHECK(ack->send_ack().seq() == 1);
  auto live = CollectMessages(*b, kGeneral, 1, kWait);
  REQUIRE(Seqs(live) == std::vector<std::uint64_t>{1});
  CHECK(live[0].body() == "over TLS");
  auto history = FullHistory(*bob, kGeneral);
  REQUIRE(history.size() == 1);
  CHECK(history[0].body() == "over TLS");

  // The terminal client with --ca registers and sends; a plaintext one cannot.
  const std::map<std::string, std::string> carol = {{"INFRACHAT_SERVER", c.edge.address()},
                                                    {"INFRACHAT_USER", "carol"},
                                                    {"INFRACHAT_PASSWORD", kTestPassword}};
  CliResult registered = RunCli({"--ca", c.certs.ca(), "register"}, carol, kWait);
  INFO(registered.Describe());
  REQUIRE(registered.exit_code == 0);
  CliResult sent = RunCli({"--ca", c.certs.ca(), "send", "--join", "-c", kGeneral, "from the CLI"},
                          carol, kWait);
  INFO(sent.Describe());
  REQUIRE(sent.exit_code == 0);
  const auto from_cli = CollectMessages(*b, kGeneral, 2, kWait);
  REQUIRE(Seqs(from_cli) == std::vector<std::uint64_t>{2});
  CHECK(from_cli[0].body() == "from the CLI");
  CliResult plaintext = RunCli({"history", "-c", kGeneral}, carol, kWait);
  INFO(plaintext.Describe());
  CHECK(plaintext.exit_code == 5);  // UNAVAILABLE: the handshake fails
}

TEST_CASE("TLS: the internal listener admits only certificates of the cluster CA",
          "[e2e][cluster][tls]") {
  TlsCluster c;
  const std::string internal = c.core.internal_address();

  // A cluster certificate is admitted (so the refusals below are about credentials alone).
  bool serving = false;
  CHECK(HealthCheck(c.certs.ClientChannel(internal, c.certs), &serving).ok());
  CHECK(serving);

  // Plaintext: no handshake at all.
  const grpc::Status plaintext =
      HealthCheck(grpc::CreateChannel(internal, grpc::InsecureChannelCredentials()));
  CHECK(plaintext.error_code() == grpc::StatusCode::UNAVAILABLE);

  // TLS without a client certificate: the server requires one.
  grpc::SslCredentialsOptions anonymous;
  anonymous.pem_root_certs = c.certs.Read(c.certs.ca());
  const grpc::Status no_certificate =
      HealthCheck(grpc::CreateChannel(internal, grpc::SslCredentials(anonymous)));
  CHECK(no_certificate.error_code() == grpc::StatusCode::UNAVAILABLE);

  // A certificate of another CA, although the client trusts the server.
  const Certificates stranger;
  const grpc::Status foreign = HealthCheck(stranger.ClientChannel(internal, c.certs));
  INFO(foreign.error_message());
  CHECK(foreign.error_code() == grpc::StatusCode::UNAVAILABLE);
  // Still serving the cluster.
  CHECK(HealthCheck(c.certs.ClientChannel(internal, c.certs)).ok());
}

TEST_CASE("TLS: the public port refuses plaintext and untrusted clients", "[e2e][cluster][tls]") {
  TlsCluster c;
  client::Client plaintext(c.edge.address());
  const auto refused = plaintext.Register("mallory", kTestPassword);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.code() == Code::kUnavailable);

  // TLS that verifies with the system's CA certificates does not trust the throwaway CA.
  client::ClientOptions system_roots;
  system_roots.tls.enabled = true;
  client::Client untrusting(c.edge.address(), system_roots);
  const auto untrusted = untrusting.Register("mallory", kTestPassword);
  REQUIRE_FALSE(untrusted.ok());
  CHECK(untrusted.code() == Code::kUnavailable);

  client::Client trusting(c.edge.address(), c.certs.Trusting());
  CHECK(trusting.Register("mallory", kTestPassword).ok());
}

}  // namespace
}  // namespace infrachat
