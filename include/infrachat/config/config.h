// The daemon's typed configuration, parsed once from YAML, environment and --set overrides.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace infrachat {

struct DatabaseConfig {
  std::string url;    // libpq connection string or URI (secret: masked in logs)
  int pool_size = 8;  // connections for request-path queries
  int connect_timeout_s = 5;
  bool require_durable = true;  // refuse to start unless fsync and synchronous_commit are on
  // Refuse to start unless commits wait for a synchronous standby (HA, docs/HA.md); false: warn.
  bool require_sync_replica = false;
};

struct GrpcConfig {
  std::string listen_address = "127.0.0.1:7400";  // host:port; port 0 picks a free port
  std::string advertise_address;                  // what Route returns; default: the bound address
  int max_receive_message_bytes = 64 * 1024;
  int max_send_message_bytes = 4 * 1024 * 1024;
  int max_concurrent_streams = 1000;  // per HTTP/2 connection
  int keepalive_time_s = 30;          // server pings an idle connection this often
  int keepalive_timeout_s = 10;
  int min_client_ping_interval_s = 10;  // clients may ping this often without data
  int handshake_timeout_s = 10;
  int max_connection_idle_s = 3600;
  int shutdown_grace_s = 10;            // drain time on SIGTERM before cancelling
  std::string internal_listen_address;  // module-to-module API; empty: none
  // What other processes dial to reach the internal listener (a shard's lease carries it);
  // empty: the bound address. Set it when listening on 0.0.0.0 (e.g. a pod's DNS name).
  std::string internal_advertise_address;
  int internal_call_timeout_ms = 5000;  // deadline of every call to another process
};

// Where the roles that do not run in this process are (their internal listeners). One address
// per role for now; placement across several shards comes with the lease table (ADR 9).
struct PeersConfig {
  std::vector<std::string> auth;
  std::vector<std::string> shard;  // this region's shard processes
  // Other regions' shard processes, as "region=host:port" (one entry per process).
  std::vector<std::string> region_shards;
};

// The regions of the cluster: a channel's home region is rendezvous hashing of its name over
// them, the same everywhere without a directory (ARCHITECTURE.md "Scale-out and regions").
struct ClusterConfig {
  std::vector<std::string> regions;  // empty: just this process's `region`
};

struct AuthConfig {
  std::string issuer = "infrachat";
  std::string audience = "infrachat";
  int access_token_ttl_s = 900;
  int refresh_token_ttl_s = 30 * 24 * 3600;
  std::string private_key_file;        // PEM, EC P-256 (ES256). Empty in development: generated
  std::string public_key_file;         // and kept in the database on first start.
  std::uint64_t argon2_ops_limit = 2;  // libsodium crypto_pwhash opslimit
  std::uint64_t argon2_mem_limit_kib = 19456;  // 19 MiB (OWASP's argon2id minimum)
  int revocation_check_interval_s = 5;         // how often live streams recheck their session
};

struct RouterConfig {
  std::vector<std::string> shards;  // shard ids of this region; default: [shard.id]
};

struct ShardConfig {
  std::string id = "shard-0";
  int max_batch = 512;    // sends committed in one transaction at most
  int max_queue = 65536;  // queued sends before RESOURCE_EXHAUSTED
  // A batch not committed by then has its connection closed (never cancelled: docs/HA.md) and
  // its sends answered UNAVAILABLE, outcome unknown.
  int commit_timeout_ms = 10000;
  // Liveness (docs/adr/0009): the lease row is renewed every heartbeat and expires after ttl.
  // Edges refresh their view of the live shards every heartbeat too.
  int lease_heartbeat_ms = 1000;
  int lease_ttl_ms = 5000;
};

struct FanoutConfig {
  int workers = 2;          // threads reading the log for catch-up
  int catchup_batch = 256;  // messages per log read
  // Presence frames only for channels with at most this many live subscribers on this instance
  // (each change costs a frame per subscriber; bigger channels ask ListMembers). 0: none.
  int presence_max_subscribers = 256;
};

// Room a Send frame needs besides its body (channel name, client_msg_id, tags and lengths, with
// a wide margin): grpc.max_receive_message_bytes must be at least max_body_bytes plus this.
inline constexpr int kSendFrameOverheadBytes = 1024;

struct LimitsConfig {
  int max_body_bytes = 8 * 1024;
  int session_queue_frames = 1024;  // outgoing frames buffered per stream before "slow consumer"
  int max_inflight_sends = 256;     // unacknowledged sends per stream before reads pause
  double send_rate_per_s = 50;      // token bucket per stream
  double send_burst = 100;
  int max_streams = 10000;  // concurrent Connect streams per process
  int max_subscriptions_per_stream = 256;
};

// Transport security, as PEM file paths; every key empty means plaintext (the development
// default). Validated at load: each set is all or nothing, and each file is readable PEM.
struct InternalTlsConfig {
  // Mutual TLS on the internal listener and on every internal channel this process opens: the
  // certificate is both its server and its client identity; peers are verified against ca_file
  // (a CA for the cluster's processes only: any certificate it signed is admitted).
  std::string cert_file;  // certificate chain
  std::string key_file;   // its private key
  std::string ca_file;    // the cluster CA
  bool enabled() const { return !cert_file.empty(); }
};

struct PublicTlsConfig {
  // Server TLS on grpc.listen_address; clients are not asked for certificates.
  std::string cert_file;
  std::string key_file;
  bool enabled() const { return !cert_file.empty(); }
};

struct TlsConfig {
  InternalTlsConfig internal;   // tls.internal.*
  PublicTlsConfig public_port;  // tls.public.* (`public` is a C++ keyword)
};

struct LogConfig {
  std::string level = "info";                  // trace, debug, info, warn, error
  std::map<std::string, std::string> modules;  // per-module level, e.g. {gateway: debug}
  std::string format = "text";                 // text | json (one JSON object per line)
};

struct MetricsConfig {
  std::string listen_address;  // host:port of the Prometheus /metrics listener; empty: off
};

// Traces (docs/adr/0010, "Traces"): spans of sampled sends, sent to an OpenTelemetry collector
// over OTLP/HTTP with JSON encoding.
struct TracingConfig {
  std::string otlp_endpoint;   // http(s)://host:port/v1/traces; empty: tracing off
  double sample_ratio = 0.01;  // of sends that start a trace (0 to 1)
};

struct DaemonConfig {
  std::vector<std::string> roles;    // subset of: gateway auth router shard fanout
  std::string mode = "development";  // development | production
  std::string region = "local";
  DatabaseConfig database;
  GrpcConfig grpc;
  PeersConfig peers;
  ClusterConfig cluster;
  AuthConfig auth;
  RouterConfig router;
  ShardConfig shard;
  FanoutConfig fanout;
  LimitsConfig limits;
  TlsConfig tls;
  LogConfig log;
  MetricsConfig metrics;
  TracingConfig tracing;

  bool HasRole(const std::string& role) const;
  // cluster.regions, or just `region` when it is empty.
  std::vector<std::string> Regions() const;
};

// All roles, in start order (dependencies first).
const std::vector<std::string>& AllRoles();

// Inputs of LoadConfig. `env` holds the process environment (only INFRACHAT_* entries matter);
// `overrides` holds "key.path=value" strings from --set. Precedence: file < env < overrides.
struct ConfigSources {
  std::string yaml_text;    // the file's contents
  std::string yaml_origin;  // the file's name, for error messages
  std::map<std::string, std::string> env;
  std::vector<std::string> overrides;
  // --check-config: settings that are normally given only where the daemon runs (the database
  // URL, a secret, from INFRACHAT_DATABASE_URL; TLS files mounted from a secret store) are
  // reported as warnings when missing or unreadable.
  bool check_only = false;
};

// Either a config or every error found (not only the first).
struct ConfigLoadResult {
  DaemonConfig config;
  std::vector<std::string> errors;
  // Not errors, but worth a line at start (e.g. a plaintext internal listener in production).
  std::vector<std::string> warnings;
  bool ok() const { return errors.empty(); }
};

// Parses and validates. Unknown keys and roles are errors naming the nearest valid one.
ConfigLoadResult LoadConfig(const ConfigSources& sources);

// The effective configuration as YAML, with secrets (the database password) masked.
std::string DescribeConfig(const DaemonConfig& config);

// The documented keys, as dotted paths ("database.url", "limits.max_body_bytes", ...).
std::vector<std::string> ConfigKeys();

}  // namespace infrachat
