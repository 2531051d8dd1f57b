#!/usr/bin/env bash
# End-to-end for the guest agent: one policy across both kinds of VM.
#
#   tests/e2e/vmagent_e2e_test.sh BUILD_DIR [--no-guest]
#
# The fleet (no QEMU guest): the controller, OVS-DPDK, the dataplane and
# the host agent with the namespace VMs web, db, other behind the dataplane;
# beside them, on the same bridge but never steered, "ga" runs dfw-vmagent
# (enrolled as spiffe://dfw.test/vm/<uuid>, enforcing with nftables in its
# namespace) and "ext" is a plain machine with no agent at all.
# Policy (examples/web-db-*.json): web may reach db on TCP/UDP 5432 and ping.
# Checks, with real traffic:
#   1. the guest VM registers, enforced by its guest agent, default deny;
#   2. tagged app=db through dfwctl: web (dataplane) reaches it on 5432,
#      ext does not (the guest's nftables), and its drops are counted;
#   3. tagged app=web instead: it reaches db (behind the dataplane) on 5432,
#      web no longer reaches it;
#   4. kill -9 of the agent: enforcement stays (the table is in the kernel);
#   5. `nft flush ruleset` in the guest: the restarted agent repairs its
#      table (time printed) and says so in its status;
#   6. flow records in the dataplane's JSON form;
#   7. (unless --no-guest) the agent inside a real QEMU guest on a plain
#      vhost-user port (the host agent does not watch qemu:///system here:
#      a KVM host we do not run): it enrolls with the SMBIOS UUID, reaches
#      the controller over the bridge (through its bypass rule), and
#      enforces: web reaches it on 5432, ext does not.
# Needs root. Cleans up on any exit.
set -uo pipefail
BUILD=${1:?usage: vmagent_e2e_test.sh BUILD_DIR [--no-guest]}
GUEST_FLAG=${2:-}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/dfw-ga-e2e.XXXXXX)
# shellcheck source=../../scripts/lib/fleet.sh
. "$REPO/scripts/lib/fleet.sh"

FAILS=0
pass() { echo "PASS  $*"; }
fail() {
  echo "FAIL  $*"
  FAILS=$((FAILS + 1))
}
expect() {
  local want=$1 from=$2 to=$3 proto=$4 port=${5:-5432} got what
  if fleet_probe "$from" "$to" "$proto" "$port"; then got=allow; else got=block; fi
  [ "$proto" = icmp ] && what="$from -> $to icmp" || what="$from -> $to $proto/$port"
  if [ "$got" = "$want" ]; then pass "$what: $got"; else fail "$what: $got, expected $want"; fi
}
on_exit() {
  local rc=$?
  if [ "$FAILS" -ne 0 ] || [ "$rc" -ne 0 ]; then
    echo "--- vmagent log (tail)"; tail -40 "$FLEET_DIR/gagent-ga/vmagent.log" 2>/dev/null
    echo "--- controller log (tail)"; tail -20 "$FLEET_DIR/controller.log" 2>/dev/null
    echo "--- guest ruleset"; fleet_gagent_nft ga list ruleset 2>/dev/null | head -60
  fi
  fleet_cleanup
  rm -rf "$WORK"
  # An EXIT trap's last status is not the script's: exit explicitly, so a
  # FAIL line fails the test.
  if [ "$FAILS" -ne 0 ] || [ "$rc" -ne 0 ]; then exit 1; fi
  exit 0
}
trap on_exit EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "vmagent e2e: needs root (network namespaces, OVS, hugepages)"
  exit 1
fi
fleet_init "$BUILD" "$WORK" || exit 1
FLEET_CA_SANS=("$FLEET_CTL_RELAY_IP")  # the QEMU guest's way to the controller
fleet_start --no-guest || { echo "vmagent e2e: the sandbox did not come up"; exit 1; }
GA_UUID=d1f00000-0000-4000-8000-000000000031
fleet_plain_add ext 198.18.0.40 || exit 1
fleet_gagent_add ga 198.18.0.31 "$GA_UUID" || exit 1
t0=$(date +%s%N)
fleet_gagent_start ga || exit 1

echo "== 1. the guest agent registers"
if fleet_gagent_wait_realized ga 30; then
  pass "guest:$GA_UUID connected and realized in $((($(date +%s%N) - t0) / 1000000)) ms" \
    "(enrollment included)"
else
  fail "the guest agent did not register"
  exit 1
fi
enf=$(fleet_dfwctl -o json vm get "$GA_UUID" | python3 -c '
import json, sys; print(json.load(sys.stdin).get("enforcement", ""))')
[ "$enf" = ENFORCEMENT_GUEST ] && pass "the VM is enforced by its guest agent" ||
  fail "enforcement: '$enf'"
fleet_dfwctl vm list | grep -q "ga .*guest" && pass "dfwctl vm list shows it as guest-enforced" ||
  fail "dfwctl vm list: $(fleet_dfwctl vm list | grep "$GA_UUID")"
fleet_gagent_nft ga list table inet dfw >/dev/null 2>&1 && pass "table inet dfw in the guest" ||
  fail "no table inet dfw in the guest"
expect block ext ga tcp 5432
expect block web ga tcp 5432

echo "== 2. tagged app=db: one policy across the dataplane and the guest"
fleet_dfwctl vm tag "$GA_UUID" app=db >/dev/null || fail "dfwctl vm tag"
fleet_gagent_wait_realized ga 20 || fail "not realized after the tag"
fleet_wait_realized 20 || fail "host not realized after the tag"
expect allow web ga tcp 5432
expect allow web ga icmp
expect block web ga tcp 80
expect block ext ga tcp 5432
expect block other ga tcp 5432
sleep 1.5  # the status file is rewritten every second
drops=$(fleet_gagent_field ga 's["drops"].get("default-rule", 0)')
[ "${drops:-0}" -gt 0 ] && pass "guest counted $drops default-rule drops" ||
  fail "guest drop counter: '${drops}'"

echo "== 3. tagged app=web instead"
fleet_dfwctl vm untag "$GA_UUID" app >/dev/null
ms=$(fleet_time_to_enforcement web ga 5432 closed vm tag "$GA_UUID" app=web)
if [ "$ms" != never ]; then pass "web -> ga closed ${ms} ms after the tag change"; else
  fail "web -> ga never closed"; fi
fleet_gagent_wait_realized ga 20 || fail "not realized after the second tag"
fleet_wait_realized 20 || fail "host not realized after the second tag"
expect allow ga db tcp 5432
expect allow ga db udp 5432
expect block ga other tcp 5432
expect block ga db tcp 80
expect block web ga tcp 5432

echo "== 4. kill -9 of the agent: the rules stay"
fleet_gagent_kill9 ga
expect allow ga db tcp 5432
expect block ga db tcp 80
expect block ext ga tcp 5432

echo "== 5. nft flush ruleset in the guest: repaired"
fleet_gagent_start ga || fail "agent restart"
fleet_gagent_wait_realized ga 30 || fail "not realized after the restart"
t0=$(date +%s%N)
fleet_gagent_nft ga flush ruleset
repaired=never
for ((i = 0; i < 200; i++)); do
  if fleet_gagent_nft ga list chain inet dfw input >/dev/null 2>&1; then
    repaired=$((($(date +%s%N) - t0) / 1000000))
    break
  fi
  sleep 0.025
done
if [ "$repaired" != never ]; then pass "table repaired ${repaired} ms after nft flush ruleset"
else fail "table not repaired within 5 s"; fi
expect block ext ga tcp 5432
expect allow ga db tcp 5432
sleep 1.5
why=$(fleet_gagent_field ga 's["last_repair"]')
n=$(fleet_gagent_field ga 's["repairs"]')
[ "${n:-0}" -ge 1 ] && pass "status: $n repair(s), last: $why" || fail "status repairs: '$n'"

echo "== 6. flow records"
recs=$FLEET_DIR/gagent-ga/flows.jsonl
if python3 - "$recs" <<'PY'; then pass "flow records in the dataplane's form"; else fail "flow records"; fi
import json, sys
keys = {"kind", "time_ms", "vnic", "direction", "proto", "src", "sport", "dst", "dport",
        "rule", "action", "reason", "packets", "bytes"}
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
kinds = {r["kind"] for r in recs}
ok = recs and all(set(r) == keys for r in recs) and "denied" in kinds
print("  %d records, kinds %s" % (len(recs), sorted(kinds)))
sys.exit(0 if ok else 1)
PY
fleet_gagent_status ga | sed 's/^/  /'

if [ "$GUEST_FLAG" != --no-guest ]; then
  echo "== 7. the agent in a real QEMU guest"
  GQ_UUID=d1f00000-0000-4000-8000-000000000041
  t0=$(date +%s%N)
  if fleet_ctl_relay_add && fleet_gagent_qemu_start gq 198.18.0.41 "$GQ_UUID"; then
    pass "QEMU guest up in $((($(date +%s%N) - t0) / 1000000)) ms"
    expect allow ext gq tcp 5432  # no agent yet: nothing filters it
    fleet_gagent_qemu_agent gq || fail "starting the agent in the guest"
    if fleet_gagent_wait_realized gq 120; then pass "the guest's agent enrolled and realized"
    else fail "the guest's agent did not register"; guest_exec "$FLEET_GUEST_CONSOLE" \
      "tail -20 /run/vmagent.log" --timeout 10; fi
    fleet_dfwctl vm tag "$GQ_UUID" app=db >/dev/null || fail "tag the QEMU guest"
    fleet_gagent_wait_realized gq 60 || fail "QEMU guest not realized after the tag"
    fleet_wait_realized 20 || fail "host not realized after the QEMU guest's tag"
    expect allow web gq tcp 5432
    expect block ext gq tcp 5432
    expect block web gq tcp 80
    if guest_exec "$FLEET_GUEST_CONSOLE" "dfw-vmagent status --status-file /run/vmagent.json" \
      --timeout 20 | sed 's/^/  guest: /' | grep -q "default-rule"; then
      pass "the guest's agent counts its drops"
    else
      fail "no drop counters in the guest's status"
    fi
  else
    fail "the QEMU guest did not come up"
  fi
fi
echo "vmagent e2e: $FAILS failure(s)"
