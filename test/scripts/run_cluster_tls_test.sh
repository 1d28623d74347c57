#!/usr/bin/env bash
# scripts/run-cluster.sh --tls as a person uses it: every process gets the throwaway CA's
# certificate (mutual TLS inside, TLS on the gateways); the `infrachat` client with --ca
# registers on one gateway and chats with a user of the other region's gateway, and a plaintext
# client is refused. Short on purpose: run_cluster_test.sh covers the cluster itself.
#   run_cluster_tls_test.sh BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export BUILD_DIR=${1:?build directory}
source "$root/test/scripts/cluster_harness.sh"
start_cluster --tls
ca=$work/cluster/tls/ca.pem
grep -qF -- "--ca $ca" "$work/out.log" || fail "run-cluster.sh --tls does not say how to connect (--ca $ca)"
for log in "$work"/cluster/log/*.log; do
  name=$(basename "$log" .log)
  grep -q 'public listener on .*: TLS$' "$log" || fail "$name: no 'public listener ...: TLS' line"
  case $name in edge_*) ;; *)
    grep -q 'internal listener on .*: mutual TLS$' "$log" || fail "$name: no 'internal listener ...: mutual TLS' line" ;;
  esac
done
ok "cluster up with TLS: every process says TLS on its public and mutual TLS on its internal listener"

export INFRACHAT_PASSWORD=correct-horse-battery
as() { local server=$1 user=$2; shift 2; "$cli" --server "$server" --ca "$ca" --user "$user" "$@"; }
as "$gw_a" alice register >/dev/null || fail "register alice on gateway a with --ca"
as "$gw_b" bob register >/dev/null || fail "register bob on gateway b with --ca"
as "$gw_a" alice create -c tlsroom >/dev/null || fail "create tlsroom"
as "$gw_b" bob join -c tlsroom >/dev/null || fail "join tlsroom"
as "$gw_a" alice send -c tlsroom "hello over tls" >/dev/null || fail "send via gateway a"
seen=$(as "$gw_b" bob history -c tlsroom | jq -r '.body')
[ "$seen" = "hello over tls" ] || fail "history via gateway b: '$seen'"
ok "infrachat --ca registers, sends through gateway a and reads it through gateway b"

status=0
"$cli" --server "$gw_a" --user alice history -c tlsroom >/dev/null 2>"$work/plain.err" || status=$?
[ "$status" = 5 ] || fail "a plaintext client exited $status, not 5 (UNAVAILABLE): $(cat "$work/plain.err")"
ok "a plaintext client is refused (UNAVAILABLE)"

kill -INT "$script"
status=0
wait "$script" || status=$?
script=""
[ "$status" = 0 ] || fail "run-cluster.sh exited $status after Ctrl-C"
ok "Ctrl-C stopped the cluster"
echo "$passed passed, 0 failed"
