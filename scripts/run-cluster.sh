#!/usr/bin/env bash
# Runs a role-split InfraChat cluster on this machine, every process the same infrachatd with its
# own roles (docs/adr/0009), on loopback:
#   region a: PostgreSQL, auth [auth] (global accounts, in region a's database),
#             two shard processes [shard], an edge [gateway, fanout, router]
#   region b: PostgreSQL, two shard processes [shard], an edge [gateway, fanout, router]
# Every process has a Prometheus metrics listener (metrics.listen_address, GET /metrics) on
# 127.0.0.1 at the base port + 50 + its index (auth first, then the shards, then the edges).
# Waits until every process serves, writes DIR/cluster.json (one entry per process: roles,
# region, name, pid, public, internal and metrics addresses, config and log file; each region's
# database URL), prints one line per gateway, `gateway <region> <host:port>`, and one per
# process, `metrics <name> <host:port>`, and stays in the foreground until Ctrl-C (or SIGTERM),
# when it stops everything it started, and only that.
# Supervision, as Kubernetes restarts a pod: a process that exits (any cause, kill -9 included)
# is started again after 0.5 s (doubling to 8 s while it keeps exiting within 5 s of its start)
# with the same config and environment; the script prints `restarted <name> (pid N)` and
# rewrites DIR/cluster.json with the new pid (atomically). The databases are not supervised.
#   scripts/run-cluster.sh [--base-port 7500] [--dir DIR] [--set key=value ...] [--no-restart]
#     --base-port P   public and internal ports are P, P+1, ... (default 7500); metrics
#                     ports P+50, P+51, ... (one per process)
#     --dir DIR       configs, logs and databases (default: a fresh directory under /tmp)
#     --set k=v       passed to every infrachatd (e.g. --set log.level=debug)
#     --tls           mutual TLS between the processes and TLS on the gateways, with a throwaway
#                     CA and certificate from scripts/dev-certs.sh in DIR/tls; clients connect
#                     with `infrachat --server <gateway> --ca DIR/tls/ca.pem`
#     --no-restart    a process that exits stays dead (reported on stdout)
#     --db-url R=URL  region R's processes use the database at URL (e.g. the multi-host URL of
#                     scripts/run-ha-db.sh: docs/HA.md) instead of a private PostgreSQL
#   INFRACHAT_NO_BUILD=1  use the programs already in BUILD_DIR (default build) as they are
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
base_port=7500
dir=""
sets=()
tls=0
restart=1
declare -A db_url  # region -> its database URL (--db-url, else a private PostgreSQL)
while [ $# -gt 0 ]; do
  case "$1" in
    --base-port) base_port=${2:?--base-port needs a port}; shift 2 ;;
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    --set) sets+=(--set "${2:?--set needs key=value}"); shift 2 ;;
    --no-restart) restart=0; shift ;;
    --db-url)
      spec=${2:?--db-url needs REGION=URL}
      case "${spec%%=*}" in a|b) ;; *) echo "run-cluster: --db-url: region must be a or b" >&2; exit 2 ;; esac
      [ "${spec#*=}" != "$spec" ] && [ -n "${spec#*=}" ] || { echo "run-cluster: --db-url needs REGION=URL" >&2; exit 2; }
      db_url[${spec%%=*}]=${spec#*=}; shift 2 ;;
    --tls) tls=1; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "run-cluster: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/infrachat-cluster.XXXXXX); fi
mkdir -p "$dir/conf" "$dir/log" "$dir/run"
chmod 755 "$dir"  # the databases run as postgres under it when we are root

"$root/scripts/setup.sh"
[ -n "${INFRACHAT_NO_BUILD:-}" ] || "$root/scripts/build.sh" infrachatd infrachat >/dev/null
build=${BUILD_DIR:-$root/build}
daemon="$build/src/exe/infrachatd"

# --tls: one certificate for every process, as server and as client (SAN 127.0.0.1 and
# localhost: the addresses they dial), the same config lines in each (docs/CONFIG.md "TLS").
tls_lines=()
if [ "$tls" = 1 ]; then
  "$root/scripts/dev-certs.sh" "$dir/tls"
  tls_lines=("tls:"
    "  internal: {cert_file: '$dir/tls/cert.pem', key_file: '$dir/tls/key.pem', ca_file: '$dir/tls/ca.pem'}"
    "  public: {cert_file: '$dir/tls/cert.pem', key_file: '$dir/tls/key.pem'}")
fi

declare -A pid_of  # name -> pid of its current process
names=()
stopping=0
stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap - INT TERM
  # Our running background jobs too: a signal between a restart's `&` and the recording of its
  # pid must not leave that process behind.
  local jobs pids
  jobs=$(jobs -pr)
  pids=$(printf '%s\n' "${pid_of[@]}" $jobs | sort -u)
  for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $pids; do wait "$pid" 2>/dev/null || true; done
  for region in a b; do "$root/test/support/pg_cluster.sh" halt "$dir/db-$region" || true; done
}
trap 'stop_all; echo "cluster stopped (configs, logs and data in $dir)"' EXIT
trap 'exit 0' INT TERM

for region in a b; do
  [ -z "${db_url[$region]:-}" ] || continue
  db_url[$region]=$("$root/test/support/pg_cluster.sh" start "$dir/db-$region")
done

next_port=$base_port

# launch NAME: starts NAME's process in the background with its config and environment (the
# first start and every restart), its output appended to its log.
declare -A url_of
launch() {
  local name=$1
  rm -f "$dir/run/$name.json"
  INFRACHAT_DATABASE_URL=${url_of[$name]} "$daemon" --config "$dir/conf/$name.yaml" \
    --ready-file "$dir/run/$name.json" "${sets[@]}" >>"$dir/log/$name.log" 2>&1 &
  pid_of[$name]=$!
}

# DIR/cluster.json from the entries with each process's current pid, replaced atomically.
write_cluster_json() {
  local pids=() name
  for name in "${names[@]}"; do pids+=(--argjson "$name" "${pid_of[$name]}"); done
  printf '%s\n' "${entries[@]}" | jq -s --arg a "${db_url[a]}" --arg b "${db_url[b]}" \
    '{processes: map(.pid = $ARGS.named[.name]), databases: {a: $a, b: $b}}' "${pids[@]}" \
    >"$dir/cluster.json.tmp"
  mv -f "$dir/cluster.json.tmp" "$dir/cluster.json"
}

# start NAME REGION ROLES INTERNAL(yes|no) [extra yaml lines...]: writes the config, starts the
# process in the background, waits until it serves, records its entry.
entries=()
start() {
  local name=$1 region=$2 roles=$3 internal=$4; shift 4
  local public="127.0.0.1:$next_port" internal_address=""
  local metrics="127.0.0.1:$((base_port + 50 + ${#names[@]}))"
  local conf="$dir/conf/$name.yaml" log="$dir/log/$name.log" ready="$dir/run/$name.json"
  next_port=$((next_port + 1))
  if [ "$internal" = yes ]; then
    internal_address="127.0.0.1:$next_port"
    next_port=$((next_port + 1))
  fi
  {
    echo "# $name: written by scripts/run-cluster.sh"
    echo "roles: [$roles]"
    echo "mode: development"
    echo "region: $region"
    echo "cluster: {regions: [a, b]}"
    echo "grpc:"
    echo "  listen_address: '$public'"
    if [ -n "$internal_address" ]; then echo "  internal_listen_address: '$internal_address'"; fi
    echo "  shutdown_grace_s: 2"
    echo "metrics: {listen_address: '$metrics'}"
    for line in "$@" "${tls_lines[@]}"; do echo "$line"; done
  } >"$conf"
  url_of[$name]=""
  case "$roles" in *auth*|*shard*) url_of[$name]=${db_url[$region]} ;; esac
  : >"$log"
  names+=("$name")
  launch "$name"
  local pid=${pid_of[$name]}
  for _ in $(seq 1 300); do
    [ -s "$ready" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      local status=0 how
      wait "$pid" 2>/dev/null || status=$?
      how="exited with status $status"
      if [ "$status" -gt 128 ]; then how="was killed by signal $((status - 128))"; fi
      echo "run-cluster: $name $how before serving; its log ($log) ends with:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  [ -s "$ready" ] || { echo "run-cluster: $name did not serve within 30 s (log: $log)" >&2; exit 1; }
  entries+=("$(jq -n --arg name "$name" --arg region "$region" --arg roles "$roles" \
    --arg public "$public" --arg internal "$internal_address" --arg metrics "$metrics" \
    --arg config "$conf" --arg log "$log" \
    '{name: $name, region: $region, roles: ($roles | split(", ")), pid: 0,
      address: $public, internal_address: $internal, metrics_address: $metrics,
      config: $config, log: $log}')")
  eval "addr_$name=\$internal_address"
}

start auth a "auth" yes
shard_peers() { local r=$1; echo "$(eval echo \$addr_shard_${r}0),$(eval echo \$addr_shard_${r}1)"; }
for region in a b; do
  for i in 0 1; do
    start "shard_${region}${i}" "$region" "shard" yes "shard: {id: ${region}-${i}}"
  done
done
for region in a b; do
  other=$([ "$region" = a ] && echo b || echo a)
  peers_local=$(shard_peers "$region")
  peers_other=$(shard_peers "$other")
  start "edge_${region}" "$region" "gateway, fanout, router" no \
    "peers:" \
    "  auth: ['$addr_auth']" \
    "  shard: ['${peers_local%%,*}', '${peers_local##*,}']" \
    "  region_shards: ['${other}=${peers_other%%,*}', '${other}=${peers_other##*,}']"
done

write_cluster_json
for region in a b; do
  echo "gateway $region $(jq -r --arg n "edge_$region" '.processes[] | select(.name == $n) | .address' "$dir/cluster.json")"
done
jq -r '.processes[] | "metrics \(.name) \(.metrics_address)"' "$dir/cluster.json"
if [ "$tls" = 1 ]; then
  echo "tls: mutual TLS inside, TLS on the gateways; connect with infrachat --server <gateway> --ca $dir/tls/ca.pem"
fi
echo "cluster is up: $dir/cluster.json; Ctrl-C stops it"
# Stay until a signal. A process that exits is reported and, unless --no-restart, started again
# (kill -9 of one process is how failures are tried). Polled: bash reaps its children as they
# exit (kill -0 then fails) and `wait PID` still returns a reaped one's status.
declare -A started_at delay_ms
for name in "${names[@]}"; do started_at[$name]=$SECONDS; delay_ms[$name]=500; done
while true; do
  sleep 0.2 & wait $! || true
  exited=()
  for name in "${names[@]}"; do
    pid=${pid_of[$name]}
    if [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null; then continue; fi
    status=0
    wait "$pid" 2>/dev/null || status=$?
    echo "$name (pid $pid) exited with status $status"
    pid_of[$name]=""
    exited+=("$name")
  done
  if [ "$restart" = 0 ] || [ ${#exited[@]} = 0 ]; then continue; fi
  # Back off while one keeps exiting soon after its start (a crash loop), as Kubernetes does.
  delay=0
  declare -A quick=()
  for name in "${exited[@]}"; do
    quick[$name]=$((SECONDS - started_at[$name] < 5))
    [ "${quick[$name]}" = 1 ] || delay_ms[$name]=500
    [ "${delay_ms[$name]}" -le "$delay" ] || delay=${delay_ms[$name]}
  done
  sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))" & wait $! || true
  for name in "${exited[@]}"; do
    [ "${quick[$name]}" = 0 ] || delay_ms[$name]=$((delay_ms[$name] * 2 > 8000 ? 8000 : delay_ms[$name] * 2))
    launch "$name"
    started_at[$name]=$SECONDS
  done
  write_cluster_json
  for name in "${exited[@]}"; do echo "restarted $name (pid ${pid_of[$name]})"; done
done
