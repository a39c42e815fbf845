//! The uploader against the reference Enigma ingest server, both as
//! processes, over TLS on 127.0.0.1, with the real NATS and PostgreSQL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use heimdall_bus::{Bus, Kind};
use heimdall_proto::enigma::v1::CaptureSettings;
use heimdall_proto::sensor::v1::{ConnBatch, ConnRecord, DnsBatch, DnsRecord};
use heimdall_store::testing::TestDb;
use heimdall_telemetry::ServiceConfig;
use heimdall_tests::{process, secrets, tls};

const SENSOR: &str = "pi-1";

struct Rig {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    db: TestDb,
    bus: Bus,
    namespace: String,
    pki: tls::TestPki,
    key: String,
    grpc: std::net::SocketAddr,
    ingest_addr: std::net::SocketAddr,
    /// Stops the in-process ingest server.
    ingest: tokio_util::sync::CancellationToken,
}

impl Rig {
    async fn new(ingest_env: &[(&str, &str)]) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let pki = tls::make(&path).expect("test certificates (openssl; make setup installs it)");
        let key = secrets::secret("enigma-key");
        std::fs::write(
            path.join("keys"),
            format!("# test keys\n{SENSOR} {key}\nother-sensor other-{key}\n"),
        )
        .expect("keys");
        let db = TestDb::new()
            .await
            .expect("PostgreSQL must be running (make setup)");
        let bus_config = heimdall_bus::testing::config("enigma");
        let bus = Bus::connect(&bus_config, "enigma-test")
            .await
            .expect("NATS must be running (make setup)");
        bus.ensure_streams(&[Kind::Flows, Kind::Dns])
            .await
            .expect("streams");
        let grpc = process::free_port().expect("port");
        let mut rig = Rig {
            _dir: dir,
            dir: path,
            db,
            bus,
            namespace: bus_config.namespace.clone(),
            pki,
            key,
            grpc,
            ingest_addr: process::free_port().expect("port"),
            ingest: tokio_util::sync::CancellationToken::new(),
        };
        rig.start_ingest(ingest_env).await;
        rig
    }

    async fn start_ingest(&mut self, extra: &[(&str, &str)]) {
        let mut env: Vec<(String, String)> = vec![
            ("HEIMDALL_INGEST_LISTEN".into(), self.grpc.to_string()),
            (
                "HEIMDALL_INGEST_TLS_CERT_FILE".into(),
                self.pki.server_cert.display().to_string(),
            ),
            (
                "HEIMDALL_INGEST_TLS_KEY_FILE".into(),
                self.pki.server_key.display().to_string(),
            ),
            (
                "HEIMDALL_INGEST_KEYS_FILE".into(),
                self.dir.join("keys").display().to_string(),
            ),
            ("HEIMDALL_DATABASE_URL".into(), self.db.url().to_string()),
            (
                "HEIMDALL_TELEMETRY_LISTEN".into(),
                self.ingest_addr.to_string(),
            ),
            ("HEIMDALL_TELEMETRY_LOG".into(), "info".into()),
            ("HEIMDALL_TELEMETRY_LOG_FORMAT".into(), "json".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let loader = heimdall_config::Loader::from_parts(env, None).expect("ingest settings");
        let config = heimdall_enigma_ingest::Config::load(loader).expect("ingest settings");
        // The reference server runs in this process (a real gRPC server on
        // 127.0.0.1 all the same), configured as its binary would be.
        self.ingest = process::serve_in_thread(self.ingest_addr, move |listener, stop| {
            heimdall_enigma_ingest::run(config, listener, stop)
        })
        .await;
    }

    /// The uploader process with `key`, sending to the reference server.
    fn uploader(&self, key: &str) -> process::ServiceProcess {
        std::fs::write(self.dir.join("api-key"), format!("{key}\n")).expect("key file");
        let path = |p: &str| self.dir.join(p).display().to_string();
        process::ServiceProcess::new(
            Path::new(env!("CARGO_BIN_EXE_heimdall-enigma-uploader")),
            &self.namespace,
            &self.dir.join("uploader.log"),
        )
        .expect("port")
        .with(
            "HEIMDALL_ENIGMA_URL",
            format!("https://localhost:{}", self.grpc.port()),
        )
        .with("HEIMDALL_ENIGMA_API_KEY_FILE", path("api-key"))
        .with(
            "HEIMDALL_ENIGMA_CA_FILE",
            self.pki.ca_cert.display().to_string(),
        )
        .with("HEIMDALL_ENIGMA_SPOOL_DIR", path("spool"))
        .with("HEIMDALL_ENIGMA_ARCHIVE_DIR", path("archive"))
        .with("HEIMDALL_ENIGMA_BATCH_RECORDS", "5000")
        .with("HEIMDALL_ENIGMA_BATCH_AGE", "500ms")
        .with("HEIMDALL_ENIGMA_BACKOFF_MIN", "100ms")
        .with("HEIMDALL_ENIGMA_BACKOFF_MAX", "2s")
    }

    async fn publish(&self, conns: usize, dns: usize, per: usize) {
        let cs = self.bus.subjects().publish(Kind::Flows, SENSOR, 0);
        let ds = self.bus.subjects().publish(Kind::Dns, SENSOR, 0);
        for (n, start) in (0..conns).step_by(per).enumerate() {
            let b = ConnBatch {
                batch_id: format!("c-{n}"),
                sensor_id: SENSOR.into(),
                created_us: 0,
                records: (start..(start + per).min(conns))
                    .map(|k| ConnRecord {
                        uid: format!("C{k:08}"),
                        sensor_id: SENSOR.into(),
                        ts_us: 1_760_000_000_000_000 + k as i64 * 1000,
                        id_orig_h: vec![192, 168, 1, (k % 200) as u8].into(),
                        id_resp_h: vec![93, 184, 216, 34].into(),
                        id_orig_p: 40_000 + (k % 20_000) as u32,
                        id_resp_p: 443,
                        proto: 1,
                        orig_bytes: Some(k as u64),
                        ..Default::default()
                    })
                    .collect(),
            };
            self.bus
                .publish(&cs, &b.batch_id, &b)
                .await
                .expect("publish conns");
        }
        for (n, start) in (0..dns).step_by(per).enumerate() {
            let b = DnsBatch {
                batch_id: format!("d-{n}"),
                sensor_id: SENSOR.into(),
                created_us: 0,
                records: (start..(start + per).min(dns))
                    .map(|k| DnsRecord {
                        uid: format!("D{k:08}"),
                        sensor_id: SENSOR.into(),
                        ts_us: 1_760_000_000_000_000 + k as i64 * 1000,
                        id_orig_h: vec![192, 168, 1, 9].into(),
                        id_resp_h: vec![192, 168, 1, 1].into(),
                        id_orig_p: 50_000,
                        id_resp_p: 53,
                        proto: 2,
                        query: Some(format!("host{k}.example.com")),
                        ..Default::default()
                    })
                    .collect(),
            };
            self.bus
                .publish(&ds, &b.batch_id, &b)
                .await
                .expect("publish dns");
        }
    }

    async fn pool(&self) -> sqlx::PgPool {
        heimdall_store::connect(self.db.config(), "enigma_ingest")
            .await
            .expect("pool")
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("uploader.log")).unwrap_or_default()
    }
}

/// Every uid the server stored, with how often.
async fn stored_uids(pool: &sqlx::PgPool) -> HashMap<String, u32> {
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM batches")
        .fetch_all(pool)
        .await
        .expect("bodies");
    let mut seen = HashMap::new();
    for b in bodies {
        for line in b.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json_like::Value = serde_json_like::from_slice(line);
            *seen.entry(v.uid).or_insert(0) += 1;
        }
    }
    seen
}

/// Just enough JSON to take `uid` out of a Zeek JSON line.
mod serde_json_like {
    pub struct Value {
        pub uid: String,
    }
    pub fn from_slice(line: &[u8]) -> Value {
        let text = String::from_utf8_lossy(line);
        let uid = text
            .split("\"uid\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_string();
        Value { uid }
    }
}

async fn wait_for_records(rig: &Rig, pool: &sqlx::PgPool, want: i64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT coalesce(sum(records), 0)::bigint FROM batches")
            .fetch_one(pool)
            .await
            .unwrap_or(0);
        if n >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server holds {n} of {want} records\n{}",
            rig.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_exactly_once_through_an_outage_and_uploader_crashes() {
    const CONNS: usize = 100_000;
    const DNS: usize = 20_000;
    // The server goes away 1 s after it starts (while the uploader is busy
    // with the first batches), for 4 s; besides, one call in five is
    // refused with a rate limit.
    let rig = Rig::new(&[
        ("HEIMDALL_INGEST_OUTAGE_AFTER", "1s"),
        ("HEIMDALL_INGEST_OUTAGE_FOR", "4s"),
        ("HEIMDALL_INGEST_FAIL_SHARE", "0.2"),
        ("HEIMDALL_INGEST_FAIL_CODE", "resource_exhausted"),
        ("HEIMDALL_INGEST_RETRY_AFTER_MS", "300"),
    ])
    .await;
    let uploader = rig.uploader(&rig.key);
    let mut up = uploader.start().await;
    let pool = rig.pool().await;

    let publisher = rig.publish(CONNS, DNS, 500);
    // Kill the uploader hard three times while records flow.
    let killer = async {
        for wait_ms in [700u64, 1900, 3100] {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            up.start_kill().expect("SIGKILL");
            let _ = up.wait().await;
            up = uploader.start().await;
        }
    };
    tokio::join!(publisher, killer);
    wait_for_records(&rig, &pool, (CONNS + DNS) as i64, 120).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let seen = stored_uids(&pool).await;
    assert_eq!(seen.len(), CONNS + DNS, "every record stored");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "records stored more than once: {twice:?}");
    assert!(seen.contains_key("C00000000") && seen.contains_key(&format!("D{:08}", DNS - 1)));

    // The outage shows in the attempt log as UNAVAILABLE with waits that
    // grow, and without a storm of calls.
    let log = std::fs::read_to_string(rig.dir.join("uploader.log")).unwrap_or_default();
    let waits: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("backing off"))
        .filter_map(|l| {
            l.split("\"retry_in_ms\":")
                .nth(1)?
                .split([',', '}'])
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    eprintln!(
        "{} records: attempts accepted {}, duplicate {}, unavailable {}, rate-limited {}; WALs recovered after a kill {}; backoff waits {waits:?}",
        CONNS + DNS,
        count("\"outcome\":\"accepted\""),
        count("\"outcome\":\"duplicate\""),
        count("\"outcome\":\"unavailable\""),
        count("\"outcome\":\"resourceexhausted\""),
        count("recovered"),
    );
    assert!(
        log.contains("\"outcome\":\"unavailable\""),
        "the outage reached the uploader"
    );
    assert!(waits.iter().any(|&w| w >= 400), "backoff grew: {waits:?}");
    let unavailable: i64 =
        sqlx::query_scalar("SELECT count(*) FROM calls WHERE outcome = 'unavailable'")
            .fetch_one(&pool)
            .await
            .expect("calls");
    assert!(
        unavailable < 60,
        "{unavailable} calls during a 4 s outage: a retry storm"
    );
    let exhausted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM calls WHERE outcome = 'resourceexhausted'")
            .fetch_one(&pool)
            .await
            .expect("calls");
    assert!(exhausted > 0, "the rate limit was exercised");
    // Uploaded batches are archived, compressed as sent.
    let archived = std::fs::read_dir(rig.dir.join("archive"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(archived > 0);

    up.start_kill().expect("stop");
    rig.ingest.cancel();
    let _ = rig.bus.delete_streams(&[Kind::Flows, Kind::Dns]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_stops_uploads_with_a_clear_error_and_the_key_is_never_shown() {
    let rig = Rig::new(&[]).await;
    let wrong = secrets::secret("wrong-enigma-key");
    // Its spans go to a real OTLP receiver, to be searched for the key too.
    let traces = heimdall_tests::otlp::Receiver::start()
        .await
        .expect("OTLP receiver");
    let uploader = rig
        .uploader(&wrong)
        .with("HEIMDALL_TELEMETRY_OTLP_ENDPOINT", traces.endpoint());
    let mut up = uploader.start().await;
    let pool = rig.pool().await;
    rig.publish(2_000, 0, 500).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(rig.dir.join("uploader.log"))
        .unwrap_or_default()
        .contains("Enigma refused the API key")
    {
        assert!(Instant::now() < deadline, "no clear error\n{}", rig.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No endless retries: one refused call, and nothing after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused: i64 =
        sqlx::query_scalar("SELECT count(*) FROM calls WHERE outcome = 'unauthenticated'")
            .fetch_one(&pool)
            .await
            .expect("calls");
    // One from the upload loop, and at most one from the capture-settings
    // fetch if it asked at the same moment.
    assert!(
        (1..=2).contains(&refused),
        "{refused} refused calls: one, then the uploader stops"
    );
    let (status, body) = process::http_get(uploader.addr, "/readyz")
        .await
        .expect("readyz");
    assert_eq!(status, 503);
    assert!(body.contains("refused the API key"), "{body}");
    // Nothing stored, everything still in the spool.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM batches")
        .fetch_one(&pool)
        .await
        .expect("n");
    assert_eq!(stored, 0);
    let ready = std::fs::read_dir(rig.dir.join("spool/ready"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(ready > 0, "batches wait in the spool");
    // SIGTERM, so the exporter flushes its last spans.
    process::terminate(&up);
    let _ = tokio::time::timeout(Duration::from_secs(20), up.wait()).await;

    // Neither key, the wrong one or the right one, appears in the log, the
    // exported spans, or anything the server stored about the calls.
    let spans = traces.spans();
    assert!(
        spans.iter().any(|(name, _)| name == "bus.consume"),
        "the uploader's spans were exported: {spans:?}"
    );
    let exported = traces.dump("enigma-uploader-spans");
    assert!(
        !exported.contains(&wrong),
        "the wrong key leaked into a span"
    );
    assert!(
        !exported.contains(&rig.key),
        "the server's key leaked into a span"
    );
    let logs = rig.logs();
    assert!(!logs.is_empty());
    assert!(!logs.contains(&wrong), "the wrong key leaked into a log");
    assert!(
        !logs.contains(&rig.key),
        "the server's key leaked into a log"
    );
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', method, sensor_id, batch_id, outcome) FROM calls",
    )
    .fetch_all(&pool)
    .await
    .expect("calls");
    assert!(stored.iter().all(|c| !c.contains(&wrong)), "{stored:?}");
    // Nor in the printed configuration.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_heimdall-enigma-uploader"))
        .arg("--print-config")
        .env_clear()
        .envs(uploader.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("print-config");
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(text.contains("HEIMDALL_ENIGMA_URL"), "{text}");
    assert!(!text.contains(&wrong), "{text}");
    let _ = rig.bus.delete_streams(&[Kind::Flows, Kind::Dns]).await;
}

/// The newest capture settings on the control subject of `SENSOR`, if one
/// arrives within a second.
async fn latest_settings(bus: &Bus) -> Option<CaptureSettings> {
    let got = std::sync::Arc::new(std::sync::Mutex::new(None));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut spec = bus.consumer_spec(Kind::Control, "steering-test", None);
    spec.filter = bus.subjects().sensor(Kind::Control, SENSOR);
    spec.latest = true;
    let (got2, stop2) = (got.clone(), stop.clone());
    let run = bus.consume::<CaptureSettings, _, _, String>(spec, stop.clone(), move |m| {
        *got2.lock().expect("lock") = Some(m.message);
        stop2.cancel();
        async { Ok(()) }
    });
    let _ = tokio::time::timeout(Duration::from_secs(1), run).await;
    got.lock().expect("lock").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enigma_capture_settings_reach_the_capture_and_follow_an_operator_change() {
    let rig = Rig::new(&[("HEIMDALL_INGEST_CAPTURE_FILTER", "not port 22")]).await;
    rig.bus
        .ensure_streams(&[Kind::Control])
        .await
        .expect("stream");
    let uploader = rig
        .uploader(&rig.key)
        .with("HEIMDALL_ENIGMA_SENSORS", SENSOR)
        .with("HEIMDALL_ENIGMA_SETTINGS_EVERY", "1s");
    let mut up = uploader.start().await;

    // Before any record: the configured sensor gets the server's defaults.
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        if let Some(s) = latest_settings(&rig.bus).await {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no settings published\n{}",
            rig.logs()
        );
    };
    assert_eq!(
        (
            first.interval_seconds,
            first.window_seconds,
            first.bpf_filter.as_str()
        ),
        (120, 30, "not port 22")
    );
    assert!(!first.version.is_empty());

    // An operator changes the sensor's settings on the server.
    let pool = rig.pool().await;
    let row = heimdall_enigma_ingest::CaptureRow {
        interval_seconds: 60,
        window_seconds: 60,
        bpf_filter: "udp".into(),
        interfaces: vec!["eth1".into()],
        snaplen: 512,
    };
    heimdall_enigma_ingest::set_capture_settings(&pool, SENSOR, &row)
        .await
        .expect("set");
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        match latest_settings(&rig.bus).await {
            Some(s) if s.version != first.version => break s,
            _ => assert!(
                Instant::now() < deadline,
                "the change did not arrive\n{}",
                rig.logs()
            ),
        }
    };
    assert_eq!(
        (
            second.interval_seconds,
            second.window_seconds,
            second.bpf_filter.as_str(),
            second.interfaces.clone(),
            second.snaplen
        ),
        (60, 60, "udp", vec!["eth1".to_string()], 512)
    );
    // The stream holds the sensor's current settings only, and an unchanged
    // version is not published again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rig.bus.stream_len(Kind::Control).await.expect("len"), 1);
    let published = rig
        .logs()
        .matches("new capture settings from Enigma published")
        .count();
    assert_eq!(published, 2, "{}", rig.logs());
    // Asked about once a second, not in a loop.
    let asked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM calls WHERE method = 'get_capture_settings'")
            .fetch_one(&pool)
            .await
            .expect("calls");
    assert!((3..=30).contains(&asked), "{asked} calls");
    up.start_kill().expect("stop");
    let _ = up.wait().await;
    let _ = rig
        .bus
        .delete_streams(&[Kind::Flows, Kind::Dns, Kind::Control])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_the_oldest_by_age_then_quota_and_logs_and_counts_each() {
    let rig = Rig::new(&[]).await;
    let archive = rig.dir.join("archive");
    std::fs::create_dir_all(&archive).expect("archive");
    let now = std::time::SystemTime::now();
    // Two hours old (past a one-hour limit), then three recent files that
    // together pass a 3000-byte quota by one file.
    for (name, age_min, bytes) in [
        ("a.conn.zst", 120, 1000),
        ("b.conn.zst", 10, 1500),
        ("c.dns.zst", 5, 1500),
        ("d.conn.zst", 1, 1500),
    ] {
        let p = archive.join(name);
        std::fs::write(&p, vec![7u8; bytes]).expect("write");
        std::fs::File::options()
            .write(true)
            .open(&p)
            .expect("open")
            .set_modified(now - Duration::from_secs(age_min * 60))
            .expect("mtime");
    }
    let uploader = rig
        .uploader(&rig.key)
        .with("HEIMDALL_ENIGMA_RETENTION", "1h")
        .with("HEIMDALL_ENIGMA_QUOTA_BYTES", "3000");
    let mut up = uploader.start().await;
    let mut left: Vec<String> = std::fs::read_dir(&archive)
        .expect("archive")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["c.dns.zst", "d.conn.zst"], "oldest first");
    let (_, metrics) = process::http_get(uploader.addr, "/metrics")
        .await
        .expect("metrics");
    let count = |reason: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("heimdall_enigma_removed_files_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse::<f64>().ok())
    };
    assert_eq!(count("age"), Some(1.0), "{metrics}");
    assert_eq!(count("quota"), Some(1.0), "{metrics}");
    let logs = rig.logs();
    let removals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("removed by retention"))
        .collect();
    assert_eq!(removals.len(), 2, "{logs}");
    assert!(removals[0].contains("a.conn.zst") && removals[0].contains("\"age\""));
    assert!(removals[1].contains("b.conn.zst") && removals[1].contains("\"quota\""));
    process::terminate(&up);
    let _ = tokio::time::timeout(Duration::from_secs(20), up.wait()).await;
    let _ = rig.bus.delete_streams(&[Kind::Flows, Kind::Dns]).await;
}
