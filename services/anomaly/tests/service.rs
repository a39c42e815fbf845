//! The anomaly service as a process, over the real NATS and PostgreSQL: a
//! smart plug's four days of normal life in, its baseline learnt and
//! versioned, then a scan and a new destination raise alerts that are
//! stored and published; the baseline is rolled back by API and by command
//! line; a restarted service judges with the baseline it had.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use heimdall_bus::{Bus, Kind};
use heimdall_proto::addr::ip_bytes;
use heimdall_proto::sensor::v1::{
    AlertBatch, ConnBatch, ConnRecord, ConnState, DnsBatch, DnsRecord, Transport, alert_event,
};
use heimdall_store::testing::TestDb;
use heimdall_tests::process;

const SENSOR: &str = "home-1";
const PLUG_MAC: [u8; 6] = [0x50, 0xc7, 0xbf, 0x01, 0x02, 0x03];
const PLUG_MAC_TEXT: &str = "50:c7:bf:01:02:03";
/// 2025-10-09 08:00 UTC, on the hour.
const T0: i64 = 1_759_996_800_000_000;
const MINUTE: i64 = 60_000_000;

fn ip(s: &str) -> Vec<u8> {
    ip_bytes(s.parse::<IpAddr>().expect("ip"))
}

fn conn(ts_us: i64, dst: &str, port: u32, state: ConnState, up: u64, down: u64) -> ConnRecord {
    ConnRecord {
        ts_us,
        uid: format!("C{ts_us}{port}"),
        id_orig_h: ip("192.168.1.40").into(),
        id_orig_p: 40_000 + (ts_us / MINUTE % 20_000) as u32,
        id_resp_h: ip(dst).into(),
        id_resp_p: port,
        proto: Transport::Tcp as i32,
        conn_state: state as i32,
        orig_bytes: Some(up),
        resp_bytes: Some(down),
        resp_pkts: Some(if up > 0 { 4 } else { 0 }),
        duration_us: Some(800_000),
        orig_l2_addr: PLUG_MAC.to_vec().into(),
        sensor_id: SENSOR.into(),
        ..Default::default()
    }
}

fn lookup(ts_us: i64, name: &str, answer: &str) -> DnsRecord {
    DnsRecord {
        ts_us,
        uid: format!("D{ts_us}"),
        id_orig_h: ip("192.168.1.40").into(),
        id_resp_h: ip("192.168.1.1").into(),
        id_resp_p: 53,
        query: Some(name.into()),
        qtype: Some(1),
        rcode: Some(0),
        answer_addrs: vec![ip(answer).into()],
        sensor_id: SENSOR.into(),
        record_uid: format!("D{ts_us}"),
        ..Default::default()
    }
}

/// The plug's normal life: every ten minutes it looks up its cloud and
/// checks in, for `days` days.
fn normal(days: i64) -> (Vec<ConnRecord>, Vec<DnsRecord>) {
    let (mut conns, mut dns) = (Vec::new(), Vec::new());
    for m in (0..days * 24 * 60).step_by(10) {
        let ts = T0 + m * MINUTE;
        dns.push(lookup(ts, "n-devs.tplinkcloud.com", "52.10.20.30"));
        conns.push(conn(
            ts + 5_000,
            "52.10.20.30",
            443,
            ConnState::Sf,
            620,
            940,
        ));
    }
    (conns, dns)
}

async fn publish(bus: &Bus, id: &str, conns: Vec<ConnRecord>, dns: Vec<DnsRecord>) {
    // An hour at a time, DNS before connections, as a live capture
    // publishes them (batches closed every few seconds).
    let hour = |ts: i64| ts.div_euclid(60 * MINUTE);
    let mut hours: Vec<i64> = conns
        .iter()
        .map(|c| hour(c.ts_us))
        .chain(dns.iter().map(|d| hour(d.ts_us)))
        .collect();
    hours.sort_unstable();
    hours.dedup();
    for h in hours {
        let d: Vec<DnsRecord> = dns.iter().filter(|r| hour(r.ts_us) == h).cloned().collect();
        if !d.is_empty() {
            let b = DnsBatch {
                batch_id: format!("{id}-dns-{h}"),
                sensor_id: SENSOR.into(),
                created_us: 0,
                records: d,
            };
            bus.publish(
                &bus.subjects().publish(Kind::Dns, SENSOR, 0),
                &b.batch_id,
                &b,
            )
            .await
            .expect("publish");
        }
        let c: Vec<ConnRecord> = conns
            .iter()
            .filter(|r| hour(r.ts_us) == h)
            .cloned()
            .collect();
        if !c.is_empty() {
            let b = ConnBatch {
                batch_id: format!("{id}-conn-{h}"),
                sensor_id: SENSOR.into(),
                created_us: 0,
                records: c,
            };
            bus.publish(
                &bus.subjects().publish(Kind::Flows, SENSOR, 0),
                &b.batch_id,
                &b,
            )
            .await
            .expect("publish");
        }
    }
}

async fn wait_for(pool: &sqlx::PgPool, sql: &str, at_least: i64, log: &Path) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or(-1);
        if n >= at_least {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {n}, want at least {at_least}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One test's own database, NATS namespace, log and service process (not
/// started yet).
struct Rig {
    db: TestDb,
    bus: Bus,
    svc: process::ServiceProcess,
    pool: sqlx::PgPool,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn rig(name: &str, checkpoint: Option<&str>, streams: &[Kind]) -> Rig {
    let db = TestDb::new()
        .await
        .expect("PostgreSQL must be running (make setup)");
    let bus_config = heimdall_bus::testing::config(name);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("anomaly.log");
    let mut svc = process::ServiceProcess::new(
        Path::new(env!("CARGO_BIN_EXE_heimdall-anomaly")),
        &bus_config.namespace,
        &log,
    )
    .expect("port")
    .with("HEIMDALL_DATABASE_URL", db.url());
    if let Some(every) = checkpoint {
        svc = svc.with("HEIMDALL_ANOMALY_CHECKPOINT_INTERVAL", every);
    }
    let bus = Bus::connect(&bus_config, &format!("{name}-test"))
        .await
        .expect("NATS must be running (make setup)");
    bus.ensure_streams(streams).await.expect("streams");
    let pool = heimdall_store::connect(db.config(), heimdall_anomaly_service::SCHEMA)
        .await
        .expect("pool");
    Rig {
        db,
        bus,
        svc,
        pool,
        log,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baselines_are_learnt_versioned_rolled_back_and_survive_a_restart() {
    let Rig {
        db,
        bus,
        svc,
        pool,
        log,
        _dir,
    } = rig(
        "anomaly",
        Some("300ms"),
        &[Kind::Flows, Kind::Dns, Kind::Alerts],
    )
    .await;
    let mut child = svc.start().await;

    // Four days of normal life: learnt, versioned, and no alert.
    let (conns, dns) = normal(4);
    let n = conns.len() as i64;
    publish(&bus, "normal", conns, dns).await;
    let versions = wait_for(
        &pool,
        "SELECT count(*) FROM baseline_versions WHERE device_key = '50:c7:bf:01:02:03'",
        90,
        &log,
    )
    .await;
    assert!(versions >= 90, "one version per hour of data: {versions}");
    // A check-in every ten minutes is beacon-shaped: while the plug is new
    // that is worth a low note, never a notification.
    let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts WHERE severity > 2")
        .fetch_one(&pool)
        .await
        .expect("count");
    let raised: Vec<String> =
        sqlx::query_scalar("SELECT description FROM alerts WHERE severity > 2")
            .fetch_all(&pool)
            .await
            .expect("alerts");
    assert_eq!(alerts, 0, "normal behaviour raised alerts: {raised:?}");
    let confidence: f64 = sqlx::query_scalar(
        "SELECT confidence FROM baseline_versions WHERE device_key = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(PLUG_MAC_TEXT)
    .fetch_one(&pool)
    .await
    .expect("confidence");
    assert!(confidence >= 0.5, "{confidence}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while process::metric(svc.addr, "heimdall_anomaly_records_total{kind=\"conn\"}").await
        != Some(n as f64)
    {
        assert!(
            Instant::now() < deadline,
            "not every connection was counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The attack hour: a scan of the router and a call to a new address.
    let t = T0 + 4 * 24 * 60 * MINUTE + 15 * MINUTE;
    let mut attack: Vec<ConnRecord> = (0..40)
        .map(|p| {
            conn(
                t + p * 10_000,
                "192.168.1.1",
                20 + p as u32,
                ConnState::Rej,
                0,
                0,
            )
        })
        .collect();
    attack.push(conn(
        t + 2 * MINUTE,
        "203.0.113.66",
        4444,
        ConnState::Sf,
        9000,
        300,
    ));
    publish(&bus, "attack", attack, Vec::new()).await;
    wait_for(
        &pool,
        "SELECT count(DISTINCT alert_type) FROM alerts WHERE alert_type IN ('port_scan', 'new_destination', 'new_port')",
        3,
        &log,
    )
    .await;
    let (desc, incidents): (String, i64) = sqlx::query_as(
        "SELECT description, (SELECT count(DISTINCT incident_id) FROM alerts WHERE ts_us >= $1) FROM alerts WHERE alert_type = 'new_destination'",
    )
    .bind(t)
    .fetch_one(&pool)
    .await
    .expect("alert");
    assert!(desc.contains("203.0.113.0/24"), "{desc}");
    assert_eq!(incidents, 1, "one device, one hour: one incident");
    let in_incident: i32 = sqlx::query_scalar("SELECT max(alert_count) FROM incidents")
        .fetch_one(&pool)
        .await
        .expect("incident");
    assert!(in_incident >= 3);

    // Published on NATS, with the incident.
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let (g, s) = (got.clone(), stop.clone());
    let run = bus.consume::<AlertBatch, _, _, String>(
        bus.consumer_spec(Kind::Alerts, "anomaly-test-reader", None),
        stop.clone(),
        move |m| {
            let mut g = g.lock().expect("lock");
            g.extend(m.message.records);
            if g.iter()
                .filter(|e| matches!(e.payload, Some(alert_event::Payload::Alert(_))))
                .count()
                >= 3
            {
                s.cancel();
            }
            async { Ok(()) }
        },
    );
    let _ = tokio::time::timeout(Duration::from_secs(20), run).await;
    let events = got.lock().expect("lock").clone();
    let published: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(alert_event::Payload::Alert(a)) => Some(a),
            _ => None,
        })
        .collect();
    assert!(published.len() >= 3, "{events:?}");
    assert!(published.iter().all(|a| a.src_mac.as_ref() == PLUG_MAC));
    assert!(
        events
            .iter()
            .any(|e| matches!(e.payload, Some(alert_event::Payload::Incident(_))))
    );

    // Roll back by API to an early, unconfident version.
    let (code, body) =
        process::http_get(svc.addr, &format!("/v1/baselines/{SENSOR}/{PLUG_MAC_TEXT}"))
            .await
            .expect("GET");
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).expect("json");
    let newest = listed["versions"][0]["version"].as_u64().expect("version");
    let (code, body) = process::http_post_json(
        svc.addr,
        &format!("/v1/baselines/{SENSOR}/{PLUG_MAC_TEXT}/rollback"),
        "{\"version\": 12}",
    )
    .await
    .expect("POST");
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["new_version"].as_u64(), Some(newest + 1));
    let (version, confidence, early): (i64, f64, f64) = sqlx::query_as(
        "SELECT p.version, p.confidence, v.confidence FROM profiles p, baseline_versions v \
         WHERE p.device_key = $1 AND v.device_key = $1 AND v.version = 12",
    )
    .bind(PLUG_MAC_TEXT)
    .fetch_one(&pool)
    .await
    .expect("profile");
    assert_eq!(version as u64, newest + 1);
    assert!((confidence - early).abs() < 1e-9, "{confidence} vs {early}");
    let (code, body) = process::http_post_json(
        svc.addr,
        &format!("/v1/baselines/{SENSOR}/{PLUG_MAC_TEXT}/rollback"),
        "{\"version\": 999999}",
    )
    .await
    .expect("POST");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no stored baseline version 999999"), "{body}");

    // And by command line, back to the newest learnt version.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_heimdall-anomaly"))
        .args(["rollback", SENSOR, PLUG_MAC_TEXT, &newest.to_string()])
        .env("HEIMDALL_DATABASE_URL", db.url())
        .output()
        .expect("run");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("back to version {newest}")),
        "{said}"
    );
    let confidence: f64 =
        sqlx::query_scalar("SELECT confidence FROM profiles WHERE device_key = $1")
            .bind(PLUG_MAC_TEXT)
            .fetch_one(&pool)
            .await
            .expect("profile");
    assert!(confidence >= 0.5, "{confidence}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_heimdall-anomaly"))
        .args(["versions", SENSOR, PLUG_MAC_TEXT])
        .env("HEIMDALL_DATABASE_URL", db.url())
        .output()
        .expect("run");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("rollback to 12"), "{said}");

    // A restart resumes with the baseline: the next new destination is
    // judged at once, not learnt.
    process::terminate(&child);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    child = svc.start().await;
    assert_eq!(
        process::metric(svc.addr, "heimdall_anomaly_devices").await,
        Some(1.0),
        "the profile is loaded before the service is ready"
    );
    let later = t + 3 * 60 * MINUTE;
    publish(
        &bus,
        "after-restart",
        vec![conn(later, "198.51.100.23", 443, ConnState::Sf, 700, 900)],
        Vec::new(),
    )
    .await;
    wait_for(
        &pool,
        "SELECT count(*) FROM alerts WHERE alert_type = 'new_destination' AND description LIKE '%198.51.100.0/24%'",
        1,
        &log,
    )
    .await;
    finish(&mut child, &bus).await;
}

/// A simulated connection as the capture service would publish it.
fn record(f: &heimdall_detect::Flow, n: usize) -> ConnRecord {
    ConnRecord {
        ts_us: f.ts_us,
        uid: format!("S{n}"),
        id_orig_h: ip_bytes(f.src).into(),
        id_orig_p: 20_000 + (n % 40_000) as u32,
        id_resp_h: ip_bytes(f.dst).into(),
        id_resp_p: u32::from(f.dst_port),
        proto: f.transport as i32,
        conn_state: f.state as i32,
        orig_bytes: Some(f.orig_bytes),
        resp_bytes: Some(f.resp_bytes),
        resp_pkts: Some(f.resp_pkts),
        duration_us: Some(f.duration_us),
        orig_l2_addr: f.src_mac.map(|m| m.to_vec()).unwrap_or_default().into(),
        sensor_id: SENSOR.into(),
        ..Default::default()
    }
}

/// Three days of a simulated home's connections as the capture service
/// would publish them, and the alert ids one monitor that never stopped
/// raises from them. Connections only: one consumer feeds the monitor, in
/// the order they were published, as the monitor here reads them.
fn simulated() -> (Vec<ConnRecord>, Vec<String>) {
    use heimdall_detect::sim::{Home, Record};
    let home = Home::generate(11, 3, 2);
    let conns: Vec<ConnRecord> = home
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Conn(f) => Some(f),
            Record::Dns { .. } | Record::Arp { .. } => None,
        })
        .enumerate()
        .map(|(n, f)| record(f, n))
        .collect();
    let settings = heimdall_anomaly_service::AnomalySettings::default();
    let mut monitor = heimdall_detect::Monitor::new(
        heimdall_detect::DetectConfig::default(),
        settings.baseline(),
    );
    monitor.profiler.record_versions = true;
    let mut expected: Vec<String> = Vec::new();
    for c in &conns {
        monitor.conn_record(c);
        expected.extend(monitor.take().into_iter().map(|a| a.alert_id));
    }
    expected.sort();
    assert!(expected.len() >= 20, "{} alerts", expected.len());
    (conns, expected)
}

/// Publishes `conns` in batches of 300, then waits until the running
/// service has applied a quarter of them and stored a checkpoint.
async fn publish_and_wait_for_a_quarter(
    bus: &Bus,
    svc: &process::ServiceProcess,
    pool: &sqlx::PgPool,
    conns: &[ConnRecord],
) {
    let subject = bus.subjects().publish(Kind::Flows, SENSOR, 0);
    for (i, chunk) in conns.chunks(300).enumerate() {
        let b = ConnBatch {
            batch_id: format!("sim-{i}"),
            sensor_id: SENSOR.into(),
            created_us: 0,
            records: chunk.to_vec(),
        };
        bus.publish(&subject, &b.batch_id, &b)
            .await
            .expect("publish");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = process::metric(svc.addr, "heimdall_anomaly_records_total{kind=\"conn\"}")
            .await
            .unwrap_or(0.0);
        let saved: i64 = sqlx::query_scalar("SELECT count(*) FROM consumer_positions")
            .fetch_one(pool)
            .await
            .unwrap_or(0);
        if saved > 0 && done >= conns.len() as f64 / 4.0 {
            return;
        }
        assert!(Instant::now() < deadline, "no progress: {done} records");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `expected.len()` alerts, a little longer for any extra, and
/// checks the stored ids are exactly `expected`; then that each reached
/// NATS (the outbox may send a batch again when a crash fell between
/// sending and marking it: consumers drop the repeat by its event id).
async fn stored_and_published_exactly(
    bus: &Bus,
    pool: &sqlx::PgPool,
    expected: &[String],
    log: &Path,
    reader: &str,
) {
    wait_for(
        pool,
        "SELECT count(*) FROM alerts",
        expected.len() as i64,
        log,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut stored: Vec<String> = sqlx::query_scalar("SELECT alert_id FROM alerts")
        .fetch_all(pool)
        .await
        .expect("alerts");
    stored.sort();
    assert!(
        stored == expected,
        "{} stored, {} expected; missing {:?}, extra {:?}",
        stored.len(),
        expected.len(),
        expected
            .iter()
            .filter(|e| !stored.contains(e))
            .collect::<Vec<_>>(),
        stored
            .iter()
            .filter(|s| !expected.contains(s))
            .collect::<Vec<_>>(),
    );
    let got = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let (g, s, want) = (got.clone(), stop.clone(), expected.len());
    let run = bus.consume::<AlertBatch, _, _, String>(
        bus.consumer_spec(Kind::Alerts, reader, None),
        stop.clone(),
        move |m| {
            let mut g = g.lock().expect("lock");
            for e in m.message.records {
                if let Some(alert_event::Payload::Alert(a)) = e.payload {
                    g.insert(a.alert_id);
                }
            }
            if g.len() >= want {
                s.cancel();
            }
            async { Ok(()) }
        },
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), run).await;
    let published: Vec<String> = got.lock().expect("lock").iter().cloned().collect();
    assert_eq!(published, expected);
}

/// The service is killed with SIGKILL while it works through three days of
/// a simulated home, and started again: the alerts it stores are exactly
/// those one monitor that never stopped raises from the same records, none
/// lost and none twice, and each reaches NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_stream_loses_and_doubles_no_alert() {
    let Rig {
        bus,
        svc,
        pool,
        log,
        _dir,
        db: _db,
    } = rig("anomaly-kill", Some("500ms"), &[Kind::Flows, Kind::Alerts]).await;
    let (conns, expected) = simulated();
    // Killed once a checkpoint is stored and a quarter of the records are
    // in, with more applied since that checkpoint.
    let mut child = svc.start().await;
    publish_and_wait_for_a_quarter(&bus, &svc, &pool, &conns).await;
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let mut child = svc.start().await;
    stored_and_published_exactly(&bus, &pool, &expected, &log, "anomaly-kill-reader").await;
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        said.contains("consumer resumes after the saved state"),
        "{said}"
    );
    finish(&mut child, &bus).await;
}

/// PostgreSQL refuses every alert for three seconds while the service
/// works through the same home: the batches that could not store wait, in
/// order, and afterwards the alerts are exactly the uninterrupted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_stream_loses_and_doubles_no_alert() {
    let Rig {
        bus,
        svc,
        pool,
        log,
        _dir,
        db: _db,
    } = rig(
        "anomaly-outage",
        Some("500ms"),
        &[Kind::Flows, Kind::Alerts],
    )
    .await;
    let (conns, expected) = simulated();
    let mut child = svc.start().await;
    publish_and_wait_for_a_quarter(&bus, &svc, &pool, &conns).await;
    for sql in [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected outage'; END $$",
        "CREATE TRIGGER outage BEFORE INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION refuse()",
    ] {
        sqlx::query(sql).execute(&pool).await.expect("outage");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    sqlx::query("DROP TRIGGER outage ON alerts")
        .execute(&pool)
        .await
        .expect("end of outage");
    stored_and_published_exactly(&bus, &pool, &expected, &log, "anomaly-outage-reader").await;
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        said.contains("injected outage"),
        "the outage never bit:\n{said}"
    );
    finish(&mut child, &bus).await;
}

/// Ends a test: the service stops, the test's streams go.
async fn finish(child: &mut tokio::process::Child, bus: &Bus) {
    process::terminate(child);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = bus.delete_streams(&Kind::ALL).await;
}

/// A fast scan of `host` from the plug: forty refused ports in 0.4 s.
fn scan(t: i64, host: &str) -> Vec<ConnRecord> {
    (0..40)
        .map(|p| conn(t + p * 10_000, host, 20 + p as u32, ConnState::Rej, 0, 0))
        .collect()
}

/// Incidents end: an hour of the device's record time without an alert
/// closes one; a person closes or acknowledges one by API or command line.
/// After a person's close the device's next alert opens a new incident,
/// and every change is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_close_by_inactivity_and_by_a_person() {
    let Rig {
        db,
        bus,
        svc,
        pool,
        log,
        _dir,
    } = rig("anomaly-incidents", None, &[Kind::Flows, Kind::Alerts]).await;
    let mut child = svc.start().await;
    let incident_of = |host: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT incident_id FROM alerts WHERE alert_type = 'port_scan' AND description LIKE $1",
            )
            .bind(format!("%{host}%"))
            .fetch_one(&pool)
            .await
            .expect("incident")
        }
    };

    // A scan, then two quiet hours: closed by inactivity, an hour after
    // its last alert.
    publish(&bus, "scan-1", scan(T0, "192.168.1.1"), Vec::new()).await;
    wait_for(&pool, "SELECT count(*) FROM alerts", 1, &log).await;
    let first = incident_of("192.168.1.1").await;
    publish(
        &bus,
        "quiet",
        vec![conn(
            T0 + 120 * MINUTE,
            "52.10.20.30",
            443,
            ConnState::Sf,
            620,
            940,
        )],
        Vec::new(),
    )
    .await;
    wait_for(
        &pool,
        "SELECT count(*) FROM incidents WHERE state = 3 AND changed_by = 'inactivity'",
        1,
        &log,
    )
    .await;
    let (id, closed_us, updated_us): (String, i64, i64) =
        sqlx::query_as("SELECT incident_id, closed_us, updated_us FROM incidents WHERE state = 3")
            .fetch_one(&pool)
            .await
            .expect("closed");
    assert_eq!(id, first);
    assert_eq!(closed_us, updated_us + 60 * MINUTE);

    // A person closes the next one; the device's next alert opens another.
    let t = T0 + 180 * MINUTE;
    publish(&bus, "scan-2", scan(t, "192.168.1.2"), Vec::new()).await;
    wait_for(
        &pool,
        "SELECT count(*) FROM alerts WHERE description LIKE '%192.168.1.2%'",
        1,
        &log,
    )
    .await;
    let second = incident_of("192.168.1.2").await;
    assert_ne!(second, first);
    let path = format!("/v1/incidents/{SENSOR}/{second}/close");
    let (code, body) = process::http_post_json(
        svc.addr,
        &path,
        "{\"by\": \"alice\", \"note\": \"my own nmap\"}",
    )
    .await
    .expect("POST");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"state\":\"closed\""), "{body}");
    let (code, body) = process::http_post_json(svc.addr, &path, "{\"by\": \"alice\"}")
        .await
        .expect("POST");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("closed already"), "{body}");
    let (code, body) = process::http_post_json(
        svc.addr,
        &format!("/v1/incidents/{SENSOR}/Inope/close"),
        "{\"by\": \"alice\"}",
    )
    .await
    .expect("POST");
    assert_eq!(code, 404, "{body}");
    let (code, body) = process::http_post_json(svc.addr, &path, "{}")
        .await
        .expect("POST");
    assert_eq!(code, 400, "{body}");
    publish(
        &bus,
        "scan-3",
        scan(t + 10 * MINUTE, "192.168.1.3"),
        Vec::new(),
    )
    .await;
    wait_for(
        &pool,
        "SELECT count(*) FROM alerts WHERE description LIKE '%192.168.1.3%'",
        1,
        &log,
    )
    .await;
    let third = incident_of("192.168.1.3").await;
    assert_ne!(third, second, "a closed incident took another alert");

    // Acknowledged from the command line; listed by state.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_heimdall-anomaly"))
        .args(["acknowledge", SENSOR, &third, "--by", "bob"])
        .env("HEIMDALL_DATABASE_URL", db.url())
        .output()
        .expect("run");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("acknowledged"), "{said}");
    let (code, body) = process::http_get(svc.addr, &format!("/v1/incidents/{SENSOR}?state=closed"))
        .await
        .expect("GET");
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut closed: Vec<&str> = listed["incidents"]
        .as_array()
        .expect("list")
        .iter()
        .map(|i| i["incident_id"].as_str().expect("id"))
        .collect();
    closed.sort_unstable();
    let mut want = vec![first.as_str(), second.as_str()];
    want.sort_unstable();
    assert_eq!(closed, want);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_heimdall-anomaly"))
        .args(["incidents", SENSOR])
        .env("HEIMDALL_DATABASE_URL", db.url())
        .output()
        .expect("run");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("closed by alice"), "{said}");
    assert!(said.contains("acknowledged by bob"), "{said}");

    // Every change reached NATS.
    let got = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let (g, s) = (got.clone(), stop.clone());
    let wanted = [
        (first.clone(), 3, "closed by inactivity".to_string()),
        (
            second.clone(),
            3,
            "closed by alice: my own nmap".to_string(),
        ),
        (third.clone(), 2, "acknowledged by bob".to_string()),
    ];
    let w = wanted.clone();
    let run = bus.consume::<AlertBatch, _, _, String>(
        bus.consumer_spec(Kind::Alerts, "anomaly-incidents-reader", None),
        stop.clone(),
        move |m| {
            let mut g = g.lock().expect("lock");
            for e in m.message.records {
                if let Some(alert_event::Payload::Incident(i)) = e.payload {
                    g.insert((i.incident_id.clone(), i.state), i);
                }
            }
            if w.iter()
                .all(|(id, st, _)| g.contains_key(&(id.clone(), *st)))
            {
                s.cancel();
            }
            async { Ok(()) }
        },
    );
    let _ = tokio::time::timeout(Duration::from_secs(20), run).await;
    let got = got.lock().expect("lock").clone();
    for (id, state, says) in &wanted {
        let i = got
            .get(&(id.clone(), *state))
            .unwrap_or_else(|| panic!("no event for {id} in state {state}: {:?}", got.keys()));
        assert!(i.summary.ends_with(says.as_str()), "{}", i.summary);
        assert_eq!(i.closed_us.is_some(), *state == 3, "{i:?}");
    }
    finish(&mut child, &bus).await;
}
