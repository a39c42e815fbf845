//! `make bench` (anomaly part): how many connection records per second the
//! anomaly service judges on one core.
//!
//! 1. Every detector alone ([`Monitor`]), in this process, on one thread.
//! 2. The service as it runs: the records published to JetStream (file
//!    storage) first, then `heimdall-anomaly` started pinned to one core
//!    with a fresh database; measured until its metrics say every record
//!    was judged, in CPU seconds of the service process.
//!
//! The records are a busy home's: `BENCH_DEVICES` devices over three hours,
//! each with a few habitual cloud destinations and some churn, a DNS
//! look-up before most connections.
//!
//! Usage: heimdall-anomaly-bench [PATH-TO-heimdall-anomaly]
//! Settings: `BENCH_CONNS` (default 400000), `BENCH_DEVICES` (200),
//! `BENCH_PER_BATCH` (1000); servers from `HEIMDALL_TEST_NATS_URL` and
//! `HEIMDALL_TEST_DATABASE_URL`.

#![allow(clippy::print_stdout)] // its report is its output

use std::path::PathBuf;
use std::time::{Duration, Instant};

use heimdall_bus::{Bus, BusConfig, Kind};
use heimdall_detect::baseline::BaselineConfig;
use heimdall_detect::{DetectConfig, Monitor};
use heimdall_proto::sensor::v1::{
    ConnBatch, ConnRecord, ConnState, DnsBatch, DnsRecord, Transport,
};
use heimdall_store::testing::TestDb;
use heimdall_tests::bench::Measured;

const T0: i64 = 1_760_000_400_000_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` connections and about as many look-ups from `devices` devices.
fn records(n: usize, devices: usize) -> (Vec<ConnRecord>, Vec<DnsRecord>) {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let span = 3 * 3_600_000_000i64;
    let (mut conns, mut dns) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let d = (next() % devices as u64) as u8;
        let d2 = (next() % devices as u64 / 256) as u8;
        let ts = T0 + (i as i64) * span / n as i64;
        // Mostly one of the device's habits, sometimes something new.
        let r = next() % 100;
        let dest = if r < 90 {
            (u64::from(d) * 7 + next() % 4) % 300
        } else {
            300 + next() % 5000
        };
        let ip = vec![
            52,
            (dest >> 8) as u8 + 1,
            (dest & 0xff) as u8,
            (next() % 8) as u8 + 1,
        ];
        let src = vec![10, d2, d, 10];
        let mac = vec![0x02, 0x00, 0x00, d2, d, 0x01];
        if r < 70 {
            dns.push(DnsRecord {
                ts_us: ts - 2_000,
                uid: format!("D{i}"),
                id_orig_h: src.clone().into(),
                id_resp_h: vec![10, 0, 0, 1].into(),
                id_resp_p: 53,
                query: Some(format!("api{}.cloud{dest}.example.com", next() % 3)),
                qtype: Some(1),
                rcode: Some(0),
                answer_addrs: vec![ip.clone().into()],
                ..Default::default()
            });
        }
        let port = [443u32, 443, 443, 80, 8883, 123][(next() % 6) as usize];
        conns.push(ConnRecord {
            ts_us: ts,
            uid: format!("C{i}"),
            id_orig_h: src.into(),
            id_orig_p: 40_000 + (next() % 20_000) as u32,
            id_resp_h: ip.into(),
            id_resp_p: port,
            proto: if port == 123 {
                Transport::Udp
            } else {
                Transport::Tcp
            } as i32,
            conn_state: ConnState::Sf as i32,
            orig_bytes: Some(200 + next() % 4000),
            resp_bytes: Some(500 + next() % 60_000),
            resp_pkts: Some(6),
            duration_us: Some((next() % 30_000_000) as i64),
            orig_l2_addr: mac.into(),
            ..Default::default()
        });
    }
    (conns, dns)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n = env_usize("BENCH_CONNS", 400_000);
    let devices = env_usize("BENCH_DEVICES", 200).clamp(1, 65_535);
    let per = env_usize("BENCH_PER_BATCH", 1000).max(1);
    let (conns, dns) = records(n, devices);

    let mut m = Monitor::new(DetectConfig::default(), BaselineConfig::default());
    let started = Instant::now();
    let mut alerts = 0;
    let mut di = 0;
    for c in &conns {
        while di < dns.len() && dns[di].ts_us <= c.ts_us {
            m.dns_record(&dns[di]);
            di += 1;
        }
        m.conn_record(c);
        alerts += m.take().len();
    }
    let secs = started.elapsed().as_secs_f64();
    let alone = (n + dns.len()) as f64 / secs;
    println!(
        "detectors alone: {n} connections and {} look-ups from {devices} devices over 3 h, {alerts} alerts, in {secs:.2} s on one thread: {:.0} connections/s ({alone:.0} records/s)",
        dns.len(),
        n as f64 / secs
    );

    let Some(binary) = std::env::args().nth(1).map(PathBuf::from) else {
        println!("BENCH anomaly detectors_conns_per_s={:.0}", n as f64 / secs);
        return Ok(());
    };
    let config = BusConfig {
        memory_storage: false,
        max_bytes_scale: 1.0,
        ..heimdall_bus::testing::config("anbench")
    };
    let bus = Bus::connect(&config, "heimdall-anomaly-bench").await?;
    bus.ensure_streams(&[Kind::Flows, Kind::Dns, Kind::Alerts])
        .await?;
    let (cs, ds) = (
        bus.subjects().publish(Kind::Flows, "bench", 0),
        bus.subjects().publish(Kind::Dns, "bench", 0),
    );
    for (i, chunk) in dns.chunks(per).enumerate() {
        let b = DnsBatch {
            batch_id: format!("dns-{i}"),
            sensor_id: "bench".into(),
            created_us: 0,
            records: chunk.to_vec(),
        };
        bus.publish(&ds, &b.batch_id, &b).await?;
    }
    for (i, chunk) in conns.chunks(per).enumerate() {
        let b = ConnBatch {
            batch_id: format!("conn-{i}"),
            sensor_id: "bench".into(),
            created_us: 0,
            records: chunk.to_vec(),
        };
        bus.publish(&cs, &b.batch_id, &b).await?;
    }
    let db = TestDb::new().await?;
    let log = std::env::temp_dir().join(format!("{}-anomaly-bench.log", config.namespace));
    let env = [
        ("HEIMDALL_NATS_URL", heimdall_bus::testing::nats_url()),
        ("HEIMDALL_NATS_NAMESPACE", config.namespace.clone()),
        ("HEIMDALL_DATABASE_URL", db.url().to_string()),
    ];
    let mut svc = Measured::start(&binary, &env, &log)?;
    let (wall, cpu) = svc
        .wait_for(
            "heimdall_anomaly_records_total{kind=\"conn\"}",
            n as f64,
            Duration::from_secs(300),
        )
        .await?;
    let (_, cpu_all) = svc
        .wait_for(
            "heimdall_anomaly_records_total{kind=\"dns\"}",
            dns.len() as f64,
            Duration::from_secs(300),
        )
        .await?;
    let stored: (i64, i64) = {
        let pool = heimdall_store::connect(db.config(), heimdall_anomaly_service::SCHEMA).await?;
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM baseline_versions), (SELECT count(*) FROM alerts)",
        )
        .fetch_one(&pool)
        .await?
    };
    svc.child.start_kill()?;
    let _ = bus.delete_streams(&Kind::ALL).await;
    // Connections and look-ups share the one core; the rate counts
    // connections against all of it.
    let rate = n as f64 / cpu_all.max(cpu);
    println!(
        "service{}: {n} connections and {} look-ups from JetStream, {} baseline versions and {} alerts stored, in {wall:.2} s wall, {:.2} CPU-s (start-up included): {rate:.0} connections per CPU-second (target >= 100000)",
        if svc.pinned {
            " pinned to one core"
        } else {
            ""
        },
        dns.len(),
        stored.0,
        stored.1,
        cpu_all.max(cpu)
    );
    println!(
        "BENCH anomaly detectors_conns_per_s={:.0} service_conns_per_cpu_s={rate:.0} service_wall_s={wall:.2}",
        n as f64 / secs
    );
    Ok(())
}
