#!/usr/bin/env bash
# End-to-end check of the real test guest: a private OVS-DPDK (own ovsdb, own
# network namespace for ovs-vswitchd, own hugetlbfs mount, DPDK --no-pci with a
# unique --file-prefix), a netdev bridge with NORMAL forwarding, the guest
# (libvirt + QEMU/TCG) on a dpdkvhostuserclient port and one namespace on a veth
# port; probes both ways: ICMP, TCP, HTTP, UDP. Cleans everything up (trap).
#
#   scripts/guest/guest_selftest.sh          exit 0 when every probe passed
#
# Env: GUEST_IMAGE_DIR (default /var/tmp/dfw-guest-image), KEEP=1 keeps the
# temp dir (logs) on failure. Needs root, scripts/install-deps.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/guest.sh
. "$HERE/../lib/guest.sh"

[ "$(id -u)" -eq 0 ] || { echo "guest_selftest: needs root" >&2; exit 1; }

ID=dfwg$$
T=$(mktemp -d "/tmp/$ID.XXXXXX")
OVSNS=${ID}o          # ovs-vswitchd runs here (its taps and the veth end stay off the host)
VMNS=${ID}n           # the namespace "VM"
BR=${ID}br
NAME=dfwg-selftest-$$
UUID=$(cat /proc/sys/kernel/random/uuid)
MAC=$(printf '52:54:00:%02x:%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)) $((RANDOM % 256)))
GUEST_IP=198.18.0.21
NS_IP=198.18.0.10
VHOST=$T/vhost/$NAME.sock
CON=$T/$NAME.console
PIDS=()
OVSDB_PID="" VSWITCHD_PID="" HUGE_MOUNTED=0 FAILED=0

export OVS_RUNDIR=$T/ovs OVS_DBDIR=$T/ovs OVS_LOGDIR=$T/ovs OVS_SYSCONFDIR=$T/ovs
VSCTL="ovs-vsctl --db=unix:$T/ovs/db.sock --timeout=30"
export GUEST_OVS_VSCTL=$VSCTL

cleanup() {
  local rc=$? p
  set +e
  guest_destroy "$NAME"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  if [ -n "$VSWITCHD_PID" ] && kill -0 "$VSWITCHD_PID" 2>/dev/null; then
    ovs-appctl -t "$T/ovs/ovs-vswitchd.ctl" exit --cleanup >/dev/null 2>&1
    for _ in $(seq 50); do kill -0 "$VSWITCHD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$VSWITCHD_PID" 2>/dev/null
  fi
  if [ -n "$OVSDB_PID" ]; then
    kill "$OVSDB_PID" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$OVSDB_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  guest_libvirtd_stop
  ip netns del "$VMNS" 2>/dev/null
  ip netns del "$OVSNS" 2>/dev/null
  [ "$HUGE_MOUNTED" = 1 ] && umount "$T/huge"
  rm -rf "/var/run/dpdk/$ID"
  if [ "$rc" -ne 0 ] && [ "${KEEP:-0}" = 1 ]; then
    echo "guest_selftest: kept $T" >&2
  else
    rm -rf "$T"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { echo "guest_selftest: $*"; }
check() {  # check NAME EXPECTED_SUBSTRING CMD...
  local what=$1 want=$2 out
  shift 2
  if out=$("$@" 2>&1) && [[ $out == *"$want"* ]]; then
    step "ok   $what"
  else
    step "FAIL $what: $(echo "$out" | tr '\n' ' ' | cut -c1-300)"
    FAILED=1
  fi
}

# --- hugepages: never lower the pool; raise it when fewer than 256 are free ---
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if [ "$free" -lt 256 ]; then
  total=$(cat /proc/sys/vm/nr_hugepages)
  echo $((total + 256 - free)) > /proc/sys/vm/nr_hugepages
fi
mkdir -p "$T/huge" "$T/ovs" "$T/vhost"
mount -t hugetlbfs -o pagesize=2M nodev "$T/huge"
HUGE_MOUNTED=1

# --- private OVS-DPDK ---
step "starting private OVS-DPDK ($ID)"
ip netns add "$OVSNS"
ip netns add "$VMNS"
ip -n "$OVSNS" link set lo up
ovsdb-tool create "$T/ovs/conf.db" /usr/share/openvswitch/vswitch.ovsschema
ovsdb-server "$T/ovs/conf.db" --remote="punix:$T/ovs/db.sock" --pidfile="$T/ovs/ovsdb-server.pid" \
  --unixctl="$T/ovs/ovsdb-server.ctl" --log-file="$T/ovs/ovsdb-server.log" --detach --no-chdir -vconsole:off
OVSDB_PID=$(cat "$T/ovs/ovsdb-server.pid")
$VSCTL --no-wait init
$VSCTL --no-wait set Open_vSwitch . other_config:dpdk-init=true \
  "other_config:dpdk-extra=--no-pci --file-prefix $ID --huge-dir $T/huge" \
  other_config:dpdk-socket-mem=256 other_config:dpdk-socket-limit=512 \
  other_config:pmd-maxsleep=10000
ip netns exec "$OVSNS" /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk "unix:$T/ovs/db.sock" \
  --pidfile="$T/ovs/ovs-vswitchd.pid" --unixctl="$T/ovs/ovs-vswitchd.ctl" \
  --log-file="$T/ovs/ovs-vswitchd.log" --detach --no-chdir -vconsole:off
VSWITCHD_PID=$(cat "$T/ovs/ovs-vswitchd.pid")
for _ in $(seq 100); do
  [ "$($VSCTL get Open_vSwitch . dpdk_initialized 2>/dev/null)" = true ] && break
  sleep 0.2
done
[ "$($VSCTL get Open_vSwitch . dpdk_initialized)" = true ] || { step "DPDK did not initialise"; tail -20 "$T/ovs/ovs-vswitchd.log"; exit 1; }
$VSCTL add-br "$BR" -- set Bridge "$BR" datapath_type=netdev fail_mode=standalone

# --- namespace "VM" on a veth port ---
ip -n "$OVSNS" link add "${ID}v" type veth peer name eth0 netns "$VMNS"
ip -n "$OVSNS" link set "${ID}v" up
ip -n "$VMNS" link set lo up
ip -n "$VMNS" addr add "$NS_IP/24" dev eth0
ip -n "$VMNS" link set eth0 up
# veth leaves TCP/UDP checksums to "hardware"; OVS's userspace datapath (no
# userspace-tso) forwards them unfinished, and the guest drops them.
ip netns exec "$VMNS" ethtool -K eth0 tx off >/dev/null
ip netns exec "$OVSNS" ethtool -K "${ID}v" tx off >/dev/null
$VSCTL add-port "$BR" "${ID}v"

# --- the guest ---
guest_libvirtd_ensure
guest_ovs_add_port "$BR" "${ID}g" "$VHOST" "vnic-$NAME" "$MAC" "$UUID"
step "starting guest $NAME ($UUID, $MAC, $GUEST_IP)"
t0=$(date +%s.%N)
guest_define_start "$NAME" "$UUID" "$MAC" "vnic-$NAME" "$GUEST_IP/24" "$VHOST" "$CON" app=selftest pci
ready=$(guest_wait_ready "$CON" 120)
t1=$(date +%s.%N)
step "guest ready: $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s from virsh start (guest uptime at ready: ${ready#ready } s)"

# The metadata the host agent reads.
check "domain metadata" "vnic-$NAME" guest_virsh metadata "$NAME" https://dfw.dev/xmlns/firewall/1

# --- servers in the namespace ---
ip netns exec "$VMNS" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen(8)
while True:
    c, _ = s.accept(); c.sendall(b"ns-tcp-ok\n"); c.close()' &
PIDS+=($!)
ip netns exec "$VMNS" "$GUEST_IMAGE_DIR/dfw-probe" udp-echo 9007 &
PIDS+=($!)
sleep 0.5

tcp_get() {  # tcp_get IP PORT [SEND] -> what the server sends
  ip netns exec "$VMNS" python3 -c '
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
if len(sys.argv) > 3: c.sendall(sys.argv[3].encode())
out = b""
while True:
    d = c.recv(4096)
    if not d: break
    out += d
print(out.decode(errors="replace"))' "$@"
}

check "guest -> ns ping" " 0% packet loss" guest_exec "$CON" "ping -c 3 -W 2 $NS_IP" --timeout 20
check "ns -> guest ping" " 0% packet loss" ip netns exec "$VMNS" ping -c 3 -W 2 "$GUEST_IP"
check "ns -> guest TCP 5432" "dfw-guest $NAME 5432" tcp_get "$GUEST_IP" 5432
check "ns -> guest HTTP 80" "dfw-guest $NAME http" tcp_get "$GUEST_IP" 80 $'GET / HTTP/1.0\r\n\r\n'
check "guest -> ns TCP 9000" "ns-tcp-ok" guest_exec "$CON" "nc $NS_IP 9000" --timeout 15
check "ns -> guest UDP 7" "hello-udp" ip netns exec "$VMNS" "$GUEST_IMAGE_DIR/dfw-probe" udp "$GUEST_IP" 7 hello-udp 3
check "guest -> ns UDP 9007" "guest-udp" guest_exec "$CON" "dfw-probe udp $NS_IP 9007 guest-udp 3" --timeout 15
check "guest IPv6 off" "1" guest_exec "$CON" "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6"
rc=0; guest_exec "$CON" 'echo out; exit 7' >/dev/null || rc=$?
if [ "$rc" -eq 7 ]; then step "ok   guest_exec exit code"; else step "FAIL guest_exec exit code: $rc"; FAILED=1; fi
if [ "$FAILED" -ne 0 ]; then
  step "FAILED (OVS log: $T/ovs/ovs-vswitchd.log, console: $GUEST_STATE_DIR/$NAME/console.log)"
  [ "${KEEP:-0}" = 1 ] && cp -r "$GUEST_STATE_DIR/$NAME" "$T/guest-state" 2>/dev/null
  exit 1
fi
step "PASS"
