#!/usr/bin/env bash
# Measures InfraChat against the limits under it, back to back on this machine and build:
#   1. ceilings: raw PostgreSQL batched inserts (infrachat-ceiling pg-insert) and a raw gRPC relay
#      of the same ChatService with no logic (infrachat-ceiling grpc-relay), driven by the same
#      client code as InfraChat (infrachat-bench --raw);
#   2. InfraChat: infrachatd with every role, driven by infrachat-bench (durable-send at full and
#      half load, fanout, rooms, resume, connections);
#   3. before/after group commit: durable-send again with shard.max_batch=1 (one transaction per
#      send, as before group commit).
# Prints every result as a JSON line into the results file and a summary with each InfraChat
# figure as a ratio to its ceiling. See docs/PERFORMANCE.md.
#
#   scripts/bench.sh                 full run (about 8 minutes)
#   scripts/bench.sh --quick         short run with smaller sizes (about 2 minutes)
#   scripts/bench.sh --out FILE      results file (default bench-results/<date>.jsonl)
#   scripts/bench.sh --cluster       also durable-send and fanout against a role-split pair:
#                                    core [auth, shard] + edge [gateway, fanout, router], the
#                                    clients on the edge (one internal gRPC hop each way)
#   scripts/bench.sh --ha            also durable-send against an HA PostgreSQL (scripts/run-ha-db.sh:
#                                    three Patroni nodes, strict synchronous replication), for
#                                    the cost of the standby round trip per commit (docs/HA.md)
#   BENCH_DURATION=S BENCH_WARMUP=S  measured and warm-up seconds per scenario
#   BENCH_DAEMON=PATH                measure another infrachatd build with the same tools
#
# Benchmarks are not tests: nothing here fails on a slow figure. The daemon runs with the limits
# of a benchmark (per-stream rate limit off, argon2 at its minimum so registering thousands of
# users takes seconds); every other setting is the product's default.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

quick=0
cluster=0
ha=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --cluster) cluster=1 ;;
    --ha) ha=1 ;;
    --out) out=${2:?--out FILE}; shift ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

"$root/scripts/setup.sh"
build=${BUILD_DIR:-$root/build}
BUILD_DIR=$build "$root/scripts/build.sh" infrachatd infrachat-bench infrachat-ceiling >/dev/null
bench=$build/src/bench/tool/infrachat-bench
ceiling=$build/src/bench/ceilings/infrachat-ceiling
# BENCH_DAEMON: another infrachatd to measure with the same tools (e.g. an older build, for a
# before/after table in one sitting).
daemon_bin=${BENCH_DAEMON:-$build/src/exe/infrachatd}

if [ $quick = 1 ]; then
  duration=${BENCH_DURATION:-3}; warmup=${BENCH_WARMUP:-1}
  subscribers=200; sessions=1000; resume_messages=2000; rooms=50
else
  duration=${BENCH_DURATION:-10}; warmup=${BENCH_WARMUP:-2}
  subscribers=1000; sessions=10000; resume_messages=10000; rooms=200
fi
senders=64
timing=(--duration "$duration" --warmup "$warmup")

mkdir -p "$root/bench-results"
results=${out:-$root/bench-results/$(date +%Y%m%d-%H%M%S).jsonl}
: >"$results"
work=$(mktemp -d /tmp/infrachat-bench.XXXXXX)
pgdir=/tmp/infrachat-bench-pg
server_pid=""

core_pid=""
ha_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "$core_pid" ]; then kill -TERM "$core_pid" 2>/dev/null || true; wait "$core_pid" 2>/dev/null || true; fi
  if [ -n "$ha_pid" ]; then kill -TERM "$ha_pid" 2>/dev/null || true; wait "$ha_pid" 2>/dev/null || true; fi
  "$root/test/support/pg_cluster.sh" stop "$pgdir" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# A fresh database for every run, so table sizes do not drift between runs.
"$root/test/support/pg_cluster.sh" stop "$pgdir" >/dev/null 2>&1 || true
db_url=$("$root/test/support/pg_cluster.sh" start "$pgdir")
# The postmaster: the bench reports its and its backends' CPU seconds for every scenario.
pg_pid=$(head -n1 "$pgdir/data/postmaster.pid")

# A fresh cluster has no spare WAL segments: every 16 MiB of WAL, PostgreSQL creates and
# zero-fills a new one, which stalls commits for 25-80 ms (seen as the pg-insert max and the
# durable-send p99). A database that has been running a while recycles old segments instead. So
# that both the ceilings and InfraChat meet such a database, write 48 segments' worth of switches
# and checkpoint them into recycled spares (about 2 s). Durability settings are untouched.
warm_wal() {
  psql -qX "$db_url" -v ON_ERROR_STOP=1 >/dev/null <<SQL
ALTER SYSTEM SET min_wal_size = '1GB';
SELECT pg_reload_conf();
CREATE TABLE wal_warmup (x int);
SQL
  for _ in $(seq 48); do echo "INSERT INTO wal_warmup VALUES (1); SELECT pg_switch_wal();"; done |
    psql -qX "$db_url" -v ON_ERROR_STOP=1 >/dev/null
  psql -qX "$db_url" -v ON_ERROR_STOP=1 -c "DROP TABLE wal_warmup" -c "CHECKPOINT" >/dev/null
  sync  # the 768 MiB of zeroes are written back now, not during the first measurement
}
warm_wal

# Before every scenario: no maintenance debt from the previous one. The ceilings insert millions
# of rows, and autovacuum then works on their table (and a checkpoint flushes their pages) during
# whatever runs next: measured, durable-send right after the batch-512 ceiling did 57,000 msg/s,
# and 65,000-67,000 with this first, as on a database that only it uses (2026-12-03).
settle_db() {
  psql -qX "$db_url" -v ON_ERROR_STOP=1 -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
  sync
}

# record LABEL COMMAND...: runs a benchmark, adds {"label": LABEL} to each JSON line it prints.
# infrachat-bench runs also get the server's and PostgreSQL's pids, for their CPU seconds.
record() {
  local label=$1
  shift
  settle_db
  echo "== $label" >&2
  if [ "$1" = "$bench" ]; then set -- "$@" --server-pid "$server_pid" --pg-pid "$pg_pid"; fi
  "$@" | jq -c --arg name "$label" '. + {"label": $name}' | tee -a "$results" >/dev/null ||
    echo "bench.sh: '$label' failed (exit ${PIPESTATUS[0]}); continuing" >&2
}

# wait_ready FILE: waits until a server wrote its ready file; prints the address in it.
wait_ready() {
  for _ in $(seq 1 300); do
    if [ -s "$1" ]; then
      # infrachatd writes {"address": ...}; the relay writes host:port.
      if jq -er .address "$1" 2>/dev/null; then return 0; fi
      head -n1 "$1"
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || { echo "bench.sh: server exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench.sh: server not ready" >&2
  exit 1
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""
}

# start_infrachatd [--set k=v ...]: all roles on a fresh port; sets $address and $server_pid.
start_infrachatd() {
  rm -f "$work/ready"
  ulimit -n "$(ulimit -Hn)"
  "$daemon_bin" --config "$root/config/all-in-one.yaml" \
    --set database.url="$db_url" --set grpc.listen_address=127.0.0.1:0 \
    --set auth.argon2_ops_limit=1 --set auth.argon2_mem_limit_kib=8 \
    --set limits.send_rate_per_s=1000000 --set limits.send_burst=1000000 \
    --set limits.max_streams=$((sessions + 2000)) --set log.level=warn \
    --ready-file "$work/ready" "$@" >>"$work/infrachatd.log" 2>&1 &
  server_pid=$!
  address=$(wait_ready "$work/ready")
}

# start_relay [--shared-frames]: the raw transport ceiling; sets $address and $server_pid.
start_relay() {
  rm -f "$work/ready"
  "$ceiling" grpc-relay --listen 127.0.0.1:0 --ready-file "$work/ready" "$@" >>"$work/relay.log" 2>&1 &
  server_pid=$!
  address=$(wait_ready "$work/ready")
}

ulimit -n "$(ulimit -Hn)"
echo "bench.sh: results in $results; ${duration}s per scenario after ${warmup}s warm-up" >&2

# --- 1. Ceilings ---------------------------------------------------------------------------
for spec in "1 1" "1 100" "1 512" "4 100"; do
  set -- $spec
  record "pg-insert c$1 b$2" "$ceiling" pg-insert --url "$db_url" --connections "$1" --batch "$2" "${timing[@]}"
done
# The relay as it was before issue 9: one encoding and one write per delivery.
start_relay
record "relay durable-send" "$bench" durable-send --raw --target "$address" --senders $senders --channels $senders "${timing[@]}"
record "relay fanout" "$bench" fanout --raw --target "$address" --subscribers $subscribers "${timing[@]}"
# The same with 100 subscriber streams sharing a TCP connection, as behind an HTTP/2 proxy.
record "relay fanout mux100" "$bench" fanout --raw --target "$address" --subscribers $subscribers --streams-per-connection 100 "${timing[@]}"
stop_server
# The relay with infrachatd's techniques: each message encoded once, batches both ways on request.
start_relay --shared-frames
record "shared relay durable-send" "$bench" durable-send --raw --target "$address" --senders $senders --channels $senders "${timing[@]}"
record "shared relay fanout" "$bench" fanout --raw --target "$address" --subscribers $subscribers "${timing[@]}"
record "shared relay fanout mux100" "$bench" fanout --raw --target "$address" --subscribers $subscribers --streams-per-connection 100 "${timing[@]}"
stop_server

# --- 2. InfraChat ---------------------------------------------------------------------------
start_infrachatd
record "durable-send" "$bench" durable-send --target "$address" --senders $senders --channels $senders "${timing[@]}"
max_rate=$(jq -r 'select(.label == "durable-send") | .rate | floor' "$results" | tail -n1)
if [ -n "$max_rate" ] && [ "$max_rate" -gt 1 ]; then
  record "durable-send half load" "$bench" durable-send --target "$address" --senders $senders --channels $senders --rate $((max_rate / 2)) "${timing[@]}"
fi
record "fanout" "$bench" fanout --target "$address" --subscribers $subscribers "${timing[@]}"
# Latency at load: open loop at half the closed-loop message rate (deliveries / subscribers).
fanout_rate=$(jq -r 'select(.label == "fanout") | .rate' "$results" | tail -n1)
if [ -n "$fanout_rate" ]; then
  half=$(jq -n --argjson r "$fanout_rate" --argjson n "$subscribers" '$r / $n / 2 | floor')
  if [ "$half" -gt 0 ]; then
    record "fanout half load" "$bench" fanout --target "$address" --subscribers $subscribers --rate "$half" "${timing[@]}"
  fi
fi
record "fanout mux100" "$bench" fanout --target "$address" --subscribers $subscribers --streams-per-connection 100 "${timing[@]}"
# A client without the `batch` capability: every delivery its own message (encoded once still).
record "fanout no batches" "$bench" fanout --target "$address" --subscribers $subscribers --no-batches "${timing[@]}"
# Ten times the subscribers, 100 streams a connection (as behind a proxy).
record "fanout 10x mux100" "$bench" fanout --target "$address" --subscribers $((subscribers * 10)) --streams-per-connection 100 "${timing[@]}"
record "rooms" "$bench" rooms --target "$address" --rooms $rooms --members 5 --rate-per-member 1 "${timing[@]}"
record "resume" "$bench" resume --target "$address" --messages $resume_messages
stop_server
# connections last and on a fresh daemon, so its RSS is not inflated by earlier scenarios.
start_infrachatd
record "connections" "$bench" connections --target "$address" --sessions $sessions --duration 3 --warmup 0
stop_server

# --- 3. Before group commit: one transaction per send ----------------------------------------
start_infrachatd --set shard.max_batch=1
record "durable-send max_batch=1" "$bench" durable-send --target "$address" --senders $senders --channels $senders "${timing[@]}"
stop_server

# --- 4. Role-split: the same scenarios through an edge process --------------------------------
if [ $cluster = 1 ]; then
  rm -f "$work/core.ready"
  "$daemon_bin" --config "$root/config/all-in-one.yaml" --set roles=auth,shard \
    --set database.url="$db_url" --set grpc.listen_address=127.0.0.1:0 \
    --set grpc.internal_listen_address=127.0.0.1:0 \
    --set auth.argon2_ops_limit=1 --set auth.argon2_mem_limit_kib=8 --set log.level=warn \
    --ready-file "$work/core.ready" >>"$work/core.log" 2>&1 &
  core_pid=$!
  for _ in $(seq 1 300); do [ -s "$work/core.ready" ] && break; sleep 0.1; done
  internal=$(jq -r .internal_address "$work/core.ready")
  start_infrachatd --set roles=gateway,fanout,router --set database.url= \
    --set peers.auth="$internal" --set peers.shard="$internal"
  record "cluster durable-send" "$bench" durable-send --target "$address" --senders $senders --channels $senders "${timing[@]}"
  record "cluster fanout" "$bench" fanout --target "$address" --subscribers $subscribers "${timing[@]}"
  stop_server
  kill -TERM "$core_pid"; wait "$core_pid" || true; core_pid=""
fi

# --- 5. HA PostgreSQL: every commit waits for a synchronous standby --------------------------
if [ $ha = 1 ]; then
  chmod 711 "$work"  # the HA nodes run as postgres under $work/ha
  "$root/scripts/run-ha-db.sh" --dir "$work/ha" --base-port "${BENCH_HA_BASE_PORT:-15430}" \
    >"$work/ha.out" 2>&1 &
  ha_pid=$!
  for _ in $(seq 1 1800); do
    grep -q "HA database is up" "$work/ha.out" && break
    kill -0 "$ha_pid" 2>/dev/null || { cat "$work/ha.out" >&2; echo "bench.sh: run-ha-db.sh failed" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "HA database is up" "$work/ha.out" || { echo "bench.sh: HA database not up" >&2; exit 1; }
  start_infrachatd --set database.url="$(jq -r .url "$work/ha/ha.json")" \
    --set database.require_sync_replica=true
  # The three postmasters are not one process tree: PostgreSQL's CPU is not reported here.
  single_pg_pid=$pg_pid; pg_pid=0
  record "ha durable-send" "$bench" durable-send --target "$address" --senders $senders --channels $senders "${timing[@]}"
  pg_pid=$single_pg_pid
  stop_server
  kill -TERM "$ha_pid"; wait "$ha_pid" || true; ha_pid=""
fi

# --- Summary ---------------------------------------------------------------------------------
jq -rs -f "$root/scripts/bench-summary.jq" "$results"
echo "bench.sh: results in $results" >&2
