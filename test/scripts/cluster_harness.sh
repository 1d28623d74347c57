# Sourced by the run-cluster.sh script tests: a private work dir, cleanup that stops the script
# (Ctrl-C, as a person would) and the databases it started, fail/ok reporting, and
# start_cluster, which runs scripts/run-cluster.sh in the background until it says it is up.
# Expects `root` and BUILD_DIR; sets work, cli, passed, script, gw_a, gw_b.
set -m  # run-cluster.sh gets its own process group and does not ignore SIGINT

work=$(mktemp -d /tmp/infrachat-runcluster.XXXXXX)
chmod 755 "$work"  # the databases run as postgres under it when we are root
cli="$BUILD_DIR/src/client/infrachat"
# ctest built the programs; a build by the script would race the other tests' (two cmake runs
# in one build dir fail).
export INFRACHAT_NO_BUILD=1
passed=0
script=""
cleanup() {
  if [ -n "$script" ] && kill -0 "$script" 2>/dev/null; then kill -INT "$script"; wait "$script" || true; fi
  for r in a b; do "$root/test/support/pg_cluster.sh" stop "$work/cluster/db-$r" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; sed 's/^/  | /' "$work/out.log" >&2 || true; exit 1; }
ok() { echo "ok: $*"; passed=$((passed + 1)); }

# start_cluster [run-cluster.sh arguments...]: on a port range unlikely to be in use by a
# parallel test; fails unless it is up within 90 s and printed a gateway per region.
start_cluster() {
  local base=$((20000 + (RANDOM % 400) * 100))
  "$root/scripts/run-cluster.sh" "$@" --base-port "$base" --dir "$work/cluster" >"$work/out.log" 2>&1 &
  script=$!
  for _ in $(seq 1 900); do
    grep -q '^cluster is up' "$work/out.log" && break
    kill -0 "$script" 2>/dev/null || fail "run-cluster.sh $* ended before the cluster was up"
    sleep 0.1
  done
  grep -q '^cluster is up' "$work/out.log" || fail "the cluster was not up within 90 s"
  gw_a=$(awk '$1 == "gateway" && $2 == "a" {print $3}' "$work/out.log")
  gw_b=$(awk '$1 == "gateway" && $2 == "b" {print $3}' "$work/out.log")
  [ -n "$gw_a" ] && [ -n "$gw_b" ] || fail "no gateway lines"
}
