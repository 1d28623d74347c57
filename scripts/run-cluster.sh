#!/usr/bin/env bash
# Runs a role-split InfraChat cluster on this machine, every process the same infrachatd with its
# own roles (docs/adr/0009), on loopback:
#   region a: PostgreSQL, auth [auth] (global accounts, in region a's database),
#             two shard processes [shard], an edge [gateway, fanout, router]
#   region b: PostgreSQL, two shard processes [shard], an edge [gateway, fanout, router]
# Waits until every process serves, writes DIR/cluster.json (one entry per process: roles,
# region, name, pid, public and internal addresses, config and log file; each region's database
# URL), prints one line per gateway, `gateway <region> <host:port>`, and stays in the foreground
# until Ctrl-C (or SIGTERM), when it stops everything it started, and only that.
#   scripts/run-cluster.sh [--base-port 7500] [--dir DIR] [--set key=value ...]
#     --base-port P   public and internal ports are P, P+1, ... (default 7500)
#     --dir DIR       configs, logs and databases (default: a fresh directory under /tmp)
#     --set k=v       passed to every infrachatd (e.g. --set log.level=debug)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
base_port=7500
dir=""
sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --base-port) base_port=${2:?--base-port needs a port}; shift 2 ;;
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    --set) sets+=(--set "${2:?--set needs key=value}"); shift 2 ;;
    --tls) echo "run-cluster: --tls is not built yet (issue 8: mutual TLS on the internal listener)" >&2; exit 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "run-cluster: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/infrachat-cluster.XXXXXX); fi
mkdir -p "$dir/conf" "$dir/log" "$dir/run"
chmod 755 "$dir"  # the databases run as postgres under it when we are root

"$root/scripts/setup.sh"
"$root/scripts/build.sh" infrachatd infrachat >/dev/null
build=${BUILD_DIR:-$root/build}
daemon="$build/src/exe/infrachatd"

pids=()
stopping=0
stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap - INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for region in a b; do "$root/test/support/pg_cluster.sh" halt "$dir/db-$region" || true; done
}
trap 'stop_all; echo "cluster stopped (configs, logs and data in $dir)"' EXIT
trap 'exit 0' INT TERM

declare -A db_url
for region in a b; do
  db_url[$region]=$("$root/test/support/pg_cluster.sh" start "$dir/db-$region")
done

next_port=$base_port

# start NAME REGION ROLES INTERNAL(yes|no) [extra yaml lines...]: writes the config, starts the
# process in the background, records its entry.
entries=()
start() {
  local name=$1 region=$2 roles=$3 internal=$4; shift 4
  local public="127.0.0.1:$next_port" internal_address=""
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
    for line in "$@"; do echo "$line"; done
  } >"$conf"
  rm -f "$ready"
  local url=""
  case "$roles" in *auth*|*shard*) url=${db_url[$region]} ;; esac
  INFRACHAT_DATABASE_URL=$url "$daemon" --config "$conf" --ready-file "$ready" "${sets[@]}" \
    >"$log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 300); do
    [ -s "$ready" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run-cluster: $name exited before serving; its log ($log) ends with:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  [ -s "$ready" ] || { echo "run-cluster: $name did not serve within 30 s (log: $log)" >&2; exit 1; }
  entries+=("$(jq -n --arg name "$name" --arg region "$region" --arg roles "$roles" \
    --argjson pid "$pid" --arg public "$public" --arg internal "$internal_address" \
    --arg config "$conf" --arg log "$log" \
    '{name: $name, region: $region, roles: ($roles | split(", ")), pid: $pid,
      address: $public, internal_address: $internal, config: $config, log: $log}')")
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

printf '%s\n' "${entries[@]}" | jq -s --arg a "${db_url[a]}" --arg b "${db_url[b]}" \
  '{processes: ., databases: {a: $a, b: $b}}' >"$dir/cluster.json"
for region in a b; do
  echo "gateway $region $(jq -r --arg n "edge_$region" '.processes[] | select(.name == $n) | .address' "$dir/cluster.json")"
done
echo "cluster is up: $dir/cluster.json; Ctrl-C stops it"
# Stay until a signal; a process that dies is reported but the rest keep running (kill -9 of
# one process is how failures are tried).
while true; do sleep 1 & wait $! || true; done
