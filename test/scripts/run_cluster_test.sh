#!/usr/bin/env bash
# scripts/run-cluster.sh as a person uses it: it starts two regions of role-split processes,
# writes cluster.json and prints a gateway per region; the `infrachat` client registered on one
# gateway chats with a user of the other, in channels homed in both regions (live, via tail,
# and in history, in one order); a process killed with kill -9 is restarted by the script (new pid
# in cluster.json, chat through it again); Ctrl-C stops every process and database it started,
# the restarted one included.
#   run_cluster_test.sh BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export BUILD_DIR=${1:?build directory}
source "$root/test/scripts/cluster_harness.sh"
start_cluster
[ "$(jq '.processes | length' "$work/cluster/cluster.json")" = 7 ] || fail "cluster.json lists $(jq '.processes | length' "$work/cluster/cluster.json") processes, not 7"
for field in name region roles pid address config log metrics_address; do
  [ "$(jq "[.processes[] | has(\"$field\")] | all" "$work/cluster/cluster.json")" = true ] || fail "cluster.json entries lack $field"
done
ok "cluster up: gateways $gw_a (a) and $gw_b (b), cluster.json complete"

# Every process has its own metrics listener, printed and in cluster.json; one answers /metrics
# with its own roles and region.
[ "$(grep -c '^metrics ' "$work/out.log")" = 7 ] || fail "not one metrics line per process"
[ "$(jq '[.processes[].metrics_address] | unique | length' "$work/cluster/cluster.json")" = 7 ] || fail "metrics addresses are not distinct"
shard_metrics=$(jq -r '.processes[] | select(.name == "shard_b1") | .metrics_address' "$work/cluster/cluster.json")
grep -qx "metrics shard_b1 $shard_metrics" "$work/out.log" || fail "metrics line of shard_b1 differs from cluster.json ($shard_metrics)"
curl -sf "http://$shard_metrics/metrics" >"$work/metrics.txt" || fail "GET http://$shard_metrics/metrics"
grep -q '^infrachat_build_info{.*roles="shard".*} 1' "$work/metrics.txt" || fail "shard_b1's /metrics: $(grep build_info "$work/metrics.txt")"
grep -q 'region="b"' "$work/metrics.txt" || fail "shard_b1's /metrics is not region b's"
ok "every process serves /metrics at its address in cluster.json (shard_b1: $shard_metrics)"

export INFRACHAT_PASSWORD=correct-horse-battery
as() { local server=$1 user=$2; shift 2; "$cli" --server "$server" --user "$user" "$@"; }
as "$gw_a" alice register >/dev/null || fail "register alice on gateway a"
as "$gw_b" bob register >/dev/null || fail "register bob on gateway b (auth is global)"
for i in 1 2 3 4 5 6; do
  as "$gw_a" alice create -c "room$i" >/dev/null || fail "create room$i"
  as "$gw_b" bob join -c "room$i" >/dev/null || fail "join room$i"
done
psql=/usr/lib/postgresql/15/bin/psql
count() {
  local sql="SELECT count(*) FROM channels"
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$psql" -h "$work/cluster/db-$1" -d postgres -Atc "$sql"
  else "$psql" -h "$work/cluster/db-$1" -d postgres -Atc "$sql"; fi
}
in_a=$(count a); in_b=$(count b)
[ "$in_a" -gt 0 ] && [ "$in_b" -gt 0 ] && [ $((in_a + in_b)) = 6 ] || fail "channels per region: a=$in_a b=$in_b"
ok "six channels, homed in both regions (a: $in_a, b: $in_b), each in one database"

for i in 1 2 3 4 5 6; do
  # From the start of the log: a message sent before the tail subscribed comes from the log.
  as "$gw_b" bob tail -c "room$i" --after-seq 0 --count 2 --timeout-s 30 >"$work/tail$i.json" \
    2>"$work/tail$i.err" &
done
for i in 1 2 3 4 5 6; do
  as "$gw_a" alice send -c "room$i" "hello $i from a" >/dev/null || fail "send to room$i via a"
  as "$gw_b" bob send -c "room$i" "hello $i from b" >/dev/null || fail "send to room$i via b"
done
wait_tails=0
for job in $(jobs -p); do [ "$job" = "$script" ] || wait "$job" || wait_tails=1; done
[ "$wait_tails" = 0 ] || fail "a tail did not get its two messages"
for i in 1 2 3 4 5 6; do
  seen=$(jq -r '.body' "$work/tail$i.json" | paste -sd'|')
  stored=$(as "$gw_a" alice history -c "room$i" | jq -r '.body' | paste -sd'|')
  [ "$(jq -r '.seq' "$work/tail$i.json" | paste -sd' ')" = "1 2" ] || fail "room$i: tail saw seqs $(jq -r .seq "$work/tail$i.json" | paste -sd' ')"
  [ "$seen" = "$stored" ] || fail "room$i: live order '$seen' differs from history '$stored'"
done
ok "messages sent through both gateways arrive live through gateway b in the order of the log"

pid_of() { jq -r --arg n "$1" '.processes[] | select(.name == $n) | .pid' "$work/cluster/cluster.json"; }
old_edge=$(pid_of edge_b)
kill -9 "$old_edge"
for _ in $(seq 1 300); do
  grep -q '^restarted edge_b ' "$work/out.log" && break
  sleep 0.1
done
new_edge=$(awk '$1 == "restarted" && $2 == "edge_b" {print $4}' "$work/out.log" | tr -d ')')
[ -n "$new_edge" ] || fail "edge_b was not restarted within 30 s of kill -9"
[ "$(pid_of edge_b)" = "$new_edge" ] && [ "$new_edge" != "$old_edge" ] || fail "cluster.json has edge_b pid $(pid_of edge_b), not the restarted $new_edge"
kill -0 "$new_edge" || fail "the restarted edge_b ($new_edge) does not run"
for _ in $(seq 1 300); do [ -s "$work/cluster/run/edge_b.json" ] && break; sleep 0.1; done
[ -s "$work/cluster/run/edge_b.json" ] || fail "the restarted edge_b did not serve within 30 s"
as "$gw_b" bob send -c room1 "after the restart" --timeout-s 30 >/dev/null 2>"$work/send.err" || fail "send via the restarted edge_b: $(cat "$work/send.err")"
[ "$(as "$gw_b" bob history -c room1 | jq -r '.body' | tail -n 1)" = "after the restart" ] || fail "history via the restarted edge_b"
ok "kill -9 of edge_b: restarted as pid $new_edge (cluster.json updated), chat through it works again"

pids="$old_edge $(jq -r '.processes[].pid' "$work/cluster/cluster.json")"
kill -INT "$script"
status=0
wait "$script" || status=$?
script=""
[ "$status" = 0 ] || fail "run-cluster.sh exited $status after Ctrl-C"
for pid in $pids; do kill -0 "$pid" 2>/dev/null && fail "process $pid still runs after Ctrl-C"; done
for r in a b; do [ -f "$work/cluster/db-$r/data/postmaster.pid" ] && fail "database $r still runs"; done
ok "Ctrl-C stopped all 7 processes (the restarted one too) and both databases"
echo "$passed passed, 0 failed"
