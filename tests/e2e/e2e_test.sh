#!/usr/bin/env bash
# End-to-end: the controller, a private OVS-DPDK, dfw-dataplane on its
# vhost-user port, dfw-hostagent, three namespace VMs (libvirt test driver)
# and a real guest (libvirt qemu:///system, QEMU/TCG, vhost-user vNIC).
#
#   tests/e2e/e2e_test.sh BUILD_DIR [--no-guest]
#
# Policy (examples/web-db-*.json): web may reach db on TCP/UDP 5432 and ping
# it; nothing else is allowed, also between VMs on this host and VLAN.
# Checks, with real TCP, UDP and ICMP:
#   1. the policy matrix between all VMs, the guest included;
#   1c. dfwctl observe shows those connections' flow records, relayed by the
#      host through the controller with VM, groups, policy and rule;
#   2. a tag change through dfwctl flips access (time to enforcement printed);
#   3. a tag change in the guest's libvirt metadata flips access;
#   4. kill -9 and restart of the host agent during a long-lived TCP
#      connection: the connection survives, the flows are not touched;
#   4b. dataplane restarted cleanly during a long-lived strict-TCP connection:
#      the connection survives (the connection table kept across the restart;
#      restart time and the frames OVS dropped meanwhile printed);
#   5. dataplane restart with the agent down: the persisted rules are enforced;
#   6. controller stopped: enforcement unchanged; started again: no drift;
#   7. ovs-vswitchd restarted: the host agent reinstalls the steering flows
#      and no-flood, the dataplane (not restarted) gets OVS's vhost-user
#      connection back; enforcement restored (time to web -> db printed);
#   8. the staged rollout: a default deny in audit mode, a window of flow
#      records, `dfwctl policy recommend`, the draft enforced alone: what was
#      seen passes and nothing else (each connection traced too);
#   9. the exclusion list: two VMs excluded (admin only) talk to each other
#      freely, also with the dataplane down, while the protected VM's rules
#      still stop what they stop either way; OVS drops a spoofed source from
#      an excluded VM; taken off the list, they are filtered again.
# Everything runs with mutual TLS (the fleet makes a CA; the agent enrolls
# with a one-time token); step 0 checks that plaintext and a viewer cannot
# change anything and that the change log names who did what.
# Needs root (namespaces, OVS, hugepages, libvirt). Cleans up on any exit.
set -uo pipefail
BUILD=${1:?usage: e2e_test.sh BUILD_DIR [--no-guest]}
GUEST_FLAG=${2:-}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/dfw-e2e.XXXXXX)
# shellcheck source=../../scripts/lib/fleet.sh
. "$REPO/scripts/lib/fleet.sh"

FAILS=0
pass() { echo "PASS  $*"; }
fail() {
  echo "FAIL  $*"
  FAILS=$((FAILS + 1))
}
# What the controller's trace (dfwctl trace) says of a connection: allow or
# block, or why it could not say.
vm_name() { if [ "$1" = guest ]; then echo "$FLEET_GUEST_NAME"; else echo "ns-$1"; fi; }
trace_verdict() {
  local from=$1 to=$2 proto=$3 port=$4 args
  if [ "$proto" = icmp ]; then args=(--icmp); else args=("--$proto" "$port"); fi
  fleet_dfwctl -o json trace "$(vm_name "$from")" "$(vm_name "$to")" "${args[@]}" 2>&1 |
    python3 -c '
import json, sys
text = sys.stdin.read()
try:
    print("allow" if json.loads(text).get("allowed") else "block")
except ValueError:
    print("error: " + text.strip().replace("\n", " ")[:200])'
}
# expect allow|block FROM TO PROTO [PORT]; with TRACE_TOO=1 the controller's
# trace of the same connection must agree with the packets.
expect() {
  local want=$1 from=$2 to=$3 proto=$4 port=${5:-5432} got
  if fleet_probe "$from" "$to" "$proto" "$port"; then got=allow; else got=block; fi
  local what
  [ "$proto" = icmp ] && what="$from -> $to icmp" || what="$from -> $to $proto/$port"
  if [ "$got" = "$want" ]; then pass "$what: $got"; else fail "$what: $got, expected $want"; fi
  if [ "${TRACE_TOO:-0}" = 1 ]; then
    local traced
    traced=$(trace_verdict "$from" "$to" "$proto" "$port")
    if [ "$traced" = "$got" ]; then pass "$what: dfwctl trace agrees ($traced)"; else
      fail "$what: dfwctl trace says '$traced', the packets $got"; fi
  fi
}
# Lines "ok WHAT", "info WHAT" or "bad WHAT" (a check's python) on stdin:
# a PASS, a note or a FAIL each, under the label $1.
report() {
  local line
  while IFS= read -r line; do
    case $line in
    ok\ *) pass "$1: ${line#ok }" ;;
    info\ *) echo "      $1: ${line#info }" ;;
    *) fail "$1: ${line#bad }" ;;
    esac
  done
}
guest_tags() {
  fleet_dfwctl -o json vm get "$FLEET_GUEST_NAME" 2>/dev/null | python3 -c '
import json, sys
print(",".join(t.get("scope", "") + "=" + t["value"] for t in json.load(sys.stdin).get("tags", [])))'
}
on_exit() {
  local rc=$?
  if [ "$FAILS" -ne 0 ] || [ "$rc" -ne 0 ]; then
    echo "--- agent log (tail)"; tail -40 "$FLEET_DIR/agent.log" 2>/dev/null
    echo "--- dataplane log (tail)"; tail -20 "$SB_DP_LOG" 2>/dev/null
    echo "--- controller log (tail)"; tail -20 "$FLEET_DIR/controller.log" 2>/dev/null
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
  echo "e2e: needs root (network namespaces, OVS, hugepages, libvirt)"
  exit 1
fi
fleet_init "$BUILD" "$WORK" || exit 1
t0=$(date +%s%N)
fleet_start $GUEST_FLAG || { echo "e2e: the sandbox did not come up"; exit 1; }
echo "e2e: sandbox up in $((($(date +%s%N) - t0) / 1000000)) ms (VMs: ${FLEET_VMS[*]})"
HAVE_GUEST=0
[ "$GUEST_FLAG" != --no-guest ] && HAVE_GUEST=1

echo "== 0. trust: mutual TLS, roles, audit"
if DFW_CONFIG_DIR=$FLEET_DFWCTL_CONFIG "$FLEET_DFWCTL" --insecure --server "http://$FLEET_HTTP" \
  group list >/dev/null 2>&1; then
  fail "plaintext http to the TLS port was answered"
else
  pass "plaintext http to the TLS port refused"
fi
VIEWER_DIR=$WORK/viewer
tok=$(fleet_dfwctl -o json enroll create --user e2e-viewer --role viewer |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
if DFW_CONFIG_DIR=$VIEWER_DIR "$FLEET_DFWCTL" --server "https://$FLEET_HTTP" enroll join \
  --token "$tok" --ca-bundle "$FLEET_PKI/ca/ca.pem" >/dev/null; then
  pass "a viewer enrolled with a one-time token"
else
  fail "viewer enrollment"
fi
DFW_CONFIG_DIR=$VIEWER_DIR "$FLEET_DFWCTL" --server "https://$FLEET_HTTP" group list >/dev/null
rc=$?
[ $rc -eq 0 ] && pass "the viewer reads" || fail "the viewer cannot read (exit $rc)"
DFW_CONFIG_DIR=$VIEWER_DIR "$FLEET_DFWCTL" --server "https://$FLEET_HTTP" vm tag ns-other \
  app=web >/dev/null 2>&1
rc=$?
[ $rc -eq 7 ] && pass "the viewer cannot write (exit 7, forbidden)" ||
  fail "viewer write: exit $rc, expected 7"
actors=$(fleet_dfwctl -o json changes | python3 -c '
import json, sys
print(" ".join(sorted({e.get("actor", "") for e in json.load(sys.stdin).get("events", [])})))')
case " $actors " in
*" spiffe://dfw.test/host/$FLEET_HOST_ID "*" spiffe://dfw.test/user/fleet-admin "*)
  pass "change log actors: $actors" ;;
*) fail "change log actors: '$actors'" ;;
esac

echo "== 1. policy matrix (each connection also traced by the controller: dfwctl trace)"
TRACE_TOO=1
expect allow web db tcp 5432
expect allow web db udp 5432
expect allow web db icmp
expect block web db tcp 80
expect block db web tcp 5432
expect block db web icmp
expect block db other tcp 5432
expect block other db tcp 5432
expect block other db udp 5432
expect block other web icmp
expect block web other tcp 5432
if [ $HAVE_GUEST = 1 ]; then
  expect allow guest db tcp 5432
  expect allow guest db udp 5432
  expect allow guest db icmp
  expect block guest other tcp 5432
  expect block db guest tcp 5432
  expect block db guest icmp
  expect block other guest tcp 5432
  expect block web guest tcp 5432    # web -> web is not allowed either
fi
TRACE_TOO=0
drops=$(sb_dpctl -o json counters | python3 -c '
import json, sys
print(sum(int(d.get("packets", 0)) for d in json.load(sys.stdin).get("drops", [])))')
if [ "${drops:-0}" -gt 0 ]; then pass "dataplane counted $drops drops"; else
  fail "no drop counted by the dataplane"; fi

echo "== 1b. the host agent's GET /metrics (mutual TLS, verified by CA and host id)"
fleet_wait_realized 10 || fail "not realized before the scrape"
# What the controller holds as this host's realized revision.
rev=$(fleet_dfwctl -o json host list | python3 -c '
import json, sys
print(next(int(h.get("realized_revision", 0)) for h in json.load(sys.stdin)["hosts"]
           if h["id"] == sys.argv[1]))' "$FLEET_HOST_ID")
if m=$(fleet_agent_metrics 2>"$WORK/metrics.err"); then
  # family{labels} value -> sums per family (labels ignored) and a few exact series.
  check=$(printf '%s\n' "$m" | python3 -c '
import re, sys
sums, exact = {}, {}
for line in sys.stdin:
    if line.startswith("#") or not line.strip():
        continue
    key, value = line.rsplit(" ", 1)
    fam = re.sub(r"\{.*", "", key)
    sums[fam] = sums.get(fam, 0) + float(value)
    exact[key] = float(value)
drops, rev = int(sys.argv[1]), int(sys.argv[2])
out = []
def want(ok, what):
    out.append(("ok " if ok else "bad ") + what)
want(exact.get("dfw_dataplane_up") == 1, "dfw_dataplane_up 1")
want(exact.get("dfw_hostagent_controller_connected") == 1, "controller session connected")
want(exact.get("dfw_hostagent_realized_revision") == rev,
     "realized revision %s = the controller\x27s record of it, %d" % (exact.get("dfw_hostagent_realized_revision"), rev))
want(exact.get("dfw_hostagent_vnics{state=\"steered\"}", 0) >= 3,
     "vNICs steered: %s" % exact.get("dfw_hostagent_vnics{state=\"steered\"}"))
want(sums.get("dfw_dataplane_drops_total", 0) >= drops,
     "drops %s >= the %d dfw-dpctl counted" % (sums.get("dfw_dataplane_drops_total"), drops))
want(sums.get("dfw_hostagent_dataplane_calls_total", 0) > 0, "dataplane calls counted")
want(sums.get("dfw_dataplane_rule_hits_total", 0) > 0,
     "rule hits counted: %s" % sums.get("dfw_dataplane_rule_hits_total"))
print("\n".join(out))' "${drops:-0}" "$rev")
  report "agent metrics" <<<"$check"
else
  fail "agent metrics: the scrape failed: $(head -c 300 "$WORK/metrics.err")"
fi
if fleet_agent_metrics --anonymous >/dev/null 2>"$WORK/metrics.err"; then
  fail "agent metrics: read without a client certificate"
else
  pass "agent metrics: refused without a client certificate ($(tail -c 120 "$WORK/metrics.err" | tr -d '\n'))"
fi

echo "== 1c. dfwctl observe: the host's flow records through the controller, names resolved"
# The first read asks the hosts to send; the follower then sees the probes.
fleet_dfwctl observe --last 1 >/dev/null 2>&1
sleep 1
fleet_dfwctl -o json observe --follow --timeout 12 >"$WORK/observe.jsonl" 2>"$WORK/observe.err" &
observer=$!
sleep 1
expect allow web db tcp 5432
expect block web db tcp 80
wait "$observer"
observe_rc=$?
check=$(python3 -c '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
flows = [r for r in recs if "record" in r]
def port(a): return a.rsplit(":", 1)[-1]
allowed = [f for f in flows if f["record"].get("kind") == "KIND_ALLOWED"
           and port(f["record"].get("dst", "")) == "5432" and f.get("vm_name") == "ns-web"]
denied = [f for f in flows if f["record"].get("kind") == "KIND_DENIED"
          and port(f["record"].get("dst", "")) == "80"]
out = []
def want(ok, what): out.append(("ok " if ok else "bad ") + what)
want(allowed and allowed[0].get("policy_id", allowed[0]["record"].get("policy_id")),
     "web -> db tcp/5432 ALLOWED on ns-web with its policy and rule (%s)" %
     (allowed[0]["record"].get("policy_id", "") + "/" + allowed[0]["record"].get("rule_id", "")
      if allowed else "none of %d records" % len(flows)))
want(allowed and allowed[0].get("host_id") == sys.argv[2] and "web" in allowed[0].get("groups", [])
     and allowed[0].get("peer_vm_name") == "ns-db" and "db" in allowed[0].get("peer_groups", []),
     "the record names host %s, the VM groups %s and the peer %s in %s" %
     (sys.argv[2], allowed[0].get("groups") if allowed else "-",
      allowed[0].get("peer_vm_name") if allowed else "-",
      allowed[0].get("peer_groups") if allowed else "-"))
want(bool(denied), "web -> db tcp/80 DENIED (%d records)" % len(denied))
lost = sum(int(r.get("lost", 0)) for r in recs)
print("\n".join(out))
print("info %d records, %d lost on the way" % (len(flows), lost))' "$WORK/observe.jsonl" "$FLEET_HOST_ID" 2>&1)
[ "$observe_rc" = 0 ] || fail "dfwctl observe exited $observe_rc: $(head -c 300 "$WORK/observe.err")"
report observe <<<"$check"

echo "== 1d. dfwctl probe and trace --live: packets met in the dataplane against the policy"
# The matrix: a probe packet sent by the host agent from each web VM's port
# to each db VM, per service; each is captured at web's egress and db's
# ingress, and compared with what the policy says.
if fleet_dfwctl -o json probe --from web --to db --tcp 5432 --tcp 80 --icmp \
  >"$WORK/probe.json" 2>"$WORK/probe.err"; then probe_rc=0; else probe_rc=$?; fi
check=$(python3 -c '
import json, sys
rows = json.load(open(sys.argv[1]))
out = []
def want(ok, what): out.append(("ok " if ok else "bad ") + what)
got = {}
for r in rows:
    p = r.get("probe", {})
    stages = p.get("expected", {}).get("stages", [{}])
    if stages[0].get("vm_name") != "ns-web":
        continue  # the guest VM is in group web too: its rows are not checked here
    obs = p.get("observed", [])
    got[r["service"]] = (p.get("expected", {}).get("allowed", False), p.get("actual"),
                         p.get("agrees"), [o.get("capture", {}).get("state") for o in obs],
                         r.get("error", ""))
for service, allowed, actual in (("tcp/5432", True, "allowed"), ("tcp/80", False, "denied"),
                                 ("icmp", True, "allowed")):
    g = got.get(service)
    # Allowed: both captures met; denied: the dropping end met it (the
    # capture of the receiver expires when the sender dropped it).
    want(g is not None and g[0] == allowed and g[1] == actual and g[2]
         and (g[3] == ["STATE_MET"] * 2 if allowed else "STATE_MET" in g[3]),
         "web -> db %s: expected %s, the probe packet %s at the dataplanes (%s)" %
         (service, "allowed" if allowed else "denied", actual, g))
print("\n".join(out))' "$WORK/probe.json" 2>&1)
report probe <<<"$check"
[ "$probe_rc" = 0 ] && pass "dfwctl probe: exit 0 (no difference)" ||
  fail "dfwctl probe exited $probe_rc: $(head -c 300 "$WORK/probe.err")"
# Where a probe is denied, and by what: db -> web tcp/5432 stops where the trace says.
inj=$(fleet_dfwctl -o json trace ns-db ns-web --tcp 5432 --inject 2>&1 | python3 -c '
import json, sys
b = json.load(sys.stdin)
at = b["expected"].get("decided_by", "")
o = [o for o in b["observed"] if o.get("kind") == at]
cap = o[0].get("capture", {}) if o else {}
print(b.get("actual"), b.get("agrees"), at, cap.get("state"), cap.get("forwarded", False))' 2>&1)
case "$inj" in
"denied True KIND_EGRESS STATE_MET False" | "denied True KIND_INGRESS STATE_MET False")
  pass "trace --inject db -> web tcp/5432: the probe packet dropped where the trace says ($inj)" ;;
*) fail "trace --inject db -> web tcp/5432: $inj" ;;
esac
# A live trace: the captures wait for the VMs' own next packet of the flow.
fleet_dfwctl -o json trace ns-web ns-db --tcp 5432 --live --timeout 10 >"$WORK/live.json" 2>&1 &
live=$!
sleep 1.5
expect allow web db tcp 5432
wait "$live"
live_rc=$?
live_got=$(python3 -c '
import json, sys
b = json.load(open(sys.argv[1]))
print(b.get("actual"), b.get("agrees"), " ".join(o.get("capture", {}).get("stage", "-") for o in b["observed"]))' "$WORK/live.json" 2>&1)
[ "$live_rc" = 0 ] && [ "$live_got" = "allowed True CAPTURE_STAGE_RULE CAPTURE_STAGE_RULE" ] &&
  pass "trace --live web -> db tcp/5432: the VM's own SYN met both captures, allowed by a rule" ||
  fail "trace --live (rc $live_rc): $live_got $(head -c 300 "$WORK/live.json")"

# A rule broken by hand: a drop flow someone added on the bridge (another
# cookie: drift the agent does not own) eats web -> db tcp/5432 before the
# firewall sees it. The matrix finds it (exit 1, the pair named), and
# passes again once the flow is gone.
sb_ofctl add-flow "$SB_BRIDGE" \
  "cookie=0x4242,table=0,priority=300,in_port=${SB_VM_OFPORT[web]},tcp,tp_dst=5432,actions=drop"
if fleet_dfwctl probe --from web --to db --tcp 5432 --tcp 80 >"$WORK/broken.txt" 2>&1; then
  fail "dfwctl probe missed the hand-made drop flow: $(cat "$WORK/broken.txt")"
else
  grep -q "tcp/5432 *allowed *unobserved *DIFFERS" "$WORK/broken.txt" &&
    grep -q "tcp/80 *denied *denied at EGRESS *ok" "$WORK/broken.txt" &&
    pass "dfwctl probe: exit 1, web -> db tcp/5432 DIFFERS (expected allowed, never reached the dataplane)" ||
    fail "dfwctl probe on the broken bridge: $(cat "$WORK/broken.txt")"
fi
sb_ofctl del-flows "$SB_BRIDGE" "cookie=0x4242/-1"
fleet_dfwctl probe --from web --to db --tcp 5432 >"$WORK/fixed.txt" 2>&1 &&
  pass "dfwctl probe: the flow removed, no difference again" ||
  fail "dfwctl probe after the repair: $(cat "$WORK/fixed.txt")"

echo "== 2. tag change through dfwctl: other becomes app=web"
rev_before=$(fleet_revision)
ms=$(fleet_time_to_enforcement other db 5432 open vm tag ns-other app=web)
if [ "$ms" != never ]; then
  echo "e2e: tag change -> enforced (other -> db tcp/5432 open) in $ms ms (goal <= 1000 ms)"
  if [ "$ms" -le 1000 ]; then pass "time to enforcement ${ms} ms"; else
    fail "time to enforcement ${ms} ms > 1000 ms"; fi
else
  fail "other -> db never opened after the tag change"
fi
fleet_wait_realized 10 || fail "revision after the tag change not realized"
[ "$(fleet_revision)" -gt "$rev_before" ] || fail "the revision did not move"
expect allow other db tcp 5432
expect block other web tcp 5432
fleet_dfwctl vm untag ns-other app=web >/dev/null
fleet_wait_realized 10 || fail "revision after the untag not realized"
expect block other db tcp 5432

if [ $HAVE_GUEST = 1 ]; then
  echo "== 3. tag change in libvirt metadata: the guest becomes app=other"
  t_change=$(date +%s%N)
  fleet_guest_set_tags app=other || fail "virsh metadata failed"
  # Enforced = the controller shows the new tags and the host acknowledged the
  # revision (its dataplane applied it).
  enforced=never
  for _ in $(seq 200); do
    if [ "$(guest_tags)" = app=other ] && fleet_wait_realized 0 2>/dev/null; then
      enforced=$((($(date +%s%N) - t_change) / 1000000))
      break
    fi
    sleep 0.05
  done
  echo "e2e: libvirt metadata change -> realized on the host in $enforced ms" \
    "(virsh -> libvirt event -> agent -> controller -> agent -> dataplane -> ack)"
  # A functional bound, not the performance goal (<= 1 s, measured by
  # bench/e2e): each poll here runs dfwctl twice, and QEMU/TCG shares the
  # two cores, so the figure is printed, not judged finely.
  [ "$enforced" != never ] && [ "$enforced" -le 5000 ] &&
    pass "metadata change realized in $enforced ms" ||
    fail "metadata change not realized within 5 s ($enforced)"
  expect block guest db tcp 5432
  fleet_wait_realized 10 || fail "revision after the metadata change not realized"
  tags=$(guest_tags)
  [ "$tags" = "app=other" ] && pass "controller sees the guest's tags: $tags" ||
    fail "controller sees the guest's tags as '$tags', expected app=other"
  fleet_guest_set_tags app=web
  fleet_wait_realized 10 || fail "revision after restoring the metadata not realized"
  expect allow guest db tcp 5432
fi

echo "== 4. kill -9 of the host agent during a long-lived TCP connection"
status=$WORK/hold.status
sb_vm_exec web python3 "$FLEET_LIB_DIR/probe.py" hold "${FLEET_IP[db]}" 5432 --seconds 14 \
  --status "$status" &
hold_pid=$!
sleep 2
flows_before=$(sb_ofctl dump-flows "$SB_BRIDGE" --no-stats | sort)
fleet_agent_kill9
sleep 2
fleet_agent_start
fleet_wait_realized 20 || fail "the restarted agent did not realize the revision"
sleep 3
flows_after=$(sb_ofctl dump-flows "$SB_BRIDGE" --no-stats | sort)
wait "$hold_pid"; hold_rc=$?
if [ $hold_rc -eq 0 ]; then pass "long-lived TCP survived ($(cat "$status"))"; else
  fail "long-lived TCP broke: $(cat "$status")"; fi
if [ "$flows_before" = "$flows_after" ]; then pass "steering flows identical after the restart"
else fail "steering flows changed across the agent restart"; diff <(echo "$flows_before") \
  <(echo "$flows_after"); fi
grep -q 'steering reconciled' <(sed -n '/--- start/h; /--- start/!H; ${x;p}' \
  "$FLEET_DIR/agent.log") && fail "the restarted agent rewrote flows" ||
  pass "the restarted agent sent no flow bundle"

echo "== 4b. dataplane restarted (SIGTERM: systemd, an upgrade) under a live strict-TCP" \
  "connection: the connection goes on"
# The clean stop keeps the connection table (state dir, connections.pb), the
# next start imports it before its worker runs. The TCP connection waits out
# the restart in its retransmissions (hence the long echo timeout).
status=$WORK/hold-restart.status
sb_vm_exec web python3 "$FLEET_LIB_DIR/probe.py" hold "${FLEET_IP[db]}" 5432 --seconds 14 \
  --echo-timeout 25 --status "$status" &
hold_pid=$!
sleep 2
fw_dropped() {  # summed over the firewall ports (SB_DP_PORTS > 1: fw0, fw1, ...)
  local port
  for port in $(sb_fw_ports); do sb_vsctl get interface "$port" statistics; done | python3 -c \
    'import re,sys; print(sum(int(m) for m in re.findall(r"\btx_dropped=(\d+)", sys.stdin.read())))'
}
dropped_before=$(fw_dropped)
dp_log_from=$(($(stat -c %s "$SB_DP_LOG") + 1))
t_restart=$(date +%s%N)
sb_dataplane_stop
sb_dataplane_start || fail "dataplane did not restart"
restart_ms=$((($(date +%s%N) - t_restart) / 1000000))
wait "$hold_pid"; hold_rc=$?
dropped=$(($(fw_dropped) - dropped_before))
kept=$(tail -c "+$dp_log_from" "$SB_DP_LOG" | grep -o 'kept [0-9]* connections' | head -1)
restored=$(tail -c "+$dp_log_from" "$SB_DP_LOG" | grep -o 'restored [0-9]* connections' | head -1)
echo "e2e: dataplane restart took $restart_ms ms; OVS dropped $dropped frames to" \
  "$(sb_fw_ports | tr '\n' ' ')meanwhile; $kept, $restored; TCP: $(cat "$status")"
if [ $hold_rc -eq 0 ]; then pass "strict-TCP connection survived the dataplane restart ($(cat "$status"))"
else fail "strict-TCP connection broke across the dataplane restart: $(cat "$status")"; fi
if [ "$SB_DP_PORTS" -gt 1 ]; then
  # A firewall port per worker: OVS brought each vNIC's frames to its owner's
  # port, so no worker handed a frame to another.
  handed=$(tail -c "+$dp_log_from" "$SB_DP_LOG" | grep -m1 'dfw-dataplane: stopped' |
    sed -n 's/.* rx=\([0-9]*\) .* redispatched=\([0-9]*\) .*/\1 \2/p')
  [ -n "$handed" ] && [ "${handed#* }" = 0 ] && [ "${handed% *}" -gt 0 ] &&
    pass "$SB_DP_PORTS firewall ports: ${handed% *} frames read, none handed between workers" ||
    fail "frames handed between workers with a port per worker (rx, redispatched: ${handed:-no stop line})"
fi
[ -n "$restored" ] && [ "$restored" != "restored 0 connections" ] &&
  pass "the restarted dataplane imported the kept connections ($restored)" ||
  fail "no connection restored after the restart (${kept:-nothing kept})"
expect allow web db tcp 5432
expect block db web tcp 5432
fleet_wait_realized 20 || fail "agent did not re-push to the restarted dataplane"

echo "== 5. dataplane restart while the agent is down"
fleet_agent_stop
sb_dataplane_kill9
sb_dataplane_start || fail "dataplane did not restart"
expect allow web db tcp 5432
expect block db web tcp 5432
expect block other db tcp 5432
[ $HAVE_GUEST = 1 ] && expect allow guest db tcp 5432
fleet_agent_start
fleet_wait_realized 20 || fail "agent did not come back after the dataplane restart"

echo "== 6. controller stopped: enforcement unchanged; restarted: no drift"
dp_rev=$(sb_dpctl -o json counters | python3 -c \
  'import json,sys; print(int(json.load(sys.stdin).get("appliedRevision", 0)))')
agent_lines=$(wc -l <"$FLEET_DIR/agent.log")
fleet_controller_stop
sleep 1
expect allow web db tcp 5432
expect block db web tcp 5432
expect block other db tcp 5432
fleet_controller_start || fail "controller did not restart"
fleet_wait_realized 30 || fail "host did not re-sync with the restarted controller"
dp_rev2=$(sb_dpctl -o json counters | python3 -c \
  'import json,sys; print(int(json.load(sys.stdin).get("appliedRevision", 0)))')
ctl_rev=$(fleet_revision)
echo "e2e: dataplane revision $dp_rev before, $dp_rev2 after; controller at $ctl_rev"
[ "$dp_rev2" = "$ctl_rev" ] && pass "dataplane enforces the controller's revision" ||
  fail "drift: dataplane $dp_rev2, controller $ctl_rev"
# The agent's Hello carried the digests of what the dataplane holds: the
# restarted controller answers with what differs (here nothing), never a
# full state.
if tail -n +$((agent_lines + 1)) "$FLEET_DIR/agent.log" | grep -q "enforced (full state"; then
  fail "the restarted controller sent a full state: the host's digests were not used"
else
  pass "the host resumed from its digests: no full state after the controller restart"
fi
expect allow web db tcp 5432
expect block db web tcp 5432
expect block other db tcp 5432
[ $HAVE_GUEST = 1 ] && expect allow guest db tcp 5432

echo "== 7. ovs-vswitchd restarted: the host agent reinstalls the steering flows and no-flood," \
  "the dataplane reconnects; enforcement restored"
dp_pid=$SB_DP_PID
flows_before=$(sb_ofctl dump-flows "$SB_BRIDGE" --no-stats | sort)
agent_lines=$(wc -l <"$FLEET_DIR/agent.log")
t_restart=$(date +%s%N)
sb_ovs_restart_vswitchd || fail "ovs-vswitchd did not restart"
ms=$(sb_vm_exec web python3 "$FLEET_LIB_DIR/probe.py" until-tcp "${FLEET_IP[db]}" 5432 \
  --timeout 60 --since-ns "$t_restart")
if [ "$ms" != never ]; then
  echo "e2e: ovs-vswitchd restart -> web -> db tcp/5432 works again in $ms ms" \
    "(vswitchd start, agent resync every 2 s, vhost-user reconnect)"
  pass "enforcement back after the ovs-vswitchd restart ($ms ms)"
else
  fail "web -> db tcp/5432 never worked again after the ovs-vswitchd restart"
fi
[ "$SB_DP_PID" = "$dp_pid" ] && kill -0 "$dp_pid" 2>/dev/null &&
  pass "the dataplane was not restarted (pid $dp_pid)" || fail "the dataplane is not pid $dp_pid"
kill -0 "$FLEET_AGENT_PID" 2>/dev/null && pass "the host agent still runs" ||
  fail "the host agent died"
tail -n "+$((agent_lines + 1))" "$FLEET_DIR/agent.log" | grep -q 'steering reconciled: 0 kept' &&
  pass "the agent reinstalled the steering flows" ||
  fail "no flow reinstall by the agent in its log"
flows_after=$(sb_ofctl dump-flows "$SB_BRIDGE" --no-stats | sort)
if [ "$flows_before" = "$flows_after" ]; then pass "steering flows as before the restart"
else fail "steering flows differ after the ovs-vswitchd restart"; diff <(echo "$flows_before") \
  <(echo "$flows_after"); fi
for port in $(sb_fw_ports); do
  nf=never
  for _ in $(seq 100); do
    if sb_ofctl -O OpenFlow10 show "$SB_BRIDGE" | grep -A1 "($port)" | grep -q NO_FLOOD; then
      nf=yes
      break
    fi
    sleep 0.1
  done
  [ "$nf" = yes ] && pass "no-flood on $port again" || fail "$port is not no-flood"
done
grep -q 'link up' "$SB_DP_LOG" && pass "dataplane saw its link come back" ||
  fail "the dataplane logged no link up"
expect allow web db tcp 5432
expect allow web db udp 5432
expect allow web db icmp
expect block db web tcp 5432
expect block db web icmp
expect block other db tcp 5432
if [ $HAVE_GUEST = 1 ]; then
  expect allow guest db tcp 5432
  expect block db guest tcp 5432
fi

echo "== 8. staged rollout: default deny in audit, observe, dfwctl policy recommend, enforce"
# A catch-all group and a default deny in audit mode after web-to-db: what it
# would drop passes and is recorded. A window of flow records becomes a draft
# policy; enforced alone (audit and web-to-db gone), it allows what was seen
# and nothing else.
cat >"$WORK/audit-all.json" <<'JSON'
{"id": "audit-all", "display_name": "default deny, audited", "category": "CATEGORY_APPLICATION",
 "priority": 1000, "applied_to_group_ids": ["all-vms"], "stateful": true,
 "mode": "POLICY_MODE_AUDIT",
 "rules": [{"id": "deny-rest", "sources": {"any": true}, "destinations": {"any": true},
            "action": "ACTION_DROP", "log": true}]}
JSON
fleet_dfwctl group create all-vms --tag app >/dev/null || fail "group all-vms not created"
fleet_dfwctl policy apply -f "$WORK/audit-all.json" >/dev/null || fail "audit-all not applied"
fleet_wait_realized 10 || fail "the audit policy was not realized"
fleet_dfwctl -o json policy recommend --window 12 --id recommended --write-dir "$WORK/draft" \
  >"$WORK/recommend.json" 2>"$WORK/recommend.err" &
recommender=$!
sleep 2
expect allow web db tcp 5432   # web-to-db
expect allow other db tcp 80   # audit: would be dropped, passes
expect allow db web udp 5432   # audit
wait "$recommender"
recommend_rc=$?
[ "$recommend_rc" = 0 ] && pass "dfwctl policy recommend drafted a policy" ||
  fail "dfwctl policy recommend exited $recommend_rc: $(head -c 300 "$WORK/recommend.err")"
check=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
seen = {(o["client"], o["server"], o["protocol"], o["port"]) for o in d.get("observed", [])}
out = []
def want(ok, what): out.append(("ok " if ok else "bad ") + what)
for c in [("ns-web", "ns-db", 6, 5432), ("ns-other", "ns-db", 6, 80), ("ns-db", "ns-web", 17, 5432)]:
    want(c in seen, "observed %s -> %s %d/%d" % c)
groups = [g["id"] for g in d.get("groups", [])]
want(groups == ["rec-app-other"], "proposed groups %s (ns-other is only in all-vms, which spans apps)" % groups)
want(d["policy"].get("mode") == "POLICY_MODE_AUDIT", "the draft is in audit mode")
print("\n".join(out))
print("info %d connection(s), %d record(s), %d lost; rules: %s" % (len(seen), d.get("records", 0),
      d.get("lost", 0), "; ".join(r["display_name"] for r in d["policy"]["rules"])))' \
  "$WORK/recommend.json" 2>&1)
report recommend <<<"$check"
# Enforce the reviewed draft in place of the audit and web-to-db policies.
sed -i 's/POLICY_MODE_AUDIT/POLICY_MODE_ENFORCE/' "$WORK/draft/policy.json"
fleet_dfwctl group apply -f "$WORK/draft/groups.json" >/dev/null || fail "draft groups not applied"
fleet_dfwctl policy apply -f "$WORK/draft/policy.json" >/dev/null || fail "draft policy not applied"
fleet_dfwctl policy delete audit-all >/dev/null || fail "audit-all not deleted"
fleet_dfwctl policy delete web-to-db >/dev/null || fail "web-to-db not deleted"
fleet_wait_realized 10 || fail "the recommended policy was not realized"
TRACE_TOO=1
expect allow web db tcp 5432
expect allow other db tcp 80
expect allow db web udp 5432
expect block web db tcp 80
expect block web db udp 5432
expect block other db tcp 5432
expect block db web tcp 5432
expect block web other tcp 80
expect block other web udp 5432
TRACE_TOO=0

echo "== 9. exclusion list: VMs the firewall never filters (admin only, audited)"
DFW_CONFIG_DIR=$VIEWER_DIR "$FLEET_DFWCTL" --server "https://$FLEET_HTTP" exclusion add \
  --vm ns-other --reason "viewer tries" >/dev/null 2>&1
rc=$?
[ $rc -eq 7 ] && pass "a viewer cannot exclude a VM (exit 7)" || fail "viewer exclusion: exit $rc"
fleet_dfwctl exclusion add --vm ns-other --reason "e2e: appliance" >/dev/null &&
  fleet_dfwctl exclusion add --vm ns-db --reason "e2e: being debugged" >/dev/null ||
  fail "exclusion add"
fleet_wait_realized 15 || fail "the exclusions were not realized"
check=$(fleet_dfwctl -o json exclusion list | python3 -c '
import json, sys
ex = {e.get("vm_id"): e for e in json.load(sys.stdin).get("exclusions", [])}
host = sys.argv[1]
for vm, vnic in (("other", sys.argv[2]), ("db", sys.argv[3])):
    e = next((e for i, e in ex.items() if i and e.get("reason", "").startswith("e2e")
              and vnic in e.get("covered_vnic_ids", [])), None)
    print(("ok " if e and e.get("host_ids") == [host] and e.get("created_by", "").endswith("fleet-admin")
           else "bad ") + "%s listed with its vNIC %s on %s, by the admin: %s" % (vm, vnic, host, e))' \
  "$FLEET_HOST_ID" "${FLEET_IFID[other]}" "${FLEET_IFID[db]}" 2>&1)
report "exclusion list" <<<"$check"
TRACE_TOO=1
expect allow other db tcp 5432   # both excluded: nothing filters it
expect allow db other tcp 5432
expect allow web db tcp 5432     # web's egress allows it
expect block web other tcp 80    # web's egress still stops it
expect block other web udp 5432  # web's ingress still stops it
TRACE_TOO=0
# A source address the excluded VM does not hold: dropped in OVS.
sb_vm_exec other ip addr add 198.18.10.99/32 dev eth0
if sb_vm_exec other python3 -c '
import socket, sys
s = socket.socket(); s.settimeout(1.5); s.bind(("198.18.10.99", 0))
try:
    s.connect((sys.argv[1], 5432)); sys.exit(0)
except OSError:
    sys.exit(1)' "${FLEET_IP[db]}"; then
  fail "an excluded VM reached db from a spoofed source address"
else
  pass "an excluded VM's spoofed source address is dropped in OVS"
fi
sb_vm_exec other ip addr del 198.18.10.99/32 dev eth0
# The excluded VMs do not depend on the dataplane; the others fail closed.
sb_dataplane_kill9
expect allow other db tcp 5432
expect block web db tcp 5432
sb_dataplane_start || fail "dataplane did not restart"
fleet_wait_realized 20 || fail "not realized after the dataplane restart"
fleet_dfwctl exclusion remove vm:ns-other >/dev/null &&
  fleet_dfwctl exclusion remove vm:ns-db >/dev/null || fail "exclusion remove"
fleet_wait_realized 15 || fail "the removals were not realized"
expect block other db tcp 5432
expect allow other db tcp 80
expect allow web db tcp 5432
expect block db other tcp 5432
other_port=$(sb_ofctl -O OpenFlow10 show "$SB_BRIDGE" | grep -A1 "(${SB_VM_PORT[other]})")
case $other_port in *NO_FLOOD*) pass "ns-other's port is no-flood again" ;;
*) fail "ns-other's port is not no-flood: $other_port" ;; esac
kinds=$(fleet_dfwctl -o json changes | python3 -c '
import json, sys
print(sum(1 for e in json.load(sys.stdin).get("events", []) if e.get("kind") == "KIND_EXCLUSION"))')
[ "$kinds" = 4 ] && pass "the change log holds the 4 exclusion changes" ||
  fail "exclusion changes in the log: $kinds, expected 4"

echo "== flow records (last 5)"
tail -5 "$SB_DP_FLOWS"
echo "e2e: $FAILS failure(s)"
