#!/usr/bin/env bash
# The suite-wide secret scan (run by `make test` after the tests).
#
# Every secret a test makes carries one marker (tests/src/secrets.rs). The
# tests link every service log into HEIMDALL_TEST_LOG_DIR and keep exported
# spans there; nextest keeps every test's output in its JUnit report. This
# searches all of it for the marker and fails on any hit, naming the file
# and line (not the line's text, which holds the secret).
set -euo pipefail

dir="${1:?usage: secret-scan.sh LOG_DIR [JUNIT_XML]}"
junit="${2:-}"
marker="$(sed -n 's/^pub const MARKER: &str = "\(.*\)";/\1/p' tests/src/secrets.rs)"
if [[ -z "$marker" ]]; then
  echo "secret-scan: cannot read MARKER from tests/src/secrets.rs" >&2
  exit 1
fi
targets=("$dir")
if [[ -n "$junit" ]]; then
  if [[ ! -f "$junit" ]]; then
    echo "secret-scan: no test output report at $junit (nextest writes it; see .config/nextest.toml)" >&2
    exit 1
  fi
  targets+=("$junit")
fi
logs=$(find "$dir" -type f -name '*.log' | wc -l)
spans=$(find "$dir" -type f -name '*.txt' | wc -l)
bytes=$(find "${targets[@]}" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
# The suite starts dozens of services; a handful means the logs were not
# collected (the variable did not reach the tests), which must not pass.
if (( logs < 10 || spans < 1 )); then
  echo "secret-scan: only $logs service logs and $spans span dumps in $dir; the tests did not keep them" >&2
  exit 1
fi
hits=$(grep -rnoF "$marker" "${targets[@]}" | cut -d: -f1,2 || true)
if [[ -n "$hits" ]]; then
  echo "secret-scan: a test secret appears in what the suite wrote:" >&2
  echo "$hits" >&2
  exit 1
fi
echo "SECRET-SCAN service_logs=$logs span_dumps=$spans bytes=$bytes hits=0"
