//! `make bench` (Enigma part): records per second from NATS through
//! `heimdall-enigma-uploader` (a process: spool, zstd, gRPC over TLS) into
//! this reference server (in this process, storing in PostgreSQL).
//!
//! Usage: heimdall-enigma-bench PATH-TO-heimdall-enigma-uploader
//! Settings: `BENCH_RECORDS` (default 400000), `BENCH_PER_BATCH` (500).

#![allow(clippy::print_stdout)] // its report is its output

use std::time::{Duration, Instant};

use heimdall_bus::{Bus, BusConfig, Kind};
use heimdall_proto::sensor::v1::{ConnBatch, ConnRecord};
use heimdall_store::testing::TestDb;
use heimdall_telemetry::ServiceConfig;
use heimdall_tests::{process, tls};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let Some(uploader) = std::env::args().nth(1) else {
        anyhow::bail!("usage: heimdall-enigma-bench PATH-TO-heimdall-enigma-uploader");
    };
    let records = env_usize("BENCH_RECORDS", 400_000);
    let per = env_usize("BENCH_PER_BATCH", 500).max(1);
    let dir = tempfile::tempdir()?;
    let pki = tls::make(dir.path())?;
    let key = format!("bench-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(dir.path().join("keys"), format!("bench {key}\n"))?;
    std::fs::write(dir.path().join("api-key"), &key)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let db = rt.block_on(TestDb::new())?;
    let grpc = process::free_port()?;
    let ingest_addr = process::free_port()?;
    let vars = [
        ("HEIMDALL_INGEST_LISTEN", grpc.to_string()),
        (
            "HEIMDALL_INGEST_TLS_CERT_FILE",
            pki.server_cert.display().to_string(),
        ),
        (
            "HEIMDALL_INGEST_TLS_KEY_FILE",
            pki.server_key.display().to_string(),
        ),
        (
            "HEIMDALL_INGEST_KEYS_FILE",
            dir.path().join("keys").display().to_string(),
        ),
        ("HEIMDALL_DATABASE_URL", db.url().to_string()),
        ("HEIMDALL_TELEMETRY_LISTEN", ingest_addr.to_string()),
        ("HEIMDALL_TELEMETRY_LOG", "warn".into()),
    ];
    let config =
        heimdall_enigma_ingest::Config::load(heimdall_config::Loader::from_parts(vars, None)?)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let server_stop = stop.clone();
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(ingest_addr).await?;
            heimdall_enigma_ingest::run(config, listener, server_stop).await
        })
    });

    let result = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while process::http_status(ingest_addr, "/readyz").await != Some(200) {
            anyhow::ensure!(Instant::now() < deadline, "the ingest server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // File storage, as in production.
        let bus_config = BusConfig {
            memory_storage: false,
            max_bytes_scale: 1.0,
            ..heimdall_bus::testing::config("enigmabench")
        };
        let bus = Bus::connect(&bus_config, "heimdall-enigma-bench").await?;
        bus.ensure_streams(&[Kind::Flows, Kind::Dns]).await?;
        let subject = bus.subjects().publish(Kind::Flows, "bench", 0);
        for (n, start) in (0..records).step_by(per).enumerate() {
            let b = ConnBatch {
                batch_id: format!("c-{n}"),
                sensor_id: "bench".into(),
                created_us: 0,
                records: (start..(start + per).min(records))
                    .map(|k| ConnRecord {
                        uid: format!("C{k:09}"),
                        sensor_id: "bench".into(),
                        ts_us: 1_760_000_000_000_000 + k as i64 * 100,
                        id_orig_h: vec![192, 168, 1, (k % 250) as u8].into(),
                        id_resp_h: vec![93, 184, 216, 34].into(),
                        id_orig_p: 40_000 + (k % 20_000) as u32,
                        id_resp_p: 443,
                        proto: 1,
                        service: vec!["ssl".into()],
                        duration_us: Some(1_234_567),
                        orig_bytes: Some(517),
                        resp_bytes: Some(4_096),
                        conn_state: 4,
                        history: Some("ShADadFf".into()),
                        orig_pkts: Some(12),
                        orig_ip_bytes: Some(1_141),
                        resp_pkts: Some(10),
                        resp_ip_bytes: Some(4_628),
                        community_id: "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into(),
                        ..Default::default()
                    })
                    .collect(),
            };
            bus.publish(&subject, &b.batch_id, &b).await?;
        }
        let telemetry = process::free_port()?;
        let spool = dir.path().join("spool");
        let env: Vec<(String, String)> = [
            ("HEIMDALL_ENIGMA_URL", format!("https://localhost:{}", grpc.port())),
            ("HEIMDALL_ENIGMA_API_KEY_FILE", dir.path().join("api-key").display().to_string()),
            ("HEIMDALL_ENIGMA_CA_FILE", pki.ca_cert.display().to_string()),
            ("HEIMDALL_ENIGMA_SPOOL_DIR", spool.display().to_string()),
            ("HEIMDALL_NATS_URL", heimdall_bus::testing::nats_url()),
            ("HEIMDALL_NATS_NAMESPACE", bus_config.namespace.clone()),
            ("HEIMDALL_TELEMETRY_LISTEN", telemetry.to_string()),
            ("HEIMDALL_TELEMETRY_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let log = dir.path().join("uploader.log");
        let mut child = process::spawn(std::path::Path::new(&uploader), &env, &log)?;
        // Timed from the moment it is ready (connected, consumer bound):
        // the steady state, not the process start.
        process::wait_ready(&mut child, telemetry, Duration::from_secs(30))
            .await
            .map_err(anyhow::Error::msg)?;
        let started = Instant::now();
        let pool = heimdall_store::connect(db.config(), heimdall_enigma_ingest::SCHEMA).await?;
        let deadline = started + Duration::from_secs(300);
        loop {
            let n: i64 = sqlx::query_scalar("SELECT coalesce(sum(records), 0)::bigint FROM batches")
                .fetch_one(&pool)
                .await?;
            if n as usize >= records {
                break;
            }
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                anyhow::bail!(
                    "the server holds {n} of {records} records; uploader log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let (batches, bytes): (i64, i64) =
            sqlx::query_as("SELECT count(*), coalesce(sum(payload_bytes), 0)::bigint FROM batches").fetch_one(&pool).await?;
        child.start_kill()?;
        let _ = bus.delete_streams(&[Kind::Flows, Kind::Dns]).await;
        let rate = records as f64 / secs;
        println!(
            "enigma: {records} connection records from JetStream (file storage) through the uploader (spool, zstd, gRPC over TLS) into the reference server: {secs:.2} s, {batches} batches, {:.1} MB compressed, {rate:.0} records/s (target >= 200000)",
            bytes as f64 / 1e6
        );
        println!("BENCH enigma records_per_s={rate:.0}");
        Ok(())
    });
    stop.cancel();
    let _ = server.join();
    result
}
