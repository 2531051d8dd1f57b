#!/usr/bin/env bash
# Builds the test guest's kernel + initramfs into OUT_DIR (cached: does nothing
# when OUT_DIR/stamp matches the inputs).
#
#   scripts/guest/build-guest.sh OUT_DIR [--vmagent BIN]
#
# --vmagent BIN: the guest also carries the guest agent (BIN, with every
# shared library it needs, found by ldd) as /bin/dfw-vmagent, and the
# nftables, conntrack and NFLOG kernel modules it enforces with.
#
# Output: OUT_DIR/vmlinuz, OUT_DIR/initramfs.cpio.gz, OUT_DIR/dfw-probe (the
# static UDP helper, also usable on the host side), OUT_DIR/stamp.
# Inputs: /boot/vmlinuz-<v> + /lib/modules/<v> of linux-image-cloud-amd64
# (newest *-cloud-amd64, or $GUEST_KVER), /bin/busybox of busybox-static.
#
# Guest kernel command line (see guest.sh): console=ttyS0 dfw.ip=A.B.C.D/NN
# [dfw.gw=A.B.C.D] [dfw.name=NAME] [dfw.ipv6=1 (default: IPv6 off)]. The guest
# then serves:
#   TCP 5432  one line "dfw-guest NAME 5432" per connection (busybox nc -ll)
#   TCP 80    busybox httpd, GET / -> "dfw-guest NAME http"
#   UDP 7     echo (dfw-probe udp-echo)
# and a root shell (prompt "dfw-guest# ") on ttyS0. /run/dfw-ready holds
# "ready <uptime>" once eth0 is up and the servers run.
# In the guest: dfw-probe udp HOST PORT MSG [TIMEOUT], nc HOST PORT, wget, ping.
set -euo pipefail

OUT=${1:?usage: build-guest.sh OUT_DIR [--vmagent BIN]}
VMAGENT=
if [ "${2:-}" = --vmagent ]; then
  VMAGENT=${3:?--vmagent needs the dfw-vmagent binary}
  [ -x "$VMAGENT" ] || { echo "build-guest: $VMAGENT is not executable" >&2; exit 1; }
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
         failover net_failover virtio_net)
# The guest agent's kernel side (nf_tables' counter, filter chains and
# interval sets are built in; crc32c for libcrc32c: the generic one, since
# QEMU/TCG's CPU may lack SSE4.2).
NFT_MODULES=(crc32c_generic libcrc32c nfnetlink nf_tables nf_defrag_ipv4 nf_defrag_ipv6
             nf_conntrack nft_ct nf_reject_ipv4 nf_reject_ipv6 nft_reject nft_reject_inet
             nfnetlink_log nft_log nf_conntrack_netlink)
[ -n "$VMAGENT" ] && MODULES+=("${NFT_MODULES[@]}")

KVER=${GUEST_KVER:-}
if [ -z "$KVER" ]; then
  KVER=$(find /lib/modules -mindepth 1 -maxdepth 1 -name '*-cloud-amd64' -printf '%f\n' 2>/dev/null |
         sort -V | tail -1)
fi
if [ -z "$KVER" ] || [ ! -f "/boot/vmlinuz-$KVER" ]; then
  echo "build-guest: no cloud kernel found (install linux-image-cloud-amd64: scripts/install-deps.sh)" >&2
  exit 1
fi
BUSYBOX=/bin/busybox
applets=$("$BUSYBOX" --list 2>/dev/null || true)   # (no pipe into grep -q: SIGPIPE + pipefail)
if ! grep -qx httpd <<<"$applets" || ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "build-guest: $BUSYBOX is not busybox-static (install busybox-static)" >&2
  exit 1
fi

# The stamp covers this script, the probe source, the kernel and busybox.
stamp=$( { cat "${BASH_SOURCE[0]}" "$HERE/dfw-probe.c"; echo "$KVER";
           stat -c '%s %Y' "/boot/vmlinuz-$KVER" "$BUSYBOX";
           [ -z "$VMAGENT" ] || sha256sum "$VMAGENT"; } | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$stamp" ] &&
   [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.cpio.gz" ] && [ -x "$OUT/dfw-probe" ]; then
  echo "build-guest: $OUT up to date ($KVER)"
  exit 0
fi

mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/dfw-guest-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,etc,www,lib/modules,root}

cp "$BUSYBOX" "$root/bin/busybox"
for applet in $applets; do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
cc -static -Os -o "$work/dfw-probe" "$HERE/dfw-probe.c"
cp "$work/dfw-probe" "$root/bin/dfw-probe"

if [ -n "$VMAGENT" ]; then
  # The agent and its shared libraries at the paths ldd names (the loader too).
  cp "$VMAGENT" "$root/bin/dfw-vmagent"
  strip "$root/bin/dfw-vmagent" 2>/dev/null || true
  ldd "$VMAGENT" | awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]*ld-linux/{print $1}' |
    while read -r lib; do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  # glibc's NSS for getaddrinfo of a numeric address needs nothing more;
  # /etc/hosts for "localhost".
  echo "127.0.0.1 localhost" > "$root/etc/hosts"
fi

# Modules in load order; decompressed if the kernel ships them compressed.
: > "$root/lib/modules/order"
for m in "${MODULES[@]}"; do
  f=$(find "/lib/modules/$KVER" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -1)
  if [ -z "$f" ]; then
    if grep -q "/$m.ko" "/lib/modules/$KVER/modules.builtin" 2>/dev/null; then continue; fi
    echo "build-guest: module $m not found in /lib/modules/$KVER" >&2
    exit 1
  fi
  case "$f" in
    *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.zst) zstd -dcq "$f" > "$root/lib/modules/$m.ko" ;;
    *.gz) gzip -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
  echo "$m" >> "$root/lib/modules/order"
done

cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
echo "root:x:0:" > "$root/etc/group"

cat > "$root/bin/dfw-line" <<'EOF'
#!/bin/sh
# One answer line per TCP connection (run by nc -e).
echo "dfw-guest $(hostname) ${1:-tcp}"
EOF
chmod +x "$root/bin/dfw-line"

cat > "$root/init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
dmesg -n 1   # keep printk off the console shell

IP= GW= NAME=dfw-guest IPV6=0
for w in $(cat /proc/cmdline); do
  case "$w" in
    dfw.ip=*) IP=${w#dfw.ip=} ;;
    dfw.gw=*) GW=${w#dfw.gw=} ;;
    dfw.name=*) NAME=${w#dfw.name=} ;;
    dfw.ipv6=*) IPV6=${w#dfw.ipv6=} ;;
  esac
done
hostname "$NAME"

while read -r m; do
  insmod "/lib/modules/$m.ko" || echo "dfw-guest: insmod $m failed"
done < /lib/modules/order

# IPv6 off unless dfw.ipv6=1 (no RS/DAD/MLD noise in firewall tests).
if [ "$IPV6" != 1 ]; then
  echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
  echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
fi
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if [ -n "$IP" ]; then ip addr add "$IP" dev eth0; fi
ip link set eth0 up
if [ -n "$GW" ]; then ip route add default via "$GW"; fi

echo "dfw-guest $NAME http" > /www/index.html
httpd -p 80 -h /www
nc -ll -p 5432 -e /bin/dfw-line 5432 &
dfw-probe udp-echo 7 &

echo "ready $(cut -d' ' -f1 /proc/uptime)" > /run/dfw-ready
echo "dfw-guest: ready $(cat /run/dfw-ready) ip=$IP"
export PS1='dfw-guest# '
while :; do
  setsid cttyhack sh
  sleep 1
done
EOF
chmod +x "$root/init"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -6) > "$work/initramfs.cpio.gz"
cp "/boot/vmlinuz-$KVER" "$work/vmlinuz"
mv -f "$work/vmlinuz" "$OUT/vmlinuz"
mv -f "$work/initramfs.cpio.gz" "$OUT/initramfs.cpio.gz"
mv -f "$work/dfw-probe" "$OUT/dfw-probe"
echo "$stamp" > "$OUT/stamp"
echo "build-guest: built $OUT ($KVER, modules: $(tr '\n' ' ' < "$root/lib/modules/order"))"
