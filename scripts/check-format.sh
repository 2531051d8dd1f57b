#!/usr/bin/env bash
# Checks that every C and C++ file of the tree is as clang-format (the
# repository's .clang-format; Debian 12's clang-format 14) would write it.
#   scripts/check-format.sh          lists the files that differ; exit 1 if any
#   scripts/check-format.sh --fix    rewrites them
# CI runs it as the ctest test format.clang_format.
set -euo pipefail
cd "$(dirname "$0")/.."
FIX=0
[ "${1:-}" = "--fix" ] && FIX=1
CF=${CLANG_FORMAT:-clang-format}
command -v "$CF" >/dev/null || { echo "check-format: $CF not found (apt-get install clang-format)" >&2; exit 1; }
mapfile -t files < <(find base bench controller dataplane hostagent ovs-integration proto scripts tagging \
  tests trust vmagent -type f \( -name '*.cc' -o -name '*.h' -o -name '*.c' \) \
  -not -path 'tests/data/*' | sort)
bad=()
for f in "${files[@]}"; do
  if [ "$FIX" = 1 ]; then
    "$CF" -i "$f"
  elif ! "$CF" --dry-run --Werror "$f" >/dev/null 2>&1; then
    bad+=("$f")
  fi
done
if [ ${#bad[@]} -ne 0 ]; then
  echo "check-format: ${#bad[@]} of ${#files[@]} files differ from clang-format's output:" >&2
  printf '  %s\n' "${bad[@]}" >&2
  echo "check-format: scripts/check-format.sh --fix rewrites them" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files formatted"
