//! `make bench` (fingerprint part): how many device observations per second
//! the fingerprint service handles on one core.
//!
//! 1. The registry alone, in this process, on one thread.
//! 2. The service as it runs: observations published to JetStream (file
//!    storage) first, then `heimdall-fingerprint` started pinned to one core
//!    (`taskset -c 0`) with a fresh database; measured until its metrics say
//!    every observation was applied and stored, in CPU seconds of the
//!    service process.
//!
//! Usage: heimdall-fingerprint-bench [PATH-TO-heimdall-fingerprint]
//! Settings: `BENCH_OBSERVATIONS` (default 300000), `BENCH_DEVICES` (2000),
//! `BENCH_PER_BATCH` (500); servers from `HEIMDALL_TEST_NATS_URL` and
//! `HEIMDALL_TEST_DATABASE_URL`.

#![allow(clippy::print_stdout)] // its report is its output

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heimdall_bus::{Bus, BusConfig, Kind};
use heimdall_fingerprint::{Registry, RegistryConfig, Rules};
use heimdall_proto::sensor::v1::{
    ArpObservation, Dhcpv4Observation, DnsSdTxt, HttpObservation, MdnsObservation, Observation,
    ObservationBatch, SsdpObservation, TlsClientHelloObservation, observation::Kind as Obs,
};
use heimdall_store::testing::TestDb;
use heimdall_tests::bench::Measured;

const T0: i64 = 1_760_000_000_000_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A deterministic mix of what a busy home's devices show: mostly TLS
/// hellos and ARP, then mDNS, SSDP, HTTP and DHCP, over `devices` devices
/// from a dozen makers, with cloud names that churn.
fn observations(n: usize, devices: usize) -> Vec<Observation> {
    const OUIS: [[u8; 3]; 12] = [
        [0x00, 0x17, 0x88], // Philips Lighting
        [0x34, 0x7e, 0x5c], // Sonos
        [0x50, 0xc7, 0xbf], // TP-Link
        [0x5c, 0xcf, 0x7f], // Espressif
        [0xc4, 0x61, 0x8b], // Apple
        [0x7c, 0xbb, 0x8a], // Nintendo
        [0x80, 0x2a, 0xa8], // Ubiquiti
        [0xb0, 0xc5, 0x54], // D-Link
        [0x94, 0x10, 0x3e], // Belkin
        [0x4c, 0x6a, 0xf6], // HMD Global
        [0x00, 0x12, 0x79], // HP
        [0xda, 0xa1, 0x19], // a randomized MAC
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..n)
        .map(|i| {
            let d = (next() as usize) % devices;
            let oui = OUIS[d % OUIS.len()];
            let mac = vec![
                oui[0],
                oui[1],
                oui[2],
                (d >> 16) as u8,
                (d >> 8) as u8,
                d as u8,
            ];
            let ip = vec![10, 1, (d >> 8) as u8, d as u8];
            let r = next() % 100;
            let kind = match r {
                0..=34 => Obs::TlsClientHello(TlsClientHelloObservation {
                    sni: format!("api{}.cloud{}.example.com", next() % 50, next() % 400),
                    ja4: format!("t13d1516h2_8daaf6152771_{:012x}", d % 40),
                    ..Default::default()
                }),
                35..=64 => Obs::Arp(ArpObservation {
                    op: 1,
                    sender_mac: mac.clone().into(),
                    sender_ip: ip.clone().into(),
                    target_ip: vec![10, 1, 0, 1].into(),
                    ..Default::default()
                }),
                65..=77 => Obs::Mdns(MdnsObservation {
                    is_response: true,
                    service_types: vec![
                        "_googlecast._tcp.local".into(),
                        "_spotify-connect._tcp.local".into(),
                    ],
                    instance_names: vec![format!("Living Room {d}._googlecast._tcp.local")],
                    host_names: vec![format!("device-{d}.local")],
                    txt: vec![DnsSdTxt {
                        instance_name: format!("Living Room {d}._googlecast._tcp.local"),
                        entries: [
                            ("md".to_string(), "Chromecast".to_string()),
                            ("id".to_string(), format!("{d:032x}")),
                        ]
                        .into_iter()
                        .collect(),
                    }],
                    ..Default::default()
                }),
                78..=87 => Obs::Ssdp(SsdpObservation {
                    kind: 2,
                    server: "Linux/3.14 UPnP/1.0 IpBridge/1.26.0".into(),
                    nt: "upnp:rootdevice".into(),
                    usn: format!("uuid:2f402f80-da50-11e1-9b23-{d:012x}::upnp:rootdevice"),
                    location: format!(
                        "http://10.1.{}.{}:80/description.xml",
                        (d >> 8) as u8,
                        d as u8
                    ),
                    ..Default::default()
                }),
                88..=95 => Obs::Http(HttpObservation {
                    method: "GET".into(),
                    host: format!("update{}.vendor.example.net", next() % 30),
                    uri: "/firmware/check?v=1.2.3".into(),
                    user_agent: "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36"
                        .into(),
                    version: "1.1".into(),
                }),
                _ => Obs::Dhcpv4(Dhcpv4Observation {
                    message_type: 3,
                    chaddr: mac.clone().into(),
                    host_name: format!("HS100-{d}"),
                    vendor_class: "udhcp 1.19.4".into(),
                    parameter_request_list: vec![1, 3, 6, 12, 15, 28, 42].into(),
                    ..Default::default()
                }),
            };
            Observation {
                ts_us: T0 + i as i64 * 1000,
                sensor_id: "bench".into(),
                record_uid: format!("O{i}"),
                src_mac: mac.into(),
                src_ip: ip.into(),
                kind: Some(kind),
                ..Default::default()
            }
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n = env_usize("BENCH_OBSERVATIONS", 300_000);
    let devices = env_usize("BENCH_DEVICES", 2000).max(1);
    let per = env_usize("BENCH_PER_BATCH", 500).max(1);
    let obs = observations(n, devices);

    // 1. The registry alone.
    let rules = Arc::new(Rules::builtin()?);
    let mut reg = Registry::new(
        RegistryConfig {
            sensor_id: "bench".into(),
            ..RegistryConfig::default()
        },
        rules,
    );
    let started = Instant::now();
    let mut events = 0;
    for chunk in obs.chunks(per) {
        for o in chunk {
            reg.observe(o);
        }
        events += reg.flush(chunk.last().map_or(0, |o| o.ts_us)).len();
        let _ = reg.take_changed();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "registry alone: {n} observations, {} devices, {events} events in {secs:.2} s on one thread: {:.0} observations/s",
        reg.len(),
        n as f64 / secs
    );

    // 2. The service, over JetStream and PostgreSQL, on one core.
    let Some(binary) = std::env::args().nth(1).map(PathBuf::from) else {
        println!(
            "BENCH fingerprint registry_obs_per_s={:.0}",
            n as f64 / secs
        );
        return Ok(());
    };
    let config = BusConfig {
        memory_storage: false,
        max_bytes_scale: 1.0,
        ..heimdall_bus::testing::config("fpbench")
    };
    let bus = Bus::connect(&config, "heimdall-fingerprint-bench").await?;
    bus.ensure_streams(&[Kind::Observations, Kind::Flows, Kind::Dns, Kind::Devices])
        .await?;
    let subject = bus.subjects().publish(Kind::Observations, "bench", 0);
    for (i, chunk) in obs.chunks(per).enumerate() {
        let b = ObservationBatch {
            batch_id: format!("obs-{i}"),
            sensor_id: "bench".into(),
            created_us: 0,
            records: chunk.to_vec(),
        };
        bus.publish(&subject, &b.batch_id, &b).await?;
    }
    let db = TestDb::new().await?;
    let log = std::env::temp_dir().join(format!("{}-fingerprint-bench.log", config.namespace));
    let env = [
        ("HEIMDALL_NATS_URL", heimdall_bus::testing::nats_url()),
        ("HEIMDALL_NATS_NAMESPACE", config.namespace.clone()),
        ("HEIMDALL_DATABASE_URL", db.url().to_string()),
    ];
    let mut svc = Measured::start(&binary, &env, &log)?;
    let (wall, cpu) = svc
        .wait_for(
            "heimdall_fingerprint_records_total{kind=\"observation\"}",
            n as f64,
            Duration::from_secs(300),
        )
        .await?;
    let pinned = svc.pinned;
    let stored: i64 = {
        let pool = heimdall_store::connect(db.config(), "fingerprint").await?;
        sqlx_count(&pool).await?
    };
    svc.child.start_kill()?;
    let _ = bus.delete_streams(&Kind::ALL).await;
    let rate = n as f64 / cpu;
    println!(
        "service{}: {n} observations from JetStream, {stored} devices stored, in {wall:.2} s wall, {cpu:.2} CPU-s (start-up included): {rate:.0} observations per CPU-second (target >= 50000)",
        if pinned { " pinned to one core" } else { "" }
    );
    println!(
        "BENCH fingerprint registry_obs_per_s={:.0} service_obs_per_cpu_s={rate:.0} service_wall_s={wall:.2}",
        n as f64 / secs
    );
    Ok(())
}

async fn sqlx_count(pool: &heimdall_store::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM devices")
        .fetch_one(pool)
        .await?)
}
