#!/usr/bin/env bash
# scripts/run-local.sh as a user meets it: whatever ends infrachatd (kill -9 of the daemon,
# SIGTERM or Ctrl-C's SIGINT to the script), the script stops the PostgreSQL it started and says
# how the daemon ended: exit 0 after a clean drain, the daemon's status otherwise.
#   run_local_test.sh BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export BUILD_DIR=${1:?build directory}
export INFRACHAT_NO_BUILD=1  # ctest built the programs; a build here would race other tests'
set -m  # background jobs get their own process group and do not ignore SIGINT

work=$(mktemp -d /tmp/infrachat-runlocal.XXXXXX)
chmod 755 "$work"  # the cluster runs as postgres under it when we are root
data=$work/db
cleanup() { "$root/test/support/pg_cluster.sh" stop "$data" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; [ -f "$work/out.log" ] && sed 's/^/  | /' "$work/out.log" >&2; exit 1; }
database_running() { [ -f "$data/data/postmaster.pid" ]; }

# Starts run-local.sh on a free port; sets $script (its pid) and $daemon (infrachatd's pid).
start() {
  rm -f "$work/ready.json"
  INFRACHAT_DATA=$data "$root/scripts/run-local.sh" --set grpc.listen_address=127.0.0.1:0 \
    --ready-file "$work/ready.json" >"$work/out.log" 2>&1 &
  script=$!
  for _ in $(seq 1 600); do
    [ -s "$work/ready.json" ] && break
    kill -0 "$script" 2>/dev/null || fail "run-local.sh ended before the daemon was ready"
    sleep 0.1
  done
  [ -s "$work/ready.json" ] || fail "the daemon was not ready within 60 s"
  daemon=$(jq -r .pid "$work/ready.json")
  database_running || fail "no database is running while the daemon serves"
}

# Waits for run-local.sh and checks its exit status and that the database is down.
expect_end() {
  local want=$1 what=$2 status=0
  wait "$script" || status=$?
  [ "$status" = "$want" ] || fail "$what: run-local.sh exited $status, expected $want"
  database_running && fail "$what: the database is still running"
  kill -0 "$daemon" 2>/dev/null && fail "$what: infrachatd is still running"
  echo "ok: $what (exit $status, database stopped)"
}

start
kill -KILL "$daemon"
expect_end 137 "kill -9 of infrachatd"

start
kill -TERM "$daemon"
expect_end 0 "SIGTERM of infrachatd"

start
kill -TERM "$script"
expect_end 0 "SIGTERM of run-local.sh"

start
kill -INT "$script"
expect_end 0 "Ctrl-C (SIGINT) of run-local.sh"
echo "4 passed, 0 failed"
