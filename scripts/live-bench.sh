#!/usr/bin/env bash
# live-bench.sh: the capture service's live path on a veth pair. A capture
# made by Heimdall's home-traffic generator is replayed with tcpreplay at
# rising packet rates into a running heimdall-capture (publishing to the
# local NATS); for each rate it reports the rate reached, the frames the
# engine analyzed, the kernel's and the interface's drops, the service's
# CPU (share of one core while the replay ran) and its peak memory, and at
# the end the highest rate with every frame analyzed and no drop.
# tcpreplay runs on the same two cores. Needs root (scripts/veth.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"
cargo build -q --release --bin heimdall --bin heimdall-capture
CAP="$OUT/live-home.pcap"
[ -s "$CAP" ] || target/release/heimdall generate --out "$CAP" --minutes 1200 --seed 11 2>/dev/null
sent_total="$(capinfos -c -M -T "$CAP" | awk -F'\t' 'NR==2 {print $2}')"
source scripts/veth.sh
pid=""
VETH_CLEANUP='[ -z "$pid" ] || kill "$pid" 2>/dev/null || true'
veth_up
port=$(( 20000 + RANDOM % 20000 ))
metric() { curl -s "http://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 == n {print $2}'; }
ticks="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "live path: $sent_total frames per run from $(basename "$CAP"), veth pair, host $(nproc) cores"
printf '%10s %12s %10s %10s %10s %8s %9s\n' target-pps reached-pps analyzed k-dropped if-dropped "CPU %" "peak MiB"
best=0
for pps in ${LIVE_BENCH_RATES:-50000 100000 200000 400000 600000 800000 1000000 1500000}; do
  HEIMDALL_CAPTURE_SENSOR_ID=livebench HEIMDALL_CAPTURE_INTERFACE="$VETH_OUTER" \
  HEIMDALL_NATS_NAMESPACE="livebench$RANDOM" HEIMDALL_NATS_MEMORY_STORAGE=true HEIMDALL_NATS_MAX_BYTES_SCALE=0.25 \
  HEIMDALL_TELEMETRY_LISTEN="127.0.0.1:$port" HEIMDALL_TELEMETRY_LOG=warn \
    target/release/heimdall-capture 2>"$OUT/live-capture.log" &
  pid=$!
  for _ in $(seq 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
    sleep 0.05
  done
  before="$(cpu_ticks "$pid")"
  reached="$(veth_replay --pps="$pps" "$CAP" 2>&1 | sed -n 's/.*Rated: [0-9.]* Bps, [0-9.]* Mbps, \([0-9.]*\) pps.*/\1/p' | head -1)"
  # Let the engine catch up (and see the counters settle).
  last=-1
  for _ in $(seq 100); do
    now="$(metric heimdall_capture_packets_total)"
    [ "$now" = "$last" ] && break
    last="$now"; sleep 0.2
  done
  after="$(cpu_ticks "$pid")"
  secs="$(awk -v p="$sent_total" -v r="${reached:-1}" 'BEGIN { print p / (r > 0 ? r : 1) }')"
  kd="$(metric heimdall_capture_kernel_dropped_total)"
  idd="$(metric heimdall_capture_interface_dropped_total)"
  hwm="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
  kill -TERM "$pid"; wait "$pid" || true; pid=""
  awk -v t="$pps" -v r="$reached" -v a="$last" -v kd="$kd" -v id="$idd" -v c0="$before" -v c1="$after" \
      -v hz="$ticks" -v s="$secs" -v m="$hwm" \
    'BEGIN { printf "%10d %12.0f %10d %10d %10d %8.1f %9.1f\n", t, r, a, kd, id, 100 * (c1 - c0) / hz / s, m / 1024 }'
  if [ "$last" = "$sent_total" ] && [ "${kd%.*}" = 0 ] && [ "${idd%.*}" = 0 ]; then
    best="$reached"
  fi
done
echo "live: highest rate with every frame analyzed and no drop: ${best%.*} packets/s"
