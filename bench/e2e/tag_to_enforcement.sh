#!/usr/bin/env bash
# Time from a tag change through the API (dfwctl) to its enforcement in the
# dataplane, seen by real traffic: the fleet of scripts/lib/fleet.sh (no
# guest), then N times: tag "other" app=web and poll other -> db tcp/5432
# every 20 ms until it opens; untag and poll until it is refused. The poller
# runs before the change; each time is counted from just before dfwctl starts
# (wall clock), so it includes dfwctl's own start, the REST call, the
# controller's membership + compile, the host session, the agent, the
# dataplane's compile + swap, and the probe's granularity: 20 ms between
# attempts, and for "refused" the 100 ms an attempt waits for a SYN answer
# that never comes (a dropped SYN is only seen as such after that timeout).
#
#   sudo bench/e2e/tag_to_enforcement.sh BUILD_DIR [N=20]
set -uo pipefail
BUILD=${1:?usage: tag_to_enforcement.sh BUILD_DIR [N]}
N=${2:-20}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/dfw-bench-e2e.XXXXXX)
# shellcheck source=../../scripts/lib/fleet.sh
. "$REPO/scripts/lib/fleet.sh"
trap 'fleet_cleanup; rm -rf "$WORK"' EXIT
fleet_init "$BUILD" "$WORK" || exit 1
fleet_start --no-guest || exit 1
open_ms=() close_ms=()
for ((i = 0; i < N; i++)); do
  open_ms+=("$(fleet_time_to_enforcement other db 5432 open vm tag ns-other app=web)")
  fleet_wait_realized 10 || exit 1
  close_ms+=("$(fleet_time_to_enforcement other db 5432 closed vm untag ns-other app=web)")
  fleet_wait_realized 10 || exit 1
done
python3 - "${open_ms[*]}" "${close_ms[*]}" <<'PY'
import sys
def stats(name, xs):
    v = sorted(float(x) for x in xs.split() if x != "never")
    miss = len(xs.split()) - len(v)
    if not v:
        print(f"{name}: never enforced"); return
    pct = lambda p: v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
    print(f"{name}: n={len(v)} p50={pct(.5):.0f} ms p90={pct(.9):.0f} ms max={v[-1]:.0f} ms"
          + (f" never={miss}" if miss else ""))
stats("tag added   -> other->db open   ", sys.argv[1])
stats("tag removed -> other->db refused", sys.argv[2])
PY
