# shellcheck shell=bash
# shellcheck disable=SC2034  # SB_* variables are for the callers
# One hypervisor's wiring (DESIGN.md §4) for end-to-end tests and the demo:
# a private OVS-DPDK (ovsdb-server + ovs-vswitchd-dpdk) with bridge br-dfw,
# the firewall port fw0 (dpdkvhostuserclient), dfw-dataplane on it through
# net_virtio_user as the vhost-user server (server=1: OVS reconnects to it
# after an ovs-vswitchd restart), and namespace "VMs" on veth ports. Source it:
#
#   . scripts/lib/sandbox.sh
#   sb_init "$(mktemp -d)"; trap sb_cleanup EXIT
#   sb_hugepages; sb_ovs_start; sb_fw_port; sb_dataplane_start
#   sb_ns_vm web 52:54:00:0a:00:11 198.18.10.11 web-eth0 <uuid>
#
# Functions (non-zero on failure, messages on stderr):
#   sb_init DIR            work dir; SB_ID (unique, short: names, prefixes); the cleanup registry
#   sb_on_cleanup CMD...   registers one command (run by sb_cleanup, last registered first)
#   sb_cleanup             undoes everything in reverse order; idempotent; keeps $?
#   sb_hugepages [N=512]   ≥ N free 2 MiB hugepages (raises nr_hugepages, never lowers it),
#                          hugetlbfs on /dev/hugepages and a private one on DIR/huge
#                          (SB_HUGE_DIR, given to both DPDK processes as --huge-dir);
#                          restored on cleanup
#   sb_ovs_start           private ovsdb-server + ovs-vswitchd-dpdk under DIR/ovs/{run,db,log},
#                          ovs-vswitchd in its own network namespace $SB_OVS_NS (the VMs'
#                          host-side veth ends live there too);
#                          bridge br-dfw (netdev, OpenFlow10+13, fail-mode=secure: forwards
#                          nothing until flows are installed)
#   sb_ovs_restart_vswitchd  ovs-vswitchd alone; afterwards reinstall flows + no-flood (the
#                          dataplane stays: OVS reconnects to its vhost-user socket)
#   sb_vsctl ARGS...       ovs-vsctl on the private DB
#   sb_ofctl ARGS...       ovs-ofctl with OVS_RUNDIR of the private instance; -O OpenFlow13
#                          unless ARGS start with -O (mod-port no-flood needs -O OpenFlow10)
#   sb_appctl ARGS...      ovs-appctl to the private ovs-vswitchd
#   sb_fw_port             firewall port fw0 (dpdkvhostuserclient, options:vhost-server-path=
#                          $SB_FW_SOCK: the dataplane serves the socket, OVS connects and
#                          retries every second), and fw1.. with SB_DP_PORTS > 1; sets
#                          SB_FW_OFPORT (fw0's). Call it before
#                          sb_dataplane_start: the dataplane is ready only once OVS connected
#   sb_fw_no_flood         OFPPC_NO_FLOOD on fw0 (ovs-vswitchd keeps it in memory only)
#   sb_dataplane_start [BIN]  dfw-dataplane on fw0 (hugepages, virtio_user server=1 on
#                          $SB_FW_SOCK); waits for "ready" (its EAL init waits for OVS's
#                          first connection); the state dir DIR/dp-state survives restarts
#   sb_dataplane_stop      SIGTERM, waits (SIGKILL after 10 s)
#   sb_dataplane_kill9     SIGKILL
#   sb_dpctl ARGS...       dfw-dpctl --api $SB_DP_API
#   sb_ns_vm NAME MAC IP IFACE_ID VM_UUID
#                          netns VM: veth, host end on br-dfw with external_ids
#                          iface-id/attached-mac/vm-uuid; inside: eth0 with MAC and IP/24
#                          (198.18.0.0/15 only), IPv6 off, tx checksum offload off
#   sb_vm_exec NAME CMD... runs CMD in the VM's namespace
#   sb_vm_bg NAME CMD...   same, in the background; killed on cleanup; prints nothing
#   sb_wait_ping NAME IP [TIMEOUT_S=10]  pings from VM NAME until IP answers; prints the wait
#   sb_wait_ofport IFACE [TIMEOUT_S=20]  prints the ofport once ovs-vswitchd assigned it
#
# Variables set (read them, don't set them unless noted):
#   SB_DIR SB_ID
#   SB_OVS_RUN SB_OVS_DBDIR SB_OVS_LOG   private OVS dirs (vhost sockets, br-dfw.mgmt in SB_OVS_RUN)
#   SB_DB_SOCK                           the OVSDB unix socket; SB_DB=unix:$SB_DB_SOCK
#   SB_BRIDGE=br-dfw  SB_OF_TARGET=unix:$SB_OVS_RUN/br-dfw.mgmt
#   SB_VSCTL SB_OFCTL                    the wrappers as word-split strings (also GUEST_OVS_VSCTL)
#   SB_OVS_PREFIX SB_DP_PREFIX           DPDK --file-prefix of OVS and of the dataplane
#   SB_FW_PORT=fw0 SB_FW_SOCK=$SB_OVS_RUN/fw0.sock (dfw-hostagent's default) SB_FW_OFPORT
#   SB_DP_API SB_DP_SOCK SB_DP_STATE SB_DP_FLOWS SB_DP_LOG SB_DP_PID
#   SB_VM_NS[NAME] SB_VM_PORT[NAME] SB_VM_OFPORT[NAME] SB_VM_MAC[NAME] SB_VM_IP[NAME]
# Settable before the calls (defaults):
#   SB_OVS_VSWITCHD=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
#   SB_OVS_SOCKET_MEM=512  SB_PMD_CPU_MASK=0x2  SB_PMD_MAXSLEEP=1000 (µs; 0 = busy poll:
#   a whole core; 1000: ~4% of a core idle; 10000: ~1%, but slower RTT and after a
#   dataplane restart OVS may take seconds to read fw0 again)
#   SB_DATAPLANE_BIN=<repo>/build/dataplane/dfw-dataplane  SB_DPCTL_BIN=<same dir>/dfw-dpctl
#   SB_DP_LCORE=0  SB_DP_MEM=256  SB_DP_EXTRA_ARGS=""  (dataplane options before "--")
#   SB_DP_QUEUES=1  (fw0's vhost-user queues; with SB_DP_EXTRA_ARGS="--workers N",
#   SB_DP_QUEUES=N and N lcores in SB_DP_LCORE, e.g. 0,1)
#   SB_DP_PORTS=1  (firewall ports fw0..fwN-1, one per dataplane worker: the dataplane
#   gets --workers N --port-per-worker and a vdev per port, the host agent
#   --firewall-ports N; give N lcores in SB_DP_LCORE, e.g. 0,1)
#   SB_DP_EAL_EXTRA=""  (more EAL arguments, e.g. --iova-mode=va as dfw-dataplane.service)
#   SB_DP_WRAP=""  (a command prefix, word-split: e.g. setpriv dropping every
#   capability, to run the dataplane with the privileges of its systemd unit)

SB_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SB_REPO_DIR=$(cd "$SB_LIB_DIR/../.." && pwd)
: "${SB_OVS_VSWITCHD:=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk}"
: "${SB_OVS_SCHEMA:=/usr/share/openvswitch/vswitch.ovsschema}"
: "${SB_OVS_SOCKET_MEM:=512}"
: "${SB_PMD_CPU_MASK:=0x2}"
: "${SB_PMD_MAXSLEEP:=1000}"
: "${SB_DATAPLANE_BIN:=$SB_REPO_DIR/build/dataplane/dfw-dataplane}"
: "${SB_DP_LCORE:=0}"
: "${SB_DP_MEM:=256}"
: "${SB_DP_EXTRA_ARGS:=}"
: "${SB_DP_QUEUES:=1}"
: "${SB_DP_PORTS:=1}"
: "${SB_DP_EAL_EXTRA:=}"
: "${SB_DP_WRAP:=}"
SB_BRIDGE=br-dfw
SB_FW_PORT=fw0

_sb_log() { echo "sandbox: $*" >&2; }

sb_init() {
  if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    _sb_log "usage: sb_init DIR [ID_SUFFIX]"
    return 2
  fi
  mkdir -p "$1" || return 1
  SB_DIR=$(cd "$1" && pwd)
  # Short (veth names have 15 characters) and unique per sourcing shell
  # (and per sandbox of that shell: the suffix, one character or two).
  SB_ID=sb$(printf '%x' "$$")${2:-}
  # Several sandboxes in one shell (sb_ctx_new) share one cleanup registry.
  [ -n "${SB_CTX:-}" ] || SB_CLEANUP=()
  SB_DP_PID=
  SB_DP_STARTED=
  declare -gA SB_VM_NS=() SB_VM_PORT=() SB_VM_OFPORT=() SB_VM_MAC=() SB_VM_IP=()
  SB_DP_API=unix:$SB_DIR/dp.sock
  SB_DP_SOCK=$SB_DIR/dp.sock
  SB_DP_STATE=$SB_DIR/dp-state
  SB_DP_FLOWS=$SB_DIR/flows.jsonl
  SB_DP_LOG=$SB_DIR/dataplane.log
  SB_DP_PREFIX=${SB_ID}dp
  SB_OVS_PREFIX=${SB_ID}ovs
  SB_HUGE_DIR=/dev/hugepages  # sb_hugepages mounts DIR/huge, ours alone
  : "${SB_DPCTL_BIN:=$(dirname "$SB_DATAPLANE_BIN")/dfw-dpctl}"
}

# A command registered while a sandbox context is current (sb_ctx_use) runs
# in that context: its variables are loaded first.
sb_on_cleanup() { SB_CLEANUP+=("${SB_CTX:+sb_ctx_use $SB_CTX; }$*"); }

sb_cleanup() {
  local rc=$? i
  [ -n "${SB_CTX:-}" ] && _sb_ctx_save
  for ((i = ${#SB_CLEANUP[@]} - 1; i >= 0; i--)); do
    eval "${SB_CLEANUP[$i]}" >/dev/null 2>&1 || true
  done
  SB_CLEANUP=()
  return "$rc"
}

# --- several sandboxes (hypervisors) in one shell --------------------------
# Each sandbox's SB_* variables are a context, saved to SB_CTX_DIR/NAME and
# loaded back: sb_ctx_new NAME DIR ID_SUFFIX starts one (sb_init), sb_ctx_use
# NAME switches (saving the current one first). The settings below, the
# cleanup registry and the context bookkeeping are shared by all.
_SB_SHARED_VARS=" SB_CLEANUP SB_CTX SB_CTX_DIR SB_LIB_DIR SB_REPO_DIR SB_BRIDGE SB_FW_PORT
 SB_OVS_VSWITCHD SB_OVS_SCHEMA SB_OVS_SOCKET_MEM SB_PMD_CPU_MASK SB_PMD_MAXSLEEP
 SB_DATAPLANE_BIN SB_DPCTL_BIN SB_DP_LCORE SB_DP_MEM SB_DP_EXTRA_ARGS SB_DP_EAL_EXTRA SB_DP_WRAP
 SB_DP_QUEUES SB_DP_PORTS "

_sb_ctx_vars() {
  local v shared=" ${_SB_SHARED_VARS//$'\n'/ } "
  for v in $(compgen -v SB_); do
    [[ $shared == *" $v "* ]] || echo "$v"
  done
}

_sb_ctx_save() {
  # declare -p inside a function would make locals when sourced: -g.
  # shellcheck disable=SC2046
  declare -p $(_sb_ctx_vars) 2>/dev/null |
    sed -e 's/^declare -- /declare -g /' -e 's/^declare -\([a-zA-Z]*\) /declare -g\1 /' \
      >"$SB_CTX_DIR/$SB_CTX.ctx"
}

sb_ctx_use() {
  [ "${SB_CTX:-}" = "$1" ] && return 0
  [ -f "$SB_CTX_DIR/$1.ctx" ] || { _sb_log "no sandbox context $1"; return 1; }
  [ -n "${SB_CTX:-}" ] && _sb_ctx_save
  # shellcheck disable=SC2046
  unset $(_sb_ctx_vars)
  # shellcheck disable=SC1090
  . "$SB_CTX_DIR/$1.ctx"
  SB_CTX=$1
}

sb_ctx_new() {  # NAME DIR ID_SUFFIX
  : "${SB_CTX_DIR:=$(mktemp -d)}"
  if [ -n "${SB_CTX:-}" ]; then
    _sb_ctx_save
    # shellcheck disable=SC2046
    unset $(_sb_ctx_vars)
  fi
  declare -p SB_CLEANUP >/dev/null 2>&1 || SB_CLEANUP=()
  SB_CTX=$1
  sb_init "$2" "$3" || return 1
  _sb_ctx_save
}

# Removes what a DPDK process of --file-prefix $1 leaves behind once it ended.
_sb_dpdk_leftovers() {
  rm -f "$SB_HUGE_DIR/$1"map_* /dev/hugepages/"$1"map_* 2>/dev/null
  rm -rf "/var/run/dpdk/$1"
}

# Stops pid $1: SIGTERM, up to $2 s (default 10), then SIGKILL.
_sb_stop_pid() {
  local pid=$1 secs=${2:-10} i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

_sb_hugepages_restore() {  # FLOOR ADDED: gives back what we added, never below FLOOR
  local cur new
  cur=$(cat /proc/sys/vm/nr_hugepages)
  new=$((cur - $2))
  ((new < $1)) && new=$1
  echo "$new" >/proc/sys/vm/nr_hugepages
}

_sb_umount_if_unused() {  # DIR: only when no file is left in it (someone else's)
  [ -z "$(ls -A "$1" 2>/dev/null)" ] && umount "$1"
}

sb_hugepages() {
  # OVS takes SB_OVS_SOCKET_MEM (512 MiB), the dataplane SB_DP_MEM (256 MiB):
  # 384 pages; 512 leaves room.
  local want=${1:-512} free orig target
  if ! awk '$2 == "/dev/hugepages" && $3 == "hugetlbfs" {f = 1} END {exit !f}' /proc/mounts; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs none /dev/hugepages || { _sb_log "cannot mount hugetlbfs"; return 1; }
    sb_on_cleanup "_sb_umount_if_unused /dev/hugepages"
  fi
  # Our own mount: DPDK takes the first hugetlbfs in /proc/mounts unless told
  # (--huge-dir), which could be another engineer's private one.
  SB_HUGE_DIR=$SB_DIR/huge
  mkdir -p "$SB_HUGE_DIR"
  mount -t hugetlbfs -o pagesize=2M none "$SB_HUGE_DIR" || return 1
  sb_on_cleanup "umount -l $SB_HUGE_DIR"
  # Others may change nr_hugepages at the same time, and the kernel may find
  # fewer free 2 MiB blocks than asked: compact and try again a few times.
  local try added=0
  for ((try = 0; try < 25; try++)); do
    free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
    ((free >= want)) && break
    orig=$(cat /proc/sys/vm/nr_hugepages)
    target=$((orig + want - free))
    echo 1 >/proc/sys/vm/compact_memory 2>/dev/null
    echo "$target" >/proc/sys/vm/nr_hugepages
    added=$((added + $(cat /proc/sys/vm/nr_hugepages) - orig))
    sleep 0.2
  done
  ((added > 0)) && sb_on_cleanup "_sb_hugepages_restore 0 $added"
  free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)  # after the last raise
  if ((free < want)); then
    _sb_log "only $free free hugepages (want $want free; nr_hugepages $(cat /proc/sys/vm/nr_hugepages))"
    return 1
  fi
  return 0
}

sb_vsctl() { ovs-vsctl --timeout=30 --db="$SB_DB" "$@"; }
sb_ofctl() {
  if [[ ${1:-} == -O* ]]; then
    OVS_RUNDIR=$SB_OVS_RUN ovs-ofctl "$@"
  else
    OVS_RUNDIR=$SB_OVS_RUN ovs-ofctl -O OpenFlow13 "$@"
  fi
}
sb_appctl() { ovs-appctl -t "$SB_OVS_RUN/ovs-vswitchd.ctl" "$@"; }
sb_dpctl() { "$SB_DPCTL_BIN" --api "$SB_DP_API" "$@"; }

_sb_ovs_stop_vswitchd() {
  local pid
  pid=$(cat "$SB_OVS_RUN/ovs-vswitchd.pid" 2>/dev/null)
  timeout 10 ovs-appctl -t "$SB_OVS_RUN/ovs-vswitchd.ctl" exit --cleanup >/dev/null 2>&1
  _sb_stop_pid "$pid" 10
  _sb_dpdk_leftovers "$SB_OVS_PREFIX"
}

_sb_ovs_stop_ovsdb() {
  _sb_stop_pid "$(cat "$SB_OVS_RUN/ovsdb-server.pid" 2>/dev/null)" 5
}

_sb_vswitchd_launch() {
  OVS_RUNDIR=$SB_OVS_RUN OVS_LOGDIR=$SB_OVS_LOG OVS_DBDIR=$SB_OVS_DBDIR \
    ip netns exec "$SB_OVS_NS" "$SB_OVS_VSWITCHD" "$SB_DB" --pidfile="$SB_OVS_RUN/ovs-vswitchd.pid" \
    --unixctl="$SB_OVS_RUN/ovs-vswitchd.ctl" --log-file="$SB_OVS_LOG/ovs-vswitchd.log" -vconsole:off \
    --detach --no-chdir || { _sb_log "ovs-vswitchd failed; see $SB_OVS_LOG"; return 1; }
}

# Restarts ovs-vswitchd alone (the DB and its config stay). OpenFlow flows and
# no-flood are gone afterwards (fail-mode=secure: nothing is forwarded until
# they are reinstalled: dfw-hostagent does it on its next pass). The dataplane
# keeps running: fw0 is a dpdkvhostuserclient, so the new ovs-vswitchd connects
# to the dataplane's vhost-user socket again by itself.
sb_ovs_restart_vswitchd() {
  _sb_ovs_stop_vswitchd
  _sb_vswitchd_launch || return 1
  _sb_wait_socket "$SB_OVS_RUN/$SB_BRIDGE.mgmt"
}

sb_ovs_start() {
  SB_OVS_RUN=$SB_DIR/ovs/run
  SB_OVS_DBDIR=$SB_DIR/ovs/db
  SB_OVS_LOG=$SB_DIR/ovs/log
  SB_DB_SOCK=$SB_OVS_RUN/db.sock
  SB_DB=unix:$SB_DB_SOCK
  SB_OF_TARGET=unix:$SB_OVS_RUN/$SB_BRIDGE.mgmt
  SB_VSCTL="ovs-vsctl --timeout=30 --db=$SB_DB"
  SB_OFCTL="env OVS_RUNDIR=$SB_OVS_RUN ovs-ofctl -O OpenFlow13"
  GUEST_OVS_VSCTL=$SB_VSCTL
  export SB_DB SB_DB_SOCK SB_OF_TARGET SB_VSCTL SB_OFCTL SB_OVS_RUN GUEST_OVS_VSCTL
  mkdir -p "$SB_OVS_RUN" "$SB_OVS_DBDIR" "$SB_OVS_LOG" || return 1
  if [ ! -x "$SB_OVS_VSWITCHD" ]; then
    _sb_log "$SB_OVS_VSWITCHD missing (package openvswitch-switch-dpdk)"
    return 1
  fi
  ovsdb-tool create "$SB_OVS_DBDIR/conf.db" "$SB_OVS_SCHEMA" || return 1
  sb_on_cleanup _sb_ovs_stop_ovsdb
  ovsdb-server "$SB_OVS_DBDIR/conf.db" --remote="punix:$SB_DB_SOCK" \
    --pidfile="$SB_OVS_RUN/ovsdb-server.pid" --unixctl="$SB_OVS_RUN/ovsdb-server.ctl" \
    --log-file="$SB_OVS_LOG/ovsdb-server.log" -vconsole:off --detach --no-chdir || return 1
  sb_vsctl --no-wait init || return 1
  # One PMD thread, sleeping when idle (pmd-maxsleep); DPDK never touches PCI
  # devices; hugepage files under a prefix of ours.
  sb_vsctl --no-wait set Open_vSwitch . \
    other_config:dpdk-init=true \
    "other_config:dpdk-extra=--no-pci --file-prefix $SB_OVS_PREFIX --huge-dir $SB_HUGE_DIR" \
    "other_config:dpdk-socket-mem=$SB_OVS_SOCKET_MEM" \
    "other_config:dpdk-socket-limit=$SB_OVS_SOCKET_MEM" \
    "other_config:pmd-cpu-mask=$SB_PMD_CPU_MASK" \
    "other_config:pmd-maxsleep=$SB_PMD_MAXSLEEP" || return 1
  # ovs-vswitchd lives in a network namespace of its own: the tap devices of
  # the netdev datapath ("ovs-netdev", "br-dfw") and the VMs' host-side veth
  # ends then never meet another OVS's (or the host's) interfaces.
  SB_OVS_NS=$SB_ID-ovs
  ip netns add "$SB_OVS_NS" || return 1
  sb_on_cleanup "ip netns del $SB_OVS_NS"
  sb_on_cleanup _sb_ovs_stop_vswitchd
  _sb_vswitchd_launch || return 1
  local i
  for ((i = 0; i < 600; i++)); do
    [ "$(sb_vsctl get Open_vSwitch . dpdk_initialized 2>/dev/null)" = true ] && break
    sleep 0.1
  done
  if [ "$(sb_vsctl get Open_vSwitch . dpdk_initialized)" != true ]; then
    _sb_log "DPDK did not initialise in ovs-vswitchd; see $SB_OVS_LOG/ovs-vswitchd.log"
    return 1
  fi
  # fail-mode=secure: no NORMAL flow of OVS's own, ever. Until steering flows
  # are installed nothing is forwarded, so no VM is reachable unfirewalled.
  sb_vsctl add-br "$SB_BRIDGE" -- set Bridge "$SB_BRIDGE" datapath_type=netdev \
    protocols=OpenFlow10,OpenFlow13 fail-mode=secure \
    other_config:disable-in-band=true || return 1
  _sb_wait_socket "$SB_OVS_RUN/$SB_BRIDGE.mgmt"
}

_sb_wait_socket() {  # PATH: up to 10 s
  local i
  for ((i = 0; i < 100; i++)); do
    [ -S "$1" ] && return 0
    sleep 0.1
  done
  _sb_log "no socket $1 after 10 s"
  return 1
}

sb_wait_ofport() {
  local iface=${1:?iface} secs=${2:-20} i port
  for ((i = 0; i < secs * 10; i++)); do
    port=$(sb_vsctl get Interface "$iface" ofport 2>/dev/null)
    if [ -n "$port" ] && [ "$port" -gt 0 ] 2>/dev/null; then
      echo "$port"
      return 0
    fi
    sleep 0.1
  done
  _sb_log "no ofport for $iface after ${secs}s"
  return 1
}

# The firewall ports' names: fw0 (SB_FW_PORT), then fw1.. (SB_DP_PORTS > 1;
# dfw-hostagent --firewall-ports counts up the same way).
sb_fw_ports() {
  local k
  for ((k = 0; k < SB_DP_PORTS; k++)); do echo "${SB_FW_PORT%0}$k"; done
}

sb_fw_port() {
  local port
  SB_FW_SOCK=$SB_OVS_RUN/$SB_FW_PORT.sock
  # OVS is the vhost-user client: it (re)connects to the dataplane's socket,
  # also after either side restarted.
  for port in $(sb_fw_ports); do
    sb_on_cleanup "sb_vsctl --if-exists del-port $SB_BRIDGE $port"
    sb_vsctl add-port "$SB_BRIDGE" "$port" -- \
      set Interface "$port" type=dpdkvhostuserclient \
      "options:vhost-server-path=$SB_OVS_RUN/$port.sock" || return 1
  done
  SB_FW_OFPORT=$(sb_wait_ofport "$SB_FW_PORT")
}

sb_fw_no_flood() { sb_ofctl -O OpenFlow10 mod-port "$SB_BRIDGE" "$SB_FW_PORT" no-flood; }

sb_dataplane_start() {
  local bin=${1:-$SB_DATAPLANE_BIN} from i k port
  if [ ! -x "$bin" ]; then
    _sb_log "no dataplane binary $bin (ninja -C build dfw-dataplane)"
    return 1
  fi
  if [ -n "$SB_DP_PID" ] && kill -0 "$SB_DP_PID" 2>/dev/null; then
    _sb_log "dfw-dataplane already runs (pid $SB_DP_PID)"
    return 1
  fi
  if [ -z "$SB_DP_STARTED" ]; then
    SB_DP_STARTED=1
    sb_on_cleanup "sb_dataplane_stop; _sb_dpdk_leftovers $SB_DP_PREFIX"
  fi
  mkdir -p "$SB_DP_STATE"
  rm -f "$SB_DP_SOCK"
  # A stale $SB_FW_SOCK (a killed dataplane's) is removed by dfw-dataplane itself.
  : "${SB_FW_SOCK:=$SB_OVS_RUN/$SB_FW_PORT.sock}"
  local vdevs=(--vdev "net_virtio_user0,path=$SB_FW_SOCK,server=1,queues=$SB_DP_QUEUES")
  local ports_args=()
  if [ "$SB_DP_PORTS" -gt 1 ]; then
    vdevs=()
    k=0
    for port in $(sb_fw_ports); do
      vdevs+=(--vdev "net_virtio_user$k,path=$SB_OVS_RUN/$port.sock,server=1,queues=1")
      k=$((k + 1))
    done
    ports_args=(--workers "$SB_DP_PORTS" --port-per-worker)
  fi
  touch "$SB_DP_LOG"
  from=$(($(stat -c %s "$SB_DP_LOG") + 1))
  # shellcheck disable=SC2086
  $SB_DP_WRAP "$bin" --api "$SB_DP_API" --state-dir "$SB_DP_STATE" --flow-log "$SB_DP_FLOWS" \
    "${ports_args[@]}" $SB_DP_EXTRA_ARGS -- -l "$SB_DP_LCORE" --no-pci \
    --file-prefix "$SB_DP_PREFIX" --huge-dir "$SB_HUGE_DIR" -m "$SB_DP_MEM" \
    --single-file-segments $SB_DP_EAL_EXTRA "${vdevs[@]}" >>"$SB_DP_LOG" 2>&1 &
  SB_DP_PID=$!
  for ((i = 0; i < 300; i++)); do
    if tail -c "+$from" "$SB_DP_LOG" | grep -q 'dfw-dataplane: ready'; then
      _sb_log "$(tail -c "+$from" "$SB_DP_LOG" | grep -m1 'dfw-dataplane: ready')"
      return 0
    fi
    if ! kill -0 "$SB_DP_PID" 2>/dev/null; then
      _sb_log "dfw-dataplane exited:"
      tail -c "+$from" "$SB_DP_LOG" >&2
      SB_DP_PID=
      return 1
    fi
    sleep 0.1
  done
  _sb_log "dfw-dataplane not ready after 30 s; see $SB_DP_LOG"
  return 1
}

sb_dataplane_stop() {
  _sb_stop_pid "$SB_DP_PID" 10
  SB_DP_PID=
  _sb_dpdk_leftovers "$SB_DP_PREFIX"
}

sb_dataplane_kill9() {
  [ -n "$SB_DP_PID" ] || return 0
  kill -KILL "$SB_DP_PID" 2>/dev/null
  wait "$SB_DP_PID" 2>/dev/null
  SB_DP_PID=
  _sb_dpdk_leftovers "$SB_DP_PREFIX"
  return 0
}

_sb_ns_vm_remove() {  # NS PORT
  sb_vsctl --if-exists del-port "$SB_BRIDGE" "$2"
  ip -n "$SB_OVS_NS" link del "$2" 2>/dev/null
  ip netns pids "$1" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
  ip netns del "$1"
}

sb_ns_vm() {
  if [ $# -ne 5 ]; then
    _sb_log "usage: sb_ns_vm NAME MAC IP IFACE_ID|- VM_UUID|-"
    return 2
  fi
  local name=$1 mac=$2 ip=$3 ifid=$4 uuid=$5 ns port peer
  case $ip in
    198.18.* | 198.19.*) ;;
    *)
      _sb_log "sb_ns_vm: $ip is outside 198.18.0.0/15"
      return 2
      ;;
  esac
  if [ -n "${SB_VM_NS[$name]:-}" ]; then
    _sb_log "sb_ns_vm: $name exists"
    return 2
  fi
  ns=$SB_ID-$name
  port=${SB_ID}p${#SB_VM_NS[@]}
  peer=${SB_ID}q${#SB_VM_NS[@]}
  SB_VM_NS[$name]=$ns
  SB_VM_PORT[$name]=$port
  SB_VM_MAC[$name]=$mac
  SB_VM_IP[$name]=$ip
  ip netns add "$ns" || return 1
  sb_on_cleanup "_sb_ns_vm_remove $ns $port"
  # The host end lives with ovs-vswitchd (sb_ovs_start), the VM end in $ns.
  ip -n "$SB_OVS_NS" link add "$port" type veth peer name "$peer" netns "$ns" || return 1
  ip -n "$ns" link set "$peer" name eth0 address "$mac" || return 1
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
    net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.eth0.disable_ipv6=1
  ip -n "$ns" addr add "$ip/24" dev eth0 || return 1
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up || return 1
  # OVS's userspace datapath sends frames as they are: without this the
  # kernel leaves TCP/UDP checksums to an offload that never happens.
  if command -v ethtool >/dev/null; then
    ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null 2>&1
    ip netns exec "$SB_OVS_NS" ethtool -K "$port" tx off >/dev/null 2>&1
  else
    _sb_log "no ethtool: TCP from $name may carry bad checksums (apt-get install ethtool)"
  fi
  ip -n "$SB_OVS_NS" link set "$port" up || return 1
  if [ "$ifid" = - ]; then
    # Not a vNIC of this host (a machine beyond the uplink, a VM with its
    # own guest agent): no iface-id and no VM ids, so the agent treats it
    # as an uplink: never steered, what it sends still crosses the
    # receiving vNIC's ingress rules.
    sb_vsctl add-port "$SB_BRIDGE" "$port" || return 1
  else
    sb_vsctl add-port "$SB_BRIDGE" "$port" -- set Interface "$port" \
      "external_ids:iface-id=$ifid" "external_ids:attached-mac=$mac" \
      "external_ids:vm-uuid=$uuid" || return 1
  fi
  SB_VM_OFPORT[$name]=$(sb_wait_ofport "$port") || return 1
}

# sb_uplink UNDERLAY_NS [UNDERLAY_BRIDGE=br0]: the bridge's uplink to a
# provider network: a veth whose host end is a plain port of br-dfw (no
# iface-id: not a vNIC) and whose other end is a port of the Linux bridge in
# UNDERLAY_NS (which the caller made). Sets SB_UPLINK_PORT, SB_UPLINK_OFPORT.
sb_uplink() {
  local ul=${1:?underlay namespace} br=${2:-br0} peer
  SB_UPLINK_PORT=${SB_ID}up
  peer=${SB_ID}ul
  sb_on_cleanup "sb_vsctl --if-exists del-port $SB_BRIDGE $SB_UPLINK_PORT; ip -n $SB_OVS_NS link del $SB_UPLINK_PORT"
  ip -n "$SB_OVS_NS" link add "$SB_UPLINK_PORT" type veth peer name "$peer" netns "$ul" || return 1
  ip -n "$ul" link set "$peer" master "$br" up || return 1
  ip -n "$SB_OVS_NS" link set "$SB_UPLINK_PORT" up || return 1
  sb_vsctl add-port "$SB_BRIDGE" "$SB_UPLINK_PORT" || return 1
  SB_UPLINK_OFPORT=$(sb_wait_ofport "$SB_UPLINK_PORT")
}

sb_vm_exec() {
  local name=${1:?name}
  shift
  ip netns exec "${SB_VM_NS[$name]:?no VM $name}" "$@"
}

sb_wait_ping() {
  local name=${1:?name} ip=${2:?ip} secs=${3:-10} start now
  start=$(date +%s%N)
  while :; do
    sb_vm_exec "$name" ping -c 1 -W 0.3 "$ip" >/dev/null 2>&1 && break
    now=$(date +%s%N)
    if (((now - start) / 1000000000 >= secs)); then
      _sb_log "$name: no answer from $ip within ${secs}s"
      return 1
    fi
  done
  now=$(date +%s%N)
  echo "$(((now - start) / 1000000)) ms"
}

sb_vm_bg() {
  local name=${1:?name}
  shift
  ip netns exec "${SB_VM_NS[$name]:?no VM $name}" "$@" &
  sb_on_cleanup "_sb_stop_pid $! 2"
}
