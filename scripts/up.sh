#!/usr/bin/env bash
# `make up` / `make down` / `make status`: the split system as local
# processes, no containers. Each service gets its settings from
# deploy/local.env plus its own telemetry port, logs to .run/<name>.log and
# is tracked by .run/<name>.pid.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
# name:binary:telemetry-port. New services add a line here.
SERVICES=(
  "sink:heimdall-sink:9101"
  "fingerprint:heimdall-fingerprint:9103"
  "enigma-ingest:heimdall-enigma-ingest:9104"
  "enigma-uploader:heimdall-enigma-uploader:9105"
  "asgard-dev:heimdall-asgard-dev:9106"
  "asgard-bridge:heimdall-asgard-bridge:9107"
  "anomaly:heimdall-anomaly:9108"
)

mkdir -p "$RUN"
say() { printf 'up: %s\n' "$*"; }

status_code() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1$2" 2>/dev/null || true; }

start() {
  (cd "$ROOT" && cargo build -q --workspace --bins)
  set -a; . "$ROOT/deploy/local.env"; set +a
  for entry in "${SERVICES[@]}"; do
    IFS=: read -r name bin port <<<"$entry"
    pidfile="$RUN/$name.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      say "$name already running (pid $(cat "$pidfile"))"; continue
    fi
    HEIMDALL_TELEMETRY_LISTEN="127.0.0.1:$port" \
      nohup "$ROOT/target/debug/$bin" >>"$RUN/$name.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 300); do
      [ "$(status_code "$port" /readyz)" = 200 ] && break
      kill -0 "$(cat "$pidfile")" 2>/dev/null || { say "$name exited; last lines of $RUN/$name.log:"; tail -n 20 "$RUN/$name.log"; exit 1; }
      sleep 0.1
    done
    [ "$(status_code "$port" /readyz)" = 200 ] || { say "$name not ready after 30 s; see $RUN/$name.log"; exit 1; }
    say "$name ready (pid $(cat "$pidfile"), http://127.0.0.1:$port/metrics)"
  done
}

stop() {
  for entry in "${SERVICES[@]}"; do
    IFS=: read -r name _ _ <<<"$entry"
    pidfile="$RUN/$name.pid"
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      say "$name stopped"
    fi
    rm -f "$pidfile"
  done
}

status() {
  for entry in "${SERVICES[@]}"; do
    IFS=: read -r name _ port <<<"$entry"
    pidfile="$RUN/$name.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      printf '%-10s running  pid %-7s readyz %s\n' "$name" "$(cat "$pidfile")" "$(status_code "$port" /readyz)"
    else
      printf '%-10s stopped\n' "$name"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
