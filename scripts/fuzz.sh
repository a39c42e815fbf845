#!/usr/bin/env bash
# scripts/fuzz.sh TARGET [SECONDS] — run one cargo-fuzz target (decode, dns,
# flow_table, reader) for SECONDS (default 600), seeded from the captures in
# ../shared/testdata. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Crashes land in fuzz/artifacts/TARGET/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${1:?usage: scripts/fuzz.sh decode|dns|flow_table|reader [SECONDS]}"
SECONDS_TO_RUN="${2:-600}"
SHARED="${SHARED:-$ROOT/../shared}"
CORPUS="$ROOT/target/fuzz-corpus"
cd "$ROOT/fuzz"
if [ ! -d "$CORPUS/$TARGET" ] || [ -z "$(ls -A "$CORPUS/$TARGET" 2>/dev/null)" ]; then
  cargo run -q --release --bin seed-corpus -- "$SHARED/testdata" "$CORPUS"
fi
cargo +nightly fuzz run "$TARGET" "$CORPUS/$TARGET" -- \
  -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
