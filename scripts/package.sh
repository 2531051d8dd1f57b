#!/usr/bin/env bash
# Builds the Debian packages (CPack's DEB generator; packaging/CMakeLists.txt)
# into BUILD_DIR/packages: dfw-controller, dfw-host, dfwctl, dfw-vmagent.
#
#   scripts/package.sh [--no-build] [BUILD_DIR=build]
#
# Without --no-build it first builds the tree (scripts/build.sh). Install
# them with `apt-get install ./build/packages/*.deb` (docs/install.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=1
if [ "${1:-}" = "--no-build" ]; then
  BUILD=0
  shift
fi
BUILD_DIR=${1:-${DFW_BUILD_DIR:-build}}
if [ "$BUILD" = 1 ]; then
  DFW_BUILD_DIR=$BUILD_DIR scripts/build.sh
fi
rm -rf "$BUILD_DIR/packages"
(cd "$BUILD_DIR" && cpack -G DEB --config CPackConfig.cmake) >"$BUILD_DIR/cpack.log" 2>&1 || {
  tail -40 "$BUILD_DIR/cpack.log" >&2
  echo "package: cpack failed (log: $BUILD_DIR/cpack.log)" >&2
  exit 1
}
for d in "$BUILD_DIR"/packages/*.deb; do
  echo "package: $d ($(du -k "$d" | cut -f1) KiB)"
  dpkg-deb -f "$d" Depends | fold -s -w 100 | sed 's/^/    /'
done
