# shellcheck shell=bash
# The whole product on one hypervisor, for the end-to-end test and the demo:
# the controller (with its RocksDB store), the host's private OVS-DPDK,
# dfw-dataplane on its vhost-user port, dfw-hostagent, three namespace VMs
# described to libvirt by a test-driver file, and optionally a real guest
# under libvirt/QEMU (qemu:///system) on a vhost-user port.
#
#   . scripts/lib/fleet.sh
#   fleet_init BUILD_DIR WORK_DIR; trap fleet_cleanup EXIT
#     (BUILD_DIR: a build tree, or an installed prefix such as /usr: the
#     binaries are then PREFIX/sbin/dfw-* and PREFIX/bin/{dfwctl,dfw-dpctl})
#   FLEET_AGENT_WRAP (settable): a command prefix for dfw-hostagent, as
#     SB_DP_WRAP is for the dataplane (e.g. the privileges of its unit)
#   fleet_start [--no-guest]
#   fleet_probe web db tcp 5432     # 0 = reached, 1 = blocked
#
# VMs (name: kind ip tags):  web: ns 198.18.0.11 app=web
#   db: ns 198.18.0.12 app=db     other: ns 198.18.0.13 app=other
#   guest: real guest 198.18.0.21 app=web (tags in its libvirt metadata)
# Each VM serves TCP 5432 and 80 and UDP 5432 (namespaces: probe.py; the
# guest: its init's servers).
#
# Trust: everything runs with mutual TLS, as in production. fleet_start
# makes a CA for the trust domain dfw.test (dfwctl ca init: the CA and the
# controller's certificate in $FLEET_DIR/pki, an admin's for dfwctl in
# $FLEET_DIR/dfwctl); the host agent enrolls with a one-time join token
# (dfwctl enroll create --host) and keeps its certificate in
# $FLEET_DIR/agent-svid across restarts.
#
# Functions: fleet_init, fleet_start, fleet_cleanup, fleet_controller_start,
# fleet_controller_stop, fleet_agent_start, fleet_agent_stop, fleet_agent_kill9,
# fleet_dfwctl ARGS, fleet_probe FROM TO PROTO [PORT], fleet_wait_realized
# [TIMEOUT_S], fleet_revision, fleet_guest_set_tags TAG...,
# fleet_time_to_enforcement FROM TO PORT open|closed DFWCTL-ARGS...

FLEET_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${FLEET_AGENT_WRAP:=}"
# shellcheck source=sandbox.sh
. "$FLEET_LIB_DIR/sandbox.sh"
# shellcheck source=guest.sh
. "$FLEET_LIB_DIR/guest.sh"
# shellcheck source=vmagent.sh
. "$FLEET_LIB_DIR/vmagent.sh"

FLEET_VMS=(web db other)
declare -A FLEET_KIND=([web]=ns [db]=ns [other]=ns [guest]=guest)
declare -A FLEET_IP=([web]=198.18.0.11 [db]=198.18.0.12 [other]=198.18.0.13 [guest]=198.18.0.21)
declare -A FLEET_MAC=([web]=52:54:00:18:00:11 [db]=52:54:00:18:00:12 [other]=52:54:00:18:00:13
  [guest]=52:54:00:18:00:21)
declare -A FLEET_TAG=([web]=web [db]=db [other]=other [guest]=web)
declare -A FLEET_UUID=([web]=d1f00000-0000-4000-8000-000000000011
  [db]=d1f00000-0000-4000-8000-000000000012 [other]=d1f00000-0000-4000-8000-000000000013
  [guest]=d1f00000-0000-4000-8000-000000000021)
declare -A FLEET_IFID=([web]=5e1f0000-0000-4000-8000-000000000011
  [db]=5e1f0000-0000-4000-8000-000000000012 [other]=5e1f0000-0000-4000-8000-000000000013
  [guest]=5e1f0000-0000-4000-8000-000000000021)

_fleet_log() { echo "fleet: $*" >&2; }

fleet_init() {
  FLEET_BUILD=$(cd "$1" && pwd) || return 1
  FLEET_DIR=$2
  mkdir -p "$FLEET_DIR" || return 1
  FLEET_DIR=$(cd "$FLEET_DIR" && pwd)
  # A build tree (BUILD/<component>/NAME) or an installed one (/usr, or the
  # packages unpacked under a prefix: PREFIX/sbin or PREFIX/bin).
  local installed=0
  [ -x "$FLEET_BUILD/sbin/dfw-controller" ] && installed=1
  _fleet_bin() {  # NAME BUILD_SUBDIR INSTALL_SUBDIR
    if [ "$installed" = 1 ]; then echo "$FLEET_BUILD/$3/$1"; else echo "$FLEET_BUILD/$2/$1"; fi
  }
  FLEET_CONTROLLER=$(_fleet_bin dfw-controller controller sbin)
  FLEET_DFWCTL=$(_fleet_bin dfwctl controller bin)
  FLEET_AGENT=$(_fleet_bin dfw-hostagent hostagent sbin)
  FLEET_VMAGENT=$(_fleet_bin dfw-vmagent vmagent sbin)
  SB_DATAPLANE_BIN=$(_fleet_bin dfw-dataplane dataplane sbin)
  SB_DPCTL_BIN=$(_fleet_bin dfw-dpctl dataplane bin)
  local b
  for b in "$FLEET_CONTROLLER" "$FLEET_DFWCTL" "$FLEET_AGENT" "$SB_DATAPLANE_BIN" \
    "$SB_DPCTL_BIN"; do
    if [ ! -x "$b" ]; then
      _fleet_log "missing $b (build with scripts/build.sh)"
      return 1
    fi
  done
  sb_init "$FLEET_DIR/host" || return 1
  FLEET_HOST_ID=dfw-host-$SB_ID
  FLEET_CTL_PID= FLEET_AGENT_PID= FLEET_GRPC= FLEET_HTTP=
  FLEET_TRUST_DOMAIN=dfw.test
  FLEET_PKI=$FLEET_DIR/pki
  FLEET_DFWCTL_CONFIG=$FLEET_DIR/dfwctl
  FLEET_AGENT_SVID=$FLEET_DIR/agent-svid
  # The agent's GET /metrics (mutual TLS with its SVID): a free loopback port.
  FLEET_AGENT_METRICS=127.0.0.1:$(/usr/bin/python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
  FLEET_GUEST=0
  FLEET_CA_SANS=()  # extra addresses of the controller's certificate
  GUEST_STATE_DIR=$FLEET_DIR/guests
  declare -gA FLEET_GA_PID=() FLEET_GA_DIR=()
}

fleet_cleanup() {
  local rc=$?
  local n
  for n in "${!FLEET_GA_PID[@]}"; do _sb_stop_pid "${FLEET_GA_PID[$n]}" 5 2>/dev/null; done
  fleet_agent_stop 2>/dev/null
  if [ "$FLEET_GUEST" = 1 ]; then
    guest_destroy "$FLEET_GUEST_NAME" 2>/dev/null
    guest_libvirtd_stop 2>/dev/null
  fi
  fleet_controller_stop 2>/dev/null
  sb_cleanup
  return $rc
}

fleet_dfwctl() {
  DFW_CONFIG_DIR=$FLEET_DFWCTL_CONFIG "$FLEET_DFWCTL" --server "https://$FLEET_HTTP" "$@"
}

# GET /metrics of the host agent as the fleet's admin would scrape it: the
# CA bundle and the host id as the server's name (a standard TLS client, no
# SPIFFE check), the admin's certificate as the client's. --anonymous: no
# client certificate. Prints the body; fails on a TLS or HTTP error.
fleet_agent_metrics() {
  local cert=1
  [ "${1:-}" = --anonymous ] && cert=0
  /usr/bin/python3 - "$FLEET_AGENT_METRICS" "$FLEET_HOST_ID" "$FLEET_PKI/ca/ca.pem" \
    "$FLEET_DFWCTL_CONFIG" "$cert" <<'PY'
import http.client, ssl, sys
addr, name, ca, cfg, cert = sys.argv[1:]
host, port = addr.rsplit(":", 1)
ctx = ssl.create_default_context(cafile=ca)
if cert == "1":
    ctx.load_cert_chain(cfg + "/svid.pem", cfg + "/svid_key.pem")
conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=5)
conn.sock = ctx.wrap_socket(__import__("socket").create_connection((host, int(port)), 5),
                            server_hostname=name)
conn.request("GET", "/metrics")
r = conn.getresponse()
body = r.read().decode()
if r.status != 200:
    print(f"HTTP {r.status}: {body.strip()[:200]}", file=sys.stderr)
    sys.exit(1)
print(body, end="")
PY
}

# --- trust ---------------------------------------------------------------

# The CA, the controller's certificate and the admin's (once per fleet).
fleet_ca_init() {
  [ -f "$FLEET_PKI/ca/ca.pem" ] && return 0
  local sans=() a
  for a in "${FLEET_CA_SANS[@]}"; do sans+=(--san "$a"); done
  DFW_CONFIG_DIR=$FLEET_DFWCTL_CONFIG "$FLEET_DFWCTL" ca init --pki-dir "$FLEET_PKI" \
    --trust-domain "$FLEET_TRUST_DOMAIN" --admin fleet-admin "${sans[@]}" \
    >>"$FLEET_DIR/pki.log" 2>&1 || {
    _fleet_log "dfwctl ca init failed; see $FLEET_DIR/pki.log"
    tail -3 "$FLEET_DIR/pki.log" >&2
    return 1
  }
}

# A one-time join token for host $1, written to file $2.
fleet_join_token() {
  fleet_dfwctl -o json enroll create --host "$1" |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' >"$2.tmp" &&
    [ -s "$2.tmp" ] && mv "$2.tmp" "$2"
}

# --- controller ----------------------------------------------------------

fleet_controller_start() {
  local grpc=${FLEET_GRPC:-127.0.0.1:0} http=${FLEET_HTTP:-127.0.0.1:0} i
  fleet_ca_init || return 1
  rm -f "$FLEET_DIR/controller.ports"
  "$FLEET_CONTROLLER" --data-dir "$FLEET_DIR/controller-data" --grpc-listen "$grpc" \
    --http-listen "$http" --port-file "$FLEET_DIR/controller.ports" --pki-dir "$FLEET_PKI" \
    >>"$FLEET_DIR/controller.log" 2>&1 &
  FLEET_CTL_PID=$!
  for ((i = 0; i < 200; i++)); do
    if [ -s "$FLEET_DIR/controller.ports" ]; then
      FLEET_GRPC=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$FLEET_DIR/controller.ports")
      FLEET_HTTP=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$FLEET_DIR/controller.ports")
      return 0
    fi
    if ! kill -0 "$FLEET_CTL_PID" 2>/dev/null; then
      _fleet_log "dfw-controller exited; see $FLEET_DIR/controller.log"
      tail -5 "$FLEET_DIR/controller.log" >&2
      FLEET_CTL_PID=
      return 1
    fi
    sleep 0.1
  done
  _fleet_log "dfw-controller did not listen within 20 s"
  return 1
}

fleet_controller_stop() {
  _sb_stop_pid "$FLEET_CTL_PID" 10
  FLEET_CTL_PID=
}

# --- host agent ----------------------------------------------------------

# fleet_enroll_args HOST_ID DIR SVID_DIR: sets FLEET_ENROLL to a host
# agent's enrollment flags: none once SVID_DIR holds its certificate; at the
# first start a one-time join token (written to DIR/join-token; the
# controller must be up) and the CA bundle.
fleet_enroll_args() {
  FLEET_ENROLL=()
  [ -f "$3/svid.pem" ] && return 0
  fleet_join_token "$1" "$2/join-token" || {
    _fleet_log "cannot create a join token for $1"
    return 1
  }
  FLEET_ENROLL=(--join-token-file "$2/join-token" --ca-bundle "$FLEET_PKI/ca/ca.pem")
}

fleet_agent_start() {
  local uris=(--libvirt "test://$FLEET_DIR/namespace-vms.xml")
  [ "$FLEET_GUEST" = 1 ] && uris+=(--libvirt qemu:///system)
  fleet_enroll_args "$FLEET_HOST_ID" "$FLEET_DIR" "$FLEET_AGENT_SVID" || return 1
  echo "--- start $(date +%T.%N)" >>"$FLEET_DIR/agent.log"
  # shellcheck disable=SC2086  # FLEET_AGENT_WRAP: a command prefix, word-split
  $FLEET_AGENT_WRAP "$FLEET_AGENT" --dataplane "$SB_DP_API" --ovsdb "$SB_DB_SOCK" \
    --ovs-rundir "$SB_OVS_RUN" --bridge "$SB_BRIDGE" --firewall-port "$SB_FW_PORT" --firewall-ports "$SB_DP_PORTS" "${uris[@]}" \
    --controller "$FLEET_GRPC" --host-id "$FLEET_HOST_ID" --hostname "$(hostname)" \
    --cert-dir "$FLEET_AGENT_SVID" "${FLEET_ENROLL[@]}" \
    --metrics-listen "$FLEET_AGENT_METRICS" \
    --resync-ms 2000 >>"$FLEET_DIR/agent.log" 2>&1 &
  FLEET_AGENT_PID=$!
}

fleet_agent_stop() {
  _sb_stop_pid "$FLEET_AGENT_PID" 10
  FLEET_AGENT_PID=
}

fleet_agent_kill9() {
  [ -n "$FLEET_AGENT_PID" ] || return 0
  kill -9 "$FLEET_AGENT_PID" 2>/dev/null
  wait "$FLEET_AGENT_PID" 2>/dev/null
  FLEET_AGENT_PID=
}

# --- VMs -----------------------------------------------------------------

# The namespace VMs as libvirt's test driver describes them (format:
# tests/hostagent/data/namespace_vms.xml).
_fleet_write_libvirt_file() {
  local f=$FLEET_DIR/namespace-vms.xml n
  {
    echo "<node>"
    for n in "${FLEET_VMS[@]}"; do
      cat <<XML
  <domain type="test">
    <name>ns-$n</name>
    <uuid>${FLEET_UUID[$n]}</uuid>
    <memory>8192</memory>
    <os><type>hvm</type></os>
    <metadata>
      <dfw:firewall xmlns:dfw="https://dfw.dev/xmlns/firewall/1">
        <dfw:tag scope="app" value="${FLEET_TAG[$n]}"/>
        <dfw:os>Linux network namespace</dfw:os>
        <dfw:interface mac="${FLEET_MAC[$n]}">
          <dfw:address ip="${FLEET_IP[$n]}"/>
        </dfw:interface>
      </dfw:firewall>
    </metadata>
    <devices>
      <interface type="bridge">
        <mac address="${FLEET_MAC[$n]}"/>
        <source bridge="$SB_BRIDGE"/>
        <virtualport type="openvswitch">
          <parameters interfaceid="${FLEET_IFID[$n]}"/>
        </virtualport>
        <target dev="${SB_VM_PORT[$n]}"/>
      </interface>
    </devices>
  </domain>
XML
    done
    echo "</node>"
  } >"$f"
}

_fleet_guest_start() {
  local n=guest
  FLEET_GUEST_NAME=dfw-guest-$SB_ID
  FLEET_GUEST_SOCK=$SB_OVS_RUN/vhu-guest.sock
  FLEET_GUEST_CONSOLE=$FLEET_DIR/guest-console.sock
  guest_libvirtd_ensure || return 1
  FLEET_GUEST=1
  guest_ovs_add_port "$SB_BRIDGE" "vhu-$SB_ID" "$FLEET_GUEST_SOCK" "${FLEET_IFID[$n]}" \
    "${FLEET_MAC[$n]}" "${FLEET_UUID[$n]}" || return 1
  guest_define_start "$FLEET_GUEST_NAME" "${FLEET_UUID[$n]}" "${FLEET_MAC[$n]}" \
    "${FLEET_IFID[$n]}" "${FLEET_IP[$n]}/24" "$FLEET_GUEST_SOCK" "$FLEET_GUEST_CONSOLE" \
    "app=${FLEET_TAG[$n]}" || return 1
}

# Sets the guest's tags in its libvirt metadata (virsh metadata --live).
fleet_guest_set_tags() {
  local xml="<firewall>" t
  for t in "$@"; do
    if [[ $t == *=* ]]; then
      xml+="<tag scope=\"${t%%=*}\" value=\"${t#*=}\"/>"
    else
      xml+="<tag value=\"$t\"/>"
    fi
  done
  xml+="<interface mac=\"${FLEET_MAC[guest]}\"><address ip=\"${FLEET_IP[guest]}\"/></interface>"
  xml+="</firewall>"
  guest_virsh metadata "$FLEET_GUEST_NAME" https://dfw.dev/xmlns/firewall/1 --key dfw --live \
    --config --set "$xml" >/dev/null
}

# --- probes --------------------------------------------------------------

# fleet_probe FROM TO tcp|udp|icmp [PORT=5432]: 0 if TO answered FROM.
fleet_probe() {
  local from=$1 to=$2 proto=$3 port=${4:-5432} ip=${FLEET_IP[$2]}
  if [ "${FLEET_KIND[$from]}" = guest ]; then
    case $proto in
      tcp) guest_exec "$FLEET_GUEST_CONSOLE" \
        "echo | nc -w 2 $ip $port | grep -q hello" --timeout 10 >/dev/null 2>&1 ;;
      udp) guest_exec "$FLEET_GUEST_CONSOLE" "dfw-probe udp $ip $port probe 2" \
        --timeout 10 >/dev/null 2>&1 ;;
      icmp) guest_exec "$FLEET_GUEST_CONSOLE" "ping -c 1 -W 2 $ip" --timeout 10 \
        >/dev/null 2>&1 ;;
    esac
  else
    case $proto in
      tcp) sb_vm_exec "$from" python3 "$FLEET_LIB_DIR/probe.py" tcp "$ip" "$port" \
        --timeout 1.5 ;;
      udp) sb_vm_exec "$from" python3 "$FLEET_LIB_DIR/probe.py" udp "$ip" "$port" \
        --timeout 1.5 ;;
      icmp) sb_vm_exec "$from" ping -c 1 -W 2 "$ip" >/dev/null 2>&1 ;;
    esac
  fi
}

# A VM's command and address: hosts.sh redefines both for its VMs.
fleet_vm_exec() { sb_vm_exec "$@"; }
fleet_vm_ip() { echo "${FLEET_IP[$1]}"; }

# fleet_time_to_enforcement FROM TO PORT open|closed DFWCTL-ARGS...
# Runs `dfwctl DFWCTL-ARGS` and prints the milliseconds until FROM -> TO
# tcp/PORT shows the expected verdict ("never" after 10 s). A poller in FROM's
# namespace starts first, so its own start-up is not counted; the clock runs
# from just before dfwctl starts. Granularity: 20 ms between attempts; an
# attempt waits 100 ms for a SYN answer, so "closed" is seen that much late.
fleet_time_to_enforcement() {
  local from=$1 to=$2 port=$3 expect=$4 out=$FLEET_DIR/poll.out t p
  shift 4
  fleet_vm_exec "$from" python3 "$FLEET_LIB_DIR/probe.py" until-tcp "$(fleet_vm_ip "$to")" "$port" \
    --timeout 10 --expect "$expect" --epoch --connect-timeout 0.1 >"$out" &
  p=$!
  sleep 0.5
  t=$(date +%s%N)
  fleet_dfwctl "$@" >/dev/null
  wait "$p"
  if [ "$(cat "$out")" = never ]; then echo never; else echo $((($(cat "$out") - t) / 1000000)); fi
}

# --- realization ---------------------------------------------------------

# The controller's current revision.
fleet_revision() {
  fleet_dfwctl -o json status 2>/dev/null |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin).get("revision", 0)))'
}

# Waits until this host is connected and has acknowledged every revision the
# controller sent it (the controller's realization state REALIZED).
fleet_wait_realized() {
  local timeout=${1:-20} i got tries
  tries=$((timeout * 10))
  ((tries < 1)) && tries=1  # 0: check once
  for ((i = 0; i < tries; i++)); do
    got=$(python3 -c '
import json, sys
hosts, real = json.loads(sys.argv[1] or "{}"), json.loads(sys.argv[2] or "{}")
conn = any(h.get("id") == sys.argv[3] and h.get("connected") for h in hosts.get("hosts", []))
state = [h.get("state") for h in real.get("hosts", []) if h.get("host_id") == sys.argv[3]]
print("ok" if conn and state == ["REALIZATION_STATE_REALIZED"] else "%s %s" % (conn, state))
' "$(fleet_dfwctl -o json host list 2>/dev/null)" "$(fleet_dfwctl -o json realization 2>/dev/null)" \
      "$FLEET_HOST_ID" 2>&1)
    [ "$got" = ok ] && return 0
    ((i + 1 < tries)) && sleep 0.1
  done
  _fleet_log "host $FLEET_HOST_ID not realized within ${timeout}s (connected, state: $got)"
  return 1
}

# --- all of it -----------------------------------------------------------

fleet_start() {
  local want_guest=1 n t0
  [ "${1:-}" = --no-guest ] && want_guest=0
  t0=$(date +%s%N)
  _fleet_phase() { _fleet_log "$1 (+$((($(date +%s%N) - t0) / 1000000)) ms)"; }
  sb_hugepages || return 1
  sb_ovs_start || return 1
  sb_fw_port || return 1
  sb_dataplane_start || return 1
  _fleet_phase "OVS-DPDK and the dataplane up"
  fleet_controller_start || return 1
  for n in "${FLEET_VMS[@]}"; do
    sb_ns_vm "$n" "${FLEET_MAC[$n]}" "${FLEET_IP[$n]}" "${FLEET_IFID[$n]}" \
      "${FLEET_UUID[$n]}" || return 1
    sb_vm_bg "$n" python3 "$FLEET_LIB_DIR/probe.py" serve --name "$n" --tcp 5432 --tcp 80 \
      --udp 5432
  done
  _fleet_write_libvirt_file
  _fleet_phase "controller and namespace VMs up"
  if [ "$want_guest" = 1 ]; then
    FLEET_VMS+=(guest)
    _fleet_guest_start || return 1
    _fleet_phase "guest defined and started (libvirt)"
  fi
  fleet_agent_start || return 1
  # The host registers first, so the policy's realization covers it.
  fleet_wait_realized 30 || return 1
  _fleet_phase "host agent registered"
  fleet_dfwctl group apply -f "$SB_REPO_DIR/examples/web-db-groups.json" >/dev/null || return 1
  fleet_dfwctl policy apply -f "$SB_REPO_DIR/examples/web-db-policy.json" >/dev/null || return 1
  if [ "$want_guest" = 1 ]; then
    guest_wait_ready "$FLEET_GUEST_CONSOLE" 120 >/dev/null || return 1
    _fleet_phase "guest booted"
  fi
  fleet_wait_realized 30
}
