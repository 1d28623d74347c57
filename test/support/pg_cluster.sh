#!/usr/bin/env bash
# Starts or stops a private PostgreSQL 15 cluster, listening only on a unix socket inside DIR.
# PostgreSQL refuses to run as root: as root the cluster runs as the postgres user (DIR and its
# parents must then be reachable by postgres, so prefer a DIR under /tmp); as any other user it
# runs as that user.
#   pg_cluster.sh start DIR    -> initdb (first time) and start; prints the connection string
#   pg_cluster.sh stop DIR     -> fast shutdown and removal of DIR
#   pg_cluster.sh halt DIR     -> fast shutdown, keeping the data
#   pg_cluster.sh url DIR      -> prints the connection string
set -euo pipefail
cmd=${1:?start|stop|url}
dir=$(realpath -m "${2:?directory}")
pgbin=${PG_BIN:-/usr/lib/postgresql/15/bin}
port=5432
if [ "$(id -u)" = 0 ]; then pguser=postgres; else pguser=$(id -un); fi
url="host=$dir port=$port user=$pguser dbname=postgres"

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; fi
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_postgres "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_postgres "$pgbin/initdb" -D "$dir/data" -U "$pguser" --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1
      cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
max_connections = 300
shared_buffers = 128MB
fsync = on
synchronous_commit = on
log_min_messages = warning
CONF
    fi
    as_postgres "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
    echo "$url"
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_postgres "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  halt)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_postgres "$pgbin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    ;;
  url) echo "$url" ;;
  *) echo "usage: $0 start|stop|halt|url DIR" >&2; exit 2 ;;
esac
