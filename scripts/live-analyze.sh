#!/usr/bin/env bash
# live-analyze.sh HEIMDALL analyze TRACE --logs DIR [more analyze options]
#
# `heimdall analyze` on the live path: makes a veth pair with one end in a
# network namespace of its own, starts `HEIMDALL analyze --interface` on the
# other end, replays TRACE into the pair with tcpreplay at its recorded
# pace, and stops once every frame was analyzed. Scoring suites call it in
# place of the binary, so the same suite scores the live path
# (scripts/score.sh). Needs root. Neither end has an address and IPv6 is off
# on both: only the replayed frames cross the pair, and nothing leaves it.
set -euo pipefail
bin="$1"; shift
[ "${1:-}" = analyze ] || { echo "usage: $0 HEIMDALL analyze TRACE --logs DIR [options]" >&2; exit 2; }
shift
trace="$1"; shift
[ "$(id -u)" = 0 ] || { echo "live-analyze: needs root to make a veth pair" >&2; exit 1; }

tag="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
ns="hmlive-$tag" outer="hmo$tag" inner="hmi$tag"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  ip link del "$outer" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip link add "$outer" type veth peer name "$inner" netns "$ns"
sysctl -qw "net.ipv6.conf.$outer.disable_ipv6=1"
ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$inner.disable_ipv6=1"
ip link set "$outer" mtu 65535 up
ip netns exec "$ns" ip link set "$inner" mtu 65535 up

packets="$(capinfos -c -M -T "$trace" | awk -F'\t' 'NR==2 {print $2}')"
errlog="$(mktemp)"
"$bin" analyze --interface "$outer" --count "$packets" "$@" 2> >(tee "$errlog" >&2) &
pid=$!
for _ in $(seq 200); do
  grep -q "capturing on" "$errlog" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
ip netns exec "$ns" tcpreplay -q -i "$inner" "$trace" >/dev/null
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
