#!/usr/bin/env bash
# Builds the container image from the Dockerfile and proves it, from a fresh Debian bookworm
# machine (as root, or with sudo):
#   1. installs podman, runc and mmdebstrap if missing (scripts/setup.sh), and points podman at a
#      containers.conf of its own (runc, cgroupfs, explicit ulimits: this host's facts, see README
#      "Container image"); /etc is never edited;
#   2. makes the base image debian:bookworm-slim with mmdebstrap once (no registry is reachable)
#      and reuses it afterwards;
#   3. builds the image (podman build --format docker, so HEALTHCHECK is kept), reusing this
#      machine's ccache (see the build step);
#   4. all-in-one: runs it against a private PostgreSQL (its unix socket mounted into the
#      container, host network, read-only root file system, no capabilities), waits for `podman healthcheck run`
#      to pass, checks that the daemon runs as uid 10001, chats through it with this machine's
#      `infrachat` client, and requires exit status 0 after SIGTERM (`podman stop`);
#   5. role-split: an auth, a shard and an edge [gateway, fanout, router] container from the same
#      image (roles and peers from the environment), chats through the edge, checks the shard
#      container stored the messages, stops each with SIGTERM and requires exit status 0.
# Prints one `ok: ...` line per check and `N passed, 0 failed`, or `FAIL: ...` with the logs of
# the containers and exits 1. Removes every container and database it started, and only those.
#   scripts/container-test.sh [BUILD_DIR]     BUILD_DIR holds the host's infrachat client
#                                             (default: build; built if missing)
#   INFRACHAT_IMAGE=name:tag   the image to build and run (default localhost/infrachat/infrachatd:dev)
#   INFRACHAT_REBUILD_BASE=1   make the base image again (e.g. for newer Debian packages)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export BUILD_DIR=${1:-${BUILD_DIR:-$root/build}}
image=${INFRACHAT_IMAGE:-localhost/infrachat/infrachatd:dev}
base=localhost/debian:bookworm-slim
cli="$BUILD_DIR/src/client/infrachat"
started=$SECONDS

if [ "$(id -u)" != 0 ]; then
  # Rootless podman would need subuid ranges and another storage: not what this script sets up.
  command -v sudo >/dev/null || { echo "container-test: run as root (or install sudo)" >&2; exit 1; }
  exec sudo -E "$0" "$@"
fi

# ---- 1. Tools -------------------------------------------------------------------------------------
# PostgreSQL 15, jq, the build tools for the client, and podman, runc and mmdebstrap.
"$root/scripts/setup.sh"
[ -x "$cli" ] || "$root/scripts/build.sh" infrachat >/dev/null

work=$(mktemp -d /tmp/infrachat-container.XXXXXX)
chmod 755 "$work"  # the database runs as postgres under it, the containers as uid 10001
# crun refuses this host's hybrid cgroups, systemd is not PID 1 here (cgroupfs), and runc fails
# to start a container whose ulimits exceed what this process may raise them to: explicit ones,
# open files capped by our own hard limit (20000 on these machines).
nofile=$(ulimit -Hn)
if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
cat >"$work/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$work/containers.conf"

tag="ct$$"  # names of this run's containers
containers=()
cleanup() {
  local name
  for name in "${containers[@]}"; do podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; done
  "$root/test/support/pg_cluster.sh" stop "$work/db" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
passed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() {
  echo "FAIL: $*" >&2
  local name
  for name in "${containers[@]}"; do
    podman container exists "$name" || continue
    echo "  --- podman logs $name (last 30 lines)" >&2
    podman logs --tail 30 "$name" 2>&1 | sed 's/^/  | /' >&2 || true
  done
  exit 1
}

# ---- 2. Base image --------------------------------------------------------------------------------
if [ "${INFRACHAT_REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$base"; then
  t0=$SECONDS
  # Trimmed like Docker's debian:bookworm-slim (about 78 MB, not 170): /usr merged by mmdebstrap's
  # hook instead of the usrmerge package (which pulls in 46 MB of perl), and no documentation,
  # manual pages or translations, also for packages installed later in the image (the options
  # stay in the image's dpkg config).
  mmdebstrap --variant=minbase --quiet --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    bookworm "$work/rootfs.tar" >"$work/mmdebstrap.log" 2>&1 ||
    { tail -n 30 "$work/mmdebstrap.log" >&2; fail "mmdebstrap could not make the base file system"; }
  podman import --quiet "$work/rootfs.tar" "$base" >/dev/null || fail "podman import of the base"
  rm -f "$work/rootfs.tar"
  ok "base image $base made with mmdebstrap in $((SECONDS - t0)) s"
else
  ok "base image $base already there"
fi

# ---- 3. Image -------------------------------------------------------------------------------------
t0=$SECONDS
# --network host: apt-get in the build reaches Debian's mirror; --pull=never: the base is local.
build_args=(--build-arg "SRC_DIR=$root" --build-arg "BUILD_DIR=$(realpath -m "$BUILD_DIR")")
# The compile inside sees the host's paths, locale and ccache settings (ccache hashes LANG and
# LC_*, and paths unless CCACHE_BASEDIR makes them relative) and the host's ccache directory, so
# whatever this machine has compiled already (scripts/test.sh, CI) is a cache hit.
for var in LANG LC_ALL LC_CTYPE LC_MESSAGES CCACHE_BASEDIR CCACHE_NOHASHDIR; do
  [ -z "${!var+set}" ] || build_args+=(--build-arg "$var=${!var}")
done
host_ccache=$(ccache -k cache_dir 2>/dev/null || true)
if [ -n "$host_ccache" ]; then
  mkdir -p "$host_ccache"
  build_args+=(--volume "$host_ccache:/host-ccache" --build-arg CCACHE_DIR=/host-ccache)
fi
if ! podman build --format docker --network host --pull=never "${build_args[@]}" -t "$image" \
  --iidfile "$work/iid" "$root" >"$work/build.log" 2>&1 || [ ! -s "$work/iid" ]; then
  grep -v 'missing ".*" build argument' "$work/build.log" | tail -n 40 >&2
  fail "podman build"
fi
size=$(podman image inspect -f '{{.Size}}' "$image")
ok "image $image built in $((SECONDS - t0)) s, $((size / 1000000)) MB"
[ "$(podman image inspect -f '{{.Config.User}}' "$image")" = 10001:10001 ] ||
  fail "the image's user is '$(podman image inspect -f '{{.Config.User}}' "$image")', not 10001:10001"
[ -n "$(podman image inspect -f '{{.HealthCheck}}' "$image" | grep -v '^<nil>$')" ] ||
  fail "the image has no health check (built without --format docker?)"

# ---- Helpers --------------------------------------------------------------------------------------
db_url=$("$root/test/support/pg_cluster.sh" start "$work/db")
psql() {
  runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h "$work/db" -d postgres -Atc "$1"
}
# This run's ports: port, port+1, ..., port+5. Below the kernel's ephemeral range (32768 and
# up here), where outgoing connections take their local ports, and checked free in any state.
port_block_free() {
  local p
  for p in $(seq "$1" $(($1 + 5))); do
    [ -z "$(ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null)" ] || return 1
  done
}
for _ in $(seq 50); do
  port=$((20000 + (RANDOM % 120) * 100))
  port_block_free "$port" && break
done
port_block_free "$port" || fail "no free block of six ports found between 20000 and 32000"

# run NAME [podman run options...]: starts a container of the image in the background, on the
# host's network (the database's socket mounted at the same path), locked down as the Kubernetes
# manifests run it: read-only root file system, no capabilities, no privilege escalation.
run() {
  local name="$tag-$1"
  shift
  containers+=("$name")
  # Without systemd (as here) podman cannot schedule the periodic health checks and says so on
  # stderr; `healthy` runs them itself.
  podman run -d --name "$name" --network host --read-only --cap-drop=ALL \
    --security-opt=no-new-privileges -v "$work/db:$work/db" "$@" "$image" \
    >/dev/null 2>"$work/run-$name.err" || { cat "$work/run-$name.err" >&2; fail "podman run $name"; }
}
# healthy NAME: waits until the image's own health check passes (60 s at most).
healthy() {
  local name="$tag-$1"
  for _ in $(seq 1 120); do
    if podman healthcheck run "$name" >/dev/null 2>&1; then
      [ "$(podman inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] ||
        fail "$name passed its health check but podman records '$(podman inspect -f '{{.State.Health.Status}}' "$name")'"
      return 0
    fi
    [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] ||
      fail "$name exited ($(podman inspect -f '{{.State.ExitCode}}' "$name")) before it was healthy"
    sleep 0.5
  done
  fail "$name not healthy within 60 s"
}
# stops NAME: SIGTERM (podman stop, SIGKILL only after 30 s) must end the container with exit
# status 0, well before the SIGKILL.
stops() {
  local name="$tag-$1" t0=$SECONDS status
  podman stop -t 30 "$name" >/dev/null 2>>"$work/podman.err" || fail "podman stop $name"
  status=$(podman inspect -f '{{.State.ExitCode}}' "$name")
  [ "$status" = 0 ] || fail "$name exited with status $status after SIGTERM"
  [ $((SECONDS - t0)) -lt 25 ] || fail "$name took $((SECONDS - t0)) s to stop after SIGTERM"
  echo "$((SECONDS - t0))"
}
export INFRACHAT_PASSWORD=correct-horse-battery
as() { local server=$1 user=$2; shift 2; "$cli" --server "$server" --user "$user" "$@"; }
# chat SERVER CHANNEL A B: users A (registered, creates CHANNEL) and B (registered, joins) through
# SERVER; B's tail (from seq 0: live or from the log, whichever comes first) receives A's message,
# and history holds it once. The acknowledgement is left in $work/ack.json.
chat() {
  local server=$1 channel=$2 a=$3 b=$4 text="hello from a container, $2"
  as "$server" "$a" register >/dev/null 2>"$work/err" || fail "register $a via $server: $(cat "$work/err")"
  as "$server" "$b" register >/dev/null 2>"$work/err" || fail "register $b via $server: $(cat "$work/err")"
  as "$server" "$a" create -c "$channel" >/dev/null 2>"$work/err" || fail "create #$channel: $(cat "$work/err")"
  as "$server" "$b" join -c "$channel" >/dev/null 2>"$work/err" || fail "$b joins #$channel: $(cat "$work/err")"
  as "$server" "$b" tail -c "$channel" --after-seq 0 --count 1 --timeout-s 30 >"$work/tail.json" \
    2>"$work/tail.err" &
  local tail_pid=$!
  as "$server" "$a" send -c "$channel" "$text" >"$work/ack.json" 2>"$work/err" || fail "send to #$channel: $(cat "$work/err")"
  wait "$tail_pid" || fail "$b's tail of #$channel got nothing: $(cat "$work/tail.err")"
  [ "$(jq -r .body "$work/tail.json")" = "$text" ] || fail "$b's tail got $(cat "$work/tail.json")"
  as "$server" "$b" history -c "$channel" >"$work/history.json" || fail "history of #$channel"
  [ "$(jq -r .body "$work/history.json")" = "$text" ] || fail "history of #$channel is $(cat "$work/history.json")"
}

# ---- 4. All-in-one --------------------------------------------------------------------------------
aio="127.0.0.1:$port"
t0=$SECONDS
run aio -e INFRACHAT_DATABASE_URL="$db_url" -e INFRACHAT_GRPC_LISTEN_ADDRESS="$aio"
healthy aio
ok "all-in-one: healthy (podman healthcheck run: infrachat health in the image) $((SECONDS - t0)) s after start"
pid=$(podman inspect -f '{{.State.Pid}}' "$tag-aio")
uids=$(awk '$1 == "Uid:" {print $2, $3, $4, $5}' "/proc/$pid/status")
[ "$uids" = "10001 10001 10001 10001" ] || fail "infrachatd (pid $pid) runs with uids $uids, not 10001"
caps=$(awk '$1 == "CapEff:" || $1 == "CapBnd:" {print $2}' "/proc/$pid/status" | paste -sd' ')
[ "$caps" = "0000000000000000 0000000000000000" ] || fail "infrachatd has capabilities (effective, bounding): $caps"
[ "$(podman exec "$tag-aio" id -u)" = 10001 ] || fail "podman exec id -u is not 10001"
ok "all-in-one: infrachatd runs as uid 10001 (not root), read-only root, no capabilities"
chat "$aio" general alice bob
ok "all-in-one: alice and bob chat through it with the host's infrachat client (tail and history)"
"$cli" --server "$aio" health --service infrachat.v1.ChatService >/dev/null ||
  fail "ChatService is not SERVING"
secs=$(stops aio)
podman logs "$tag-aio" >"$work/aio.log" 2>&1
grep -q "shutting down signal=SIGTERM" "$work/aio.log" && grep -q "\] stopped$" "$work/aio.log" ||
  fail "the all-in-one log does not show the SIGTERM drain"
ok "all-in-one: SIGTERM drains and ends it with exit status 0 in $secs s"
podman rm "$tag-aio" >/dev/null 2>>"$work/podman.err"

# ---- 5. Role-split: auth, shard and edge containers -----------------------------------------------
auth_public="127.0.0.1:$((port + 1))" auth_internal="127.0.0.1:$((port + 2))"
shard_public="127.0.0.1:$((port + 3))" shard_internal="127.0.0.1:$((port + 4))"
edge="127.0.0.1:$((port + 5))"
t0=$SECONDS
run auth -e INFRACHAT_ROLES=auth -e INFRACHAT_DATABASE_URL="$db_url" \
  -e INFRACHAT_GRPC_LISTEN_ADDRESS="$auth_public" -e INFRACHAT_GRPC_INTERNAL_LISTEN_ADDRESS="$auth_internal"
run shard -e INFRACHAT_ROLES=shard -e INFRACHAT_SHARD_ID=shard-0 -e INFRACHAT_DATABASE_URL="$db_url" \
  -e INFRACHAT_GRPC_LISTEN_ADDRESS="$shard_public" -e INFRACHAT_GRPC_INTERNAL_LISTEN_ADDRESS="$shard_internal"
healthy auth
healthy shard
# The edge fetches auth's keys at start: it comes after auth serves.
run edge -e INFRACHAT_ROLES=gateway,fanout,router -e INFRACHAT_PEERS_AUTH="$auth_internal" \
  -e INFRACHAT_PEERS_SHARD="$shard_internal" -e INFRACHAT_GRPC_LISTEN_ADDRESS="$edge"
healthy edge
ok "role-split: auth, shard and edge containers healthy $((SECONDS - t0)) s after start"
# The all-in-one run's users and channel are still in the database: others.
chat "$edge" split carol dave
stored=$(psql "SELECT m.seq || ' ' || m.body FROM messages m JOIN channels c ON c.id = m.channel_id
  WHERE c.name LIKE '%split'")
[ "$stored" = "$(jq -r .seq "$work/ack.json") hello from a container, split" ] ||
  fail "the database holds '$stored' for #split, not what was acknowledged"
lease=$(psql "SELECT address FROM shard_leases WHERE shard_id = 'shard-0' AND expires_at > now()")
[ "$lease" = "$shard_internal" ] || fail "shard-0's live lease names '$lease', not $shard_internal"
ok "role-split: chat through the edge container; the shard container stored it ($stored) and holds shard-0's lease"
for name in edge shard auth; do
  secs=$(stops "$name")
  ok "role-split: SIGTERM ends $name with exit status 0 in $secs s"
done
echo "container test took $((SECONDS - started)) s"
echo "$passed passed, 0 failed"
