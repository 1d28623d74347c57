#!/usr/bin/env bash
# Runs a highly available PostgreSQL 15 on this machine, on loopback: one etcd (the DCS) and
# three PostgreSQL nodes managed by Patroni, in strict synchronous mode (a COMMIT returns only
# once a standby has the WAL; docs/HA.md explains why strict: Debian's Patroni 3.0.2 can
# otherwise run a primary without its synchronous standby after a Patroni restart).
# Waits (at most --timeout s) until a leader and a synchronous standby run, creates the database
# `infrachat` and its owner, writes DIR/ha.json, prints the multi-host URL InfraChat takes as
# database.url (`url postgresql://...`), then stays in the foreground until Ctrl-C (or SIGTERM),
# when it stops everything it started: the Patroni processes (each stops its PostgreSQL), any
# postmaster that outlived a killed Patroni, and etcd.
# Supervision, as systemd's Restart=always or a pod's restart would: a Patroni process that exits
# (kill -9 included) is started again after --patroni-restart-delay seconds; it takes over its
# still running PostgreSQL. The script prints `restarted patroni NODE (pid N)`. PostgreSQL is
# Patroni's to supervise; etcd is not supervised.
# DIR/ha.json, rewritten atomically whenever a pid changes:
#   {"url": ..., "scope": ..., "etcd": {"pid", "client"}, "nodes": [{"name", "pg_port",
#    "rest": "127.0.0.1:P", "patroni_pid", "postmaster_pid" (0 while down), "config", "log",
#    "data_dir"}]}
# Which node leads changes with every failover: ask Patroni (GET http://<rest>/cluster, or
# /primary, 200 only on the leader) or `patronictl -c <config> list`.
#   scripts/run-ha-db.sh [--dir DIR] [--base-port 15430] [--timeout 90] [--no-restart]
#                        [--patroni-restart-delay 1]
#     --base-port P   PostgreSQL on P..P+2, Patroni REST on P+3..P+5, etcd on P+6 (client) and
#                     P+7 (peer)
#     --dir DIR       data, configs and logs (default: a fresh directory under /tmp)
#     --no-restart    a Patroni process that exits stays dead (its PostgreSQL keeps running)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
base_port=15430
dir=""
timeout=90
restart=1
restart_delay=1
while [ $# -gt 0 ]; do
  case "$1" in
    --base-port) base_port=${2:?--base-port needs a port}; shift 2 ;;
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
    --no-restart) restart=0; shift ;;
    --patroni-restart-delay) restart_delay=${2:?--patroni-restart-delay needs seconds}; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "run-ha-db: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$base_port" in ''|*[!0-9]*) echo "run-ha-db: --base-port must be a number" >&2; exit 2 ;; esac
case "$timeout" in ''|*[!0-9]*) echo "run-ha-db: --timeout must be whole seconds" >&2; exit 2 ;; esac
"$root/scripts/setup.sh"
for tool in patroni patronictl etcd curl jq openssl; do
  command -v "$tool" >/dev/null || { echo "run-ha-db: $tool is missing (scripts/setup.sh)" >&2; exit 1; }
done
if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/infrachat-ha.XXXXXX); fi
dir=$(realpath -m "$dir")
mkdir -p "$dir"
chmod 755 "$dir"  # PostgreSQL, Patroni and etcd run as postgres under it when we are root
pgbin=${PG_BIN:-/usr/lib/postgresql/15/bin}
scope=infrachat-ha
etcd_client=127.0.0.1:$((base_port + 6))
etcd_peer=127.0.0.1:$((base_port + 7))
nodes=(node1 node2 node3)

# PostgreSQL refuses to run as root: as root, everything runs as postgres (as pg_cluster.sh does).
# `as_db` is a plain command, not a function, so that `as_db x &` gives $! = runuser's pid (a
# function would put a subshell in between), and the real process is its only child.
if [ "$(id -u)" = 0 ]; then
  as_db=(runuser -u postgres --)
  owner=postgres
else
  as_db=()
  owner=$(id -un)
fi
# The process that `as_db` started as PID (runuser's child as root), waiting briefly for it.
real_pid() {
  local launcher=$1 pid=""
  if [ "$(id -u)" != 0 ]; then echo "$launcher"; return; fi
  for _ in $(seq 1 100); do
    pid=$(ps -o pid= --ppid "$launcher" 2>/dev/null | tr -d ' ' | head -n 1)
    [ -n "$pid" ] && break
    sleep 0.02
  done
  echo "${pid:-$launcher}"
}

# Throwaway credentials, generated per directory (nothing default to leak); kept in DIR.
secret() { openssl rand -hex 12; }
if [ ! -f "$dir/secrets.env" ]; then
  (umask 077; printf 'superuser_pw=%s\nreplication_pw=%s\nrewind_pw=%s\napp_pw=%s\n' \
    "$(secret)" "$(secret)" "$(secret)" "$(secret)" >"$dir/secrets.env")
fi
# shellcheck disable=SC1091
. "$dir/secrets.env"
hosts=""
for i in 0 1 2; do hosts+="${hosts:+,}127.0.0.1:$((base_port + i))"; done
url="postgresql://infrachat:$app_pw@$hosts/infrachat?target_session_attrs=read-write&connect_timeout=2"
admin_url="postgresql://postgres:$superuser_pw@$hosts/postgres?target_session_attrs=read-write&connect_timeout=2"

pg_port() { echo $((base_port + $1)); }
rest_of() { echo "127.0.0.1:$((base_port + 3 + $1))"; }

# Patroni's config per node (docs/HA.md explains each timing). Strict synchronous mode is
# required with Patroni 3.0.2 (see the header).
for i in 0 1 2; do
  node=${nodes[$i]}
  mkdir -p "$dir/$node"
  cat >"$dir/$node/patroni.yml" <<YAML
# $node: written by scripts/run-ha-db.sh
scope: $scope
namespace: /infrachat/
name: $node
restapi: {listen: '$(rest_of $i)', connect_address: '$(rest_of $i)'}
etcd3: {hosts: '$etcd_client'}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    primary_start_timeout: 0
    synchronous_mode: true
    synchronous_mode_strict: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: 'on'
        max_connections: 100
        shared_buffers: 32MB
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 32MB
        min_wal_size: 32MB
        max_wal_size: 128MB
        wal_retrieve_retry_interval: 500ms
        fsync: 'on'
        synchronous_commit: 'on'
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
    - wal-segsize: '1'
    - auth-local: trust
    - auth-host: scram-sha-256
postgresql:
  listen: '127.0.0.1:$(pg_port $i)'
  connect_address: '127.0.0.1:$(pg_port $i)'
  data_dir: '$dir/$node/data'
  bin_dir: '$pgbin'
  pgpass: '$dir/$node/pgpass'
  authentication:
    superuser: {username: postgres, password: '$superuser_pw'}
    replication: {username: replicator, password: '$replication_pw'}
    rewind: {username: rewinder, password: '$rewind_pw'}
  parameters: {unix_socket_directories: '$dir/$node'}
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
YAML
done
mkdir -p "$dir/etcd"
chown -R "$owner" "$dir"
chmod 600 "$dir/secrets.env"

etcd_pid=""
declare -A launcher_of patroni_of  # node -> pid of runuser (or Patroni), Patroni's python pid
stopping=0

# The postmaster of NODE's data directory while it runs, else nothing.
postmaster_of() {
  local pidfile="$dir/$1/data/postmaster.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(head -n 1 "$pidfile" 2>/dev/null || true)
  case "$pid" in ''|*[!0-9]*) return 0 ;; esac
  # Exact: the process must be a postgres whose -D is this data directory.
  if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "-D $dir/$1/data"; then echo "$pid"; fi
}

# Kills a postmaster and every child of it (they call setsid, so no process group), after
# waking them (a test may have stopped them with SIGSTOP).
kill_tree() {
  local pid=$1 children
  children=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
  kill -CONT "$pid" $children 2>/dev/null || true
  kill -KILL "$pid" $children 2>/dev/null || true
}

stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap - INT TERM
  local node pid pm
  # Wake anything a test stopped with SIGSTOP: runuser stops itself when its child is stopped
  # and would never exit (nor be waited for) otherwise.
  for pid in $(jobs -pr); do kill -CONT "$pid" 2>/dev/null || true; done
  # SIGTERM to Patroni stops its PostgreSQL cleanly; wake stopped postmasters first.
  for node in "${nodes[@]}"; do
    pm=$(postmaster_of "$node")
    if [ -n "$pm" ]; then kill -CONT "$pm" $(ps -o pid= --ppid "$pm" 2>/dev/null || true) 2>/dev/null || true; fi
    pid=${patroni_of[$node]:-}
    if [ -n "$pid" ]; then kill -CONT "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for node in "${nodes[@]}"; do
    for _ in $(seq 1 300); do
      pid=${patroni_of[$node]:-}
      if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then break; fi
      sleep 0.1
    done
    pid=${patroni_of[$node]:-}
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for pid in $(jobs -pr); do kill -TERM "$pid" 2>/dev/null || true; done
  # A postmaster whose Patroni was killed keeps running: fast shutdown, then by force.
  for node in "${nodes[@]}"; do
    pm=$(postmaster_of "$node")
    [ -n "$pm" ] || continue
    "${as_db[@]}" "$pgbin/pg_ctl" -D "$dir/$node/data" -m fast -w -t 15 stop >/dev/null 2>&1 || true
    pm=$(postmaster_of "$node")
    if [ -n "$pm" ]; then kill_tree "$pm"; fi
  done
  if [ -n "$etcd_pid" ]; then kill -TERM "$etcd_pid" 2>/dev/null || true; fi
  for pid in $(jobs -pr); do wait "$pid" 2>/dev/null || true; done
}
trap 'stop_all; echo "HA database stopped (data, configs and logs in $dir)"' EXIT
trap 'exit 0' INT TERM

"${as_db[@]}" etcd --name "$scope-etcd" --data-dir "$dir/etcd/data" \
  --listen-client-urls "http://$etcd_client" --advertise-client-urls "http://$etcd_client" \
  --listen-peer-urls "http://$etcd_peer" --initial-advertise-peer-urls "http://$etcd_peer" \
  --initial-cluster "$scope-etcd=http://$etcd_peer" --initial-cluster-state new \
  >>"$dir/etcd/etcd.log" 2>&1 &
etcd_launcher=$!
deadline=$((SECONDS + timeout))
until curl -sf "http://$etcd_client/health" >/dev/null 2>&1; do
  if ! kill -0 "$etcd_launcher" 2>/dev/null; then
    echo "run-ha-db: etcd exited; its log ($dir/etcd/etcd.log) ends with:" >&2
    tail -n 20 "$dir/etcd/etcd.log" >&2
    exit 1
  fi
  [ $SECONDS -lt $deadline ] || { echo "run-ha-db: etcd not healthy within ${timeout} s" >&2; exit 1; }
  sleep 0.1
done
etcd_pid=$(real_pid "$etcd_launcher")

# launch NODE: starts NODE's Patroni in the background, its output appended (O_APPEND: a
# postmaster that outlives its Patroni keeps writing to the same file).
launch() {
  local node=$1
  "${as_db[@]}" /usr/bin/patroni "$dir/$node/patroni.yml" >>"$dir/$node/patroni.log" 2>&1 &
  launcher_of[$node]=$!
  # As root the real Patroni is runuser's child (exact parent match, not a name search).
  patroni_of[$node]=$(real_pid "$!")
}

write_ha_json() {
  local entries=() i node
  for i in 0 1 2; do
    node=${nodes[$i]}
    entries+=("$(jq -n --arg name "$node" --argjson pg_port "$(pg_port $i)" --arg rest "$(rest_of $i)" \
      --argjson patroni_pid "${patroni_of[$node]:-0}" --argjson postmaster_pid "$(postmaster_of "$node" | grep . || echo 0)" \
      --arg config "$dir/$node/patroni.yml" --arg log "$dir/$node/patroni.log" --arg data "$dir/$node/data" \
      '{name: $name, pg_port: $pg_port, rest: $rest, patroni_pid: $patroni_pid,
        postmaster_pid: $postmaster_pid, config: $config, log: $log, data_dir: $data}')")
  done
  printf '%s\n' "${entries[@]}" | jq -s --arg url "$url" --arg scope "$scope" \
    --argjson etcd_pid "${etcd_pid:-0}" --arg etcd "$etcd_client" \
    '{url: $url, scope: $scope, etcd: {pid: $etcd_pid, client: $etcd}, nodes: .}' >"$dir/ha.json.tmp"
  mv -f "$dir/ha.json.tmp" "$dir/ha.json"
}

for node in "${nodes[@]}"; do launch "$node"; done

# Ready: three members running, one leader, one synchronous standby (Patroni's view).
healthy() {
  curl -sf --max-time 2 "http://$(rest_of 0)/cluster" 2>/dev/null | jq -e '
    (.members | length) == 3 and all(.members[]; .state == "running") and
    ([.members[] | select(.role == "leader")] | length) == 1 and
    ([.members[] | select(.role == "sync_standby")] | length) >= 1' >/dev/null 2>&1
}
until healthy; do
  for node in "${nodes[@]}"; do
    if ! kill -0 "${launcher_of[$node]}" 2>/dev/null; then
      echo "run-ha-db: Patroni of $node exited during bootstrap; its log ($dir/$node/patroni.log) ends with:" >&2
      tail -n 20 "$dir/$node/patroni.log" >&2
      exit 1
    fi
  done
  if [ $SECONDS -ge $deadline ]; then
    echo "run-ha-db: no leader with a synchronous standby within ${timeout} s; Patroni says:" >&2
    curl -s --max-time 2 "http://$(rest_of 0)/cluster" >&2 || true
    exit 1
  fi
  sleep 0.2
done

# The application's role and database, on the leader (the multi-host URL finds it).
admin_psql() { PGCONNECT_TIMEOUT=2 psql "$admin_url" -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(admin_psql -c "SELECT count(*) FROM pg_roles WHERE rolname = 'infrachat'")" = 0 ]; then
  admin_psql -c "CREATE ROLE infrachat LOGIN PASSWORD '$app_pw'" >/dev/null
  admin_psql -c "CREATE DATABASE infrachat OWNER infrachat" >/dev/null
fi
write_ha_json
leader=$(curl -sf "http://$(rest_of 0)/cluster" | jq -r '.members[] | select(.role == "leader") | .name')
echo "leader $leader"
echo "url $url"
echo "HA database is up: $dir/ha.json; Ctrl-C stops it"

# Stay until a signal. Every 0.2 s: restart an exited Patroni (unless --no-restart) and rewrite
# ha.json when a pid changed (a postmaster restarts after every failover or rewind).
pids_now() {
  local node
  for node in "${nodes[@]}"; do printf '%s/%s ' "${patroni_of[$node]:-0}" "$(postmaster_of "$node")"; done
}
last_pids=$(pids_now)
delay_ms=$(awk -v s="$restart_delay" 'BEGIN { printf "%d", s * 1000 }')
declare -A down_since  # node -> when its Patroni was seen gone (ms)
now_ms() { echo $(($(date +%s%N) / 1000000)); }
while true; do
  sleep 0.2 & wait $! || true
  for node in "${nodes[@]}"; do
    if [ -z "${down_since[$node]:-}" ]; then
      pid=${patroni_of[$node]}
      if kill -0 "$pid" 2>/dev/null; then continue; fi
      status=0
      wait "${launcher_of[$node]}" 2>/dev/null || status=$?
      echo "patroni $node (pid $pid) exited with status $status"
      patroni_of[$node]=""
      down_since[$node]=$(now_ms)
    fi
    if [ "$restart" = 1 ] && [ $(($(now_ms) - down_since[$node])) -ge "$delay_ms" ]; then
      launch "$node"
      unset "down_since[$node]"
      echo "restarted patroni $node (pid ${patroni_of[$node]})"
    fi
  done
  pids=$(pids_now)
  if [ "$pids" != "$last_pids" ]; then
    write_ha_json
    last_pids=$pids
  fi
done
