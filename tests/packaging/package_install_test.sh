#!/usr/bin/env bash
# The Debian packages installed into a fresh Debian 12 root, as an operator
# would install them on a machine with no compiler:
#
#   tests/packaging/package_install_test.sh BUILD_DIR
#
# 1. debootstrap (minbase) makes a bookworm root with the host's apt sources
#    (cached as a tarball in BUILD_DIR/debian-root, reused by later runs:
#    each run starts from that pristine tarball);
# 2. `apt-get install ./dfw-*.deb` there (the packages from scripts/package.sh
#    in BUILD_DIR/packages): the dependencies must resolve from Debian alone;
# 3. checks: no compiler in the root; every binary answers --help (exit 0,
#    its usage on stdout); `systemd-analyze verify` passes on every unit;
#    /etc/dfw/*.conf are conffiles; the controller's system user exists;
#    removal and purge leave no file of ours behind.
# Needs root (chroot, mount) and Debian's mirror. Cleans up on any exit.
set -uo pipefail
BUILD=$(cd "${1:?usage: package_install_test.sh BUILD_DIR}" && pwd) || exit 2
PKGS=$BUILD/packages
CACHE=$BUILD/debian-root/bookworm-minbase.tar.gz
WORK=$(mktemp -d /tmp/dfw-pkgtest.XXXXXX)
ROOT=$WORK/root
MOUNTS=()
FAILS=0

log() { echo "package-test: $*"; }
fail() {
  echo "package-test: FAIL: $*" >&2
  FAILS=$((FAILS + 1))
}
cleanup() {
  local rc=$? m i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    m=${MOUNTS[$i]}
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
  # Only when nothing is mounted inside any more: rm -rf never crosses into a mount.
  if ! grep -q " $ROOT" /proc/mounts; then rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "package-test: needs root (debootstrap, chroot)" >&2
  exit 1
fi
shopt -s nullglob
debs=("$PKGS"/*.deb)
if [ ${#debs[@]} -eq 0 ]; then
  echo "package-test: no packages in $PKGS (scripts/package.sh makes them)" >&2
  exit 1
fi

# --- 1. a fresh Debian 12 root -----------------------------------------------
if [ ! -s "$CACHE" ]; then
  log "debootstrap bookworm (minbase), cached in $CACHE"
  mkdir -p "$(dirname "$CACHE")"
  if ! debootstrap --variant=minbase bookworm "$WORK/base" http://deb.debian.org/debian \
    >"$WORK/debootstrap.log" 2>&1; then
    tail -20 "$WORK/debootstrap.log" >&2
    echo "package-test: debootstrap failed" >&2
    exit 1
  fi
  tar -C "$WORK/base" -czf "$CACHE.tmp" . && mv "$CACHE.tmp" "$CACHE" || exit 1
  rm -rf "$WORK/base"
fi
mkdir -p "$ROOT"
tar -C "$ROOT" -xzf "$CACHE" || exit 1
# The host's apt sources (bookworm, -updates, -security): the versions the
# packages were built against.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  rm -f "$ROOT/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/debian.sources "$ROOT/etc/apt/sources.list.d/"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# No service starts inside the root (as in a package build chroot).
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc") || exit 1

for c in cc gcc g++ c++ clang cmake; do
  if in_root sh -c "command -v $c" >/dev/null; then fail "the fresh root has a compiler: $c"; fi
done

# --- 2. install the packages ---------------------------------------------------
mkdir -p "$ROOT/tmp/debs"
cp "${debs[@]}" "$ROOT/tmp/debs/"
log "installing ${#debs[@]} packages: $(cd "$PKGS" && echo *.deb)"
t0=$(date +%s)
if ! in_root apt-get update -q >"$WORK/apt.log" 2>&1 ||
  ! in_root sh -c 'apt-get install -y -q --no-install-recommends /tmp/debs/*.deb' \
    >>"$WORK/apt.log" 2>&1; then
  tail -30 "$WORK/apt.log" >&2
  echo "package-test: FAIL: apt-get could not install the packages" >&2
  exit 1
fi
log "installed in $(($(date +%s) - t0)) s"

# --- 3. what an operator relies on ----------------------------------------------
want_pkgs=()
for d in "${debs[@]}"; do want_pkgs+=("$(dpkg-deb -f "$d" Package)"); done
for p in "${want_pkgs[@]}"; do
  st=$(in_root dpkg-query -W -f='${Status}' "$p" 2>/dev/null)
  [ "$st" = "install ok installed" ] || fail "$p: status '$st'"
done

bins=(/usr/sbin/dfw-controller /usr/bin/dfwctl /usr/sbin/dfw-dataplane /usr/sbin/dfw-hostagent
  /usr/bin/dfw-dpctl /usr/sbin/dfw-host-setup /usr/sbin/dfw-vmagent)
for b in "${bins[@]}"; do
  if [ ! -x "$ROOT$b" ]; then
    fail "$b is not installed"
    continue
  fi
  out=$(in_root "$b" --help 2>"$WORK/help.err")
  rc=$?
  if [ $rc -ne 0 ]; then
    fail "$b --help: exit $rc: $(head -3 "$WORK/help.err")"
  elif ! grep -qi '^usage' <<<"$out"; then
    fail "$b --help: no usage on stdout: $(head -2 <<<"$out")"
  else
    log "ok: $b --help"
  fi
  # Every shared library resolved inside the root (not only on the build machine).
  if [ "$(head -c 4 "$ROOT$b" | tail -c 3)" = ELF ]; then
    missing=$(in_root ldd "$b" 2>&1 | grep 'not found')
    [ -z "$missing" ] || fail "$b: libraries not found in the root: $missing"
  fi
done

units=(dfw-controller.service dfw-dataplane.service dfw-hostagent.service dfw-vmagent.service)
for u in "${units[@]}"; do
  [ -f "$ROOT/usr/lib/systemd/system/$u" ] || fail "unit $u is not installed"
done
# systemd-analyze verify inside the root: it checks every directive and that
# each ExecStart binary exists there. Units ordered After= others (OVS,
# libvirt) that are not installed are fine; anything else it says fails.
if ! in_root sh -c 'command -v systemd-analyze' >/dev/null; then
  in_root apt-get install -y -q --no-install-recommends systemd >>"$WORK/apt.log" 2>&1 ||
    fail "cannot install systemd in the root for systemd-analyze"
fi
for u in "${units[@]}"; do
  out=$(in_root env SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "/usr/lib/systemd/system/$u" 2>&1)
  rc=$?
  # Lines about units we only name in After=/Wants= (not installed here) are not ours.
  ours=$(grep -v -e 'ovs-vswitchd.service' -e 'ovsdb-server.service' -e 'libvirtd.service' \
    -e 'nftables.service' -e 'dev-hugepages.mount' <<<"$out" | grep -v '^$')
  if [ $rc -ne 0 ] || [ -n "$ours" ]; then
    fail "systemd-analyze verify $u (exit $rc): $out"
  else
    log "ok: systemd-analyze verify $u"
  fi
done

for c in controller dataplane hostagent vmagent; do
  f=/etc/dfw/$c.conf
  [ -f "$ROOT$f" ] || fail "$f is not installed"
  in_root sh -c "dpkg-query -W -f='\${Conffiles}\n' dfw-controller dfw-host dfw-vmagent" |
    grep -q " $f " || fail "$f is not a conffile"
done
in_root getent passwd dfw >/dev/null || fail "the system user dfw was not created"
in_root /usr/sbin/dfw-host-setup --check --no-libvirt >/dev/null 2>&1
rc=$?
[ $rc -eq 1 ] || fail "dfw-host-setup --check on a root without OVS running: exit $rc, want 1"

# --- 4. removal and purge ----------------------------------------------------------
if ! in_root apt-get purge -y -q "${want_pkgs[@]}" >>"$WORK/apt.log" 2>&1; then
  tail -20 "$WORK/apt.log" >&2
  fail "apt-get purge failed"
fi
left=$(cd "$ROOT" && find etc/dfw var/lib/dfw usr/sbin/dfw-* usr/bin/dfw* \
  usr/lib/systemd/system/dfw-* 2>/dev/null)
[ -z "$left" ] || fail "left after purge: $left"

if [ "$FAILS" -ne 0 ]; then
  echo "package-test: $FAILS check(s) failed (apt log: kept in output above)" >&2
  exit 1
fi
log "PASS: ${#want_pkgs[@]} packages installed into a fresh Debian 12 root, checked and purged"
