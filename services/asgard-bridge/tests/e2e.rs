//! The bridge process against the reference Asgard server over HTTPS on
//! 127.0.0.1, with the real NATS and PostgreSQL: device events and alerts
//! in, anonymized signatures and alerts stored by the server; nothing
//! identifying in any body it received; an outage and revoked tokens lose
//! and double nothing; intelligence comes back onto the bus.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use heimdall_bus::{Bus, Kind};
use heimdall_proto::sensor::v1::{
    Alert, AlertBatch, AlertEvent, Device, DeviceEvent, DeviceEventBatch, DeviceEventKind,
    DeviceIp, DeviceMac, DeviceType, IntelUpdate, Severity, SignatureKind, alert_event,
};
use heimdall_store::testing::TestDb;
use heimdall_telemetry::ServiceConfig;
use heimdall_tests::{process, secrets, tls};

struct Rig {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    db: TestDb,
    bus: Bus,
    namespace: String,
    pki: tls::TestPki,
    https: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
}

impl Rig {
    async fn new(server_env: &[(&str, &str)]) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let pki = tls::make(&path).expect("test certificates (openssl; make setup installs it)");
        std::fs::write(path.join("enroll"), secrets::secret("enrollment")).expect("token");
        std::fs::write(path.join("anon-key"), [0x5au8; 32]).expect("key");
        let db = TestDb::new()
            .await
            .expect("PostgreSQL must be running (make setup)");
        let bus_config = heimdall_bus::testing::config("asgard");
        let bus = Bus::connect(&bus_config, "asgard-test")
            .await
            .expect("NATS must be running (make setup)");
        bus.ensure_streams(&heimdall_asgard_bridge::STREAMS)
            .await
            .expect("streams");
        let https = process::free_port().expect("port");
        let telemetry = process::free_port().expect("port");
        let mut env = heimdall_asgard_dev::settings_env(
            https,
            &pki.server_cert,
            &pki.server_key,
            &path.join("enroll"),
        );
        env.push(("HEIMDALL_DATABASE_URL".into(), db.url().to_string()));
        env.push(("HEIMDALL_TELEMETRY_LISTEN".into(), telemetry.to_string()));
        env.extend(
            server_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let loader = heimdall_config::Loader::from_parts(env, None).expect("settings");
        let config = heimdall_asgard_dev::Config::load(loader).expect("settings");
        let stop = process::serve_in_thread(telemetry, move |listener, stop| {
            heimdall_asgard_dev::run(config, listener, stop)
        })
        .await;
        Rig {
            _dir: dir,
            dir: path,
            db,
            bus,
            namespace: bus_config.namespace.clone(),
            pki,
            https,
            stop,
        }
    }

    fn bridge(&self) -> process::ServiceProcess {
        let p = |f: &str| self.dir.join(f).display().to_string();
        process::ServiceProcess::new(
            Path::new(env!("CARGO_BIN_EXE_heimdall-asgard-bridge")),
            &self.namespace,
            &self.dir.join("bridge.log"),
        )
        .expect("port")
        .with(
            "HEIMDALL_ASGARD_URL",
            format!("https://localhost:{}", self.https.port()),
        )
        .with(
            "HEIMDALL_ASGARD_CA_FILE",
            self.pki.ca_cert.display().to_string(),
        )
        .with("HEIMDALL_ASGARD_ENROLLMENT_TOKEN_FILE", p("enroll"))
        .with("HEIMDALL_ASGARD_HARDWARE_ID", "test-gateway-1")
        .with("HEIMDALL_ASGARD_ANON_KEY_FILE", p("anon-key"))
        .with("HEIMDALL_ASGARD_STATE_DIR", p("state"))
        .with("HEIMDALL_ASGARD_SEND_EVERY", "200ms")
        .with("HEIMDALL_ASGARD_INTEL_EVERY", "1s")
        .with("HEIMDALL_ASGARD_BACKOFF_MIN", "100ms")
        .with("HEIMDALL_ASGARD_BACKOFF_MAX", "1s")
        .with("HEIMDALL_ASGARD_BATCH_ITEMS", "40")
        .with("HEIMDALL_DATABASE_URL", self.db.url())
    }

    /// The anomaly service on the rig's NATS namespace and database, in a
    /// thread; its stop token and a pool on its schema.
    async fn anomaly(&self) -> (tokio_util::sync::CancellationToken, sqlx::PgPool) {
        let telemetry = process::free_port().expect("port");
        let env: Vec<(String, String)> = [
            ("HEIMDALL_NATS_URL", heimdall_bus::testing::nats_url()),
            ("HEIMDALL_NATS_NAMESPACE", self.namespace.clone()),
            ("HEIMDALL_NATS_MEMORY_STORAGE", "true".into()),
            ("HEIMDALL_NATS_MAX_BYTES_SCALE", "0.05".into()),
            ("HEIMDALL_DATABASE_URL", self.db.url().to_string()),
            ("HEIMDALL_TELEMETRY_LISTEN", telemetry.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let loader = heimdall_config::Loader::from_parts(env, None).expect("settings");
        let config = heimdall_anomaly_service::Config::load(loader).expect("settings");
        let stop = process::serve_in_thread(telemetry, move |listener, stop| {
            heimdall_anomaly_service::run(config, listener, stop)
        })
        .await;
        let pool = heimdall_store::connect(self.db.config(), heimdall_anomaly_service::SCHEMA)
            .await
            .expect("pool");
        (stop, pool)
    }

    async fn pool(&self) -> sqlx::PgPool {
        heimdall_store::connect(self.db.config(), heimdall_asgard_dev::SCHEMA)
            .await
            .expect("pool")
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("bridge.log")).unwrap_or_default()
    }

    /// Devices `from..to` and one alert each, as fingerprint and anomaly
    /// would publish them.
    async fn publish(&self, from: u8, to: u8) {
        let mac = |i: u8| vec![0x00, 0x17, 0x88, 0x10, 0x20, i];
        let events = (from..to)
            .map(|i| DeviceEvent {
                event_id: format!("ev-{i}"),
                sensor_id: "home-1".into(),
                ts_us: 1_760_000_000_000_000,
                kind: DeviceEventKind::New as i32,
                device: Some(Device {
                    device_id: format!("device-{i}"),
                    sensor_id: "home-1".into(),
                    macs: vec![DeviceMac {
                        mac: mac(i).into(),
                        ..Default::default()
                    }],
                    ips: vec![DeviceIp {
                        ip: vec![192, 168, 1, i].into(),
                        ..Default::default()
                    }],
                    vendor: "Signify".into(),
                    device_type: DeviceType::Light as i32,
                    hostnames: vec![format!("Hue-Lamp-Livingroom-{i}")],
                    label: format!("Grandma's lamp {i}"),
                    confidence: 0.8,
                    first_seen_us: 1_760_000_000_000_000,
                    last_seen_us: 1_760_000_360_000_000,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let devices = DeviceEventBatch {
            batch_id: format!("devices-{from}"),
            sensor_id: "home-1".into(),
            created_us: 1,
            records: events,
        };
        let alerts = AlertBatch {
            batch_id: format!("alerts-{from}"),
            sensor_id: "home-1".into(),
            created_us: 1,
            records: (from..to)
                .map(|i| AlertEvent {
                    event_id: format!("ae-{i}"),
                    sensor_id: "home-1".into(),
                    ts_us: 1_760_000_100_000_000,
                    payload: Some(alert_event::Payload::Alert(Alert {
                        alert_id: format!("alert-{i}"),
                        sensor_id: "home-1".into(),
                        ts_us: 1_760_000_100_000_000,
                        alert_type: "beaconing".into(),
                        severity: Severity::High as i32,
                        score: 0.9,
                        device_id: format!("device-{i}"),
                        src_mac: mac(i).into(),
                        src_ip: vec![192, 168, 1, i].into(),
                        dst_ip: vec![203, 0, 113, i].into(),
                        dst_port: Some(443),
                        dst_domain: Some(format!("beacon-{i}.c2-example.com")),
                        description: format!(
                            "Hue-Lamp-Livingroom-{i} calls 203.0.113.{i} every 60 s"
                        ),
                        incident_id: format!("incident-{i}"),
                        ..Default::default()
                    })),
                })
                .collect(),
        };
        let ds = self.bus.subjects().publish(Kind::Devices, "home-1", 0);
        let als = self.bus.subjects().publish(Kind::Alerts, "home-1", 0);
        self.bus
            .publish(&ds, &devices.batch_id, &devices)
            .await
            .expect("devices");
        self.bus
            .publish(&als, &alerts.batch_id, &alerts)
            .await
            .expect("alerts");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Items the server stored, by kind, counted by their anonymized ids.
async fn stored(pool: &sqlx::PgPool) -> (HashMap<String, u32>, HashMap<String, u32>) {
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as("SELECT kind, body FROM batches")
        .fetch_all(pool)
        .await
        .expect("batches");
    let (mut sigs, mut alerts) = (HashMap::new(), HashMap::new());
    for (kind, body) in rows {
        let (list, key, into) = if kind == "signatures" {
            ("signatures", "anon_device_id", &mut sigs)
        } else {
            ("alerts", "alert_id", &mut alerts)
        };
        for item in body[list].as_array().cloned().unwrap_or_default() {
            *into
                .entry(item[key].as_str().unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
    }
    (sigs, alerts)
}

async fn wait_stored(rig: &Rig, pool: &sqlx::PgPool, n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, a) = stored(pool).await;
        if s.len() >= n && a.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server holds {} signatures and {} alerts of {n}\n{}",
            s.len(),
            a.len(),
            rig.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_anonymized_behaviour_reaches_asgard_and_subnets_keep_their_prefix() {
    let rig = Rig::new(&[]).await;
    let bridge = rig.bridge();
    let mut child = bridge.start().await;
    rig.publish(1, 61).await;
    let pool = rig.pool().await;
    wait_stored(&rig, &pool, 60, 30).await;
    let (sigs, alerts) = stored(&pool).await;
    assert!(
        sigs.values().chain(alerts.values()).all(|n| *n == 1),
        "each once"
    );

    // Every body the server ever received, searched for what identifies.
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM requests")
        .fetch_all(&pool)
        .await
        .expect("requests");
    let all = bodies.join("\n");
    assert!(all.contains("beaconing"), "the bodies are there to search");
    for i in 1..61u8 {
        for needle in [
            format!("192.168.1.{i}\""),
            format!("203.0.113.{i}\""),
            format!("00:17:88:10:20:{i:02x}"),
            format!("0017881020{i:02x}"),
            format!("Hue-Lamp-Livingroom-{i}"),
            format!("Grandma's lamp {i}"),
            format!("device-{i}\""),
            format!("alert-{i}\""),
            format!("incident-{i}\""),
            format!("beacon-{i}."),
        ] {
            assert!(!all.contains(&needle), "{needle:?} left the sensor");
        }
    }
    // Prefix preservation: all destinations were in 203.0.113.0/24, so all
    // anonymized ones share one /24, and it is not the original.
    let rows: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT body FROM batches WHERE kind = 'alerts'")
            .fetch_all(&pool)
            .await
            .expect("alerts");
    let prefixes: std::collections::BTreeSet<String> = rows
        .iter()
        .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            let ip = a["anon_dst_ip"].as_str().unwrap_or("").to_string();
            ip.rsplit_once('.')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(prefixes.len(), 1, "{prefixes:?}");
    assert_ne!(
        prefixes.iter().next().map(String::as_str),
        Some("203.0.113")
    );
    let domains: Vec<String> = rows
        .iter()
        .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| a["dst_domain"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(domains.iter().all(|d| d == "c2-example.com"), "{domains:?}");

    // The credentials are the bridge's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(rig.dir.join("state/credentials.json"))
            .expect("credentials")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    process::terminate(&child);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = rig.bus.delete_streams(&Kind::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_and_revoked_tokens_lose_and_double_nothing() {
    // Down for the first 4 s: enrollment and uploads wait.
    let rig = Rig::new(&[
        ("HEIMDALL_ASGARDDEV_OUTAGE_AFTER", "0s"),
        ("HEIMDALL_ASGARDDEV_OUTAGE_FOR", "4s"),
        ("HEIMDALL_ASGARDDEV_FAIL_SHARE", "0.2"),
        ("HEIMDALL_ASGARDDEV_RETRY_AFTER_S", "1"),
    ])
    .await;
    let bridge = rig.bridge();
    let mut child = bridge.start().await;
    rig.publish(1, 101).await;
    let pool = rig.pool().await;
    wait_stored(&rig, &pool, 100, 60).await;

    // Every token revoked mid-run: refresh is refused too, so the bridge
    // enrolls again (the same sensor) and goes on.
    heimdall_asgard_dev::revoke_tokens(&pool, true)
        .await
        .expect("revoke");
    rig.publish(101, 201).await;
    wait_stored(&rig, &pool, 200, 60).await;
    let (sigs, alerts) = stored(&pool).await;
    assert_eq!((sigs.len(), alerts.len()), (200, 200));
    let doubled: Vec<_> = sigs
        .iter()
        .chain(alerts.iter())
        .filter(|(_, n)| **n > 1)
        .collect();
    assert!(doubled.is_empty(), "stored twice: {doubled:?}");
    let sensors: i64 = sqlx::query_scalar("SELECT count(*) FROM sensors")
        .fetch_one(&pool)
        .await
        .expect("sensors");
    assert_eq!(sensors, 1, "enrolling again kept the sensor's identity");
    let logs = rig.logs();
    assert!(logs.contains("enrolling again"), "{logs}");
    assert!(logs.contains("retry_in_ms"), "backoff is visible");
    let (_, metrics) = process::http_get(bridge.addr, "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics.contains("heimdall_asgard_queue_depth 0"),
        "{metrics}"
    );
    process::terminate(&child);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = rig.bus.delete_streams(&Kind::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intelligence_reaches_the_bus_within_seconds() {
    let rig = Rig::new(&[]).await;
    let bridge = rig.bridge();
    let mut child = bridge.start().await;
    let pool = rig.pool().await;
    let intel: heimdall_asgard_api::IntelUpdate = serde_json::from_value(serde_json::json!({
        "threat_signatures": [{"id": "sig-c2", "kind": "domain", "value": "c2-example.com",
                               "severity": "critical", "source": "test"}],
        "enforcement_rules": [{"id": "rule-block-c2", "action": "block",
                               "criteria": {"domains": ["c2-example.com"]}}]
    }))
    .expect("intel");
    let loaded = Instant::now();
    heimdall_asgard_dev::load_intel(&pool, &intel)
        .await
        .expect("load");

    let read = |kind: Kind| {
        let bus = rig.bus.clone();
        async move {
            let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<IntelUpdate>::new()));
            let stop = tokio_util::sync::CancellationToken::new();
            let spec = bus.consumer_spec(kind, "intel-test", None);
            let (got2, stop2) = (got.clone(), stop.clone());
            // The first poll may have published an empty snapshot before
            // the signature was loaded: read until the loaded items arrive.
            let run = bus.consume::<IntelUpdate, _, _, String>(spec, stop, move |m| {
                let done = m.message.threat_signatures.iter().any(|s| s.id == "sig-c2")
                    || m.message
                        .enforcement_rules
                        .iter()
                        .any(|r| r.id == "rule-block-c2");
                got2.lock().expect("lock").push(m.message);
                if done {
                    stop2.cancel();
                }
                async { Ok(()) }
            });
            let _ = tokio::time::timeout(Duration::from_secs(15), run).await;
            got.lock().expect("lock").clone()
        }
    };
    let updates = read(Kind::Intel).await;
    let took = loaded.elapsed();
    let sig = updates
        .iter()
        .flat_map(|u| &u.threat_signatures)
        .find(|s| s.id == "sig-c2")
        .unwrap_or_else(|| panic!("no signature on the bus\n{}", rig.logs()));
    assert_eq!(sig.kind, SignatureKind::Domain as i32);
    assert_eq!(sig.severity, Severity::Critical as i32);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let rules = read(Kind::Enforcement).await;
    assert!(
        rules
            .iter()
            .flat_map(|u| &u.enforcement_rules)
            .any(|r| r.id == "rule-block-c2"),
        "{rules:?}"
    );
    assert!(rules.iter().all(|u| u.threat_signatures.is_empty()));
    process::terminate(&child);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = rig.bus.delete_streams(&Kind::ALL).await;
}

/// The whole way: a signature loaded into the reference server reaches the
/// anomaly service through the bridge and the bus, and the next look-up of
/// the listed domain is a threat_match alert, within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threat_signature_turns_matching_traffic_into_an_alert_within_seconds() {
    use heimdall_proto::sensor::v1::{DnsBatch, DnsRecord};
    let rig = Rig::new(&[]).await;
    let bridge = rig.bridge();
    let mut child = bridge.start().await;
    let (anomaly, alerts) = rig.anomaly().await;

    let intel: heimdall_asgard_api::IntelUpdate = serde_json::from_value(serde_json::json!({
        "threat_signatures": [{"id": "sig-mirai", "kind": "domain", "value": "cnc-example.net",
                               "severity": "critical", "source": "test feed",
                               "description": "Mirai C2"}]
    }))
    .expect("intel");
    let loaded = Instant::now();
    heimdall_asgard_dev::load_intel(&rig.pool().await, &intel)
        .await
        .expect("load");
    // A camera keeps asking for its controller's name.
    let subject = rig.bus.subjects().publish(Kind::Dns, "home-1", 0);
    let found = loop {
        let ts = 1_760_000_000_000_000 + loaded.elapsed().as_micros() as i64;
        let batch = DnsBatch {
            batch_id: format!("dns-{ts}"),
            sensor_id: "home-1".into(),
            created_us: ts,
            records: vec![DnsRecord {
                ts_us: ts,
                uid: format!("D{ts}"),
                id_orig_h: vec![192, 168, 1, 77].into(),
                id_resp_h: vec![192, 168, 1, 1].into(),
                id_resp_p: 53,
                query: Some("bot7.cnc-example.net".into()),
                qtype: Some(1),
                rcode: Some(3),
                sensor_id: "home-1".into(),
                ..Default::default()
            }],
        };
        rig.bus
            .publish(&subject, &batch.batch_id, &batch)
            .await
            .expect("publish");
        let row: Option<(i32, String)> = sqlx::query_as(
            "SELECT severity, description FROM alerts WHERE alert_type = 'threat_match' LIMIT 1",
        )
        .fetch_optional(&alerts)
        .await
        .unwrap_or(None);
        if let Some(r) = row {
            break r;
        }
        assert!(
            loaded.elapsed() < Duration::from_secs(15),
            "no threat_match alert\n{}",
            rig.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = loaded.elapsed();
    assert_eq!(found.0, Severity::Critical as i32);
    assert!(found.1.contains("192.168.1.77"), "{}", found.1);
    assert!(found.1.contains("Mirai C2"), "{}", found.1);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    anomaly.cancel();
    process::terminate(&child);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = rig.bus.delete_streams(&Kind::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_baseline_reaches_asgard_as_an_anonymized_behaviour_summary() {
    use heimdall_proto::sensor::v1::{ConnBatch, ConnRecord, DnsBatch, DnsRecord, Transport};
    let rig = Rig::new(&[]).await;
    rig.bus
        .ensure_streams(&[Kind::Flows, Kind::Dns, Kind::Baselines])
        .await
        .expect("streams");
    let mut child = rig.bridge().start().await;
    let (anomaly, _) = rig.anomaly().await;
    // The lamp as the fingerprint service names it (device-7, a Signify
    // light at 192.168.1.7): the bridge learns what it is, the anomaly
    // service keys its profile by the device id.
    rig.publish(7, 8).await;
    let (lamp, cloud) = ([192u8, 168, 1, 7], [52u8, 16, 40, 9]);
    // Midnight UTC: the first summary (after 24 hours) holds one whole day.
    let t0: i64 = 1_760_000_400 / 86_400 * 86_400 * 1_000_000;
    let dns = DnsBatch {
        batch_id: "lamp-dns".into(),
        sensor_id: "home-1".into(),
        created_us: t0,
        records: vec![DnsRecord {
            ts_us: t0,
            uid: "Dlamp".into(),
            id_orig_h: lamp.to_vec().into(),
            id_resp_h: vec![192, 168, 1, 1].into(),
            id_resp_p: 53,
            query: Some("ws.bridge.meethue.com".into()),
            qtype: Some(1),
            rcode: Some(0),
            answer_addrs: vec![cloud.to_vec().into()],
            sensor_id: "home-1".into(),
            ..Default::default()
        }],
    };
    rig.bus
        .publish(
            &rig.bus.subjects().publish(Kind::Dns, "home-1", 0),
            &dns.batch_id,
            &dns,
        )
        .await
        .expect("dns");
    // The name comes before the connections that use it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Thirty hours of the lamp keeping its cloud session, every 10 minutes.
    let mac = vec![0x00, 0x17, 0x88, 0x10, 0x20, 7];
    let records: Vec<ConnRecord> = (0..30 * 6)
        .map(|i| {
            let ts = t0 + 60_000_000 + i * 600_000_000;
            ConnRecord {
                ts_us: ts,
                uid: format!("Clamp{i}"),
                id_orig_h: lamp.to_vec().into(),
                id_orig_p: 40_000 + i as u32,
                id_resp_h: cloud.to_vec().into(),
                id_resp_p: 443,
                proto: Transport::Tcp as i32,
                orig_bytes: Some(700),
                resp_bytes: Some(1_500),
                orig_l2_addr: mac.clone().into(),
                sensor_id: "home-1".into(),
                ..Default::default()
            }
        })
        .collect();
    for (n, chunk) in records.chunks(60).enumerate() {
        let batch = ConnBatch {
            batch_id: format!("lamp-conns-{n}"),
            sensor_id: "home-1".into(),
            created_us: chunk[0].ts_us,
            records: chunk.to_vec(),
        };
        rig.bus
            .publish(
                &rig.bus.subjects().publish(Kind::Flows, "home-1", 0),
                &batch.batch_id,
                &batch,
            )
            .await
            .expect("conns");
    }
    let pool = rig.pool().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (described, behaviour) = loop {
        let rows: Vec<serde_json::Value> =
            sqlx::query_scalar("SELECT body FROM batches WHERE kind = 'signatures'")
                .fetch_all(&pool)
                .await
                .expect("signatures");
        let sigs: Vec<serde_json::Value> = rows
            .iter()
            .flat_map(|b| b["signatures"].as_array().cloned().unwrap_or_default())
            .collect();
        let described = sigs
            .iter()
            .find(|s| s["baseline_version"].is_null())
            .cloned();
        let behaviour = sigs
            .iter()
            .find(|s| !s["baseline_version"].is_null())
            .cloned();
        if let (Some(d), Some(b)) = (described, behaviour) {
            break (d, b);
        }
        assert!(
            Instant::now() < deadline,
            "no behaviour signature at the server: {sigs:?}\n{}",
            rig.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // One device, one pseudonym; what it is from its device event, what it
    // does from its baseline.
    assert_eq!(behaviour["anon_device_id"], described["anon_device_id"]);
    assert_eq!(behaviour["device_type"], "light");
    assert_eq!(behaviour["vendor"], "Signify");
    assert_eq!(behaviour["oui"], "001788");
    let f = &behaviour["features"];
    assert_eq!(
        f["top_destinations"][0]["registered_domain"], "meethue.com",
        "{behaviour}"
    );
    assert!(
        f["top_destinations"][0]["hours"].as_u64() >= Some(20),
        "{f}"
    );
    assert_eq!(f["top_ports"][0]["port"], 443, "{f}");
    assert_eq!(f["top_ports"][0]["transport"], "tcp", "{f}");
    assert_eq!(f["active_hours"].as_array().map(Vec::len), Some(24), "{f}");
    // Six connections of 700 bytes up an hour, all day.
    assert_eq!(f["daily_bytes_up"]["max"], 100_800.0, "{f}");
    assert_eq!(f["connections_per_hour"]["p50"], 6.0, "{f}");
    assert_eq!(f["destinations"], 1, "{f}");
    let end = behaviour["window_end_us"].as_i64().unwrap_or(0);
    let start = behaviour["window_start_us"].as_i64().unwrap_or(0);
    assert_eq!(end - start, 24 * 3_600_000_000, "{behaviour}");
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM requests")
        .fetch_all(&pool)
        .await
        .expect("requests");
    let all = bodies.join("\n");
    for needle in [
        "192.168.1.7\"",
        "52.16.40",
        "00:17:88:10:20:07",
        "device-7\"",
        "ws.bridge",
        "Hue-Lamp",
    ] {
        assert!(!all.contains(needle), "{needle:?} left the sensor");
    }
    anomaly.cancel();
    process::terminate(&child);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = rig.bus.delete_streams(&Kind::ALL).await;
}
