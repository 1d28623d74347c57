#include "infrachat/config/config.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "infrachat/core/logging.h"

namespace infrachat {
namespace {

using Errors = std::vector<std::string>;
using Env = std::map<std::string, std::string>;

ConfigLoadResult Load(const std::string& yaml, const Env& env = {},
                      const std::vector<std::string>& overrides = {}) {
  return LoadConfig(ConfigSources{yaml, "test.yaml", env, overrides});
}

// A string from YAML as env and --set spell it: lists comma-separated, maps as name:value.
std::string AsText(const YAML::Node& node) {
  std::string text;
  if (node.IsScalar()) return node.Scalar();
  if (node.IsSequence()) {
    for (const YAML::Node& item : node) text += (text.empty() ? "" : ",") + item.Scalar();
  } else if (node.IsMap()) {
    for (const auto& pair : node) {
      text += (text.empty() ? "" : ",") + pair.first.Scalar() + ":" + pair.second.Scalar();
    }
  }
  return text;
}

// root[a][b]...[z] for key "a.b...z" (const: looking up never adds to `root`).
YAML::Node Lookup(const YAML::Node& root, const std::string& key) {
  const std::size_t dot = key.find('.');
  if (dot == std::string::npos) return root[key];
  return Lookup(root[key.substr(0, dot)], key.substr(dot + 1));
}

const char* kAuthGateway =
    "roles: [auth, gateway]\n"
    "database:\n"
    "  url: host=/tmp dbname=chat\n";

TEST_CASE("defaults apply when the file sets only roles", "[config]") {
  const ConfigLoadResult result = Load("roles: [gateway]\n");
  REQUIRE(result.errors == Errors{});
  const DaemonConfig& config = result.config;
  CHECK(config.roles == std::vector<std::string>{"gateway"});
  CHECK(config.mode == "development");
  CHECK(config.region == "local");
  CHECK(config.database.url.empty());
  CHECK(config.database.pool_size == 8);
  CHECK(config.database.require_durable);
  CHECK_FALSE(config.database.require_sync_replica);  // development: warn only
  CHECK(config.shard.commit_timeout_ms == 10000);
  CHECK(config.grpc.listen_address == "127.0.0.1:7400");
  CHECK(config.grpc.keepalive_time_s == 30);
  CHECK(config.auth.argon2_mem_limit_kib == 19456);
  CHECK(config.limits.max_body_bytes == 8 * 1024);
  CHECK(config.limits.send_rate_per_s == 50);
  CHECK(config.log.level == "info");
  CHECK(config.log.modules.empty());
  // router.shards defaults to this process's own shard.
  CHECK(config.router.shards == std::vector<std::string>{"shard-0"});
}

TEST_CASE("file values of every type are parsed", "[config]") {
  const ConfigLoadResult result = Load(
      "roles: [shard, router]\n"
      "mode: development\n"
      "region: eu-1\n"
      "database:\n"
      "  url: postgresql://chat@db/chat\n"
      "  pool_size: 16\n"
      "  require_durable: false\n"
      "  require_sync_replica: true\n"
      "grpc:\n"
      "  listen_address: 0.0.0.0:0\n"
      "auth:\n"
      "  argon2_mem_limit_kib: 65536\n"
      "router:\n"
      "  shards: [s1, s2]\n"
      "shard:\n"
      "  id: s1\n"
      "  commit_timeout_ms: 2500\n"
      "limits:\n"
      "  send_rate_per_s: 2.5\n"
      "log:\n"
      "  level: debug\n"
      "  modules: {shard: trace, router: warn}\n");
  REQUIRE(result.errors == Errors{});
  const DaemonConfig& config = result.config;
  CHECK(config.roles == std::vector<std::string>{"shard", "router"});
  CHECK(config.HasRole("shard"));
  CHECK_FALSE(config.HasRole("gateway"));
  CHECK(config.region == "eu-1");
  CHECK(config.database.url == "postgresql://chat@db/chat");
  CHECK(config.database.pool_size == 16);
  CHECK_FALSE(config.database.require_durable);
  CHECK(config.database.require_sync_replica);
  CHECK(config.shard.commit_timeout_ms == 2500);
  CHECK(config.grpc.listen_address == "0.0.0.0:0");
  CHECK(config.auth.argon2_mem_limit_kib == 65536);
  CHECK(config.router.shards == std::vector<std::string>{"s1", "s2"});
  CHECK(config.shard.id == "s1");
  CHECK(config.limits.send_rate_per_s == 2.5);
  CHECK(config.log.level == "debug");
  CHECK(config.log.modules ==
        std::map<std::string, std::string>{{"shard", "trace"}, {"router", "warn"}});
}

TEST_CASE("environment overrides the file, unrelated INFRACHAT_ variables are ignored",
          "[config]") {
  const ConfigLoadResult result = Load(kAuthGateway, {
                                                         {"INFRACHAT_DATABASE_URL", "host=env"},
                                                         {"INFRACHAT_DATABASE_POOL_SIZE", "32"},
                                                         {"INFRACHAT_ROLES", "gateway, auth"},
                                                         {"INFRACHAT_LOG_MODULES", "gateway:debug"},
                                                         {"INFRACHAT_SERVER", "client setting"},
                                                         {"INFRACHAT_TOKEN", "x"},
                                                         {"HOME", "/root"},
                                                     });
  REQUIRE(result.errors == Errors{});
  CHECK(result.config.database.url == "host=env");
  CHECK(result.config.database.pool_size == 32);
  CHECK(result.config.roles == std::vector<std::string>{"gateway", "auth"});
  CHECK(result.config.log.modules == std::map<std::string, std::string>{{"gateway", "debug"}});
}

TEST_CASE("A --set override beats the environment, and a later --set wins", "[config]") {
  const ConfigLoadResult result =
      Load(kAuthGateway, {{"INFRACHAT_DATABASE_POOL_SIZE", "32"}, {"INFRACHAT_REGION", "env"}},
           {"database.pool_size=64", "region=first", "region=second",
            "log.modules=gateway:debug,shard:info", "roles=gateway,auth"});
  REQUIRE(result.errors == Errors{});
  CHECK(result.config.database.pool_size == 64);
  CHECK(result.config.region == "second");
  CHECK(result.config.log.modules ==
        std::map<std::string, std::string>{{"gateway", "debug"}, {"shard", "info"}});
  CHECK(result.config.roles == std::vector<std::string>{"gateway", "auth"});
}

TEST_CASE("unknown keys name the nearest valid key", "[config]") {
  SECTION("nested in the file") {
    const ConfigLoadResult result = Load(
        "roles: [gateway]\n"
        "database:\n"
        "  pool_sise: 3\n");
    CHECK(result.errors == Errors{"test.yaml: unknown key 'database.pool_sise' (did you mean "
                                  "'database.pool_size'?) (line 3)"});
  }
  SECTION("top level in the file") {
    const ConfigLoadResult result = Load("rolse: [gateway]\nroles: [gateway]\n");
    CHECK(result.errors ==
          Errors{"test.yaml: unknown key 'rolse' (did you mean 'roles'?) (line 1)"});
  }
  SECTION("a misspelt section in the file") {
    const ConfigLoadResult result = Load("roles: [gateway]\ndatabse:\n  url: x\n");
    CHECK(result.errors ==
          Errors{"test.yaml: unknown key 'databse' (did you mean 'database'?) (line 2)"});
  }
  SECTION("in --set") {
    const ConfigLoadResult result = Load("roles: [gateway]\n", {}, {"databse.url=x"});
    CHECK(result.errors ==
          Errors{"--set: unknown key 'databse.url' (did you mean 'database.url'?)"});
  }
}

TEST_CASE("role mistakes are reported with the nearest role", "[config]") {
  SECTION("unknown role") {
    // Only the real mistake: not also "at least one role is required" for the refused list.
    CHECK(Load("roles: [gatway]\n").errors ==
          Errors{"test.yaml: roles: unknown role 'gatway' (did you mean 'gateway'?) (line 1)"});
  }
  SECTION("duplicate role") {
    CHECK(Load("roles: [gateway, gateway]\n").errors.at(0) ==
          "test.yaml: roles: role 'gateway' is listed twice (line 1)");
  }
  SECTION("no role at all") {
    CHECK(Load("roles: []\n").errors ==
          Errors{"roles: at least one role is required (one of: auth, router, shard, fanout, "
                 "gateway)"});
    CHECK(Load("").errors.size() == 1);
  }
  SECTION("unknown role from the environment") {
    CHECK(Load("roles: [gateway]\n", {{"INFRACHAT_ROLES", "gateway,fanot"}}).errors ==
          Errors{"env INFRACHAT_ROLES: roles: unknown role 'fanot' (did you mean 'fanout'?)"});
  }
}

TEST_CASE("every mistake is reported, not only the first", "[config]") {
  const ConfigLoadResult result = Load(
      "roles: [gateway]\n"
      "grpc:\n"
      "  keepalive_time_s: abc\n"
      "  listen_adress: 127.0.0.1:1\n"
      "limits:\n"
      "  max_body_bytes: 0\n",
      {{"INFRACHAT_LOG_LEVEL", "verbose"}}, {"mode=staging"});
  CHECK(result.errors ==
        Errors{
            "test.yaml: grpc.keepalive_time_s: expected an integer, got 'abc' (line 3)",
            "test.yaml: unknown key 'grpc.listen_adress' (did you mean 'grpc.listen_address'?) "
            "(line 4)",
            "test.yaml: limits.max_body_bytes: must be between 1 and 1048576, got 0 (line 6)",
            "env INFRACHAT_LOG_LEVEL: log.level: unknown level 'verbose' (did you mean "
            "'error'?)",
            "--set: mode: unknown mode 'staging' (did you mean 'production'?)",
        });
}

TEST_CASE("type errors name the key, the expected type and the value", "[config]") {
  const std::string base = "roles: [gateway]\n";
  CHECK(Load(base, {{"INFRACHAT_GRPC_KEEPALIVE_TIME_S", "abc"}}).errors ==
        Errors{"env INFRACHAT_GRPC_KEEPALIVE_TIME_S: grpc.keepalive_time_s: expected an integer, "
               "got 'abc'"});
  CHECK(Load(base, {}, {"grpc.keepalive_time_s=12x"}).errors ==
        Errors{"--set: grpc.keepalive_time_s: expected an integer, got '12x'"});
  CHECK(Load(base, {}, {"database.require_durable=maybe"}).errors ==
        Errors{"--set: database.require_durable: expected true or false, got 'maybe'"});
  CHECK(Load(base, {}, {"limits.send_burst=lots"}).errors ==
        Errors{"--set: limits.send_burst: expected a number, got 'lots'"});
  CHECK(Load(base, {}, {"auth.argon2_ops_limit=-1"}).errors ==
        Errors{"--set: auth.argon2_ops_limit: expected a non-negative integer, got '-1'"});
  CHECK(Load(base, {}, {"database.pool_size=99999999999"}).errors ==
        Errors{"--set: database.pool_size: '99999999999' is out of range"});
  CHECK(Load(base, {}, {"log.modules=gateway"}).errors ==
        Errors{"--set: log.modules: expected name:value pairs, got 'gateway'"});
  CHECK(Load(base, {}, {"region"}).errors == Errors{"--set: expected key=value, got 'region'"});
  CHECK(Load("roles: gateway\n").errors.at(0) ==
        "test.yaml: roles: expected a list, got 'gateway' (line 1)");
  CHECK(Load(base + "shard: {id: [a]}\n").errors ==
        Errors{"test.yaml: shard.id: expected a string, got a list (line 2)"});
  CHECK(Load(base + "region:\n").errors ==
        Errors{"test.yaml: region: expected a string, got nothing (line 2)"});
  CHECK(Load(base + "grpc: 5\n").errors ==
        Errors{"test.yaml: grpc: expected a map of settings (line 2)"});
  // A value the wrong type leaves the previous one in place.
  CHECK(Load(base, {}, {"grpc.keepalive_time_s=abc"}).config.grpc.keepalive_time_s == 30);
}

TEST_CASE("range checks", "[config]") {
  const auto errors = [](const std::string& set) {
    return Load("roles: [gateway]\n", {}, {set}).errors;
  };
  CHECK(errors("database.pool_size=0") ==
        Errors{"--set: database.pool_size: must be between 1 and 256, got 0"});
  CHECK(errors("database.pool_size=257").size() == 1);
  CHECK(errors("database.pool_size=256").empty());
  CHECK(errors("database.pool_size=1").empty());
  CHECK(errors("limits.max_body_bytes=1048577") ==
        Errors{"--set: limits.max_body_bytes: must be between 1 and 1048576, got 1048577"});
  CHECK(Load("roles: [gateway]\n", {},
             {"limits.max_body_bytes=1048576", "grpc.max_receive_message_bytes=1049600"})
            .errors.empty());
  CHECK(errors("grpc.max_concurrent_streams=0") ==
        Errors{"--set: grpc.max_concurrent_streams: must be at least 1, got 0"});
  CHECK(errors("grpc.shutdown_grace_s=0").empty());
  CHECK(errors("limits.send_rate_per_s=0") ==
        Errors{"--set: limits.send_rate_per_s: must be greater than 0, got 0"});
  CHECK(errors("shard.id=") == Errors{"--set: shard.id: must not be empty"});
  CHECK(errors("grpc.listen_address=localhost") ==
        Errors{"--set: grpc.listen_address: expected host:port, got 'localhost'"});
  CHECK(errors("grpc.listen_address=[::1]:0").empty());
  CHECK(errors("grpc.listen_address=host:70000").size() == 1);
  CHECK(errors("grpc.advertise_address=").empty());
  CHECK(errors("log.level=critical").empty());
  CHECK(errors("log.level=warning") ==
        Errors{"--set: log.level: unknown level 'warning' (did you mean 'warn'?)"});
  CHECK(errors("log.modules=storage:debug,gateway:loud") ==
        Errors{"--set: log.modules: module 'gateway': unknown level 'loud' (did you mean 'off'?)",
               "--set: log.modules: unknown module 'storage' (did you mean 'shard'?)"});
  CHECK(errors("router.shards=a,a") == Errors{"--set: router.shards: shard 'a' is listed twice"});
}

TEST_CASE("tracing.*: an http(s) URL with a host, and a ratio from 0 to 1", "[config]") {
  const auto errors = [](const std::string& set) {
    return Load("roles: [gateway]\n", {}, {set}).errors;
  };
  CHECK(Load("roles: [gateway]\n").config.tracing.otlp_endpoint.empty());  // off by default
  CHECK(errors("tracing.otlp_endpoint=http://127.0.0.1:4318/v1/traces").empty());
  CHECK(errors("tracing.otlp_endpoint=https://otel.example.com/v1/traces").empty());
  CHECK(errors("tracing.otlp_endpoint=http://[::1]:4318/v1/traces").empty());
  CHECK(errors("tracing.otlp_endpoint=").empty());
  CHECK(errors("tracing.otlp_endpoint=127.0.0.1:4318") ==
        Errors{"--set: tracing.otlp_endpoint: expected an http:// or https:// URL with a host, "
               "got '127.0.0.1:4318'"});
  for (const char* bad :
       {"grpc://collector:4317", "http://", "http:///v1/traces", "http://host:port/v1/traces",
        "http://host:99999/", "http://a b/", "ftp://collector/"}) {
    INFO(bad);
    CHECK(errors(std::string("tracing.otlp_endpoint=") + bad).size() == 1);
  }
  CHECK(errors("tracing.sample_ratio=0").empty());
  CHECK(errors("tracing.sample_ratio=1").empty());
  CHECK(errors("tracing.sample_ratio=0.25").empty());
  CHECK(errors("tracing.sample_ratio=1.5") ==
        Errors{"--set: tracing.sample_ratio: must be between 0 and 1, got 1.5"});
  CHECK(errors("tracing.sample_ratio=-0.1").size() == 1);
  CHECK(errors("tracing.sample_ratio=half") ==
        Errors{"--set: tracing.sample_ratio: expected a number, got 'half'"});
}

TEST_CASE("database.url is required by the auth and shard roles", "[config]") {
  const std::string missing =
      "database.url: required when the auth or shard role runs (set INFRACHAT_DATABASE_URL)";
  CHECK(Load("roles: [auth]\n").errors == Errors{missing});
  CHECK(Load("roles: [shard]\n").errors == Errors{missing});
  CHECK(Load("roles: [gateway, router, fanout]\n").errors.empty());
  CHECK(Load("roles: [shard]\n", {{"INFRACHAT_DATABASE_URL", "host=/tmp"}}).errors.empty());
}

TEST_CASE("production mode requires the auth key files", "[config]") {
  const std::string production = std::string(kAuthGateway) + "mode: production\n";
  CHECK(Load(production).errors ==
        Errors{"auth.private_key_file: required in production mode when the auth role runs",
               "auth.public_key_file: required in production mode when the auth role runs"});
  CHECK(Load(production, {},
             {"auth.private_key_file=/etc/infrachat/key.pem",
              "auth.public_key_file=/etc/infrachat/pub.pem"})
            .errors.empty());
  CHECK(Load(std::string(kAuthGateway) + "mode: development\n").errors.empty());
  CHECK(Load("roles: [gateway]\nmode: production\n").errors.empty());
}

// A file in a private temp dir that lives as long as the object.
class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    char dir[] = "/tmp/infrachat-config-test-XXXXXX";
    REQUIRE(mkdtemp(dir) != nullptr);
    dir_ = dir;
    path_ = dir_ + "/file.pem";
    std::ofstream(path_) << content;
  }
  ~TempFile() {
    std::remove(path_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

constexpr const char* kPem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

TEST_CASE("tls.* keys nest in the file and are all or nothing per listener", "[config][tls]") {
  const TempFile pem(kPem);
  const std::string& f = pem.path();
  SECTION("all three internal files and both public ones") {
    const ConfigLoadResult result = Load(
        "roles: [gateway]\n"
        "tls:\n"
        "  internal: {cert_file: " +
        f + ", key_file: " + f + ", ca_file: " + f +
        "}\n"
        "  public:\n"
        "    cert_file: " +
        f +
        "\n"
        "    key_file: " +
        f + "\n");
    REQUIRE(result.errors == Errors{});
    CHECK(result.config.tls.internal.enabled());
    CHECK(result.config.tls.internal.ca_file == f);
    CHECK(result.config.tls.public_port.enabled());
    CHECK(result.config.tls.public_port.key_file == f);
    // And the description loads back to the same settings.
    const ConfigLoadResult again = Load(DescribeConfig(result.config));
    REQUIRE(again.errors == Errors{});
    CHECK(again.config.tls.internal.key_file == f);
    CHECK(again.config.tls.public_port.cert_file == f);
  }
  SECTION("none: plaintext") {
    const ConfigLoadResult result = Load("roles: [gateway]\n");
    CHECK(result.errors == Errors{});
    CHECK_FALSE(result.config.tls.internal.enabled());
    CHECK_FALSE(result.config.tls.public_port.enabled());
  }
  SECTION("a partial set names each missing key") {
    CHECK(Load("roles: [gateway]\n", {}, {"tls.internal.cert_file=" + f}).errors ==
          Errors{"tls.internal.key_file: required with tls.internal.cert_file (set all of them "
                 "for TLS, or none for plaintext)",
                 "tls.internal.ca_file: required with tls.internal.cert_file (set all of them "
                 "for TLS, or none for plaintext)"});
    CHECK(Load("roles: [gateway]\n", {{"INFRACHAT_TLS_PUBLIC_KEY_FILE", f}}).errors ==
          Errors{"tls.public.cert_file: required with tls.public.key_file (set all of them for "
                 "TLS, or none for plaintext)"});
  }
  SECTION("a misspelt key in a nested section names the nearest key") {
    CHECK(Load("roles: [gateway]\ntls:\n  internal:\n    cert_fil: x\n").errors ==
          Errors{"test.yaml: unknown key 'tls.internal.cert_fil' (did you mean "
                 "'tls.internal.cert_file'?) (line 4)"});
  }
}

TEST_CASE("tls.* files must be readable PEM (only a note for --check-config)", "[config][tls]") {
  const TempFile pem(kPem);
  const TempFile not_pem("just text\n");
  const std::string missing = "/nonexistent/infrachat/cert.pem";
  const std::vector<std::string> overrides = {"tls.internal.cert_file=" + missing,
                                              "tls.internal.key_file=" + not_pem.path(),
                                              "tls.internal.ca_file=" + pem.path()};
  const Errors problems = {
      "tls.internal.cert_file: cannot read '" + missing + "': No such file or directory",
      "tls.internal.key_file: '" + not_pem.path() + "' is not a PEM file (no -----BEGIN line)"};
  CHECK(Load("roles: [gateway]\n", {}, overrides).errors == problems);
  ConfigSources check{"roles: [gateway]\n", "test.yaml", {}, overrides};
  check.check_only = true;
  const ConfigLoadResult checked = LoadConfig(check);
  CHECK(checked.errors == Errors{});
  CHECK(checked.warnings == problems);
}

TEST_CASE("production mode warns about a plaintext internal API", "[config][tls]") {
  const TempFile pem(kPem);
  const std::string edge =
      "roles: [gateway, fanout, router]\n"
      "mode: production\n"
      "peers: {auth: ['auth:7401'], shard: ['shard:7401']}\n";
  const ConfigLoadResult plaintext = Load(edge);
  CHECK(plaintext.errors == Errors{});
  REQUIRE(plaintext.warnings.size() == 1);
  CHECK_THAT(plaintext.warnings[0], Catch::StartsWith("tls.internal: not set in production mode"));
  CHECK(Load(edge, {},
             {"tls.internal.cert_file=" + pem.path(), "tls.internal.key_file=" + pem.path(),
              "tls.internal.ca_file=" + pem.path()})
            .warnings.empty());
  // Development is plaintext by default, and a process with no internal API has nothing to say.
  CHECK(Load("roles: [gateway, fanout, router]\npeers: {auth: ['a:1'], shard: ['s:1']}\n")
            .warnings.empty());
  CHECK(Load("roles: [router]\nmode: production\n").warnings.empty());
}

TEST_CASE("malformed YAML is one error with its line", "[config]") {
  const ConfigLoadResult result = Load("roles: [gateway\nmode: development\n");
  REQUIRE(result.errors.size() == 1);
  CHECK_THAT(result.errors[0], Catch::StartsWith("test.yaml: invalid YAML at line 2, column 5: "));
  // Errors from other sources are still reported alongside it.
  CHECK(Load("roles: [\n", {}, {"mode=prod"}).errors.size() == 2);
  CHECK(Load("roles: [gateway]\n  bad: indent\n").errors.size() == 1);
  CHECK(Load("- a\n- b\n").errors.at(0) ==
        "test.yaml: expected a map of settings at the top level (line 1)");
}

TEST_CASE("DescribeConfig masks the database password", "[config]") {
  DaemonConfig config;
  config.roles = {"auth"};
  const auto described = [&config](const std::string& url) {
    config.database.url = url;
    return YAML::Load(DescribeConfig(config))["database"]["url"].as<std::string>();
  };
  CHECK(described("postgresql://chat:s3cr3t@db.example:5432/chat?sslmode=require") ==
        "postgresql://chat:***@db.example:5432/chat?sslmode=require");
  CHECK(described("postgres://chat:p@ss/w0rd@db/chat") == "postgres://chat:***@db/chat");
  CHECK(described("postgresql://db/chat?user=chat&password=s3cr3t&sslmode=require") ==
        "postgresql://db/chat?user=chat&password=***&sslmode=require");
  CHECK(described("host=db user=chat password=s3cr3t dbname=chat") ==
        "host=db user=chat password=*** dbname=chat");
  CHECK(described("host=db password = 'se cr\\'3t' dbname=chat") ==
        "host=db password = *** dbname=chat");
  CHECK(described("host=db password=a://b@c:d dbname=chat") == "host=db password=*** dbname=chat");
  CHECK(described("postgresql://chat@db/chat") == "postgresql://chat@db/chat");
  CHECK(described("host=/tmp dbname=chat") == "host=/tmp dbname=chat");

  config.database.url = "host=db password=s3cr3t";
  const std::string kv = DescribeConfig(config);
  CHECK(kv.find("s3cr3t") == std::string::npos);
  config.database.url = "postgresql://u:s3cr3t@h/d";
  const std::string uri = DescribeConfig(config);
  CHECK(uri.find("s3cr3t") == std::string::npos);
  CHECK(uri.find("pool_size: 8") != std::string::npos);
}

TEST_CASE("DescribeConfig output loads back to the same configuration", "[config]") {
  ConfigLoadResult first =
      Load(kAuthGateway, {}, {"log.modules=auth:debug", "limits.send_burst=7.5"});
  REQUIRE(first.errors == Errors{});
  const std::string described = DescribeConfig(first.config);
  const ConfigLoadResult second = Load(described);
  REQUIRE(second.errors == Errors{});
  CHECK(DescribeConfig(second.config) == described);
  CHECK(second.config.limits.send_burst == 7.5);
}

TEST_CASE("ConfigKeys lists every key, and each can be set through --set and env", "[config]") {
  const std::vector<std::string> keys = ConfigKeys();
  CHECK(keys.size() == 63);  // every member of DaemonConfig and its sections
  for (const char* key : {"roles", "mode", "region", "database.url", "grpc.shutdown_grace_s",
                          "auth.argon2_mem_limit_kib", "router.shards", "shard.id",
                          "fanout.catchup_batch", "limits.max_body_bytes", "tls.internal.ca_file",
                          "tls.public.cert_file", "log.level", "log.modules"}) {
    CHECK(std::find(keys.begin(), keys.end(), key) != keys.end());
  }
  // Values taken from a valid configuration's description, set one key at a time.
  const ConfigLoadResult valid =
      Load(kAuthGateway, {}, {"log.modules=auth:debug,gateway:warn", "router.shards=a,b"});
  REQUIRE(valid.errors == Errors{});
  const YAML::Node described = YAML::Load(DescribeConfig(valid.config));
  std::vector<std::string> overrides;
  Env env;
  for (const std::string& key : keys) {
    const YAML::Node value = Lookup(described, key);
    INFO(key);
    REQUIRE(value.IsDefined());
    overrides.push_back(key + "=" + AsText(value));
    std::string env_name = "INFRACHAT_" + key;
    for (char& c : env_name) c = c == '.' ? '_' : static_cast<char>(std::toupper(c));
    env[env_name] = AsText(value);
  }
  const ConfigLoadResult from_set = Load("", {}, overrides);
  REQUIRE(from_set.errors == Errors{});
  CHECK(DescribeConfig(from_set.config) == DescribeConfig(valid.config));
  const ConfigLoadResult from_env = Load("", env);
  REQUIRE(from_env.errors == Errors{});
  CHECK(DescribeConfig(from_env.config) == DescribeConfig(valid.config));
}

std::string ReadSourceFile(const std::string& path) {
  std::ifstream file(std::string(INFRACHAT_SOURCE_DIR) + "/" + path);
  REQUIRE(file.good());
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST_CASE("config/all-in-one.yaml is valid once the environment gives the database", "[config]") {
  const std::string yaml = ReadSourceFile("config/all-in-one.yaml");
  const ConfigLoadResult result = Load(yaml, {{"INFRACHAT_DATABASE_URL", "host=/tmp"}});
  REQUIRE(result.errors == Errors{});
  CHECK(result.config.roles == AllRoles());
  CHECK(result.config.grpc.listen_address == "127.0.0.1:7400");
  CHECK(result.config.database.url == "host=/tmp");
  CHECK(Load(yaml).errors.size() == 1);  // without it, only database.url is missing
  // --check-config: the URL normally comes from the environment where the daemon runs, so its
  // absence is a note there, not an error.
  ConfigSources check{yaml, "all-in-one.yaml", {}, {}};
  check.check_only = true;
  const ConfigLoadResult checked = LoadConfig(check);
  CHECK(checked.errors == Errors{});
  CHECK(checked.warnings == Errors{"database.url: required when the auth or shard role runs (set "
                                   "INFRACHAT_DATABASE_URL)"});
}

TEST_CASE("the gRPC frame limit leaves room for the largest valid Send", "[config]") {
  CHECK(Load("roles: [gateway]\n", {}, {"limits.max_body_bytes=64512"}).errors.empty());
  CHECK(Load("roles: [gateway]\n", {}, {"limits.max_body_bytes=64513"}).errors ==
        Errors{"grpc.max_receive_message_bytes: 65536 leaves no room for a Send of "
               "limits.max_body_bytes (64513) plus its framing; set it to at least 65537"});
  CHECK(Load("roles: [gateway]\n", {},
             {"limits.max_body_bytes=100000", "grpc.max_receive_message_bytes=101024"})
            .errors.empty());
  // Only a gateway reads client frames.
  CHECK(Load("roles: [router]\n", {}, {"limits.max_body_bytes=100000"}).errors.empty());
}

// docs/CONFIG.md is the reference operators read; it must not drift from the schema.
TEST_CASE("docs/CONFIG.md documents every key with its env name and default", "[config]") {
  const std::string doc = ReadSourceFile("docs/CONFIG.md");
  const YAML::Node defaults = YAML::Load(DescribeConfig(DaemonConfig{}));
  for (const std::string& key : ConfigKeys()) {
    std::string env_name = "INFRACHAT_" + key;
    for (char& c : env_name) c = c == '.' ? '_' : static_cast<char>(std::toupper(c));
    YAML::Emitter flow;
    flow << YAML::Flow << Lookup(defaults, key);
    const std::string row = "| `" + key + "` | `" + env_name + "` | `" + flow.c_str() + "` |";
    INFO(row);
    CHECK(doc.find(row) != std::string::npos);
  }
}

TEST_CASE("module loggers share one sink and follow log.level and log.modules", "[logging]") {
  const auto early = ModuleLogger("gateway");
  CHECK(ModuleLogger("gateway") == early);

  LogConfig config;
  config.level = "warn";
  config.modules = {{"gateway", "debug"}};
  ConfigureLogging(config);
  const auto late = ModuleLogger("storage");
  CHECK(early->level() == spdlog::level::debug);  // created before, updated
  CHECK(late->level() == spdlog::level::warn);    // created after, default level
  CHECK(early->sinks().size() == 1);
  CHECK(early->sinks() == late->sinks());

  ConfigureLogging(LogConfig{});  // leave the defaults for other tests
  CHECK(early->level() == spdlog::level::info);
  CHECK(late->level() == spdlog::level::info);
}

}  // namespace
}  // namespace infrachat
