#!/usr/bin/env bash
# Runs InfraChat on this machine: installs what is missing, builds, starts a private PostgreSQL
# (kept between runs) and infrachatd with every role, on 127.0.0.1:7400. Ctrl-C stops both.
#   scripts/run-local.sh [--set key=value ...]   extra infrachatd overrides
#   INFRACHAT_DATA=DIR   where the database lives (default /tmp/infrachat-dev)
#   INFRACHAT_NO_BUILD=1 use the programs already in BUILD_DIR (default build) as they are
#   scripts/run-local.sh --reset                 wipe the local database first
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
[ -n "${INFRACHAT_NO_BUILD:-}" ] || "$root/scripts/build.sh" infrachatd infrachat

data=${INFRACHAT_DATA:-/tmp/infrachat-dev}
if [ "${1:-}" = "--reset" ]; then
  shift
  "$root/test/support/pg_cluster.sh" stop "$data"
fi
url=$("$root/test/support/pg_cluster.sh" start "$data")
halt_database() { "$root/test/support/pg_cluster.sh" halt "$data" || true; }
# Whatever ends this script (an error, a signal, the daemon exiting by itself), the database it
# started is stopped again.
trap halt_database EXIT

export INFRACHAT_DATABASE_URL="$url"
build=${BUILD_DIR:-$root/build}
cat <<MSG
InfraChat is starting on 127.0.0.1:7400 (database in $data).
In another terminal:
  $build/src/client/infrachat --user alice --register      # first time; then without --register
  then: /join #general, type to chat, /help for commands.
MSG
"$build/src/exe/infrachatd" --config "$root/config/all-in-one.yaml" "$@" &
daemon=$!
# Ctrl-C (SIGINT to the whole process group) or SIGTERM to this script: the daemon drains and
# exits 0. A second signal is harmless.
interrupted=0
stop_daemon() {
  interrupted=1
  kill -TERM "$daemon" 2>/dev/null || true
}
trap stop_daemon INT TERM
set +e
wait "$daemon"
status=$?
# A trapped signal interrupts `wait` (status 128+n); waiting again gives the daemon's own
# status (bash keeps it even when the daemon has exited meanwhile).
while [ "$interrupted" = 1 ] && [ "$status" -gt 128 ]; do
  interrupted=0
  wait "$daemon"
  status=$?
done
set -e
trap - INT TERM
if [ "$status" = 0 ]; then
  echo "infrachatd stopped; stopping the database."
else
  echo "infrachatd exited with status $status; stopping the database." >&2
fi
exit "$status"
