//! `make bench` (bus part): how many connection records per second go from a
//! publisher through JetStream into PostgreSQL, with the same consumer code
//! the sink runs. Prints one line per measurement and a `BENCH` summary.
//!
//! Settings: `BENCH_RECORDS` (default 400000), `BENCH_PER_BATCH` (500),
//! `BENCH_BUS` (`nats`, or `memory` for the in-process bus), and
//! the test servers from `HEIMDALL_TEST_NATS_URL` / `HEIMDALL_TEST_DATABASE_URL`.

#![allow(clippy::print_stdout)] // its report (or --print-config) is its output

use std::time::{Duration, Instant};

use heimdall_bus::{Bus, BusConfig, Kind};
use heimdall_proto::sensor::v1::{ConnBatch, ConnRecord};
use heimdall_store::testing::TestDb;
use tokio_util::sync::CancellationToken;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn batch(n: usize, per: usize) -> ConnBatch {
    ConnBatch {
        batch_id: format!("bench-{n}"),
        sensor_id: "bench".into(),
        created_us: 0,
        records: (0..per)
            .map(|i| {
                let k = n * per + i;
                ConnRecord {
                    uid: format!("C{k:09}"),
                    sensor_id: "bench".into(),
                    ts_us: 1_700_000_000_000_000 + k as i64,
                    id_orig_h: vec![192, 168, 1, (k % 250) as u8].into(),
                    id_resp_h: vec![93, 184, 216, 34].into(),
                    id_orig_p: 40_000 + (k % 20_000) as u32,
                    id_resp_p: 443,
                    orig_bytes: Some(517),
                    resp_bytes: Some(4_096),
                    history: Some("ShADadFf".into()),
                    community_id: "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into(),
                    ..Default::default()
                }
            })
            .collect(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let records = env_usize("BENCH_RECORDS", 400_000);
    let per = env_usize("BENCH_PER_BATCH", 500).max(1);
    let batches = records.div_ceil(per);
    // File storage, as in production; a namespace of its own.
    let config = BusConfig {
        memory_storage: false,
        max_bytes_scale: 1.0,
        max_ack_pending: 64,
        ..heimdall_bus::testing::config("bench")
    };
    // BENCH_BUS=memory measures the same path with the in-process bus, to
    // separate the cost of NATS from the cost of PostgreSQL.
    let bus = if std::env::var("BENCH_BUS").as_deref() == Ok("memory") {
        Bus::memory(&config)
    } else {
        Bus::connect(&config, "heimdall-bus-bench").await?
    };
    bus.ensure_streams(&[Kind::Flows]).await?;
    let db = TestDb::new().await?;
    let pool = heimdall_store::connect(db.config(), heimdall_tests::sink::SCHEMA).await?;
    heimdall_tests::sink::migrate(&pool).await?;

    // 1. Publish everything (file storage, acknowledged by the server).
    let prepared: Vec<ConnBatch> = (0..batches).map(|n| batch(n, per)).collect();
    let subject = bus.subjects().publish(Kind::Flows, "bench", 0);
    let started = Instant::now();
    for b in &prepared {
        bus.publish(&subject, &b.batch_id, b).await?;
    }
    let publish = started.elapsed();

    // 2. Consume into PostgreSQL until every record is stored.
    let stop = CancellationToken::new();
    let spec = bus.consumer_spec(Kind::Flows, "bench", None);
    let consumer = {
        let bus = bus.clone();
        let pool = pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            bus.consume::<ConnBatch, _, _, sqlx::Error>(spec, stop, |m| {
                heimdall_tests::sink::write_batch(&pool, m)
            })
            .await
        })
    };
    let started = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM conn_records")
            .fetch_one(&pool)
            .await?;
        if n as usize >= batches * per {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "consumer stalled at {n} records"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let consume = started.elapsed();
    stop.cancel();
    consumer.await??;
    bus.delete_streams(&[Kind::Flows]).await?;

    let total = (batches * per) as f64;
    let bytes: usize = prepared.iter().map(prost::Message::encoded_len).sum();
    println!(
        "publish: {} records in {} batches ({:.1} MB) in {:.2} s = {:.0} records/s",
        batches * per,
        batches,
        bytes as f64 / 1e6,
        publish.as_secs_f64(),
        total / publish.as_secs_f64()
    );
    println!(
        "consume into PostgreSQL: {:.2} s = {:.0} records/s",
        consume.as_secs_f64(),
        total / consume.as_secs_f64()
    );
    println!(
        "BENCH bus_publish_records_per_s={:.0} bus_to_postgres_records_per_s={:.0}",
        total / publish.as_secs_f64(),
        total / consume.as_secs_f64()
    );
    Ok(())
}
