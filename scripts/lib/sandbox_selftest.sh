#!/usr/bin/env bash
# shellcheck disable=SC2015,SC2016,SC2119  # "check && ok || fail" is meant; bash -c '...' has its own $0 $1
# Proves the sandbox wiring without the host agent: private OVS-DPDK, the
# dataplane on fw0, three namespace VMs (web, db, other), steering flows
# installed by hand (ovs-integration/include/dfw/ovs/steering_flows.h, local
# id = ofport), policy through dfw-dpctl, then real traffic:
#   web -> db TCP 5432 connects, ping web -> db answers, ARP resolves;
#   db -> web TCP and ping, other -> db TCP 5432 are dropped;
#   dataplane stopped: nothing crosses (fail closed); restarted (SIGTERM
#   and SIGKILL) on its persisted state: enforcement as before, no agent;
#   ovs-vswitchd restarted: flows gone, nothing crosses; flows reinstalled by
#   hand, the dataplane NOT restarted (fw0 is a dpdkvhostuserclient: OVS
#   reconnects to the dataplane's vhost-user socket by itself): enforced.
# Exits non-zero on the first failure; cleans up everything it made.
#
#   scripts/lib/sandbox_selftest.sh [BUILD_DIR=<repo>/build]
# Needs root, openvswitch-switch-dpdk, ethtool, iputils-ping, python3 and
# dfw-dataplane + dfw-dpctl built (ninja -C build dfw-dataplane dfw-dpctl).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:-$HERE/../../build}
SB_DATAPLANE_BIN=$BUILD/dataplane/dfw-dataplane
SB_DPCTL_BIN=$BUILD/dataplane/dfw-dpctl
# shellcheck source=scripts/lib/sandbox.sh
. "$HERE/sandbox.sh"

WORK=$(mktemp -d /tmp/dfw-sandbox-selftest.XXXXXX)
trap 'sb_cleanup; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM HUP
sb_init "$WORK"

failures=0
step() { echo "== $*"; }
ok() { echo "ok   $*"; }
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
  echo "     last flow records:"
  sb_dpctl flows --max 6 2>&1 | sed 's/^/     /'
}
die() {
  echo "FATAL $*" >&2
  exit 1
}

PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

# A TCP server in VM $1 on port $2 that greets with "$3" and closes.
serve() {
  sb_vm_bg "$1" "$PY" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[2].encode() + b"\n")
    c.close()
' "$2" "$3"
}

# Prints what the server at $2:$3 says to a client in VM $1 (2 s timeout).
greet() {
  sb_vm_exec "$1" timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1" && read -r -t 2 line <&3 && echo "$line"' \
    "$2" "$3" 2>/dev/null
}

expect_tcp() {  # allow|deny FROM TO_VM PORT GREETING
  local want=$1 from=$2 to=$3 port=$4 hello=$5 got
  got=$(greet "$from" "${SB_VM_IP[$to]}" "$port")
  if [ "$want" = allow ]; then
    [ "$got" = "$hello" ] && ok "$from -> $to tcp/$port connects" ||
      fail "$from -> $to tcp/$port: expected '$hello', got '$got'"
  else
    [ -z "$got" ] && ok "$from -> $to tcp/$port blocked" ||
      fail "$from -> $to tcp/$port got through: '$got'"
  fi
}

expect_ping() {  # allow|deny FROM TO_VM
  local want=$1 from=$2 to=$3
  if sb_vm_exec "$from" ping -c 1 -W 1 "${SB_VM_IP[$to]}" >/dev/null 2>&1; then
    [ "$want" = allow ] && ok "$from -> $to ping answers" || fail "$from -> $to ping got through"
  else
    [ "$want" = deny ] && ok "$from -> $to ping blocked" || fail "$from -> $to ping: no answer"
  fi
}

# Steering flows for two vNICs on one bridge, no uplinks: the unicast core of
# what dfw::ovs::ComputeSteeringFlows builds (the agent's flows also drop
# unknown ports, pass uplinks and copy broadcasts to each vNIC's ingress;
# this self-test of the wiring needs none of that).
steering_flows() {  # FW_OFPORT then OFPORT,LOCAL_ID,MAC...
  local fw=$1 v ofport id mac in_id c
  shift
  for v in "$@"; do
    IFS=, read -r ofport id mac <<<"$v"
    in_id=$((id | 0x800))
    c=$(printf '0xdf305ee0%08x' "$ofport")
    echo "table=0,priority=200,cookie=$c,in_port=$ofport,vlan_tci=0x1000/0x1000 actions=drop"
    echo "table=0,priority=100,cookie=$c,in_port=$ofport actions=mod_vlan_vid:$id,output:$fw"
    echo "table=0,priority=100,cookie=$c,in_port=$fw,dl_vlan=$id" \
      "actions=strip_vlan,load:$ofport->NXM_OF_IN_PORT[],resubmit(,1)"
    echo "table=0,priority=100,cookie=$c,in_port=$fw,dl_vlan=$in_id" \
      "actions=strip_vlan,output:$ofport"
    echo "table=1,priority=100,cookie=$c,dl_dst=$mac actions=mod_vlan_vid:$in_id,output:$fw"
  done
  echo "table=0,priority=10,cookie=0xdf305ee000000000,in_port=$fw actions=drop"
  echo "table=0,priority=0,cookie=0xdf305ee000000000 actions=resubmit(,1)"
  echo "table=1,priority=0,cookie=0xdf305ee000000000 actions=NORMAL"
}

# One web -> db rule: RULE_NUM RULE_ID SERVICE DIRECTION
web_db_rule() {
  echo "  rules { rule_num: $1 policy_id: \"app\" rule_id: \"$2\""
  echo '    sources { address_set_ids: "g:web" } destinations { address_set_ids: "g:db" }'
  echo "    services { $3 } direction: $4 action: ACTION_ALLOW stateful: true }"
}

policy() {  # the HostDesiredState, text format
  local pg='protocol: 6 destination_ports { first: 5432 }' echo_req='protocol: 1 icmp_type: 8'
  echo "revision: 3"
  echo "address_sets { id: \"g:web\" prefixes: \"${SB_VM_IP[web]}/32\" }"
  echo "address_sets { id: \"g:db\" prefixes: \"${SB_VM_IP[db]}/32\" }"
  echo 'rulesets { vnic_id: "web-eth0"'
  web_db_rule 10 web-to-db-pg "$pg" DIRECTION_OUT
  web_db_rule 11 web-to-db-ping "$echo_req" DIRECTION_OUT
  echo '  default_rule { action: ACTION_DROP log: true } }'
  echo 'rulesets { vnic_id: "db-eth0"'
  web_db_rule 20 db-from-web-pg "$pg" DIRECTION_IN
  web_db_rule 21 db-from-web-ping "$echo_req" DIRECTION_IN
  echo '  default_rule { action: ACTION_DROP log: true } }'
  echo 'rulesets { vnic_id: "other-eth0"'
  echo '  rules { rule_num: 30 policy_id: "other" rule_id: "other-out-any"'
  echo '    sources { any: true } destinations { any: true }'
  echo '    direction: DIRECTION_OUT action: ACTION_ALLOW stateful: true }'
  echo '  default_rule { action: ACTION_DROP log: true } }'
}

# Every enforcement check; run after each (re)start of the dataplane.
enforcement_checks() {
  expect_tcp allow web db 5432 db-pg
  expect_ping allow web db
  expect_tcp deny db web 8080 web-http
  expect_ping deny db web
  expect_tcp deny other db 5432 db-pg
  expect_tcp deny web db 8080 db-other
}

for bin in "$SB_DATAPLANE_BIN" "$SB_DPCTL_BIN"; do
  [ -x "$bin" ] || die "$bin not built (ninja -C $BUILD dfw-dataplane dfw-dpctl)"
done
command -v ping >/dev/null || die "ping missing (apt-get install iputils-ping)"

step "sandbox: hugepages, OVS-DPDK, fw0, dataplane"
t0=$(date +%s.%N)
sb_hugepages || die "hugepages"
sb_ovs_start || die "ovs (logs: $SB_OVS_LOG)"
sb_fw_port || die "fw0"
sb_dataplane_start || die "dataplane"
sb_ns_vm web 52:54:00:0a:00:11 198.18.10.11 web-eth0 5e1f0000-0000-4000-8000-000000000011 || die vm
sb_ns_vm db 52:54:00:0a:00:21 198.18.10.21 db-eth0 5e1f0000-0000-4000-8000-000000000021 || die vm
sb_ns_vm other 52:54:00:0a:00:31 198.18.10.31 other-eth0 5e1f0000-0000-4000-8000-000000000031 ||
  die vm
echo "fw0 ofport $SB_FW_OFPORT; web ${SB_VM_OFPORT[web]}, db ${SB_VM_OFPORT[db]}," \
  "other ${SB_VM_OFPORT[other]} (setup $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo ?) s)"
serve db 5432 db-pg
serve db 8080 db-other
serve web 8080 web-http
sleep 0.5

step "before any steering flow (fail-mode=secure): nothing forwarded"
expect_tcp deny web db 5432 db-pg
expect_ping deny web db

step "steering flows (OpenFlow13), no-flood on fw0"
flows=()
for vm in web db other; do
  flows+=("${SB_VM_OFPORT[$vm]},${SB_VM_OFPORT[$vm]},${SB_VM_MAC[$vm]}")
done
steering_flows "$SB_FW_OFPORT" "${flows[@]}" >"$WORK/flows.txt"
sb_ofctl add-flows "$SB_BRIDGE" "$WORK/flows.txt" || die "add-flows"
sb_fw_no_flood || die "no-flood"
[ "$(sb_ofctl dump-flows "$SB_BRIDGE" --no-stats | grep -c 'cookie=0xdf305ee0')" -eq 18 ] &&
  ok "18 steering flows installed" || fail "steering flow count"

step "vNICs known, no rules yet: the dataplane drops everything (no-ruleset)"
for vm in web db other; do
  sb_dpctl set-vnic --id "$vm-eth0" --local-id "${SB_VM_OFPORT[$vm]}" \
    --mac "${SB_VM_MAC[$vm]}" --ip "${SB_VM_IP[$vm]}" >/dev/null || die "set-vnic $vm"
done
expect_tcp deny web db 5432 db-pg
sb_dpctl -o json counters | grep -q '"no-ruleset"' && ok "drops counted as no-ruleset" ||
  fail "no no-ruleset drops counted"

step "policy: web -> db tcp/5432 and ping; other may send anything"
policy >"$WORK/state.txt"
sb_dpctl set-state "$WORK/state.txt" || die "set-state"
sb_vm_exec web ip neigh flush dev eth0
enforcement_checks
sb_vm_exec web ip neigh show "${SB_VM_IP[db]}" | grep -qi "${SB_VM_MAC[db]}" &&
  ok "ARP: web resolved db's MAC" || fail "ARP: web has no neighbour entry for db"
sb_vm_exec other ip neigh show "${SB_VM_IP[db]}" | grep -qi "${SB_VM_MAC[db]}" &&
  ok "ARP: other resolved db's MAC (ARP passes; tcp is what is dropped)" ||
  fail "ARP: other has no neighbour entry for db"

step "dataplane stopped (SIGTERM): fail closed"
sb_dataplane_stop
expect_tcp deny web db 5432 db-pg
expect_ping deny web db
expect_tcp deny other db 5432 db-pg

step "dataplane restarted on its persisted state, no agent"
sb_dataplane_start || die "dataplane restart"
ready=$(grep 'dfw-dataplane: ready' "$SB_DP_LOG" | tail -n 1)
grep -q 'vnics=3 revision=3' <<<"$ready" && ok "restart: $ready" ||
  fail "restart did not load the state: $ready"
# The first frames after a restart get lost while vhost-user reconnects.
w=$(sb_wait_ping web "${SB_VM_IP[db]}" 15) && ok "web -> db answers again after $w" ||
  fail "web -> db: no answer within 15 s of the restart"
enforcement_checks

step "dataplane killed (SIGKILL): fail closed; restarted: enforced"
sb_dataplane_kill9
expect_tcp deny web db 5432 db-pg
sb_dataplane_start || die "dataplane restart after SIGKILL"
grep -q 'removed the stale vhost-user socket' "$SB_DP_LOG" &&
  ok "the killed dataplane's socket was removed at start" ||
  fail "no stale socket removal logged (after SIGKILL)"
w=$(sb_wait_ping web "${SB_VM_IP[db]}" 15) && ok "web -> db answers again after $w" ||
  fail "web -> db: no answer within 15 s of the restart"
enforcement_checks

step "ovs-vswitchd restarted: flows gone, fail closed; flows reinstalled: enforced, same dataplane"
dp_pid=$SB_DP_PID
sb_ovs_restart_vswitchd || die "ovs-vswitchd restart"
expect_tcp deny web db 5432 db-pg
sb_ofctl add-flows "$SB_BRIDGE" "$WORK/flows.txt" || die "add-flows"
sb_fw_no_flood || die "no-flood"
w=$(sb_wait_ping web "${SB_VM_IP[db]}" 15) && ok "web -> db answers again after $w" ||
  fail "web -> db: no answer within 15 s of the OVS restart"
[ "$SB_DP_PID" = "$dp_pid" ] && kill -0 "$dp_pid" 2>/dev/null &&
  ok "the dataplane was not restarted (pid $dp_pid)" || fail "the dataplane is not pid $dp_pid"
grep -q 'link up' "$SB_DP_LOG" && ok "dataplane: $(grep 'link' "$SB_DP_LOG" | tail -n 2 | tr '\n' ' ')" ||
  fail "the dataplane logged no link change"
enforcement_checks

step "read-outs"
sb_dpctl counters
sb_dpctl vnics --state-dir "$SB_DP_STATE"
sb_dpctl flows --max 8
sb_dpctl connections
sb_appctl dpif-netdev/pmd-stats-show 2>/dev/null | grep -E 'pmd thread|idle|busy' | head -4

if [ "$failures" -ne 0 ]; then
  echo "sandbox selftest: $failures FAILED"
  exit 1
fi
echo "sandbox selftest: all passed"
