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
# The live path: the Ethernet traces short enough to replay at their recorded
# pace (55 of 78) go through a veth pair into `heimdall analyze --interface`
# (scripts/live-analyze.sh) and are scored by the same suite. Packet times
# are the replay's, so duration and rtt are left out, for the live run and
# for the same traces read from the files, and the two must score alike.
live_cases() {
  local d c f enc dur cases=""
  for d in "$DATA"/zeek/*/; do
    c="$(basename "$d")"
    f="$(ls "$d" | grep -vE '\.log$|^meta\.txt$' | head -n 1)"
    [ -n "$f" ] || continue
    read -r enc dur < <(capinfos -T -r -E -u "$d$f" 2>/dev/null | awk -F'\t' '{print $2, $3}')
    if [ "$enc" = ether ] && awk -v x="$dur" 'BEGIN{exit !(x <= 12)}'; then
      cases="$cases|${c//./\\.}"
    fi
  done
  echo "^(${cases#|})\$"
}
CASES="$(live_cases)"
echo "score: live path on $(tr '|' '\n' <<<"$CASES" | wc -l) Ethernet traces"
SUITE_CASES="$CASES" SUITE_JOBS=1 run zeek-ether-file "$TOOLS/zeek-suite.sh" "$DATA/zeek/manifest.tsv" "$DATA" "$BIN" "$OUT/zeek-ether-file" --ignore duration,rtt
SUITE_CASES="$CASES" SUITE_JOBS=1 run zeek-live "$TOOLS/zeek-suite.sh" "$DATA/zeek/manifest.tsv" "$DATA" "$ROOT/scripts/live-analyze.sh $BIN" "$OUT/zeek-live" --ignore duration,rtt
run devices python3 "$TOOLS/devicecmp.py" "$DATA/devices" "$DATA/devices" "$BIN" --out "$OUT/devices"
run alerts python3 "$TOOLS/alertcmp.py" "$DATA/anomaly/labels.tsv" "$DATA/anomaly" "$BIN" --out "$OUT/alerts"
# The simulated 14-day home (7 learning, 7 judged) with injected anomalies:
# recall per type at the documented strengths, false incidents per device-day.
run simulation "$BIN" evaluate --seed 7 --days 14 --learn-days 7

# Floors: suite <tab> key <tab> minimum. A missing key or a lower value fails.
fail=0
while IFS=$'\t' read -r suite key floor; do
  case "$suite" in ''|'#'*) continue ;; esac
  value="$(grep '^SCORE' "$OUT/$suite.log" | tr ' ' '\n' | sed -n "s/^$key=//p" | tr -d '%')"
  # A bound written "<=N" is a ceiling; any other is a floor.
  if [ "${floor#<=}" != "$floor" ]; then
    if [ -z "$value" ] || awk -v v="$value" -v f="${floor#<=}" 'BEGIN{exit !(v > f)}'; then
      echo "score: FAIL $suite $key=${value:-missing} (ceiling ${floor#<=})"; fail=1
    fi
  elif [ -z "$value" ] || [ "$value" = "n/a" ] || awk -v v="$value" -v f="$floor" 'BEGIN{exit !(v < f)}'; then
    echo "score: FAIL $suite $key=${value:-missing} (floor $floor)"; fail=1
  fi
done <"$ROOT/scripts/score-floors.tsv"
# The live path scores exactly as the files do.
if [ "$(grep '^SCORE' "$OUT/zeek-live.log")" != "$(grep '^SCORE' "$OUT/zeek-ether-file.log")" ]; then
  echo "score: FAIL the live path scores differently from the same traces read from files"; fail=1
fi
# No suite may crash heimdall on any capture.
for log in "$OUT"/*.log; do
  crashed="$(grep '^SCORE' "$log" | tr ' ' '\n' | sed -n 's/^crashed=//p')"
  if [ -n "$crashed" ] && [ "$crashed" != "0" ]; then
    echo "score: FAIL $(basename "$log" .log) crashed=$crashed (heimdall must not crash on any capture)"; fail=1
  fi
done
[ "$fail" -eq 0 ] && echo "score: every suite at or above its floor"
exit "$fail"
