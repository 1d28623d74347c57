#!/usr/bin/env bash
# Installs the Debian bookworm packages that building and testing InfraChat need.
# Idempotent and quiet when everything is there already. Needs root (or sudo) to install.
#   scripts/setup.sh               everything: build, format check, tests
#   scripts/setup.sh --build-only  what compiling infrachatd and infrachat needs, nothing more
#                                  (the container image's build stage)
set -euo pipefail

build_packages=(
  build-essential cmake ninja-build ccache pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libpqxx-dev libyaml-cpp-dev libsodium-dev libcpp-jwt-dev libssl-dev
  libcli11-dev libedit-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libasio-dev
  prometheus-cpp-dev libcurl4-openssl-dev
)
test_packages=(
  clang-format catch2 postgresql-15 util-linux jq openssl prometheus iproute2
  # The container test (ctest -L container): podman with runc, mmdebstrap for the base image.
  podman runc mmdebstrap
  # HA PostgreSQL on one machine (scripts/run-ha-db.sh, the `ha` tests): docs/HA.md
  patroni etcd-server etcd-client python3-psycopg2
)
case "${1:-}" in
  --build-only) packages=("${build_packages[@]}") ;;
  "") packages=("${build_packages[@]}" "${test_packages[@]}") ;;
  *) echo "setup: unknown argument $1 (--build-only or nothing)" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "setup: run as root or install sudo" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a system cluster on port 5432; InfraChat never uses it (it runs its
# own private clusters on unix sockets), so it is left as the system configured it.
# etcd and Patroni are only ever started by scripts/run-ha-db.sh, on private ports and data
# directories: their system services (if the install started them) are stopped and disabled.
for service in etcd patroni; do
  [ -e "/etc/init.d/$service" ] || continue
  $sudo service "$service" stop >/dev/null 2>&1 || true
  if command -v systemctl >/dev/null; then $sudo systemctl disable "$service" >/dev/null 2>&1 || true; fi
  $sudo update-rc.d "$service" disable >/dev/null 2>&1 || true
done
