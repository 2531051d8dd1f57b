#!/usr/bin/env bash
# Configures and builds the tree into build/ (or $DFW_BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${DFW_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE:-RelWithDebInfo} \
  -DDFW_BUILD_OVS=${DFW_BUILD_OVS:-ON} -DDFW_WERROR=${DFW_WERROR:-OFF} "$@"
cmake --build "$BUILD_DIR" -j "$(nproc)"
