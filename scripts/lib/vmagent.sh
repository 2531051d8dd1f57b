# shellcheck shell=bash
# Guest-agent VMs for the fleet (sourced by fleet.sh): a namespace VM that
# no host of ours enforces for. Its port on the bridge has no iface-id, so
# it is never steered through the dataplane (like a machine beyond the
# uplink); dfw-vmagent runs inside its namespace, enrolls as
# spiffe://dfw.test/vm/<uuid> and enforces with nftables there.
#
#   fleet_gagent_add NAME IP UUID      the namespace, its port, probe servers
#   fleet_gagent_start NAME [ARGS...]  dfw-vmagent in it (enrolls the first time)
#   fleet_gagent_kill9 NAME | fleet_gagent_stop NAME
#   fleet_gagent_nft NAME ARGS...      nft inside the VM
#   fleet_gagent_status NAME           dfw-vmagent status
#
# The controller listens on the host's loopback; the VM reaches it through
# scripts/lib/relay.py (TCP 127.0.0.1:7443 in the VM -> a unix socket ->
# the controller's gRPC port), so the sandbox adds no address outside its
# namespaces. Plain machines (no agent) come from fleet_plain_add NAME IP.

FLEET_GA_PORT=7443

fleet_plain_add() {
  local name=$1 ip=$2 mac
  mac=$(printf '52:54:00:19:%02x:%02x' "$((${ip##*.} / 256))" "$((${ip##*.} % 256))")
  FLEET_KIND[$name]=ns
  FLEET_IP[$name]=$ip
  FLEET_MAC[$name]=$mac
  sb_ns_vm "$name" "$mac" "$ip" - - || return 1
  sb_vm_bg "$name" python3 "$FLEET_LIB_DIR/probe.py" serve --name "$name" --tcp 5432 --tcp 80 \
    --udp 5432
}

fleet_gagent_add() {
  local name=$1 ip=$2 uuid=$3
  fleet_plain_add "$name" "$ip" || return 1
  FLEET_UUID[$name]=$uuid
  FLEET_GA_DIR[$name]=$FLEET_DIR/gagent-$name
  mkdir -p "${FLEET_GA_DIR[$name]}"
}

# The relay pair for NAME (once).
_fleet_gagent_relay() {
  local name=$1 sock=$FLEET_DIR/gagent-$1/controller.sock i
  [ -S "$sock" ] && return 0
  python3 "$FLEET_LIB_DIR/relay.py" unix-to-tcp "$sock" "$FLEET_GRPC" \
    >"$FLEET_DIR/gagent-$name/relay-host.log" 2>&1 &
  sb_on_cleanup "_sb_stop_pid $! 2"
  for ((i = 0; i < 50; i++)); do [ -S "$sock" ] && break; sleep 0.1; done
  sb_vm_bg "$name" python3 "$FLEET_LIB_DIR/relay.py" tcp-to-unix "127.0.0.1:$FLEET_GA_PORT" \
    "$sock"
  for ((i = 0; i < 50; i++)); do
    sb_vm_exec "$name" python3 -c "import socket; socket.create_connection(('127.0.0.1', $FLEET_GA_PORT), 0.2)" \
      2>/dev/null && return 0
    sleep 0.1
  done
  _fleet_log "relay for $name did not come up"
  return 1
}

fleet_gagent_start() {
  local name=$1 dir enroll=()
  shift
  dir=${FLEET_GA_DIR[$name]:?no guest-agent VM $name}
  [ -x "$FLEET_VMAGENT" ] || { _fleet_log "missing $FLEET_VMAGENT"; return 1; }
  _fleet_gagent_relay "$name" || return 1
  if [ ! -f "$dir/svid/svid.pem" ]; then
    fleet_dfwctl -o json enroll create --vm "${FLEET_UUID[$name]}" |
      /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' \
        >"$dir/join-token" && [ -s "$dir/join-token" ] || {
      _fleet_log "cannot create a join token for VM ${FLEET_UUID[$name]}"
      return 1
    }
    enroll=(--join-token-file "$dir/join-token" --ca-bundle "$FLEET_PKI/ca/ca.pem")
  fi
  echo "--- start $(date +%T.%N)" >>"$dir/vmagent.log"
  ip netns exec "${SB_VM_NS[$name]}" "$FLEET_VMAGENT" --controller "127.0.0.1:$FLEET_GA_PORT" \
    --cert-dir "$dir/svid" "${enroll[@]}" --vm-uuid "${FLEET_UUID[$name]}" --interface eth0 \
    --hostname "$name" --status-file "$dir/status.json" --flow-log "$dir/flows.jsonl" "$@" \
    >>"$dir/vmagent.log" 2>&1 &
  FLEET_GA_PID[$name]=$!
}

fleet_gagent_stop() {
  _sb_stop_pid "${FLEET_GA_PID[$1]:-}" 10
  FLEET_GA_PID[$1]=
}

fleet_gagent_kill9() {
  local pid=${FLEET_GA_PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  FLEET_GA_PID[$1]=
}

fleet_gagent_nft() {
  local name=$1
  shift
  sb_vm_exec "$name" nft "$@"
}

fleet_gagent_status() {
  "$FLEET_VMAGENT" status --status-file "${FLEET_GA_DIR[$1]}/status.json"
}

# A field of the agent's status file (python expression on `s`).
fleet_gagent_field() {
  /usr/bin/python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
    "${FLEET_GA_DIR[$1]}/status.json" "$2" 2>/dev/null
}

# Waits until the guest host "guest:<uuid>" is connected and realized.
fleet_gagent_wait_realized() {
  local name=$1 timeout=${2:-20} save=$FLEET_HOST_ID rc
  FLEET_HOST_ID="guest:${FLEET_UUID[$name]}"
  fleet_wait_realized "$timeout"
  rc=$?
  FLEET_HOST_ID=$save
  return $rc
}

# --- the agent in a real QEMU guest ------------------------------------
# A libvirt/QEMU guest on a plain vhost-user port (no iface-id: the host
# agent never steers it; in the vmagent e2e the host agent does not even
# watch qemu:///system, as on a KVM host we do not run). Its image carries
# dfw-vmagent and the nftables modules (build-guest.sh --vmagent). The
# guest reaches the controller over the bridge: a namespace "ctl" at
# $FLEET_CTL_RELAY_IP relays TCP 7443 to the controller (put that address
# in FLEET_CA_SANS before fleet_start, the agent verifies it).
FLEET_CTL_RELAY_IP=198.18.0.2

fleet_ctl_relay_add() {
  fleet_plain_add ctl "$FLEET_CTL_RELAY_IP" || return 1
  FLEET_GA_DIR[ctl]=$FLEET_DIR/gagent-ctl
  mkdir -p "${FLEET_GA_DIR[ctl]}"
  local sock=${FLEET_GA_DIR[ctl]}/controller.sock i
  python3 "$FLEET_LIB_DIR/relay.py" unix-to-tcp "$sock" "$FLEET_GRPC" \
    >"${FLEET_GA_DIR[ctl]}/relay-host.log" 2>&1 &
  sb_on_cleanup "_sb_stop_pid $! 2"
  for ((i = 0; i < 50; i++)); do [ -S "$sock" ] && break; sleep 0.1; done
  sb_vm_bg ctl python3 "$FLEET_LIB_DIR/relay.py" tcp-to-unix \
    "$FLEET_CTL_RELAY_IP:$FLEET_GA_PORT" "$sock"
}

# fleet_gagent_qemu_start NAME IP UUID: defines and boots the guest; returns
# once its shell answers.
fleet_gagent_qemu_start() {
  local name=$1 ip=$2 uuid=$3 mac=52:54:00:18:00:41
  FLEET_KIND[$name]=guest
  FLEET_IP[$name]=$ip
  FLEET_UUID[$name]=$uuid
  FLEET_GA_DIR[$name]=$FLEET_DIR/gagent-$name
  mkdir -p "${FLEET_GA_DIR[$name]}"
  FLEET_GQ_NAME=dfw-gagent-$SB_ID
  FLEET_GQ_SOCK=$SB_OVS_RUN/vhu-gq.sock
  FLEET_GUEST_CONSOLE=$FLEET_DIR/gq-console.sock
  guest_libvirtd_ensure || return 1
  FLEET_GUEST=1  # fleet_cleanup destroys it and stops libvirtd
  FLEET_GUEST_NAME=$FLEET_GQ_NAME
  guest_ovs_add_port "$SB_BRIDGE" "vhq-$SB_ID" "$FLEET_GQ_SOCK" - "$mac" "$uuid" || return 1
  GUEST_VMAGENT=$FLEET_VMAGENT GUEST_IMAGE_DIR=${GUEST_VMAGENT_IMAGE_DIR:-/var/tmp/dfw-guest-image-vmagent} \
    GUEST_MEMORY_MIB=512 guest_define_start "$FLEET_GQ_NAME" "$uuid" "$mac" - "$ip/24" \
    "$FLEET_GQ_SOCK" "$FLEET_GUEST_CONSOLE" || return 1
  guest_wait_ready "$FLEET_GUEST_CONSOLE" 180 >/dev/null
}

# Writes local file $2 to $3 in the guest (base64 over the console).
_fleet_gq_put() {
  local b64
  b64=$(base64 -w0 "$2")
  guest_exec "$FLEET_GUEST_CONSOLE" "echo $b64 | base64 -d > $3" --timeout 10 >/dev/null
}

# The agent in the guest: enrolls with a one-time token (its UUID from
# SMBIOS, not given), controller through the relay.
fleet_gagent_qemu_agent() {
  local name=$1 dir=${FLEET_GA_DIR[$1]}
  fleet_dfwctl -o json enroll create --vm "${FLEET_UUID[$name]}" |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' \
      >"$dir/join-token" && [ -s "$dir/join-token" ] || return 1
  _fleet_gq_put "$name" "$dir/join-token" /run/join-token || return 1
  _fleet_gq_put "$name" "$FLEET_PKI/ca/ca.pem" /run/ca.pem || return 1
  guest_exec "$FLEET_GUEST_CONSOLE" \
    "dfw-vmagent --controller $FLEET_CTL_RELAY_IP:$FLEET_GA_PORT --join-token-file /run/join-token --ca-bundle /run/ca.pem --cert-dir /run/svid --interface eth0 --status-file /run/vmagent.json --flow-log /run/flows.jsonl > /run/vmagent.log 2>&1 &" \
    --timeout 10 >/dev/null
}
