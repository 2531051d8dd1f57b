#!/usr/bin/env bash
# packaging/dfw-host-setup against a private OVS-DPDK (scripts/lib/sandbox.sh):
#   1. --check on a fresh OVS: exit 1, names the missing bridge and port;
#      without --firewall-socket it names dfw-hostagent's default socket
#   2. apply: exit 0; the bridge (netdev, fail-mode=secure, OpenFlow10+13,
#      in-band off) and the firewall port (dpdkvhostuserclient, the socket)
#      exist, checked with ovs-vsctl get
#   3. apply again: exit 0, "nothing changed"; the database is unchanged
#   4. --check: exit 0
#   5. a bridge left half-right (fail-mode standalone, OpenFlow13 only) and a
#      port with another socket: --check names them, apply repairs them
#   6. hugepage items with --sysctl-dir in the work dir and --hugepages 1
#      (never more than the machine has: nothing raised): the file written
#      once, then ok
#   7. --help exits 0 (usage on stdout), a bad option exits 2 (usage on stderr),
#      a value missing exits 2
# Never touches the machine's sysctl.d, alternatives or libvirt (--sysctl-dir,
# --no-alternatives, --no-libvirt). Needs root (OVS-DPDK, hugepages).
# Everything is removed on any exit (sb_cleanup).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SETUP=$REPO/packaging/dfw-host-setup
# shellcheck source=../../scripts/lib/sandbox.sh
. "$REPO/scripts/lib/sandbox.sh"

if [ "$(id -u)" != 0 ]; then
  echo "host_setup_test: needs root" >&2
  exit 1
fi

WORK=$(mktemp -d /tmp/dfw-host-setup-test.XXXXXX)
FAILS=0
pass() { echo "PASS  $*"; }
fail() {
  echo "FAIL  $*"
  FAILS=$((FAILS + 1))
}
on_exit() {
  local rc=$?
  if [ "$FAILS" -ne 0 ] || [ "$rc" -ne 0 ]; then
    echo "--- ovs-vsctl show"
    sb_vsctl show 2>/dev/null
    echo "--- ovs-vswitchd log (tail)"
    tail -20 "$SB_OVS_LOG/ovs-vswitchd.log" 2>/dev/null
  fi
  sb_cleanup
  rm -rf "$WORK"
  if [ "$FAILS" -ne 0 ] || [ "$rc" -ne 0 ]; then exit 1; fi
  exit 0
}
trap on_exit EXIT

sb_init "$WORK/sb"
# DPDK in ovs-vswitchd needs hugepages (sandbox.sh: dpdk-socket-mem 512 MiB).
sb_hugepages 512 || exit 1
sb_ovs_start || exit 1

# Names of our own (the sandbox's br-dfw stays as sb_ovs_start made it).
BR=br-${SB_ID}
FW=fw-${SB_ID}
SOCK=$SB_OVS_RUN/$FW.sock
# Whatever happens, the bridge goes (with its ports) before OVS stops.
sb_on_cleanup "sb_vsctl --if-exists del-br $BR"
COMMON=(--ovsdb "unix:$SB_DB_SOCK" --bridge "$BR" --firewall-port "$FW" --no-libvirt
  --no-alternatives --sysctl-dir "$WORK/sysctl" --no-hugepages)

run() {  # NAME ARGS...: runs the setup; OUT, RC
  local name=$1
  shift
  OUT=$("$SETUP" "$@" 2>&1)
  RC=$?
  printf '%s\n' "$OUT" | sed "s/^/  [$name] /"
}

expect_rc() {  # WANT WHAT
  if [ "$RC" -eq "$1" ]; then pass "$2: exit $RC"; else fail "$2: exit $RC, expected $1"; fi
}

expect_line() {  # REGEX WHAT
  if grep -Eq -- "$1" <<<"$OUT"; then pass "$2"; else fail "$2 (no line matching /$1/)"; fi
}

expect_no_line() {  # REGEX WHAT
  if grep -Eq -- "$1" <<<"$OUT"; then fail "$2 (a line matches /$1/)"; else pass "$2"; fi
}

expect_eq() {  # GOT WANT WHAT
  if [ "$1" = "$2" ]; then pass "$3: $1"; else fail "$3: '$1', expected '$2'"; fi
}

# --- 1. --check on a fresh OVS ------------------------------------------------
run check1 --check "${COMMON[@]}" --firewall-socket "$SOCK"
expect_rc 1 "--check, bridge and port missing"
expect_line "^MISSING +bridge $BR: no bridge $BR; fix: ovs-vsctl --db=unix:$SB_DB_SOCK add-br $BR" \
  "--check names the missing bridge and its fix"
expect_line "^MISSING +firewall port $FW: " "--check names the missing firewall port"
expect_line "^ok +dpdk-init" "--check: dpdk-init ok (the sandbox set it)"
expect_line "^ok +ovs-vswitchd DPDK" "--check: DPDK initialised in the sandbox's ovs-vswitchd"
expect_eq "$(sb_vsctl br-exists "$BR" && echo yes || echo no)" no "--check created no bridge"

# The agent's defaults when no name is given (hostagent/src/main.cc).
run defaults --check --ovsdb "unix:$SB_DB_SOCK" --no-libvirt --no-alternatives --no-hugepages
expect_line "^dfw-host-setup report \(bridge br-dfw, firewall port fw0, socket /var/run/openvswitch/fw0.sock\)" \
  "defaults: br-dfw, fw0, /var/run/openvswitch/fw0.sock (dfw-hostagent's)"
expect_line "^ok +bridge br-dfw: datapath_type=netdev fail_mode=secure" \
  "the sandbox's br-dfw (sandbox.sh's wiring) passes the bridge check"

# --- 2. apply ---------------------------------------------------------------
run apply1 "${COMMON[@]}" --firewall-socket "$SOCK"
expect_rc 0 "apply"
expect_line "change\(s\) applied" "apply says what it changed"
expect_eq "$(sb_vsctl get Bridge "$BR" datapath_type)" netdev "bridge datapath_type"
expect_eq "$(sb_vsctl get Bridge "$BR" fail_mode)" secure "bridge fail_mode"
expect_eq "$(sb_vsctl get Bridge "$BR" protocols)" '[OpenFlow10, OpenFlow13]' "bridge protocols"
expect_eq "$(sb_vsctl get Bridge "$BR" other_config:disable-in-band)" '"true"' "bridge disable-in-band"
expect_eq "$(sb_vsctl port-to-br "$FW")" "$BR" "firewall port on the bridge"
expect_eq "$(sb_vsctl get Interface "$FW" type)" dpdkvhostuserclient "firewall port type"
expect_eq "$(sb_vsctl get Interface "$FW" options:vhost-server-path)" "\"$SOCK\"" "firewall port socket"
expect_eq "$(sb_vsctl get Open_vSwitch . other_config:dpdk-init)" '"true"' "dpdk-init"
if ofport=$(sb_wait_ofport "$FW" 20); then pass "ovs-vswitchd gave $FW ofport $ofport"; else fail "no ofport for $FW"; fi

# --- 3. apply again: nothing changes -----------------------------------------
before=$(sb_vsctl --format=csv --columns=_uuid,name,datapath_type,fail_mode,protocols,other_config,ports list Bridge "$BR"
  sb_vsctl --format=csv --columns=_uuid,name,type,options list Interface "$FW")
run apply2 "${COMMON[@]}" --firewall-socket "$SOCK"
expect_rc 0 "second apply"
expect_line "nothing changed \(already set up\)" "second apply: nothing changed"
expect_no_line "applying:|changed now" "second apply applied nothing"
after=$(sb_vsctl --format=csv --columns=_uuid,name,datapath_type,fail_mode,protocols,other_config,ports list Bridge "$BR"
  sb_vsctl --format=csv --columns=_uuid,name,type,options list Interface "$FW")
expect_eq "$([ "$before" = "$after" ] && echo same || echo differs)" same "bridge and port rows after the second apply"

# --- 4. --check: all ok --------------------------------------------------------
run check2 --check "${COMMON[@]}" --firewall-socket "$SOCK"
expect_rc 0 "--check after apply"
expect_no_line "^MISSING" "--check after apply: nothing missing"

# --- 5. repairs: a half-right bridge, a port with another socket --------------
sb_vsctl set Bridge "$BR" fail-mode=standalone protocols=OpenFlow13 \
  -- set Interface "$FW" "options:vhost-server-path=$SB_OVS_RUN/other.sock"
run check3 --check "${COMMON[@]}" --firewall-socket "$SOCK"
expect_rc 1 "--check, bridge and port wrong"
expect_line "^MISSING +bridge $BR: bridge $BR has fail_mode=standalone protocols=\[OpenFlow13\] lacks OpenFlow10" \
  "--check names the wrong fail-mode and protocols"
expect_line "^MISSING +firewall port $FW: port $FW has type=dpdkvhostuserclient vhost-server-path=$SB_OVS_RUN/other.sock" \
  "--check names the wrong socket"
run apply3 "${COMMON[@]}" --firewall-socket "$SOCK"
expect_rc 0 "apply repairs"
expect_eq "$(sb_vsctl get Bridge "$BR" fail_mode)" secure "repaired fail_mode"
expect_eq "$(sb_vsctl get Bridge "$BR" protocols)" '[OpenFlow10, OpenFlow13]' "repaired protocols"
expect_eq "$(sb_vsctl get Interface "$FW" options:vhost-server-path)" "\"$SOCK\"" "repaired socket"
run check4 --check "${COMMON[@]}" --firewall-socket "$SOCK"
expect_rc 0 "--check after the repair"

# --- 6. hugepage items, confined to the work dir --------------------------------
HP=(--ovsdb "unix:$SB_DB_SOCK" --bridge "$BR" --firewall-port "$FW" --firewall-socket "$SOCK"
  --no-libvirt --no-alternatives --sysctl-dir "$WORK/sysctl" --hugepages 1)
nr_before=$(cat /proc/sys/vm/nr_hugepages)
run hp-check --check "${HP[@]}"
expect_rc 1 "--check, no sysctl file"
expect_line "^MISSING +hugepages \(persistent\): no $WORK/sysctl/60-dfw-hugepages.conf" "--check names the sysctl file"
expect_line "^ok +hugepages \(now\)" "hugepages now: ok (>= 1)"
expect_line "^ok +hugetlbfs" "hugetlbfs mounted"
run hp-apply "${HP[@]}"
expect_rc 0 "apply with hugepages"
expect_eq "$(grep -v '^#' "$WORK/sysctl/60-dfw-hugepages.conf" 2>/dev/null)" "vm.nr_hugepages = 1" "the sysctl file"
run hp-apply2 "${HP[@]}"
expect_line "nothing changed \(already set up\)" "second apply with hugepages: nothing changed"
expect_eq "$(cat /proc/sys/vm/nr_hugepages)" "$nr_before" "nr_hugepages untouched (only raised, and not needed)"

# --- 7. usage -------------------------------------------------------------------
out=$("$SETUP" --help 2>/dev/null)
rc=$?
expect_eq "$rc" 0 "--help exit"
if grep -q '^usage: dfw-host-setup' <<<"$out"; then pass "--help prints usage on stdout"; else fail "--help: no usage on stdout"; fi
"$SETUP" --no-such-option >/dev/null 2>"$WORK/err"
rc=$?
expect_eq "$rc" 2 "unknown option exit"
if grep -q '^usage: dfw-host-setup' "$WORK/err" && grep -q "unknown option '--no-such-option'" "$WORK/err"; then
  pass "unknown option: named, usage on stderr"
else
  fail "unknown option: $(head -3 "$WORK/err")"
fi
"$SETUP" --check --bridge >/dev/null 2>&1
expect_eq "$?" 2 "--bridge without a value exit"
"$SETUP" --check --ovsdb /no/unix/prefix >/dev/null 2>&1
expect_eq "$?" 2 "--ovsdb without unix: exit"

echo
if [ "$FAILS" -eq 0 ]; then echo "host_setup_test: all passed"; else echo "host_setup_test: $FAILS failed"; fi
