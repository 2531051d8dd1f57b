# shellcheck shell=bash
# shellcheck disable=SC2034  # HV_* variables are for the callers
# Several hypervisors on this machine against one controller, for the fleet
# end-to-end test: each host is a sandbox of its own (sandbox.sh: hugepages,
# OVS-DPDK in its own namespace, dfw-dataplane on its vhost-user port), a
# private libvirtd (unprivileged, serving libvirt's test driver, so VMs can
# be created, destroyed and migrated while the agent watches) and
# dfw-hostagent enrolled with its own join token. The bridges are joined by
# a provider network: one L2 segment (a Linux bridge in the namespace
# $HV_UNDERLAY_NS), one uplink port per bridge (no iface-id: not a vNIC).
#
#   . scripts/lib/hosts.sh
#   hv_init BUILD_DIR WORK_DIR; trap hv_cleanup EXIT
#   hv_start h1 h2 h3                      # controller, underlay, the hosts
#   hv_vm_add h1 web 198.18.0.11 app=web   # a namespace VM on h1
#   hv_probe web db tcp 5432               # 0 = reached, 1 = blocked
#   hv_vm_move web h1 h2                   # live migration (see there)
#
# VMs are namespaces (sandbox.sh sb_ns_vm) on a veth port of their host's
# bridge, described to that host's libvirtd as a domain (MAC, interface id,
# tags and addresses in the project's metadata). Each serves TCP 5432 and 80
# and UDP 5432 (probe.py serve).
#
# Functions: hv_init, hv_cleanup, hv_start HOST..., hv_host_add HOST,
# hv_agent_start HOST, hv_agent_kill9 HOST, hv_virsh HOST ARGS...,
# hv_vm_add HOST NAME IP TAG..., hv_vm_exec NAME CMD..., hv_probe FROM TO
# PROTO [PORT], hv_vm_move NAME FROM TO, hv_wait_realized [TIMEOUT_S],
# hv_status_field FIELD. Also fleet.sh's fleet_dfwctl and the controller's.

HV_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=fleet.sh
. "$HV_LIB_DIR/fleet.sh"

_hv_log() { echo "hosts: $*" >&2; }

hv_init() {
  fleet_init "$1" "$2" || return 1
  SB_CTX_DIR=$FLEET_DIR/contexts
  mkdir -p "$SB_CTX_DIR"
  HV_HOSTS=()
  declare -gA HV_VM_HOST=() HV_VM_NS=() HV_VM_IP=() HV_VM_MAC=() HV_VM_UUID=() HV_VM_IFID=()
  declare -gA HV_VM_TAGS=() HV_HOST_ID=()
  HV_UNDERLAY_NS=
  # libvirtd runs as nobody: its directories must be reachable by it.
  HV_LV_BASE=$(mktemp -d /tmp/dfw-libvirt.XXXXXX) || return 1
  chmod 0755 "$HV_LV_BASE"
  # Three OVS-DPDK and three dataplanes on two cores: idle PMDs sleep.
  : "${SB_PMD_MAXSLEEP:=1000}"
}

hv_cleanup() {
  local rc=$?
  fleet_controller_stop 2>/dev/null
  sb_cleanup
  rm -rf "$HV_LV_BASE"
  return $rc
}

# --- the provider network ------------------------------------------------

_hv_underlay() {
  HV_UNDERLAY_NS=sb$(printf '%x' "$$")-ul
  ip netns add "$HV_UNDERLAY_NS" || return 1
  SB_CLEANUP+=("ip netns del $HV_UNDERLAY_NS")
  ip -n "$HV_UNDERLAY_NS" link add br0 type bridge || return 1
  ip -n "$HV_UNDERLAY_NS" link set br0 up
}

# --- a host --------------------------------------------------------------

_hv_libvirtd_start() {
  local d=$HV_LV_BASE/$SB_CTX i
  mkdir -p "$d/run" "$d/home" "$d/cfg" || return 1
  cat >"$d/cfg/libvirtd.conf" <<EOF
unix_sock_dir = "$d/run"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
EOF
  chown -R nobody:nogroup "$d"
  setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$d/home" \
    XDG_RUNTIME_DIR="$d/run" XDG_CONFIG_HOME="$d/cfg" XDG_CACHE_HOME="$d/home" \
    XDG_DATA_HOME="$d/home" libvirtd --config "$d/cfg/libvirtd.conf" >"$SB_DIR/libvirtd.log" 2>&1 &
  SB_HV_LV_PID=$!
  sb_on_cleanup '_sb_stop_pid $SB_HV_LV_PID 5'
  SB_HV_LV_URI="test+unix:///default?socket=$d/run/libvirt-sock"
  for ((i = 0; i < 100; i++)); do
    [ -S "$d/run/libvirt-sock" ] && break
    sleep 0.1
  done
  # The test driver's state lives while a connection holds it: this one
  # holds it for the host's lifetime (virsh calls and the agent come and go).
  virsh -c "$SB_HV_LV_URI" event --all --loop >/dev/null 2>&1 &
  SB_HV_LV_HOLD=$!
  sb_on_cleanup '_sb_stop_pid $SB_HV_LV_HOLD 2'
  for ((i = 0; i < 50; i++)); do
    virsh -c "$SB_HV_LV_URI" list --name >/dev/null 2>&1 && break
    sleep 0.1
  done
  # The driver's sample domain is not a VM of ours. Until the holding
  # connection above is open, each virsh call gets a fresh driver state (the
  # sample running again): destroy and look again until it stays destroyed.
  local listed
  for ((i = 0; i < 50; i++)); do
    virsh -c "$SB_HV_LV_URI" destroy test >/dev/null 2>&1
    if listed=$(virsh -c "$SB_HV_LV_URI" list --name 2>/dev/null) &&
      [ -z "$(printf '%s' "$listed" | tr -d '[:space:]')" ]; then
      return 0
    fi
    sleep 0.1
  done
  _hv_log "$SB_CTX: libvirtd (test driver) not usable; see $SB_DIR/libvirtd.log"
  return 1
}

hv_virsh() {
  sb_ctx_use "$1" || return 1
  shift
  virsh -q -c "$SB_HV_LV_URI" "$@"
}

hv_agent_start() {
  sb_ctx_use "$1" || return 1
  local svid=$SB_DIR/agent-svid
  fleet_enroll_args "$SB_HV_HOST_ID" "$SB_DIR" "$svid" || return 1
  echo "--- start $(date +%T.%N)" >>"$SB_DIR/agent.log"
  "$FLEET_AGENT" --dataplane "$SB_DP_API" --ovsdb "$SB_DB_SOCK" --ovs-rundir "$SB_OVS_RUN" \
    --bridge "$SB_BRIDGE" --firewall-port "$SB_FW_PORT" --firewall-ports "$SB_DP_PORTS" --libvirt "$SB_HV_LV_URI" \
    --controller "$FLEET_GRPC" --host-id "$SB_HV_HOST_ID" --hostname "$SB_CTX" \
    --cert-dir "$svid" "${FLEET_ENROLL[@]}" --resync-ms 2000 >>"$SB_DIR/agent.log" 2>&1 &
  SB_HV_AGENT_PID=$!
}

hv_agent_kill9() {
  sb_ctx_use "$1" || return 1
  [ -n "${SB_HV_AGENT_PID:-}" ] || return 0
  kill -9 "$SB_HV_AGENT_PID" 2>/dev/null
  wait "$SB_HV_AGENT_PID" 2>/dev/null
  SB_HV_AGENT_PID=
}

# hv_host_add HOST: one hypervisor (the controller and the underlay first).
hv_host_add() {
  local name=$1
  sb_ctx_new "$name" "$FLEET_DIR/$name" "${#HV_HOSTS[@]}" || return 1
  HV_HOSTS+=("$name")
  sb_hugepages 400 || return 1
  sb_ovs_start || return 1
  sb_fw_port || return 1
  sb_dataplane_start || return 1
  sb_uplink "$HV_UNDERLAY_NS" || return 1
  _hv_libvirtd_start || return 1
  SB_HV_HOST_ID=dfw-$name-$SB_ID
  HV_HOST_ID[$name]=$SB_HV_HOST_ID
  SB_HV_AGENT_PID=
  sb_on_cleanup '_sb_stop_pid $SB_HV_AGENT_PID 10'
  hv_agent_start "$name"
}

# hv_start HOST...: the controller, the provider network and the hosts, each
# registered with the controller.
hv_start() {
  local h t0
  t0=$(date +%s%N)
  fleet_controller_start || return 1
  _hv_underlay || return 1
  for h in "$@"; do
    hv_host_add "$h" || return 1
    _hv_log "$h up (+$((($(date +%s%N) - t0) / 1000000)) ms)"
  done
  hv_wait_realized 60
}

# --- VMs -----------------------------------------------------------------

_hv_domain_xml() {  # NAME PORT: the domain as libvirt describes it
  local n=$1 t tags=""
  for t in ${HV_VM_TAGS[$n]}; do tags+="<dfw:tag scope=\"${t%%=*}\" value=\"${t#*=}\"/>"; done
  cat <<XML
<domain type="test">
  <name>$n</name>
  <uuid>${HV_VM_UUID[$n]}</uuid>
  <memory>8192</memory>
  <os><type>hvm</type></os>
  <metadata>
    <dfw:firewall xmlns:dfw="https://dfw.dev/xmlns/firewall/1">
      $tags
      <dfw:os>Linux network namespace</dfw:os>
      <dfw:interface mac="${HV_VM_MAC[$n]}"><dfw:address ip="${HV_VM_IP[$n]}"/></dfw:interface>
    </dfw:firewall>
  </metadata>
  <devices>
    <interface type="bridge">
      <mac address="${HV_VM_MAC[$n]}"/>
      <source bridge="$SB_BRIDGE"/>
      <virtualport type="openvswitch"><parameters interfaceid="${HV_VM_IFID[$n]}"/></virtualport>
      <target dev="$2"/>
    </interface>
  </devices>
</domain>
XML
}

# hv_vm_add HOST NAME IP TAG...: a namespace VM on HOST (IP in 198.18.0.0/24).
hv_vm_add() {
  local host=$1 n=$2 ip=$3 o
  shift 3
  o=$(printf '%02x' "${ip##*.}")
  HV_VM_IP[$n]=$ip
  HV_VM_MAC[$n]=52:54:00:18:00:$o
  HV_VM_UUID[$n]=d1f00000-0000-4000-8000-0000000000$o
  HV_VM_IFID[$n]=5e1f0000-0000-4000-8000-0000000000$o
  HV_VM_TAGS[$n]="$*"
  sb_ctx_use "$host" || return 1
  sb_ns_vm "$n" "${HV_VM_MAC[$n]}" "$ip" "${HV_VM_IFID[$n]}" "${HV_VM_UUID[$n]}" || return 1
  HV_VM_HOST[$n]=$host
  HV_VM_NS[$n]=${SB_VM_NS[$n]}
  sb_vm_bg "$n" python3 "$HV_LIB_DIR/probe.py" serve --name "$n" --tcp 5432 --tcp 80 \
    --udp 5432
  _hv_domain_xml "$n" "${SB_VM_PORT[$n]}" >"$SB_DIR/$n.xml"
  hv_virsh "$host" create "$SB_DIR/$n.xml" >/dev/null
}

hv_vm_exec() {
  local n=$1
  shift
  ip netns exec "${HV_VM_NS[$n]:?no VM $n}" "$@"
}

# fleet.sh's fleet_time_to_enforcement runs on these VMs.
fleet_vm_exec() { hv_vm_exec "$@"; }
fleet_vm_ip() { echo "${HV_VM_IP[$1]}"; }

# hv_probe FROM TO tcp|udp|icmp [PORT=5432]: 0 if TO answered FROM.
hv_probe() {
  local from=$1 to=$2 proto=$3 port=${4:-5432} ip=${HV_VM_IP[$2]}
  case $proto in
    tcp | udp) hv_vm_exec "$from" python3 "$HV_LIB_DIR/probe.py" "$proto" "$ip" "$port" \
      --timeout 1.5 ;;
    icmp) hv_vm_exec "$from" ping -c 1 -W 2 "$ip" >/dev/null 2>&1 ;;
  esac
}

# hv_vm_move NAME FROM TO: a live migration as libvirt does one. The
# destination gets the domain and the VM's port first (the VM not running
# there yet: its end of the new veth waits, down, as eth1 in the VM's
# namespace) and reports it: a claim. Once the controller holds the claim,
# the switchover: the source's port goes (the VM's eth0 with it: no more
# frames on the source), the new veth becomes eth0 with the same MAC and
# address, and the source's domain is destroyed. The source's agent exports
# the vNIC's connections as the port leaves and reports the VM gone; the
# controller hands the VM and its connections to the destination.
hv_vm_move() {
  local n=$1 from=$2 to=$3 ns=${HV_VM_NS[$1]} port peer i old_port
  sb_ctx_use "$to" || return 1
  port=${SB_ID}m${#SB_VM_NS[@]}
  peer=${SB_ID}n${#SB_VM_NS[@]}
  SB_VM_NS[$n]=$ns
  SB_VM_PORT[$n]=$port
  sb_on_cleanup "sb_vsctl --if-exists del-port $SB_BRIDGE $port; ip -n $SB_OVS_NS link del $port"
  ip -n "$SB_OVS_NS" link add "$port" type veth peer name "$peer" netns "$ns" || return 1
  ip -n "$ns" link set "$peer" name eth1 address "${HV_VM_MAC[$n]}" || return 1
  ip netns exec "$ns" ethtool -K eth1 tx off >/dev/null 2>&1
  ip netns exec "$SB_OVS_NS" ethtool -K "$port" tx off >/dev/null 2>&1
  ip -n "$SB_OVS_NS" link set "$port" up || return 1
  sb_vsctl add-port "$SB_BRIDGE" "$port" -- set Interface "$port" \
    "external_ids:iface-id=${HV_VM_IFID[$n]}" "external_ids:attached-mac=${HV_VM_MAC[$n]}" \
    "external_ids:vm-uuid=${HV_VM_UUID[$n]}" || return 1
  SB_VM_OFPORT[$n]=$(sb_wait_ofport "$port") || return 1
  _hv_domain_xml "$n" "$port" >"$SB_DIR/$n.xml"
  hv_virsh "$to" create "$SB_DIR/$n.xml" >/dev/null || return 1
  local claims0
  claims0=$(hv_status_field vm_claims_waiting)
  for ((i = 0; i < 100; i++)); do
    (($(hv_status_field vm_claims_waiting) > 0)) && break
    sleep 0.1
  done
  (($(hv_status_field vm_claims_waiting) > 0)) || {
    _hv_log "$n: the controller never saw $to's claim (claims before: $claims0)"
    return 1
  }
  # Switchover.
  sb_ctx_use "$from" || return 1
  old_port=${SB_VM_PORT[$n]}
  sb_vsctl --if-exists del-port "$SB_BRIDGE" "$old_port"
  ip -n "$SB_OVS_NS" link del "$old_port" 2>/dev/null
  unset "SB_VM_NS[$n]" "SB_VM_PORT[$n]"
  ip -n "$ns" link set eth1 name eth0 || return 1
  ip -n "$ns" addr add "${HV_VM_IP[$n]}/24" dev eth0 || return 1
  ip -n "$ns" link set eth0 up || return 1
  hv_virsh "$from" destroy "$n" >/dev/null
  HV_VM_HOST[$n]=$to
}

# --- the controller's view -----------------------------------------------

# One numeric field of GET /api/v1/status.
hv_status_field() {
  fleet_dfwctl -o json status 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; print(int(json.load(sys.stdin).get(sys.argv[1], 0)))' "$1"
}

# Waits until every host is connected and has acknowledged every revision
# the controller sent it.
hv_wait_realized() {
  local timeout=${1:-20} i got
  for ((i = 0; i < timeout * 10; i++)); do
    got=$(/usr/bin/python3 -c '
import json, sys
hosts, real = json.loads(sys.argv[1] or "{}"), json.loads(sys.argv[2] or "{}")
want = sys.argv[3].split()
conn = {h.get("id") for h in hosts.get("hosts", []) if h.get("connected")}
state = {h.get("host_id"): h.get("state") for h in real.get("hosts", [])}
bad = [w for w in want if w not in conn or state.get(w) != "REALIZATION_STATE_REALIZED"]
print("ok" if not bad else " ".join("%s:%s" % (b, state.get(b)) for b in bad))
' "$(fleet_dfwctl -o json host list 2>/dev/null)" "$(fleet_dfwctl -o json realization 2>/dev/null)" \
      "${HV_HOST_ID[*]}" 2>&1)
    [ "$got" = ok ] && return 0
    sleep 0.1
  done
  _hv_log "not realized within ${timeout}s: $got"
  return 1
}
