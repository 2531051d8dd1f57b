#!/usr/bin/env bash
# The README's main-job command. Installs what is missing, builds, and shows
# the product's working part to a person.
#
# Today that is the membership engine: VM tags turning into security-group
# membership, with the exact delta each change causes, and bad input refused
# with an error that names the field. The end-to-end sandbox (controller,
# OVS-DPDK, dataplane, VMs, traffic allowed and blocked) grows here as its
# issues land.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh >/tmp/dfw-demo-build.log 2>&1 || { tail -50 /tmp/dfw-demo-build.log; exit 1; }
BUILD_DIR=${DFW_BUILD_DIR:-build}

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
bold "1. Tags become membership. Four VMs, six groups (tags, nesting, guest OS, static)."
bold "2. Then: web-2 is promoted to prod, db-1 loses its env tag; each change prints its exact delta."
bold "3. Then three bad changes, each refused with the reason, changing nothing."
set +e
"$BUILD_DIR/tagging/dfw-membership" examples/demo-snapshot.textproto \
  tag vm-web-2 env=prod \
  untag vm-db-1 env \
  explain vm-web-1 \
  group 'id: "prod" criteria { conditions { member_of_group: "prod-web" } }' \
  remove-group prod \
  group 'id: "pci" criteria { conditions { tag { scope: "pci" value: "yes" } } } static_members { ip_prefixes: "198.18.0.9/24" }'
rc=$?
set -e
# Exit 1 means "some command was rejected", which the demo does on purpose.
[ "$rc" -le 1 ] || exit "$rc"
bold "Done. Try: $BUILD_DIR/tagging/dfw-membership examples/demo-snapshot.textproto tag vm-jump app=web"
