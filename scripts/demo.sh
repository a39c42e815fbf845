#!/usr/bin/env bash
# `make demo`: analyze the home-network capture that ships in demo/ (made by
# `heimdall generate`) into Zeek-format logs and show them; then start the
# split system as local processes, let heimdall-capture read the same capture
# and publish its records, add a stream of synthetic batches, and show them
# all arriving in PostgreSQL through NATS JetStream.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RECORDS="${DEMO_RECORDS:-50000}"
CAPTURE="demo/home.pcap.gz"
LOGS="target/demo-logs"

echo "== heimdall analyze $CAPTURE (10 minutes of a home network: phone, laptop, TV, plug, printer, speaker)"
cargo build -q --release --bin heimdall
target/release/heimdall analyze "$CAPTURE" --logs "$LOGS"
echo
echo "== $LOGS/conn.log: connections by service"
grep -v '^#' "$LOGS/conn.log" | cut -f8 | sort | uniq -c | sort -rn
echo
echo "== $LOGS/conn.log: the largest connections (Zeek's columns; zeek-cut reads this file)"
{ grep '^#fields' "$LOGS/conn.log" | cut -f2-; grep -v '^#' "$LOGS/conn.log" | sort -t$'\t' -k11,11nr | awk 'NR <= 5'; } \
  | cut -f3-12,16 | column -t -s$'\t'
echo
echo "== $LOGS/dns.log: the first queries"
{ grep '^#fields' "$LOGS/dns.log" | cut -f2-; awk '!/^#/ && n++ < 6' "$LOGS/dns.log"; } \
  | cut -f3,5,10,14,16,22 | column -t -s$'\t'
echo
echo "== $LOGS/devices.jsonl: the devices, what they are and how sure (the evidence is in the file)"
python3 - "$LOGS/devices.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'mac':17}  {'vendor':18} {'type':12} {'model':10} {'os':8} {'hostname':16} conf")
for d in rows:
    print(f"{d['mac']:17}  {d['vendor'][:18]:18} {d['device_type']:12} {d['model'][:10]:10} {d['os'][:8]:8} {d['hostname'][:16]:16} {d['confidence']:.2f}")
PY
echo

bash scripts/up.sh start
set -a; . deploy/local.env; set +a
export PGPASSWORD="$HEIMDALL_DATABASE_PASSWORD"
psql_() { psql -X -q -tA -h 127.0.0.1 -U heimdall -d heimdall "$@"; }
before="$(psql_ -c 'SELECT count(*) FROM sink.conn_records')"

echo
conns="$(grep -vc '^#' "$LOGS/conn.log")"
echo "== heimdall-capture reads $CAPTURE and publishes its $conns connections (sensor demo-sensor)"
cargo build -q --release --bin heimdall-capture
HEIMDALL_CAPTURE_SENSOR_ID=demo-sensor HEIMDALL_CAPTURE_SOURCE=files HEIMDALL_CAPTURE_FILES="$CAPTURE" \
  HEIMDALL_TELEMETRY_LISTEN=127.0.0.1:9102 HEIMDALL_TELEMETRY_LOG=warn target/release/heimdall-capture
echo
echo "== publishing $RECORDS more (synthetic) connection records to sensor.demo-sensor.flows (namespace $HEIMDALL_NATS_NAMESPACE)"
HEIMDALL_TELEMETRY_LOG=warn target/debug/heimdall-publish --records "$RECORDS" --per-batch 500

echo "== waiting for the sink to store them"
want=$((before + conns + RECORDS))
for _ in $(seq 1 600); do
  now="$(psql_ -c 'SELECT count(*) FROM sink.conn_records')"
  [ "$now" -ge "$want" ] && break
  sleep 0.1
done
echo "sink.conn_records: $before -> $now rows"
[ "$now" -ge "$want" ] || { echo "demo: records did not all arrive; see .run/sink.log"; exit 1; }

echo
echo "== the newest rows"
psql -X -h 127.0.0.1 -U heimdall -d heimdall -c \
  "SELECT uid, batch_id, to_timestamp(ts_us / 1e6) AS ts, orig_bytes, resp_bytes FROM sink.conn_records ORDER BY ts_us DESC LIMIT 5"
echo "== the fingerprint service's registry for demo-sensor (PostgreSQL schema fingerprint)"
for _ in $(seq 1 100); do
  n="$(psql_ -c "SELECT count(*) FROM fingerprint.devices WHERE sensor_id = 'demo-sensor'")"
  [ "$n" -gt 0 ] && break
  sleep 0.1
done
psql -X -h 127.0.0.1 -U heimdall -d heimdall -c \
  "SELECT device_id, macs[1] AS mac, vendor, device_type, model, round(confidence::numeric, 2) AS confidence FROM fingerprint.devices WHERE sensor_id = 'demo-sensor' ORDER BY first_seen_us"
psql -X -h 127.0.0.1 -U heimdall -d heimdall -c \
  "SELECT kind, count(*) AS events, count(*) FILTER (WHERE published) AS published FROM fingerprint.device_events WHERE sensor_id = 'demo-sensor' GROUP BY kind ORDER BY kind"
echo "== Enigma: what the uploader delivered to the reference ingest server for demo-sensor (schema enigma_ingest)"
want_enigma=$((conns + $(grep -vc '^#' "$LOGS/dns.log")))
for _ in $(seq 1 200); do
  got="$(psql_ -c "SELECT coalesce(sum(records), 0) FROM enigma_ingest.batches WHERE sensor_id = 'demo-sensor'")"
  [ "$got" -ge "$want_enigma" ] && break
  sleep 0.1
done
psql -X -h 127.0.0.1 -U heimdall -d heimdall -c \
  "SELECT log_type, count(*) AS batches, sum(records) AS records, pg_size_pretty(sum(payload_bytes)) AS compressed FROM enigma_ingest.batches WHERE sensor_id = 'demo-sensor' GROUP BY log_type ORDER BY log_type"
echo "== Asgard: the devices as the bridge sent them to the reference server (anonymized; schema asgard_dev)"
devices="$(psql_ -c "SELECT count(*) FROM fingerprint.devices WHERE sensor_id = 'demo-sensor'")"
for _ in $(seq 1 200); do
  got="$(psql_ -c "SELECT count(DISTINCT s->>'anon_device_id') FROM asgard_dev.batches b, jsonb_array_elements(b.body->'signatures') s WHERE b.kind = 'signatures'")"
  [ "$got" -ge "$devices" ] && break
  sleep 0.1
done
psql -X -h 127.0.0.1 -U heimdall -d heimdall -c \
  "SELECT DISTINCT ON (s->>'anon_device_id') s->>'anon_device_id' AS anon_device_id, s->>'device_type' AS type, s->>'vendor' AS vendor, s->>'oui' AS oui FROM asgard_dev.batches b, jsonb_array_elements(b.body->'signatures') s WHERE b.kind = 'signatures' ORDER BY s->>'anon_device_id', b.received_at DESC"
echo "== the anomaly service: devices it profiles and the alerts it raised for demo-sensor (schema anomaly)"
# Profiles are stored at the service's checkpoints (every 10 s).
for _ in $(seq 1 300); do
  n="$(psql_ -c "SELECT count(*) FROM anomaly.profiles WHERE sensor_id = 'demo-sensor'")"
  [ "$n" -gt 0 ] && break
  sleep 0.1
done
psql -X -h 127.0.0.1 -U heimdall -d heimdall -c \
  "SELECT device_key, version, round(confidence::numeric, 2) AS confidence, device_type, jsonb_array_length(coalesce(body->'current'->'destinations', '[]'::jsonb)) AS destinations_this_hour FROM anomaly.profiles WHERE sensor_id = 'demo-sensor' ORDER BY device_key"
psql -X -h 127.0.0.1 -U heimdall -d heimdall -c \
  "SELECT alert_type, count(*) AS alerts, max(severity) AS max_severity, count(DISTINCT incident_id) AS incidents FROM anomaly.alerts WHERE sensor_id = 'demo-sensor' GROUP BY alert_type ORDER BY alert_type"
psql -X -h 127.0.0.1 -U heimdall -d heimdall -c \
  "SELECT incident_id, device_id, CASE state WHEN 1 THEN 'open' WHEN 2 THEN 'acknowledged' ELSE 'closed' END AS state, changed_by, alert_count, alert_types FROM anomaly.incidents WHERE sensor_id = 'demo-sensor' ORDER BY opened_us LIMIT 10"
echo "(a ten-minute capture is too short to learn a baseline: the baseline detectors judge after about 3 days of a device's data, the shape detectors at once)"
echo "== bus metrics of the sink (http://127.0.0.1:9101/metrics)"
curl -s http://127.0.0.1:9101/metrics | grep -E '^heimdall_bus_(handled|poison|handler_errors)' || true
echo "== readiness (http://127.0.0.1:9101/readyz)"
curl -s http://127.0.0.1:9101/readyz; echo
echo
echo "The system is still running: 'make status' shows it, 'make down' stops it."
