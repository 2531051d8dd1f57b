#!/usr/bin/env bash
# Fuzzes the dataplane's packet parser with libFuzzer (clang from Debian).
#   scripts/fuzz-parser.sh [SECONDS]   (default 60)
# New inputs that reach new code are kept in tests/dataplane/fuzz_corpus/, which
# the normal test suite replays (test packet_parser_fuzz_regressions); a crash
# leaves crash-* in build-fuzz/ — copy it into the corpus to make it a
# regression test once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
command -v clang++ >/dev/null || { scripts/install-deps.sh; }
OUT=build-fuzz
mkdir -p "$OUT"
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined \
  -I dataplane/include \
  tests/dataplane/fuzz_packet_parser.cc dataplane/src/packet_parser.cc \
  -o "$OUT/fuzz_packet_parser"
CORPUS=tests/dataplane/fuzz_corpus
"$OUT/fuzz_packet_parser" -max_total_time="$SECS" -max_len=2048 -print_final_stats=1 \
  -artifact_prefix="$OUT/" "$CORPUS"
