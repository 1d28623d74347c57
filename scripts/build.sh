#!/usr/bin/env bash
# Configures and builds into BUILD_DIR (default: build). Extra arguments are ninja targets.
#   INFRACHAT_SANITIZE=address|thread  builds with ASan+UBSan or TSan (use another BUILD_DIR)
#   BUILD_TYPE=Debug|RelWithDebInfo|Release (default RelWithDebInfo)
#   BUILD_TESTING=OFF  only the programs: no tests, no Catch2 needed (the container image)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build_dir" -G Ninja \
  -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
  -DINFRACHAT_SANITIZE="${INFRACHAT_SANITIZE:-}" -DBUILD_TESTING="${BUILD_TESTING:-ON}" >/dev/null
ninja -C "$build_dir" "$@"
