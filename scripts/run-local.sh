#!/usr/bin/env bash
# Runs InfraChat on this machine: installs what is missing, builds, starts a private PostgreSQL
# (kept between runs) and infrachatd with every role, on 127.0.0.1:7400. Ctrl-C stops both.
#   scripts/run-local.sh [--set key=value ...]   extra infrachatd overrides
#   INFRACHAT_DATA=DIR   where the database lives (default /tmp/infrachat-dev)
#   scripts/run-local.sh --reset                 wipe the local database first
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh" infrachatd infrachat

data=${INFRACHAT_DATA:-/tmp/infrachat-dev}
if [ "${1:-}" = "--reset" ]; then
  shift
  "$root/test/support/pg_cluster.sh" stop "$data"
fi
url=$("$root/test/support/pg_cluster.sh" start "$data")
trap '"$root/test/support/pg_cluster.sh" halt "$data"' EXIT

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
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon; "$root/test/support/pg_cluster.sh" halt "$data"' EXIT INT TERM
wait $daemon
