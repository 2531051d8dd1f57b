#!/bin/bash
# The whole process, as a user runs it, beside the OVS anchor (DESIGN.md section 7): dfw-dataplane
# on one core reading 64-byte frames from a pcap through net_pcap (infinite_rx) and sending the
# allowed ones to net_null, vs OVS-DPDK running an OpenFlow conntrack firewall on the same packets
# (bench/dataplane/ovs_anchor/ovs_ct_anchor.sh, the founders' anchor: one PMD, net_pcap in, net_null out). Both on cpu 1.
#
# usage: dataplane_vs_ovs_anchor.sh [BUILD_DIR]     (default: <repo>/build-dpb)
#   env: FLOWS="32 10000"  SECS=10 (per measurement)  REPEAT=3  VNICS=64  ANCHOR=<ovs_ct_anchor.sh>
#        SCALING=1: no OVS; dfw-dataplane with 1 worker (-l 1) and with --workers 2 (-l 0,1),
#        alternating: "mixed", the pcap on both rx queues, so half of each queue's frames are
#        the other worker's and go through the redispatch rings (what OVS-DPDK does: it picks
#        fw0's queue by its PMD thread); "port per worker", --port-per-worker with a pcap
#        port per worker holding only that worker's vNICs (splitpcap.py: what the host
#        agent's --firewall-ports 2 steering gives each port). Prints Mpps and the 2/1
#        ratios (goal >= 1.8x).
#
# Pcaps: bench/dataplane/ovs_anchor/mkpcap.py makes OVS's (N flows, max(N, 1024) packets, 60-byte frames +
# FCS = 64 bytes on the wire); mkdfwpcap.py makes ours from it: the same frames with the steering
# tag of the vNIC that sent them (64 bytes; vNIC by source IP, VNICS of them) and the persisted
# state that allows them (each vNIC: its MAC and source IPs bound; one rule: out UDP to
# 198.19.0.0/16 on 53/80/443/5432 allow, stateful; default drop). dfw-dataplane loads it at start
# (--state-dir), enforces it on every frame, and prints rx and the worker's run time at exit:
# cycles/packet = TSC Hz x worker seconds / rx packets (the worker spins under infinite_rx; the
# TSC rate comes from bench_dataplane_vs_ovs_ct --tsc-hz). OVS's side prints its PMD's cycles
# per packet (pmd-stats-show).
#
# Needs root, openvswitch-switch-dpdk, protoc, python3. Sets up 2 MiB hugepages (512, mounted on
# /dev/hugepages) if there are fewer, and restores the count and the mount on exit, also on
# failure. Every process it starts it stops (by pid); the anchor script stops its own OVS.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(readlink -f "${1:-$ROOT/build-dpb}")
ANCHOR=${ANCHOR:-$ROOT/bench/dataplane/ovs_anchor/ovs_ct_anchor.sh}
MKPCAP=$(dirname "$ANCHOR")/mkpcap.py
DP=$BUILD/dataplane/dfw-dataplane
BENCH=$BUILD/bench/dataplane/bench_dataplane_vs_ovs_ct
FLOWS=${FLOWS:-"32 10000"}
SECS=${SECS:-10}
REPEAT=${REPEAT:-3}
VNICS=${VNICS:-64}
for f in "$DP" "$BENCH" "$ANCHOR" "$MKPCAP"; do
  [ -e "$f" ] || { echo "missing $f (build: cmake --build $BUILD --target dfw-dataplane bench_dataplane_vs_ovs_ct)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (hugepages, OVS)" >&2; exit 1; }

W=$(mktemp -d /tmp/dfw-dp-anchor.XXXXXX)
# EAL runtime directories that exist before we start; ours and the anchor's
# (ovsanchor<pid>) are removed at the end.
DPDK_RUN=/var/run/dpdk
BEFORE=$(ls "$DPDK_RUN" 2>/dev/null | sort)
OLD_NR=$(cat /proc/sys/vm/nr_hugepages)
SET_NR=""
MOUNTED=0
DP_PID=""
cleanup() {
  set +e
  if [ -n "$DP_PID" ] && kill -0 "$DP_PID" 2>/dev/null; then
    kill "$DP_PID"; sleep 1; kill -9 "$DP_PID" 2>/dev/null
  fi
  [ "$MOUNTED" = 1 ] && umount /dev/hugepages
  # Give back the pages we added (unless someone changed the count since).
  if [ -n "$SET_NR" ] && [ "$(cat /proc/sys/vm/nr_hugepages)" = "$SET_NR" ]; then
    echo "$OLD_NR" > /proc/sys/vm/nr_hugepages
  fi
  rm -rf "$W"
  for d in $(comm -13 <(echo "$BEFORE") <(ls "$DPDK_RUN" 2>/dev/null | sort)); do
    case "$d" in dfwanchor*|ovsanchor*) rm -rf "${DPDK_RUN:?}/$d" ;; esac
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$OLD_NR" -lt 512 ]; then
  echo 512 > /proc/sys/vm/nr_hugepages
  SET_NR=$(cat /proc/sys/vm/nr_hugepages)
fi
if ! grep -q " hugetlbfs " /proc/mounts; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs none /dev/hugepages
  MOUNTED=1
fi
FREE=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
[ "$FREE" -ge 300 ] || { echo "only $FREE free 2 MiB hugepages; need about 300" >&2; exit 1; }

TSC_HZ=$("$BENCH" --tsc-hz)
echo "TSC $(awk -v h="$TSC_HZ" 'BEGIN {printf "%.3f", h/1e9}') GHz; $SECS s per measurement, $REPEAT repeats, cpu 1; medians"

# One run of ours: prints cycles per packet (all workers' cycles) and Mpps.
run_ours() {  # PCAP STATE_DIR MBUFS LOG [WORKERS [PCAP2 [ports]]]
  local pcap=$1 st=$2 mbufs=$3 log=$4 workers=${5:-1} pcap2=${6:-$1} mode=${7:-queues}
  local lcores=1 opts=(--tx-port 1) vdevs=(--vdev "net_pcap0,rx_pcap=$pcap,infinite_rx=1")
  if [ "$workers" = 2 ]; then
    lcores=0,1
    vdevs=(--vdev "net_pcap0,rx_pcap=$pcap,rx_pcap=$pcap2,infinite_rx=1")
  fi
  if [ "$mode" = ports ]; then
    opts=(--tx-port 2 --port-per-worker)
    vdevs=(--vdev "net_pcap0,rx_pcap=$pcap,infinite_rx=1"
      --vdev "net_pcap1,rx_pcap=$pcap2,infinite_rx=1")
  fi
  "$DP" --api "unix:$W/api.sock" --state-dir "$st" "${opts[@]}" --mbufs "$mbufs" \
    --workers "$workers" --exit-after-ms $((SECS * 1000)) -- -l "$lcores" --no-pci --in-memory \
    -m 256 --file-prefix "dfwanchor$$" "${vdevs[@]}" --vdev net_null0 > "$log" 2>&1 &
  DP_PID=$!
  wait "$DP_PID" || { echo "dfw-dataplane failed:" >&2; tail -20 "$log" >&2; DP_PID=""; return 1; }
  DP_PID=""
  local nv
  nv=$(grep -c '^vnics ' "$st.txtpb")
  grep -q "ready api=.* vnics=$nv revision=1" "$log" || { echo "state not loaded:" >&2; cat "$log" >&2; return 1; }
  awk -v hz="$TSC_HZ" '/dfw-dataplane: stopped/ {
      for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      if (v["dropped"] != 0 || v["rx"] != v["tx"] + v["in_flight"]) { print "drops: " $0 > "/dev/stderr"; exit 1 }
      s = v["worker_us"] / 1e6; printf "%.0f %.2f\n", hz * s * v["workers"] / v["rx"], v["rx"] / s / 1e6 }' "$log"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The inputs for N flows: OVS's pcap, ours and our persisted state. Sets pk.
make_inputs() {  # N
  local n=$1
  pk=$(( n > 1024 ? n : 1024 ))
  python3 "$MKPCAP" "$n" "$pk" "$W/ovs-$n.pcap"
  mkdir -p "$W/state-$n"
  python3 "$HERE/mkdfwpcap.py" "$W/ovs-$n.pcap" "$W/dfw-$n.pcap" "$W/state-$n.txtpb" "$VNICS"
  protoc -I"$ROOT/proto" --encode=dfw.v1.DataplanePersistedState dfw/v1/dataplane.proto \
    < "$W/state-$n.txtpb" > "$W/state-$n/state.pb"
}

SUMMARY=$W/summary
if [ "${SCALING:-0}" = 1 ]; then
  for n in $FLOWS; do
    make_inputs "$n"
    python3 "$HERE/splitpcap.py" "$W/dfw-$n.pcap" 2 "$W/own-$n-"
    mbufs=$(( 2 * pk + 16384 ))
    : > "$W/one-$n"; : > "$W/two-$n"; : > "$W/own-$n"
    for r in $(seq "$REPEAT"); do
      d1=$(run_ours "$W/dfw-$n.pcap" "$W/state-$n" "$mbufs" "$W/dp1-$n-$r.log" 1)
      d2=$(run_ours "$W/dfw-$n.pcap" "$W/state-$n" "$mbufs" "$W/dp2-$n-$r.log" 2)
      d3=$(run_ours "$W/own-$n-0.pcap" "$W/state-$n" "$mbufs" "$W/dp3-$n-$r.log" 2 "$W/own-$n-1.pcap" ports)
      rd=$(sed -n 's/.*stopped.* redispatched=\([0-9]*\).*/\1/p' "$W/dp2-$n-$r.log")
      echo "  [$n flows, run $r] 1 worker: $d1; 2 workers mixed: $d2 (redispatched $rd); port per worker: $d3 (cycles/packet, Mpps)"
      echo "$d1" >> "$W/one-$n"; echo "$d2" >> "$W/two-$n"; echo "$d3" >> "$W/own-$n"
    done
    m1=$(awk '{print $2}' "$W/one-$n" | median); m2=$(awk '{print $2}' "$W/two-$n" | median)
    m3=$(awk '{print $2}' "$W/own-$n" | median)
    awk -v n="$n" -v m1="$m1" -v m2="$m2" -v m3="$m3" 'BEGIN {
        printf "%6d flows | 1 worker %5.2f Mpps | 2 workers, mixed queues %5.2f Mpps = %.2fx (goal 1.8x: %s) | 2 workers, port per worker %5.2f Mpps = %.2fx\n",
               n, m1, m2, m2 / m1, (m2 / m1 >= 1.8 ? "MET" : "MISSED"), m3, m3 / m1 }' >> "$SUMMARY"
  done
  echo
  echo "dfw-dataplane scaling, 64-byte UDP frames, net_pcap (infinite_rx) -> net_null; median of $REPEAT x $SECS s:"
  cat "$SUMMARY"
  exit 0
fi
for n in $FLOWS; do
  make_inputs "$n"
  mbufs=$(( pk + 8192 ))
  : > "$W/ours-$n" ; : > "$W/ovs-$n"
  for r in $(seq "$REPEAT"); do
    o=$("$ANCHOR" "$W/ovs-$n.pcap" ct "$SECS" 2> "$W/anchor-$n-$r.err" | tail -1) ||
      { echo "ovs_ct_anchor.sh failed:" >&2; tail -20 "$W/anchor-$n-$r.err" >&2; exit 1; }
    echo "  [$n flows, run $r] $o"
    echo "$o" | awk '{print $3, $7}' >> "$W/ovs-$n"
    d=$(run_ours "$W/dfw-$n.pcap" "$W/state-$n" "$mbufs" "$W/dp-$n-$r.log")
    echo "  [$n flows, run $r] dfw-dataplane: $d (cycles/packet, Mpps)"
    echo "$d" >> "$W/ours-$n"
  done
  oc=$(awk '{print $1}' "$W/ovs-$n" | median); om=$(awk '{print $2}' "$W/ovs-$n" | median)
  dc=$(awk '{print $1}' "$W/ours-$n" | median); dm=$(awk '{print $2}' "$W/ours-$n" | median)
  ospread=$(awk '{print $1}' "$W/ovs-$n" | sort -n | awk 'NR==1{lo=$1} {hi=$1} END{print lo "-" hi}')
  dspread=$(awk '{print $1}' "$W/ours-$n" | sort -n | awk 'NR==1{lo=$1} {hi=$1} END{print lo "-" hi}')
  awk -v n="$n" -v oc="$oc" -v om="$om" -v dc="$dc" -v dm="$dm" -v os="$ospread" -v ds="$dspread" 'BEGIN {
      r = oc / dc
      printf "%6d flows | OVS-DPDK ct firewall %5d cycles/pkt (%s) %5.2f Mpps | dfw-dataplane %4d cycles/pkt (%s) %5.2f Mpps | %.2fx fewer cycles | goal 5x: %s\n",
             n, oc, os, om, dc, ds, dm, r, (r >= 5 ? "MET" : "MISSED") }' >> "$SUMMARY"
done
echo
echo "whole process, one core, 64-byte UDP frames, net_pcap (infinite_rx) -> net_null; median of $REPEAT x $SECS s:"
cat "$SUMMARY"
