#!/usr/bin/env bash
# `make score`: judge `heimdall analyze` against the reference answers in
# ../shared/testdata with the scoring tools in ../shared/tools, print their
# SCORE lines, and fail when a score falls below its floor in
# scripts/score-floors.tsv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$(cd "${1:-$ROOT/../shared}" && pwd)"
TOOLS="$SHARED/tools"
DATA="$SHARED/testdata"
OUT="$ROOT/target/score"
cd "$ROOT"

if ! cargo metadata --no-deps --format-version 1 2>/dev/null | grep -q '"name":"heimdall"'; then
  # Not a silent skip: the suites need `heimdall analyze`, which the engine
  # work (issue 3) adds. Until then this line says so in every run.
  echo "score: NOT RUN: there is no 'heimdall' binary with 'analyze' in the workspace yet;"
  echo "score: the zeek, ndpi, device and alert suites start scoring when it lands."
  exit 0
fi

cargo build -q --release --bin heimdall
BIN="$ROOT/target/release/heimdall"
rm -rf "$OUT"; mkdir -p "$OUT"
run() { # name, command...
  local name="$1"; shift
  echo "== $name"
  "$@" >"$OUT/$name.log" 2>&1 || true
  grep '^SCORE' "$OUT/$name.log" || { echo "score: $name printed no SCORE line; see $OUT/$name.log"; tail -n 20 "$OUT/$name.log"; return 1; }
}
run zeek "$TOOLS/zeek-suite.sh" "$DATA/zeek/manifest.tsv" "$DATA" "$BIN" "$OUT/zeek"
run ndpi "$TOOLS/ndpi-suite.sh" "$DATA/ndpi/manifest.tsv" dev "$DATA/ndpi" "$BIN" "$OUT/ndpi"
run devices python3 "$TOOLS/devicecmp.py" "$DATA/devices" "$DATA/devices" "$BIN" --out "$OUT/devices"
run alerts python3 "$TOOLS/alertcmp.py" "$DATA/anomaly/labels.tsv" "$DATA/anomaly" "$BIN" --out "$OUT/alerts"

# Floors: suite <tab> key <tab> minimum. A missing key or a lower value fails.
fail=0
while IFS=$'\t' read -r suite key floor; do
  case "$suite" in ''|'#'*) continue ;; esac
  value="$(grep '^SCORE' "$OUT/$suite.log" | tr ' ' '\n' | sed -n "s/^$key=//p" | tr -d '%')"
  if [ -z "$value" ] || [ "$value" = "n/a" ] || awk -v v="$value" -v f="$floor" 'BEGIN{exit !(v < f)}'; then
    echo "score: FAIL $suite $key=${value:-missing} (floor $floor)"; fail=1
  fi
done <"$ROOT/scripts/score-floors.tsv"
# No suite may crash heimdall on any capture.
for log in "$OUT"/*.log; do
  crashed="$(grep '^SCORE' "$log" | tr ' ' '\n' | sed -n 's/^crashed=//p')"
  if [ -n "$crashed" ] && [ "$crashed" != "0" ]; then
    echo "score: FAIL $(basename "$log" .log) crashed=$crashed (heimdall must not crash on any capture)"; fail=1
  fi
done
[ "$fail" -eq 0 ] && echo "score: every suite at or above its floor"
exit "$fail"
