# shellcheck shell=bash
# Real test guests under libvirt + QEMU/TCG with a vhost-user vNIC on OVS-DPDK.
# Source it:  . scripts/lib/guest.sh
#
# Functions (each returns non-zero on failure; messages go to stderr):
#   guest_libvirtd_ensure
#       If nothing answers on qemu:///system, starts virtlogd and libvirtd
#       daemonised by hand and remembers their pids; guest_libvirtd_stop stops
#       exactly those (and nothing it did not start), unless domains are still
#       defined on qemu:///system (someone else's): then it leaves them running.
#   guest_libvirtd_stop
#   guest_define_start NAME UUID MAC IFACE_ID IP_CIDR VHOST_SOCK CONSOLE_SOCK [TAG ...]
#       Builds the image if needed (scripts/guest/build-guest.sh $GUEST_IMAGE_DIR),
#       writes the domain XML ($GUEST_STATE_DIR/NAME/domain.xml), virsh define +
#       start. TAG is "scope=value" or "value". QEMU serves VHOST_SOCK
#       (mode='server'): add the OVS port (guest_ovs_add_port) BEFORE this, since
#       virsh start blocks until OVS (the vhost-user client) has connected; on
#       $GUEST_START_TIMEOUT the domain is destroyed and undefined.
#   guest_wait_ready CONSOLE_SOCK [TIMEOUT_S=60]
#       Waits until the guest's shell answers and /run/dfw-ready exists; prints
#       "ready <guest uptime s>".
#   guest_exec CONSOLE_SOCK CMD [--timeout S]      (scripts/guest/guest_exec.py)
#   guest_destroy NAME
#       virsh destroy + undefine, removes $GUEST_STATE_DIR/NAME and the sockets
#       recorded there. Quiet and successful if NAME does not exist.
#   guest_ovs_add_port BRIDGE PORT VHOST_SOCK IFACE_ID|- MAC UUID
#   guest_ovs_del_port BRIDGE PORT
#       ovs-vsctl via $GUEST_OVS_VSCTL (word-split), e.g.
#       GUEST_OVS_VSCTL="ovs-vsctl --db=unix:/tmp/x/db.sock".
#
# Variables (set before calling; defaults shown):
#   GUEST_VIRSH_URI=qemu:///system
#   GUEST_IMAGE_DIR=/var/tmp/dfw-guest-image   kernel + initramfs (cached)
#   GUEST_STATE_DIR=/run/dfw-guests            per-domain XML, console log
#   GUEST_MEMORY_MIB=256
#   GUEST_MEMORY_BACKING=memfd                 memfd | hugepages (memfd is tried
#                                              first; hugepages if memfd fails)
#   GUEST_CMDLINE_EXTRA=""                     e.g. "dfw.gw=198.18.0.1"
#   GUEST_VMAGENT=""                           a dfw-vmagent binary the image carries
#                                              (build-guest.sh --vmagent; use its own
#                                              GUEST_IMAGE_DIR)
#   GUEST_OVS_VSCTL=ovs-vsctl
#   GUEST_START_TIMEOUT=60                     seconds for virsh start (it blocks
#                                              until OVS connects to VHOST_SOCK)
#
# The domain: type qemu (TCG; KVM does not work on this machine kind), direct
# kernel boot, <features><acpi/>, QEMU as root:root through a per-domain
# <seclabel model='dac'> (no edit of /etc/libvirt/qemu.conf), shared memory
# (vhost-user needs it), <interface type='vhostuser'> with alias ua-net0 and
# the qemu:override vectors=0 (QEMU 7.2 under TCG crashes on vhost-user with
# MSI-X), ttyS0 on CONSOLE_SOCK (also logged to $GUEST_STATE_DIR/NAME/console.log),
# and <metadata> in https://dfw.dev/xmlns/firewall/1 (tags, interface id, address)
# as hostagent/include/dfw/hostagent/libvirt_inventory.h documents.

GUEST_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_SCRIPTS_DIR=$(cd "$GUEST_LIB_DIR/../guest" && pwd)
: "${GUEST_VIRSH_URI:=qemu:///system}"
: "${GUEST_IMAGE_DIR:=/var/tmp/dfw-guest-image}"
: "${GUEST_STATE_DIR:=/run/dfw-guests}"
: "${GUEST_MEMORY_MIB:=256}"
: "${GUEST_MEMORY_BACKING:=memfd}"
: "${GUEST_CMDLINE_EXTRA:=}"
: "${GUEST_OVS_VSCTL:=ovs-vsctl}"
: "${GUEST_START_TIMEOUT:=60}"
GUEST_STARTED_PIDS=${GUEST_STARTED_PIDS:-}   # "libvirtd:<pid> virtlogd:<pid>"

guest_virsh() { virsh -q -c "$GUEST_VIRSH_URI" "$@"; }

_guest_log() { echo "guest: $*" >&2; }

_guest_pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

_guest_pidfile_alive() {  # pidfile -> prints the pid if that process lives
  local p
  p=$(cat "$1" 2>/dev/null) || return 1
  _guest_pid_alive "$p" && echo "$p"
}

guest_libvirtd_ensure() {
  if virsh -q -c qemu:///system version >/dev/null 2>&1; then return 0; fi
  local p
  if ! _guest_pidfile_alive /run/virtlogd.pid >/dev/null; then
    virtlogd --daemon --pid-file /run/virtlogd.pid || { _guest_log "virtlogd failed to start"; return 1; }
    local i
    for i in $(seq 50); do p=$(_guest_pidfile_alive /run/virtlogd.pid) && break; sleep 0.1; done
    [ -n "$p" ] || { _guest_log "virtlogd did not write its pid"; return 1; }
    GUEST_STARTED_PIDS="$GUEST_STARTED_PIDS virtlogd:$p"
  fi
  # The default network must not start on the host's own namespace: libvirtd
  # would create virbr0 and iptables rules. Only the autostart link is removed
  # (an edit of system config, idempotent; Debian's package may create it).
  if [ -L /etc/libvirt/qemu/networks/autostart/default.xml ]; then
    rm -f /etc/libvirt/qemu/networks/autostart/default.xml
    _guest_log "disabled autostart of libvirt's default network"
  fi
  p=""
  if ! _guest_pidfile_alive /run/libvirtd.pid >/dev/null; then
    libvirtd --daemon --pid-file /run/libvirtd.pid || { _guest_log "libvirtd failed to start"; return 1; }
    for i in $(seq 50); do p=$(_guest_pidfile_alive /run/libvirtd.pid) && break; sleep 0.1; done
    [ -n "$p" ] || { _guest_log "libvirtd did not write its pid"; return 1; }
    GUEST_STARTED_PIDS="$GUEST_STARTED_PIDS libvirtd:$p"
  fi
  for i in $(seq 100); do
    virsh -q -c qemu:///system version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  _guest_log "libvirtd does not answer on qemu:///system"
  return 1
}

guest_libvirtd_stop() {
  local e name pid i left
  [ -n "${GUEST_STARTED_PIDS// /}" ] || return 0
  # Someone else's domains still run on it: leave libvirtd (and virtlogd) up.
  left=$(virsh -q -c qemu:///system list --all --name 2>/dev/null | grep -c .)
  if [ "${left:-0}" -gt 0 ]; then
    _guest_log "libvirtd left running: $left domain(s) still defined"
    GUEST_STARTED_PIDS=""
    return 0
  fi
  # libvirtd first (it talks to virtlogd), then virtlogd.
  for name in libvirtd virtlogd; do
    for e in $GUEST_STARTED_PIDS; do
      [ "${e%%:*}" = "$name" ] || continue
      pid=${e#*:}
      _guest_pid_alive "$pid" || continue
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do _guest_pid_alive "$pid" || break; sleep 0.1; done
      if _guest_pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
  done
  GUEST_STARTED_PIDS=""
}

_guest_xml_escape() {
  local s=$1
  s=${s//&/&amp;}; s=${s//</&lt;}; s=${s//>/&gt;}; s=${s//\"/&quot;}; s=${s//\'/&apos;}
  printf '%s' "$s"
}

# _guest_domain_xml NAME UUID MAC IFACE_ID IP_CIDR VHOST_SOCK CONSOLE_SOCK BACKING [TAG ...]
_guest_domain_xml() {
  local name=$1 uuid=$2 mac=$3 ifid=$4 ipc=$5 vhost=$6 con=$7 backing=$8
  shift 8
  local dir="$GUEST_STATE_DIR/$name" tags="" t mem
  for t in "$@"; do
    if [[ $t == *=* ]]; then
      tags+="      <dfw:tag scope=\"$(_guest_xml_escape "${t%%=*}")\" value=\"$(_guest_xml_escape "${t#*=}")\"/>"$'\n'
    else
      tags+="      <dfw:tag value=\"$(_guest_xml_escape "$t")\"/>"$'\n'
    fi
  done
  if [ "$backing" = hugepages ]; then
    mem="<hugepages/><access mode='shared'/>"
  else
    mem="<source type='memfd'/><access mode='shared'/>"
  fi
  cat <<EOF
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>$(_guest_xml_escape "$name")</name>
  <uuid>$uuid</uuid>
  <metadata>
    <dfw:firewall xmlns:dfw="https://dfw.dev/xmlns/firewall/1">
${tags}      <dfw:interface mac="$mac" id="$(_guest_xml_escape "$ifid")">
        <dfw:address ip="${ipc%/*}"/>
      </dfw:interface>
    </dfw:firewall>
  </metadata>
  <memory unit='MiB'>$GUEST_MEMORY_MIB</memory>
  <memoryBacking>$mem</memoryBacking>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$GUEST_IMAGE_DIR/vmlinuz</kernel>
    <initrd>$GUEST_IMAGE_DIR/initramfs.cpio.gz</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 dfw.ip=$ipc dfw.name=$(_guest_xml_escape "$name") $GUEST_CMDLINE_EXTRA</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <interface type='vhostuser'>
      <mac address='$mac'/>
      <source type='unix' path='$vhost' mode='server'/>
      <model type='virtio'/>
      <alias name='ua-net0'/>
    </interface>
    <serial type='unix'>
      <source mode='bind' path='$con'/>
      <log file='$dir/console.log' append='off'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
  <qemu:override>
    <qemu:device alias='ua-net0'>
      <qemu:frontend>
        <qemu:property name='vectors' type='unsigned' value='0'/>
      </qemu:frontend>
    </qemu:device>
  </qemu:override>
</domain>
EOF
}

guest_define_start() {
  if [ $# -lt 7 ]; then
    _guest_log "usage: guest_define_start NAME UUID MAC IFACE_ID IP_CIDR VHOST_SOCK CONSOLE_SOCK [TAG ...]"
    return 2
  fi
  local name=$1 uuid=$2 mac=$3 ifid=$4 ipc=$5 vhost=$6 con=$7
  shift 7
  "$GUEST_SCRIPTS_DIR/build-guest.sh" "$GUEST_IMAGE_DIR" ${GUEST_VMAGENT:+--vmagent "$GUEST_VMAGENT"} \
    >&2 || return 1
  local dir="$GUEST_STATE_DIR/$name" backing rc
  mkdir -p "$dir" "$(dirname "$vhost")" "$(dirname "$con")"
  printf '%s\n%s\n' "$vhost" "$con" > "$dir/sockets"
  for backing in "$GUEST_MEMORY_BACKING" hugepages; do
    _guest_domain_xml "$name" "$uuid" "$mac" "$ifid" "$ipc" "$vhost" "$con" "$backing" "$@" \
      > "$dir/domain.xml"
    guest_virsh define "$dir/domain.xml" >/dev/null || return 1
    rc=0
    timeout "$GUEST_START_TIMEOUT" virsh -q -c "$GUEST_VIRSH_URI" start "$name" \
      >/dev/null 2>"$dir/start.err" || rc=$?
    if [ "$rc" -eq 0 ]; then
      [ "$backing" = "$GUEST_MEMORY_BACKING" ] || _guest_log "$name: runs on $backing memory"
      return 0
    fi
    if [ "$rc" -eq 124 ]; then
      _guest_log "$name: virsh start did not return in ${GUEST_START_TIMEOUT}s" \
        "(QEMU waits for the vhost-user client: is the OVS port on $vhost there?)"
      break
    fi
    _guest_log "$name: start with $backing memory failed: $(cat "$dir/start.err")"
    [ "$backing" = hugepages ] && break
  done
  guest_virsh destroy "$name" >/dev/null 2>&1 || true
  guest_virsh undefine "$name" >/dev/null 2>&1 || true
  return 1
}

guest_exec() { "$GUEST_SCRIPTS_DIR/guest_exec.py" "$@"; }

guest_wait_ready() {
  local con=${1:?usage: guest_wait_ready CONSOLE_SOCK [TIMEOUT]} timeout=${2:-60} out end
  end=$((SECONDS + timeout))
  while [ $SECONDS -lt $end ]; do
    if out=$("$GUEST_SCRIPTS_DIR/guest_exec.py" "$con" 'cat /run/dfw-ready' --timeout 5 \
               --connect-timeout $((end - SECONDS > 1 ? end - SECONDS : 1)) 2>/dev/null) &&
       [[ $out == ready* ]]; then
      echo "$out"
      return 0
    fi
    sleep 0.5
  done
  _guest_log "guest on $con not ready after ${timeout}s"
  return 1
}

guest_destroy() {
  local name=${1:?usage: guest_destroy NAME} dir s
  dir="$GUEST_STATE_DIR/$name"
  if guest_virsh dominfo "$name" >/dev/null 2>&1; then
    guest_virsh destroy "$name" >/dev/null 2>&1 || true
    guest_virsh undefine "$name" >/dev/null 2>&1 || true
  fi
  if [ -f "$dir/sockets" ]; then
    while read -r s; do [ -S "$s" ] && rm -f "$s"; done < "$dir/sockets"
  fi
  rm -rf "$dir"
  return 0
}

guest_ovs_add_port() {
  if [ $# -ne 6 ]; then
    _guest_log "usage: guest_ovs_add_port BRIDGE PORT VHOST_SOCK IFACE_ID MAC UUID"
    return 2
  fi
  local br=$1 port=$2 vhost=$3 ifid=$4 mac=$5 uuid=$6
  if [ "$ifid" = - ]; then
    # Not a vNIC of this host (a VM with its own guest agent): never steered.
    # shellcheck disable=SC2086
    $GUEST_OVS_VSCTL add-port "$br" "$port" -- set Interface "$port" \
      type=dpdkvhostuserclient "options:vhost-server-path=$vhost"
    return
  fi
  # shellcheck disable=SC2086
  $GUEST_OVS_VSCTL add-port "$br" "$port" -- set Interface "$port" type=dpdkvhostuserclient \
    "options:vhost-server-path=$vhost" "external_ids:iface-id=$ifid" \
    "external_ids:attached-mac=$mac" "external_ids:vm-uuid=$uuid"
}

guest_ovs_del_port() {
  # shellcheck disable=SC2086
  $GUEST_OVS_VSCTL --if-exists del-port "${1:?bridge}" "${2:?port}"
}
