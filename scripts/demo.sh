#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds, and runs
# the product on this machine as one hypervisor would:
#   - dfw-controller with its embedded RocksDB store (REST + gRPC on loopback),
#   - a private OVS-DPDK bridge (hugepages), dfw-dataplane on its vhost-user
#     port, dfw-hostagent steering every vNIC through it,
#   - three namespace VMs (web, db, other) described to libvirt by a
#     test-driver file, and a real guest booted by libvirt/QEMU (qemu:///system)
#     on a vhost-user vNIC, tagged in its libvirt metadata,
#   - the policy "web may reach db on 5432; nothing else",
#   - a VM no host of ours enforces for, with dfw-vmagent (nftables) inside,
# then shows the VMs, groups and policy, probes every pair with real TCP, UDP
# and ICMP (allowed and blocked), flips a tag and times its enforcement, and
# shows realization, counters and flow records. Cleans everything up at the
# end (or on Ctrl-C).
#
#   scripts/demo.sh [--no-guest] [--keep] [--installed]
#     --no-guest  namespaces only (faster: no QEMU)
#     --keep      stay up after the tour until Ctrl-C, to try dfwctl by hand
#     --installed run the installed packages' binaries (/usr/sbin, /usr/bin;
#                 $DFW_PREFIX instead of /usr) instead of building the tree
set -euo pipefail
cd "$(dirname "$0")/.."
NO_GUEST=
KEEP=0
INSTALLED=
for a in "$@"; do
  case $a in
    --no-guest) NO_GUEST=--no-guest ;;
    --keep) KEEP=1 ;;
    --installed) INSTALLED=${DFW_PREFIX:-/usr} ;;
    *) echo "usage: scripts/demo.sh [--no-guest] [--keep] [--installed]" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it creates network namespaces, an OVS bridge, hugepages, a VM)" >&2
  exit 1
fi
scripts/install-deps.sh
if [ -n "$INSTALLED" ]; then
  # The binaries of the installed packages (dfw-controller, dfw-host, dfwctl).
  BUILD_DIR=$INSTALLED
else
  echo "demo: building (log: /tmp/dfw-demo-build.log) ..."
  scripts/build.sh >/tmp/dfw-demo-build.log 2>&1 || { tail -50 /tmp/dfw-demo-build.log; exit 1; }
  BUILD_DIR=${DFW_BUILD_DIR:-build}
fi
WORK=$(mktemp -d /tmp/dfw-demo.XXXXXX)
set +e
# shellcheck source=lib/fleet.sh
. scripts/lib/fleet.sh

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
finish() {
  local rc=$?
  bold "Cleaning up (VMs, agent, dataplane, OVS, controller, namespaces, hugepages)"
  fleet_cleanup
  rm -rf "$WORK"
  exit $rc
}
trap finish EXIT
trap 'exit 130' INT TERM

fleet_init "$BUILD_DIR" "$WORK" || exit 1
bold "Starting: controller, OVS-DPDK (br-dfw), dfw-dataplane on fw0, dfw-hostagent, VMs"
t0=$(date +%s%N)
fleet_start $NO_GUEST || { echo "demo: the sandbox did not come up; logs in $WORK"; KEEP=0; exit 1; }
echo "up in $((($(date +%s%N) - t0) / 1000000)) ms; work dir $WORK"
ctl() { echo "\$ dfwctl $*"; fleet_dfwctl "$@"; }

bold "Trust: every channel is mutual TLS with SPIFFE identities (the CA: dfwctl ca init)"
echo "The host agent enrolled with a one-time join token; dfwctl holds an admin's certificate."
ctl cert list

bold "The VMs, as the host agent reported them from libvirt (tags from domain metadata)"
ctl vm list
bold "Security groups (by tag) and their members"
ctl group list
ctl group members web
ctl group members db
bold "The policy"
echo "\$ cat examples/web-db-policy.json"; cat examples/web-db-policy.json

PROBES=("web db tcp 5432" "web db udp 5432" "web db icmp -" "web db tcp 80"
  "db web tcp 5432" "db other icmp -" "other db tcp 5432" "other web icmp -"
  "web other tcp 5432")
if [ -z "$NO_GUEST" ]; then
  PROBES+=("guest db tcp 5432" "guest db icmp -" "db guest tcp 5432" "other guest tcp 5432"
    "web guest tcp 5432")
fi
probe_table() {
  printf '%-7s %-7s %-10s %-8s %s\n' FROM TO SERVICE EXPECTED RESULT
  local p from to proto port want got mark svc
  for p in "${PROBES[@]}"; do
    read -r from to proto port <<<"$p"
    want=blocked
    if [ "$(tagof "$to")" = db ] && [ "${port}" != 80 ] && [ "$(tagof "$from")" = web ]; then
      want=allowed
    fi
    if fleet_probe "$from" "$to" "$proto" "${port/-/5432}"; then got=allowed; else got=blocked; fi
    mark=ok; [ "$got" = "$want" ] || mark="UNEXPECTED"
    svc=$proto; [ "$port" != - ] && svc="$proto/$port"
    printf '%-7s %-7s %-10s %-8s %-8s %s\n' "$from" "$to" "$svc" "$want" "$got" "$mark"
  done
}
declare -A CUR_TAG
for n in "${FLEET_VMS[@]}"; do CUR_TAG[$n]=${FLEET_TAG[$n]}; done
tagof() { echo "${CUR_TAG[$1]}"; }

bold "Probes: real TCP, UDP and ICMP between every pair that matters (same host, same VLAN)"
probe_table

bold "A tag change through the API: other becomes app=web"
echo "\$ dfwctl vm tag ns-other app=web"
ms=$(fleet_time_to_enforcement other db 5432 open vm tag ns-other app=web)
echo "other -> db tcp/5432 opened $ms ms after the command (controller -> host agent -> dataplane)"
CUR_TAG[other]=web
fleet_wait_realized 10 >/dev/null
probe_table

if [ -z "$NO_GUEST" ]; then
  bold "A tag change in libvirt metadata: the real guest becomes app=other"
  echo "\$ virsh metadata $FLEET_GUEST_NAME https://dfw.dev/xmlns/firewall/1 --key dfw --live --set '<firewall><tag scope=\"app\" value=\"other\"/>...</firewall>'"
  fleet_guest_set_tags app=other
  sleep 1
  fleet_wait_realized 10 >/dev/null
  CUR_TAG[guest]=other
  ctl vm get "$FLEET_GUEST_NAME" | head -12
  probe_table
fi

bold "A VM no host of ours enforces for: dfw-vmagent inside it, nftables in its own kernel"
echo "\"ga\" is on the same bridge but never steered through the dataplane (as a VM in"
echo "another cloud would be); \"ext\" is a plain machine with no agent at all."
fleet_plain_add ext 198.18.0.40 >/dev/null 2>&1
fleet_gagent_add ga 198.18.0.31 d1f00000-0000-4000-8000-000000000031 >/dev/null 2>&1
echo "\$ dfwctl enroll create --vm d1f00000-0000-4000-8000-000000000031   (a one-time token)"
echo "\$ dfw-vmagent --controller ... --join-token-file ... --ca-bundle ...   (in the VM)"
fleet_gagent_start ga && fleet_gagent_wait_realized ga 30 >/dev/null
echo "\$ dfwctl vm tag d1f00000-0000-4000-8000-000000000031 app=db   (a guest cannot tag itself)"
fleet_dfwctl vm tag d1f00000-0000-4000-8000-000000000031 app=db >/dev/null
fleet_gagent_wait_realized ga 20 >/dev/null
fleet_wait_realized 20 >/dev/null
ctl vm list
CUR_TAG[ga]=db CUR_TAG[ext]=none
PROBES=("web ga tcp 5432" "web ga tcp 80" "ext ga tcp 5432" "other ga tcp 5432" "ga web tcp 5432")
probe_table
echo "(web -> ga passes the dataplane on web's side and nftables on ga's; ext -> ga is"
echo " refused by ga's own rules)"
echo "\$ dfw-vmagent status    (in ga)"
sleep 1.2
fleet_gagent_status ga
echo "\$ nft list chain inet dfw in_1    (in ga)"
fleet_gagent_nft ga list chain inet dfw in_1 | grep -v '^$' | head -14

bold "Realization: every change acknowledged by the host, with its time to realize"
ctl realization
ctl host list
bold "The change log: every change with who made it (the caller's SPIFFE ID)"
echo "\$ dfwctl changes | tail -8"; fleet_dfwctl changes | sed -n '1p'; fleet_dfwctl changes | tail -8
bold "Dataplane counters (dfw-dpctl): rule hits and every drop with its reason"
echo "\$ dfw-dpctl counters"; sb_dpctl counters
bold "Flow records (allowed, denied, ended), the last 14 of $SB_DP_FLOWS"
names=()
for n in "${FLEET_VMS[@]}"; do names+=("${FLEET_IFID[$n]}=$n"); done
tail -14 "$SB_DP_FLOWS" | python3 -c '
import json, sys
names = dict(a.split("=", 1) for a in sys.argv[1:])
proto = {1: "icmp", 6: "tcp", 17: "udp"}
print("%-8s %-6s %-4s %-5s %-22s %-22s %-5s %-13s %s" % ("KIND", "VNIC", "DIR", "PROTO",
      "SRC", "DST", "RULE", "REASON", "PKTS"))
for line in sys.stdin:
    r = json.loads(line)
    print("%-8s %-6s %-4s %-5s %-22s %-22s %-5s %-13s %s" % (r["kind"],
          names.get(r["vnic"], r["vnic"][:6]), r["direction"], proto.get(r["proto"], r["proto"]),
          "%s:%s" % (r["src"], r["sport"]), "%s:%s" % (r["dst"], r["dport"]), r["rule"],
          r["reason"], r["packets"]))
' "${names[@]}"

if [ "$KEEP" = 1 ]; then
  bold "Staying up (Ctrl-C to clean up). Try:"
  echo "  DFW_CONFIG_DIR=$FLEET_DFWCTL_CONFIG $FLEET_DFWCTL --server https://$FLEET_HTTP vm list"
  echo "  $SB_DPCTL_BIN --api $SB_DP_API connections"
  echo "  ip netns exec ${SB_VM_NS[web]} python3 scripts/lib/probe.py tcp ${FLEET_IP[db]} 5432"
  while true; do sleep 3600; done
fi
bold "Done."
