#include "infrachat/config/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <set>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "infrachat/core/result.h"

namespace infrachat {
namespace {

// A value as written, before it is typed: YAML null, a scalar, a list or a map of scalars.
using RawValue = std::variant<std::monostate, std::string, std::vector<std::string>,
                              std::map<std::string, std::string>>;

// How env and --set text is split before typing (YAML already carries its own structure).
enum class Shape { kScalar, kList, kMap };

using Problems = std::vector<std::string>;
template <typename T>
using Check = std::function<Problems(const T&)>;

// One configuration key: the single source of its name, docs, parsing, checks and display.
struct Field {
  std::string key;
  std::string description;
  Shape shape = Shape::kScalar;
  // Parses and checks `raw`; assigns only if both succeed. Problems name neither key nor origin.
  std::function<Problems(DaemonConfig&, const RawValue&)> apply;
  // The value as it may be shown in logs and docs (secrets masked).
  std::function<YAML::Node(const DaemonConfig&)> show;
};

const std::vector<std::string>& LogLevels() {
  static const std::vector<std::string> levels = {"trace", "debug",    "info", "warn",
                                                  "error", "critical", "off"};
  return levels;
}

// ---- Names and suggestions -------------------------------------------------------------------

std::size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      diagonal = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
    }
  }
  return row[b.size()];
}

std::string Nearest(std::string_view name, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_distance = std::string::npos;
  for (const std::string& candidate : candidates) {
    const std::size_t distance = EditDistance(name, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  return best;
}

std::string Unknown(std::string_view what, std::string_view name,
                    const std::vector<std::string>& candidates) {
  return fmt::format("unknown {} '{}' (did you mean '{}'?)", what, name, Nearest(name, candidates));
}

bool Contains(const std::vector<std::string>& list, std::string_view item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

std::string EnvName(std::string_view key) {
  std::string name = "INFRACHAT_";
  for (char c : key) {
    name += c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return name;
}

std::string_view Trim(std::string_view text) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  const auto begin = std::find_if(text.begin(), text.end(), not_space);
  const auto end = std::find_if(text.rbegin(), text.rend(), not_space).base();
  return begin < end ? std::string_view(&*begin, end - begin) : std::string_view();
}

// ---- Typing raw values ------------------------------------------------------------------------

std::string DescribeRaw(const RawValue& raw) {
  if (const auto* text = std::get_if<std::string>(&raw)) return fmt::format("'{}'", *text);
  if (std::holds_alternative<std::vector<std::string>>(raw)) return "a list";
  if (std::holds_alternative<std::map<std::string, std::string>>(raw)) return "a map";
  return "nothing";
}

Error Expected(std::string_view what, const RawValue& raw) {
  return MakeError(Code::kInvalidArgument,
                   fmt::format("expected {}, got {}", what, DescribeRaw(raw)));
}

template <typename N>
Result<N> ParseNumber(const RawValue& raw, std::string_view what) {
  const auto* text = std::get_if<std::string>(&raw);
  if (text == nullptr) return Expected(what, raw);
  const std::string_view digits = Trim(*text);
  N value{};
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec == std::errc::result_out_of_range) {
    return MakeError(Code::kInvalidArgument, fmt::format("'{}' is out of range", *text));
  }
  if (ec != std::errc() || end != digits.data() + digits.size() || digits.empty()) {
    return Expected(what, raw);
  }
  if constexpr (std::is_floating_point_v<N>) {
    if (!std::isfinite(value)) return Expected(what, raw);
  }
  return value;
}

Result<bool> ParseBool(const RawValue& raw) {
  const auto* text = std::get_if<std::string>(&raw);
  if (text == nullptr) return Expected("true or false", raw);
  std::string lower(Trim(*text));
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "true" || lower == "yes" || lower == "on" || lower == "1") return true;
  if (lower == "false" || lower == "no" || lower == "off" || lower == "0") return false;
  return Expected("true or false", raw);
}

template <typename T>
Result<T> ParseAlternative(const RawValue& raw, std::string_view what) {
  if (const auto* value = std::get_if<T>(&raw)) return *value;
  return Expected(what, raw);
}

template <typename T>
Result<T> ParseValue(const RawValue& raw) {
  if constexpr (std::is_same_v<T, int>) {
    return ParseNumber<int>(raw, "an integer");
  } else if constexpr (std::is_same_v<T, std::uint64_t>) {
    return ParseNumber<std::uint64_t>(raw, "a non-negative integer");
  } else if constexpr (std::is_same_v<T, double>) {
    return ParseNumber<double>(raw, "a number");
  } else if constexpr (std::is_same_v<T, bool>) {
    return ParseBool(raw);
  } else if constexpr (std::is_same_v<T, std::string>) {
    return ParseAlternative<std::string>(raw, "a string");
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    return ParseAlternative<std::vector<std::string>>(raw, "a list");
  } else {
    static_assert(std::is_same_v<T, std::map<std::string, std::string>>);
    return ParseAlternative<std::map<std::string, std::string>>(raw, "a map");
  }
}

template <typename T>
constexpr Shape ShapeOf() {
  if constexpr (std::is_same_v<T, std::vector<std::string>>) return Shape::kList;
  if constexpr (std::is_same_v<T, std::map<std::string, std::string>>) return Shape::kMap;
  return Shape::kScalar;
}

// ---- Text (env, --set) and YAML to raw values --------------------------------------------------

std::vector<std::string> SplitList(std::string_view text) {
  std::vector<std::string> items;
  if (Trim(text).empty()) return items;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    items.emplace_back(Trim(text.substr(start, comma - start)));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

Result<RawValue> TextToRaw(std::string_view text, Shape shape) {
  if (shape == Shape::kScalar) return RawValue(std::string(text));
  std::vector<std::string> items = SplitList(text);
  if (shape == Shape::kList) return RawValue(std::move(items));
  std::map<std::string, std::string> pairs;
  for (const std::string& item : items) {
    const std::size_t colon = item.find(':');
    if (colon == std::string::npos) {
      return MakeError(Code::kInvalidArgument,
                       fmt::format("expected name:value pairs, got '{}'", item));
    }
    pairs[std::string(Trim(item.substr(0, colon)))] = std::string(Trim(item.substr(colon + 1)));
  }
  return RawValue(std::move(pairs));
}

Result<RawValue> YamlToRaw(const YAML::Node& node) {
  const Error nested = MakeError(Code::kInvalidArgument, "expected plain values, got nesting");
  if (node.IsScalar()) return RawValue(node.Scalar());
  if (node.IsSequence()) {
    std::vector<std::string> items;
    for (const YAML::Node& item : node) {
      if (!item.IsScalar()) return nested;
      items.push_back(item.Scalar());
    }
    return RawValue(std::move(items));
  }
  if (node.IsMap()) {
    std::map<std::string, std::string> pairs;
    for (const auto& pair : node) {
      if (!pair.first.IsScalar() || !pair.second.IsScalar()) return nested;
      pairs[pair.first.Scalar()] = pair.second.Scalar();
    }
    return RawValue(std::move(pairs));
  }
  return RawValue();
}

// ---- Checks -----------------------------------------------------------------------------------

template <typename N>
auto InRange(N low, N high) {
  return [low, high](const N& value) -> Problems {
    if (value >= low && value <= high) return {};
    return {fmt::format("must be between {} and {}, got {}", low, high, value)};
  };
}

template <typename N>
auto AtLeast(N low) {
  return [low](const N& value) -> Problems {
    if (value >= low) return {};
    return {fmt::format("must be at least {}, got {}", low, value)};
  };
}

auto Positive() {
  return [](const double& value) -> Problems {
    if (value > 0) return {};
    return {fmt::format("must be greater than 0, got {}", value)};
  };
}

auto NonEmpty() {
  return [](const std::string& value) -> Problems {
    if (!value.empty()) return {};
    return {"must not be empty"};
  };
}

auto OneOf(std::string what, std::vector<std::string> allowed) {
  return [what, allowed](const std::string& value) -> Problems {
    if (Contains(allowed, value)) return {};
    return {Unknown(what, value, allowed)};
  };
}

// Each unknown or repeated name is its own problem, so that every mistake is reported.
auto NameList(std::string what, std::vector<std::string> allowed) {
  return [what, allowed](const std::vector<std::string>& names) -> Problems {
    Problems problems;
    std::set<std::string> seen;
    for (const std::string& name : names) {
      if (name.empty()) {
        problems.push_back(fmt::format("a {} name must not be empty", what));
      } else if (!allowed.empty() && !Contains(allowed, name)) {
        problems.push_back(Unknown(what, name, allowed));
      } else if (!seen.insert(name).second) {
        problems.push_back(fmt::format("{} '{}' is listed twice", what, name));
      }
    }
    return problems;
  };
}

auto ModuleLevels() {
  return [](const std::map<std::string, std::string>& modules) -> Problems {
    Problems problems;
    for (const auto& [module, level] : modules) {
      if (!Contains(AllRoles(), module)) problems.push_back(Unknown("module", module, AllRoles()));
      if (!Contains(LogLevels(), level)) {
        problems.push_back(
            fmt::format("module '{}': {}", module, Unknown("level", level, LogLevels())));
      }
    }
    return problems;
  };
}

bool IsPort(std::string_view text) {
  int port = -1;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  return ec == std::errc() && end == text.data() + text.size() && port >= 0 && port <= 65535;
}

// gRPC accepts host:port, [v6]:port and unix: addresses; anything else fails only at bind time,
// far from the config line that caused it.
auto Address(bool allow_empty) {
  return [allow_empty](const std::string& address) -> Problems {
    if (address.empty() && allow_empty) return {};
    if (address.rfind("unix:", 0) == 0 && address.size() > 5) return {};
    const std::size_t colon = address.rfind(':');
    if (colon != std::string::npos && colon > 0 && IsPort(address.substr(colon + 1))) return {};
    return {fmt::format("expected host:port, got '{}'", address)};
  };
}

// An http:// or https:// URL with a host, as libcurl takes it; anything else would only fail
// when the first spans are sent, far from the config line that caused it.
auto HttpUrl() {
  return [](const std::string& url) -> Problems {
    if (url.empty()) return {};
    std::string_view rest = url;
    for (std::string_view scheme : {"http://", "https://"}) {
      if (rest.substr(0, scheme.size()) == scheme) {
        rest.remove_prefix(scheme.size());
        const std::string_view host = rest.substr(0, rest.find_first_of("/?#"));
        const std::size_t colon = host.rfind(':');
        const bool port_ok =
            colon == std::string_view::npos || host.back() == ']' || IsPort(host.substr(colon + 1));
        const bool has_host = !host.empty() && host.front() != ':' && port_ok;
        const bool clean = url.find_first_of(" \t\r\n\"<>\\^`{|}") == std::string::npos;
        if (has_host && clean) return {};
        break;
      }
    }
    return {fmt::format("expected an http:// or https:// URL with a host, got '{}'", url)};
  };
}

auto AddressList() {
  return [](const std::vector<std::string>& addresses) -> Problems {
    Problems problems;
    for (const std::string& address : addresses) {
      for (std::string& problem : Address(false)(address)) problems.push_back(std::move(problem));
    }
    return problems;
  };
}

auto RegionAddressList() {
  return [](const std::vector<std::string>& entries) -> Problems {
    Problems problems;
    for (const std::string& entry : entries) {
      const std::size_t eq = entry.find('=');
      if (eq == std::string::npos || eq == 0) {
        problems.push_back(fmt::format("expected region=host:port, got '{}'", entry));
        continue;
      }
      for (std::string& problem : Address(false)(entry.substr(eq + 1))) {
        problems.push_back(std::move(problem));
      }
    }
    return problems;
  };
}

// ---- Masking ----------------------------------------------------------------------------------

constexpr std::string_view kMask = "***";

// libpq keyword/value form: password=secret or password = 'se cret' (backslash escapes quotes).
std::size_t ConninfoValueEnd(std::string_view text, std::size_t start) {
  std::size_t i = start;
  if (i < text.size() && text[i] == '\'') {
    for (++i; i < text.size() && text[i] != '\''; ++i) {
      if (text[i] == '\\') ++i;
    }
    return std::min(i + 1, text.size());
  }
  while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  return i;
}

std::string MaskConninfo(std::string_view text) {
  static constexpr std::string_view kKeyword = "password";
  std::string out;
  std::size_t copied = 0;
  for (std::size_t pos = text.find(kKeyword); pos != std::string_view::npos;
       pos = text.find(kKeyword, pos + 1)) {
    if (pos > 0 && !std::isspace(static_cast<unsigned char>(text[pos - 1]))) continue;
    std::size_t i = pos + kKeyword.size();
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i >= text.size() || text[i] != '=') continue;
    ++i;
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    out.append(text.substr(copied, i - copied)).append(kMask);
    copied = ConninfoValueEnd(text, i);
    pos = copied;
  }
  return out.append(text.substr(std::min(copied, text.size())));
}

// URI query parameters may carry the password too: ...?password=secret&sslmode=require.
void MaskQueryPassword(std::string& uri) {
  static constexpr std::string_view kParam = "password=";
  std::size_t separator = uri.find('?');
  while (separator != std::string::npos) {
    const std::size_t start = separator + 1;
    separator = uri.find('&', start);
    if (uri.compare(start, kParam.size(), kParam) != 0) continue;
    const std::size_t value = start + kParam.size();
    const std::size_t end = separator == std::string::npos ? uri.size() : separator;
    uri.replace(value, end - value, kMask);
    separator = uri.find('&', value);
  }
}

// postgresql://user:secret@host/db. The last '@' before the query ends the user info, so an
// unescaped '@' or '/' in the password is masked rather than leaked.
std::string MaskUri(std::string_view text, std::size_t authority) {
  std::string uri(text);
  MaskQueryPassword(uri);
  const std::size_t query = std::min(uri.find('?', authority), uri.size());
  const std::size_t at = std::string_view(uri).substr(authority, query - authority).rfind('@');
  if (at == std::string_view::npos) return uri;
  const std::size_t colon = std::string_view(uri).substr(authority, at).find(':');
  if (colon == std::string_view::npos) return uri;
  return uri.replace(authority + colon + 1, at - colon - 1, kMask);
}

// Only these prefixes make libpq read a URI; testing for "://" anywhere would let a keyword/value
// password containing "://" through unmasked.
std::string MaskDatabaseUrl(std::string_view url) {
  for (std::string_view scheme : {"postgresql://", "postgres://"}) {
    if (url.substr(0, scheme.size()) == scheme) return MaskUri(url, scheme.size());
  }
  return MaskConninfo(url);
}

// ---- The schema -------------------------------------------------------------------------------

template <typename Access>
using MemberOf = std::decay_t<std::invoke_result_t<Access, DaemonConfig&>>;

template <typename Access>
Field MakeField(std::string key, Access access, std::string description,
                Check<MemberOf<Access>> check = {}) {
  using T = MemberOf<Access>;
  Field field;
  field.key = std::move(key);
  field.description = std::move(description);
  field.shape = ShapeOf<T>();
  field.apply = [access, check](DaemonConfig& config, const RawValue& raw) -> Problems {
    Result<T> parsed = ParseValue<T>(raw);
    if (!parsed.ok()) return {parsed.error().message};
    if (check) {
      Problems problems = check(parsed.value());
      if (!problems.empty()) return problems;
    }
    access(config) = std::move(parsed).value();
    return {};
  };
  field.show = [access](const DaemonConfig& config) { return YAML::Node(access(config)); };
  return field;
}

Field Secret(Field field, std::string (*mask)(std::string_view)) {
  field.show = [show = field.show, mask](const DaemonConfig& config) {
    return YAML::Node(mask(show(config).as<std::string>()));
  };
  return field;
}

// The key is the member path itself, so a key can never drift from the member it sets.
#define INFRACHAT_KEY(path) \
#path, [](auto& config) -> auto& { return config.path; }

std::vector<Field> TopLevelFields() {
  return {
      MakeField(INFRACHAT_KEY(roles),
                "Roles this process runs: auth, router, shard, fanout, gateway",
                NameList("role", AllRoles())),
      MakeField(INFRACHAT_KEY(mode),
                "development or production; production requires real key files",
                OneOf("mode", {"development", "production"})),
      MakeField(INFRACHAT_KEY(region), "Region name this process belongs to", NonEmpty()),
  };
}

std::vector<Field> DatabaseFields() {
  return {
      Secret(MakeField(INFRACHAT_KEY(database.url),
                       "libpq connection string or URI; required by auth and shard; the "
                       "password is masked in logs"),
             MaskDatabaseUrl),
      MakeField(INFRACHAT_KEY(database.pool_size), "Connections for request-path queries (1-256)",
                InRange(1, 256)),
      MakeField(INFRACHAT_KEY(database.connect_timeout_s), "Connection timeout in seconds",
                AtLeast(1)),
      MakeField(INFRACHAT_KEY(database.require_durable),
                "Refuse to start unless fsync and synchronous_commit are on"),
      MakeField(INFRACHAT_KEY(database.require_sync_replica),
                "Refuse to start unless commits wait for a synchronous standby (HA "
                "PostgreSQL); false: warn"),
  };
}

std::vector<Field> GrpcFields() {
  return {
      MakeField(INFRACHAT_KEY(grpc.listen_address),
                "host:port to listen on; port 0 picks a free one", Address(false)),
      MakeField(INFRACHAT_KEY(grpc.advertise_address),
                "Address Route returns to clients; empty means the bound address", Address(true)),
      MakeField(INFRACHAT_KEY(grpc.max_receive_message_bytes), "Largest request message accepted",
                AtLeast(1)),
      MakeField(INFRACHAT_KEY(grpc.max_send_message_bytes), "Largest response message sent",
                AtLeast(1)),
      MakeField(INFRACHAT_KEY(grpc.max_concurrent_streams), "Streams per HTTP/2 connection",
                AtLeast(1)),
      MakeField(INFRACHAT_KEY(grpc.keepalive_time_s), "Server pings an idle connection this often",
                AtLeast(1)),
      MakeField(INFRACHAT_KEY(grpc.keepalive_timeout_s), "Wait this long for a ping reply",
                AtLeast(1)),
      MakeField(INFRACHAT_KEY(grpc.min_client_ping_interval_s),
                "Clients may ping this often without sending data", AtLeast(1)),
      MakeField(INFRACHAT_KEY(grpc.handshake_timeout_s), "Connection handshake deadline",
                AtLeast(1)),
      MakeField(INFRACHAT_KEY(grpc.max_connection_idle_s), "Close connections idle this long",
                AtLeast(1)),
      MakeField(INFRACHAT_KEY(grpc.shutdown_grace_s),
                "Drain time on SIGTERM before in-flight calls are cancelled", AtLeast(0)),
      MakeField(INFRACHAT_KEY(grpc.internal_listen_address),
                "host:port of the internal listener (module-to-module API); empty: none",
                Address(true)),
      MakeField(INFRACHAT_KEY(grpc.internal_advertise_address),
                "Address other processes dial for the internal listener (in shard leases); "
                "empty means the bound address",
                Address(true)),
      MakeField(INFRACHAT_KEY(grpc.internal_call_timeout_ms),
                "Deadline of every call to another process's module", AtLeast(1)),
  };
}

std::vector<Field> PeerFields() {
  return {
      MakeField(INFRACHAT_KEY(peers.auth),
                "Internal addresses of the auth role, when it runs elsewhere", AddressList()),
      MakeField(INFRACHAT_KEY(peers.shard),
                "Internal addresses of this region's shard processes, when shard runs elsewhere",
                AddressList()),
      MakeField(INFRACHAT_KEY(peers.region_shards),
                "Other regions' shard processes, each as region=host:port", RegionAddressList()),
      MakeField(INFRACHAT_KEY(cluster.regions),
                "Every region of the cluster (channels are homed by name over them); default: "
                "[region]",
                NameList("region", {})),
  };
}

std::vector<Field> AuthFields() {
  return {
      MakeField(INFRACHAT_KEY(auth.issuer), "JWT iss claim", NonEmpty()),
      MakeField(INFRACHAT_KEY(auth.audience), "JWT aud claim", NonEmpty()),
      MakeField(INFRACHAT_KEY(auth.access_token_ttl_s), "Access token lifetime", AtLeast(1)),
      MakeField(INFRACHAT_KEY(auth.refresh_token_ttl_s), "Refresh token lifetime", AtLeast(1)),
      MakeField(INFRACHAT_KEY(auth.private_key_file),
                "PEM EC P-256 signing key; required in production; generated in development"),
      MakeField(INFRACHAT_KEY(auth.public_key_file),
                "PEM EC P-256 verification key; required in production"),
      MakeField(INFRACHAT_KEY(auth.argon2_ops_limit), "Argon2id passes (libsodium opslimit)",
                AtLeast<std::uint64_t>(1)),
      // libsodium's crypto_pwhash refuses less than 8 KiB.
      MakeField(INFRACHAT_KEY(auth.argon2_mem_limit_kib), "Argon2id memory per hash, KiB",
                AtLeast<std::uint64_t>(8)),
      MakeField(INFRACHAT_KEY(auth.revocation_check_interval_s),
                "How often live streams recheck their session", AtLeast(1)),
  };
}

std::vector<Field> WorkerFields() {
  return {
      MakeField(INFRACHAT_KEY(router.shards), "Shard ids of this region; default: [shard.id]",
                NameList("shard", {})),
      MakeField(INFRACHAT_KEY(shard.id), "This shard's id", NonEmpty()),
      MakeField(INFRACHAT_KEY(shard.max_batch), "Sends committed in one transaction at most",
                AtLeast(1)),
      MakeField(INFRACHAT_KEY(shard.max_queue), "Queued sends before RESOURCE_EXHAUSTED",
                AtLeast(1)),
      MakeField(INFRACHAT_KEY(shard.commit_timeout_ms),
                "A batch not committed by then has its database connection closed (never "
                "cancelled) and its sends answered UNAVAILABLE",
                AtLeast(100)),
      MakeField(INFRACHAT_KEY(shard.lease_heartbeat_ms),
                "A shard renews its lease (and edges refresh the live set) this often",
                AtLeast(10)),
      MakeField(INFRACHAT_KEY(shard.lease_ttl_ms),
                "A shard whose lease was not renewed for this long is out of placement",
                AtLeast(10)),
      MakeField(INFRACHAT_KEY(fanout.workers), "Threads reading the log for catch-up", AtLeast(1)),
      MakeField(INFRACHAT_KEY(fanout.catchup_batch), "Messages per log read", AtLeast(1)),
      MakeField(INFRACHAT_KEY(fanout.presence_max_subscribers),
                "Presence frames only in channels with at most this many live subscribers "
                "(0: none)",
                AtLeast(0)),
  };
}

std::vector<Field> LimitsFields() {
  return {
      MakeField(INFRACHAT_KEY(limits.max_body_bytes), "Largest message body (1 to 1 MiB)",
                InRange(1, 1024 * 1024)),
      MakeField(INFRACHAT_KEY(limits.session_queue_frames),
                "Outgoing frames buffered per stream before 'slow consumer'", AtLeast(1)),
      MakeField(INFRACHAT_KEY(limits.max_inflight_sends),
                "Unacknowledged sends per stream before reads pause", AtLeast(1)),
      MakeField(INFRACHAT_KEY(limits.send_rate_per_s), "Token bucket rate per stream", Positive()),
      MakeField(INFRACHAT_KEY(limits.send_burst), "Token bucket size per stream", Positive()),
      MakeField(INFRACHAT_KEY(limits.max_streams), "Concurrent Connect streams per process",
                AtLeast(1)),
      MakeField(INFRACHAT_KEY(limits.max_subscriptions_per_stream), "Channels per stream",
                AtLeast(1)),
  };
}

// `public` is a C++ keyword, so the public listener's members are spelled out by hand.
#define INFRACHAT_PUBLIC_TLS_KEY(member) \
  "tls.public." #member, [](auto& config) -> auto& { return config.tls.public_port.member; }

std::vector<Field> TlsFields() {
  return {
      MakeField(INFRACHAT_KEY(tls.internal.cert_file),
                "PEM certificate chain: mutual TLS on the internal listener and on every internal "
                "channel this process opens (with key_file and ca_file); empty: plaintext"),
      MakeField(INFRACHAT_KEY(tls.internal.key_file), "PEM private key of tls.internal.cert_file"),
      MakeField(INFRACHAT_KEY(tls.internal.ca_file),
                "PEM CA of the cluster's processes: peers must present a certificate it signed"),
      MakeField(INFRACHAT_PUBLIC_TLS_KEY(cert_file),
                "PEM certificate chain: TLS on grpc.listen_address (with tls.public.key_file); "
                "empty: plaintext"),
      MakeField(INFRACHAT_PUBLIC_TLS_KEY(key_file), "PEM private key of tls.public.cert_file"),
  };
}

#undef INFRACHAT_PUBLIC_TLS_KEY

std::vector<Field> LogFields() {
  return {
      MakeField(INFRACHAT_KEY(log.level),
                "Default level: trace, debug, info, warn, error, critical, off",
                OneOf("level", LogLevels())),
      MakeField(INFRACHAT_KEY(log.modules), "Per-module level, e.g. {gateway: debug}",
                ModuleLevels()),
      MakeField(INFRACHAT_KEY(log.format),
                "text (human-readable lines) or json (one object per line, for log shippers)",
                OneOf("format", {"text", "json"})),
  };
}

std::vector<Field> MetricsFields() {
  return {
      MakeField(INFRACHAT_KEY(metrics.listen_address),
                "host:port of the Prometheus /metrics HTTP listener (never a gRPC port); "
                "empty: off",
                Address(true)),
  };
}

std::vector<Field> TracingFields() {
  return {
      MakeField(INFRACHAT_KEY(tracing.otlp_endpoint),
                "OTLP/HTTP URL spans are POSTed to as JSON, e.g. "
                "http://127.0.0.1:4318/v1/traces; empty: tracing off",
                HttpUrl()),
      MakeField(INFRACHAT_KEY(tracing.sample_ratio),
                "Fraction of sends that start a recorded trace, 0 to 1 (a client's traceparent "
                "flag 00 opts its sends out)",
                InRange(0.0, 1.0)),
  };
}

#undef INFRACHAT_KEY

const std::vector<Field>& Schema() {
  static const std::vector<Field> schema = [] {
    std::vector<Field> all;
    for (auto part :
         {TopLevelFields, DatabaseFields, GrpcFields, PeerFields, AuthFields, WorkerFields,
          LimitsFields, TlsFields, LogFields, MetricsFields, TracingFields}) {
      for (Field& field : part()) all.push_back(std::move(field));
    }
    return all;
  }();
  return schema;
}

const Field* FindField(std::string_view key) {
  for (const Field& field : Schema()) {
    if (field.key == key) return &field;
  }
  return nullptr;
}

// Section names ("database", "grpc", "tls", "tls.internal", ...), which a YAML file nests keys
// under: every dotted prefix of a key.
const std::vector<std::string>& Sections() {
  static const std::vector<std::string> sections = [] {
    std::vector<std::string> names;
    for (const Field& field : Schema()) {
      for (std::size_t dot = field.key.find('.'); dot != std::string::npos;
           dot = field.key.find('.', dot + 1)) {
        if (!Contains(names, field.key.substr(0, dot))) names.push_back(field.key.substr(0, dot));
      }
    }
    return names;
  }();
  return sections;
}

// YAML may name a section or a key; --set and env name only keys.
const std::vector<std::string>& YamlNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all = ConfigKeys();
    all.insert(all.end(), Sections().begin(), Sections().end());
    return all;
  }();
  return names;
}

// Sets node[a][b]...[z] for key "a.b...z": sections nest as they do in the file.
void SetNested(YAML::Node node, std::string_view key, const YAML::Node& value) {
  const std::size_t dot = key.find('.');
  if (dot == std::string_view::npos) {
    node[std::string(key)] = value;
    return;
  }
  SetNested(node[std::string(key.substr(0, dot))], key.substr(dot + 1), value);
}

// Why `path` cannot be used as a PEM file (unreadable, or no PEM block in it), or nothing.
std::optional<std::string> PemFileProblem(const std::string& path) {
  errno = 0;
  std::ifstream in(path);
  if (!in) {
    return fmt::format("cannot read '{}': {}", path,
                       errno != 0 ? std::strerror(errno) : "cannot open");
  }
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (text.find("-----BEGIN ") == std::string::npos) {
    return fmt::format("'{}' is not a PEM file (no -----BEGIN line)", path);
  }
  return std::nullopt;
}

// ---- Loading ----------------------------------------------------------------------------------

class Loader {
 public:
  explicit Loader(const ConfigSources& sources) : sources_(sources) {}

  ConfigLoadResult Run() {
    LoadFile();
    LoadEnv();
    LoadOverrides();
    // Without the file, "roles missing" and the like would be noise around the one real error.
    if (file_parsed_) CheckWhole();
    return std::move(result_);
  }

 private:
  std::string FileOrigin() const {
    return sources_.yaml_origin.empty() ? "config" : sources_.yaml_origin;
  }

  void Fail(std::string_view origin, std::string_view message) {
    result_.errors.push_back(fmt::format("{}: {}", origin, message));
  }

  void FailAt(const YAML::Node& node, std::string_view message) {
    Fail(FileOrigin(), fmt::format("{} (line {})", message, node.Mark().line + 1));
  }

  void LoadFile() {
    YAML::Node root;
    try {
      root = YAML::Load(sources_.yaml_text);
    } catch (const YAML::Exception& e) {
      Fail(FileOrigin(), fmt::format("invalid YAML at line {}, column {}: {}", e.mark.line + 1,
                                     e.mark.column + 1, e.msg));
      file_parsed_ = false;
      return;
    }
    if (root.IsNull()) return;
    if (!root.IsMap()) return FailAt(root, "expected a map of settings at the top level");
    LoadMap(root, "");
  }

  void LoadMap(const YAML::Node& map, const std::string& prefix) {
    for (const auto& entry : map) {
      if (!entry.first.IsScalar()) {
        FailAt(entry.first, "expected a plain key");
        continue;
      }
      const std::string path = prefix.empty() ? entry.first.Scalar()
                                              : fmt::format("{}.{}", prefix, entry.first.Scalar());
      LoadEntry(path, entry.first, entry.second);
    }
  }

  void LoadEntry(const std::string& path, const YAML::Node& key, const YAML::Node& value) {
    if (const Field* field = FindField(path)) return LoadYamlValue(*field, key, value);
    if (!Contains(Sections(), path)) return FailAt(key, Unknown("key", path, YamlNames()));
    if (value.IsMap()) return LoadMap(value, path);
    // An empty section ("log:" with every key commented out) is harmless.
    if (!value.IsNull()) FailAt(key, fmt::format("{}: expected a map of settings", path));
  }

  // Errors point at the key's line: a null value has no line of its own.
  void LoadYamlValue(const Field& field, const YAML::Node& key, const YAML::Node& value) {
    const Result<RawValue> raw = YamlToRaw(value);
    if (!raw.ok()) {
      failed_keys_.insert(field.key);
      return FailAt(key, fmt::format("{}: {}", field.key, raw.error().message));
    }
    for (const std::string& problem : field.apply(result_.config, raw.value())) {
      failed_keys_.insert(field.key);
      FailAt(key, fmt::format("{}: {}", field.key, problem));
    }
  }

  void LoadText(const Field& field, std::string_view text, std::string_view origin) {
    const Result<RawValue> raw = TextToRaw(text, field.shape);
    if (!raw.ok()) {
      failed_keys_.insert(field.key);
      return Fail(origin, fmt::format("{}: {}", field.key, raw.error().message));
    }
    for (const std::string& problem : field.apply(result_.config, raw.value())) {
      failed_keys_.insert(field.key);
      Fail(origin, fmt::format("{}: {}", field.key, problem));
    }
  }

  // Only names of schema keys count: clients read other INFRACHAT_* variables.
  void LoadEnv() {
    for (const Field& field : Schema()) {
      const std::string name = EnvName(field.key);
      const auto it = sources_.env.find(name);
      if (it != sources_.env.end()) LoadText(field, it->second, "env " + name);
    }
  }

  void LoadOverrides() {
    for (const std::string& override_text : sources_.overrides) {
      const std::size_t equals = override_text.find('=');
      if (equals == std::string::npos) {
        Fail("--set", fmt::format("expected key=value, got '{}'", override_text));
        continue;
      }
      const std::string key(Trim(std::string_view(override_text).substr(0, equals)));
      const Field* field = FindField(key);
      if (field == nullptr) {
        Fail("--set", Unknown("key", key, ConfigKeys()));
        continue;
      }
      LoadText(*field, override_text.substr(equals + 1), "--set");
    }
  }

  // Checks that involve several keys or a key nobody set; these have no single origin.
  void CheckWhole() {
    DaemonConfig& config = result_.config;
    // A role list that was refused already has its error; "no roles" would only repeat it.
    if (config.roles.empty() && !failed_keys_.count("roles")) {
      result_.errors.push_back(fmt::format("roles: at least one role is required (one of: {})",
                                           fmt::join(AllRoles(), ", ")));
    }
    if ((config.HasRole("auth") || config.HasRole("shard")) && config.database.url.empty()) {
      (sources_.check_only ? result_.warnings : result_.errors)
          .push_back(
              "database.url: required when the auth or shard role runs (set "
              "INFRACHAT_DATABASE_URL)");
    }
    if (config.mode == "production" && config.HasRole("auth")) {
      RequireInProduction("auth.private_key_file", config.auth.private_key_file);
      RequireInProduction("auth.public_key_file", config.auth.public_key_file);
    }
    // A Send whose body is within the limit must fit in a frame the server accepts; otherwise
    // gRPC refuses it before the gateway can answer, and the whole stream ends.
    const auto needed = config.limits.max_body_bytes + kSendFrameOverheadBytes;
    if (config.HasRole("gateway") && config.grpc.max_receive_message_bytes < needed) {
      result_.errors.push_back(fmt::format(
          "grpc.max_receive_message_bytes: {} leaves no room for a Send of limits.max_body_bytes "
          "({}) plus its framing; set it to at least {}",
          config.grpc.max_receive_message_bytes, config.limits.max_body_bytes, needed));
    }
    if (config.router.shards.empty()) config.router.shards.push_back(config.shard.id);
    if (config.shard.lease_ttl_ms <= config.shard.lease_heartbeat_ms) {
      result_.errors.push_back(fmt::format(
          "shard.lease_ttl_ms: {} must be longer than shard.lease_heartbeat_ms ({}), or a "
          "healthy shard's lease would expire between renewals",
          config.shard.lease_ttl_ms, config.shard.lease_heartbeat_ms));
    }
    const auto regions = config.Regions();
    if (!Contains(regions, config.region)) {
      result_.errors.push_back(fmt::format("region: '{}' is not one of cluster.regions ({})",
                                           config.region, fmt::join(regions, ", ")));
    }
    for (const std::string& entry : config.peers.region_shards) {
      const std::string name = entry.substr(0, entry.find('='));
      if (name == config.region) {
        result_.errors.push_back(fmt::format(
            "peers.region_shards: '{}' is this process's region; list it in peers.shard", entry));
      } else if (!Contains(regions, name)) {
        result_.errors.push_back(
            fmt::format("peers.region_shards: {}", Unknown("region", name, regions)));
      }
    }
    CheckTls(config);
  }

  // A key naming a PEM file, with the file it names.
  struct PemKey {
    std::string_view key;
    const std::string& path;
  };

  void CheckTls(const DaemonConfig& config) {
    const std::vector<PemKey> internal = {{"tls.internal.cert_file", config.tls.internal.cert_file},
                                          {"tls.internal.key_file", config.tls.internal.key_file},
                                          {"tls.internal.ca_file", config.tls.internal.ca_file}};
    const std::vector<PemKey> public_port = {
        {"tls.public.cert_file", config.tls.public_port.cert_file},
        {"tls.public.key_file", config.tls.public_port.key_file}};
    for (const auto* set : {&internal, &public_port}) {
      RequireAllOrNone(*set);
      for (const PemKey& file : *set) CheckPemFile(file);
    }
    // A warning, not an error: a service mesh or a network policy may be what secures the
    // internal API (docs/CONFIG.md, "TLS").
    const bool internal_api = !config.grpc.internal_listen_address.empty() ||
                              !config.peers.auth.empty() || !config.peers.shard.empty() ||
                              !config.peers.region_shards.empty();
    if (config.mode == "production" && internal_api && !config.tls.internal.enabled()) {
      result_.warnings.push_back(
          "tls.internal: not set in production mode, so the internal listener and the channels "
          "to peers are plaintext and unauthenticated; set tls.internal.cert_file, key_file and "
          "ca_file unless a service mesh or network policy admits only cluster processes");
    }
  }

  // Half a TLS setup would silently mean plaintext, or a failure deep inside gRPC.
  void RequireAllOrNone(const std::vector<PemKey>& set) {
    std::vector<std::string_view> given;
    for (const PemKey& file : set) {
      if (!file.path.empty()) given.push_back(file.key);
    }
    if (given.empty() || given.size() == set.size()) return;
    for (const PemKey& file : set) {
      if (!file.path.empty()) continue;
      result_.errors.push_back(
          fmt::format("{}: required with {} (set all of them for TLS, or none for plaintext)",
                      file.key, fmt::join(given, " and ")));
    }
  }

  // Read now, so that a wrong path is an error naming the key rather than a failed handshake
  // later. --check-config runs where secrets are not mounted: there it is a note.
  void CheckPemFile(const PemKey& file) {
    if (file.path.empty()) return;
    if (const auto problem = PemFileProblem(file.path)) {
      (sources_.check_only ? result_.warnings : result_.errors)
          .push_back(fmt::format("{}: {}", file.key, *problem));
    }
  }

  void RequireInProduction(std::string_view key, const std::string& value) {
    if (value.empty()) {
      result_.errors.push_back(
          fmt::format("{}: required in production mode when the auth role runs", key));
    }
  }

  const ConfigSources& sources_;
  ConfigLoadResult result_;
  bool file_parsed_ = true;
  std::set<std::string> failed_keys_;  // keys whose value was refused
};

}  // namespace

bool DaemonConfig::HasRole(const std::string& role) const { return Contains(roles, role); }

std::vector<std::string> DaemonConfig::Regions() const {
  return cluster.regions.empty() ? std::vector<std::string>{region} : cluster.regions;
}

const std::vector<std::string>& AllRoles() {
  static const std::vector<std::string> roles = {"auth", "router", "shard", "fanout", "gateway"};
  return roles;
}

ConfigLoadResult LoadConfig(const ConfigSources& sources) { return Loader(sources).Run(); }

std::string DescribeConfig(const DaemonConfig& config) {
  YAML::Node root(YAML::NodeType::Map);
  for (const Field& field : Schema()) SetNested(root, field.key, field.show(config));
  YAML::Emitter out;
  out.SetSeqFormat(YAML::Flow);
  out << root;
  return out.c_str();
}

std::vector<std::string> ConfigKeys() {
  std::vector<std::string> keys;
  for (const Field& field : Schema()) keys.push_back(field.key);
  return keys;
}

}  // namespace infrachat
