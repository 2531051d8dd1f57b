#!/usr/bin/env bash
# The end-to-end test run with the binaries of the Debian packages instead of
# the build tree: the packages (BUILD_DIR/packages, scripts/package.sh) are
# unpacked under a prefix (dpkg -x: the files exactly as installed, stripped,
# with no build-tree RPATH) and tests/e2e/e2e_test.sh runs against PREFIX/usr.
# The dataplane and the host agent run with the privileges their systemd
# units give them: root without any capability (setpriv empties the bounding
# set; no_new_privs), the dataplane with the unit's --iova-mode=va. So the
# test fails if either needs a capability the units do not grant.
#
#   tests/packaging/e2e_from_packages.sh BUILD_DIR
set -uo pipefail
BUILD=$(cd "${1:?usage: e2e_from_packages.sh BUILD_DIR}" && pwd) || exit 2
HERE=$(cd "$(dirname "$0")" && pwd)
shopt -s nullglob
debs=("$BUILD"/packages/*.deb)
if [ ${#debs[@]} -eq 0 ]; then
  echo "e2e-from-packages: no packages in $BUILD/packages (scripts/package.sh)" >&2
  exit 1
fi
PREFIX=$(mktemp -d /tmp/dfw-pkgroot.XXXXXX)
pid=
trap 'rm -rf "$PREFIX"' EXIT
# Stopped (ctest's timeout): the e2e test stops too, and cleans up.
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid"; exit 143' TERM INT
for d in "${debs[@]}"; do dpkg-deb -x "$d" "$PREFIX" || exit 1; done
echo "e2e-from-packages: unpacked ${#debs[@]} packages under $PREFIX"
NOCAPS="setpriv --bounding-set=-all --inh-caps=-all --ambient-caps=-all --no-new-privs"
$NOCAPS true || { echo "e2e-from-packages: setpriv cannot drop capabilities here" >&2; exit 1; }
export SB_DP_WRAP=$NOCAPS FLEET_AGENT_WRAP=$NOCAPS SB_DP_EAL_EXTRA=--iova-mode=va
"$HERE/../e2e/e2e_test.sh" "$PREFIX/usr" --no-guest &
pid=$!
wait "$pid"
