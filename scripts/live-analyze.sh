#!/usr/bin/env bash
# live-analyze.sh HEIMDALL analyze TRACE --logs DIR [more analyze options]
#
# `heimdall analyze` on the live path: makes a veth pair with one end in a
# network namespace of its own, starts `HEIMDALL analyze --interface` on the
# other end, replays TRACE into the pair with tcpreplay at its recorded
# pace, and stops once every frame was analyzed. Scoring suites call it in
# place of the binary, so the same suite scores the live path
# (scripts/score.sh). Needs root; the pair is scripts/veth.sh's.
set -euo pipefail
bin="$1"; shift
[ "${1:-}" = analyze ] || { echo "usage: $0 HEIMDALL analyze TRACE --logs DIR [options]" >&2; exit 2; }
shift
trace="$1"; shift
source "$(dirname "${BASH_SOURCE[0]}")/veth.sh"
pid=""
VETH_CLEANUP='[ -n "$pid" ] && kill "$pid" 2>/dev/null || true'
veth_up
outer="$VETH_OUTER"

packets="$(capinfos -c -M -T "$trace" | awk -F'\t' 'NR==2 {print $2}')"
errlog="$(mktemp)"
"$bin" analyze --interface "$outer" --count "$packets" "$@" 2> >(tee "$errlog" >&2) &
pid=$!
for _ in $(seq 200); do
  grep -q "capturing on" "$errlog" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
veth_replay -q "$trace" >/dev/null
# Every frame counted ends the run by itself; frames the pair could not
# carry would leave it waiting, so it is stopped (and says so) after 5 s.
for _ in $(seq 100); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
if kill -0 "$pid" 2>/dev/null; then
  echo "live-analyze: not every frame of $trace arrived; stopping the capture" >&2
  kill -TERM "$pid"
fi
rc=0
wait "$pid" || rc=$?
pid=""
rm -f "$errlog"
exit "$rc"
