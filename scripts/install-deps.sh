#!/usr/bin/env bash
# Installs every build, test and run dependency from Debian 12's packages.
# Safe to run again: apt-get skips what is there. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates python3 clang clang-format
  # packages (scripts/package.sh: CPack DEB, dpkg-shlibdeps) and their test in a
  # fresh Debian root (tests/packaging)
  dpkg-dev file debootstrap
  # dataplane
  libdpdk-dev dpdk-dev libpcap-dev libnuma-dev
  # OVS: source to build libopenvswitch, and the switch itself for host tests
  openvswitch-source openvswitch-switch-dpdk libssl-dev libcap-ng-dev libunbound-dev
  # libvirt
  libvirt-dev libxml2-dev
  # control plane
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev librocksdb-dev libspdlog-dev nlohmann-json3-dev libcpp-httplib-dev
  # the controller's etcd store: etcd for its tests and HA (its .proto files come from
  # golang-etcd-server-dev, fetched by cmake/EtcdProto.cmake, not installed)
  etcd-server etcd-client
  # guest agent (vmagent/): nftables, conntrack, NFLOG; nft and conntrack tools
  libnftables-dev libnftnl-dev libmnl-dev libnetfilter-conntrack-dev libnetfilter-log-dev
  nftables conntrack
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # scripts
  iproute2 procps iputils-ping
  # real guest VMs (scripts/guest, scripts/lib/guest.sh): QEMU/TCG under libvirt,
  # a Debian cloud kernel + busybox initramfs. libvirt-daemon-system-sysv is named
  # so apt does not pick the -systemd variant (it pulls systemd-sysv; CI and this
  # machine have no systemd). policy-rc.d/no init: libvirtd is started by hand.
  qemu-system-x86 libvirt-daemon-system libvirt-daemon-system-sysv libvirt-clients
  linux-image-cloud-amd64 busybox-static cpio gzip xz-utils kmod ethtool
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
