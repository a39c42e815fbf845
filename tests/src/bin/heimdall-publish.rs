//! `heimdall-publish`: push a stream of connection batches onto the bus, as
//! the capture service will, for demos and load tests. Uses the same
//! `HEIMDALL_NATS_*` settings as every service.
//!
//!     heimdall-publish [--records N] [--per-batch M] [--sensor ID]

use std::time::Instant;

use clap::Parser;
use heimdall_bus::{Bus, BusConfig, Kind};
use heimdall_proto::sensor::v1::{ConnBatch, ConnRecord, Transport};

#[derive(Parser, Debug)]
#[command(about = "Publish synthetic connection batches to the Heimdall bus")]
struct Args {
    /// How many records to publish.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Records per batch (one bus message).
    #[arg(long, default_value_t = 500)]
    per_batch: usize,
    /// Sensor id in subjects and records.
    #[arg(long, default_value = "demo-sensor")]
    sensor: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut loader = heimdall_config::Loader::from_env()?;
    let nats: BusConfig = loader.section(heimdall_bus::PREFIX);
    let telemetry: heimdall_telemetry::TelemetryConfig = loader.section(heimdall_telemetry::PREFIX);
    if let Err(e) = loader.finish() {
        eprintln!("heimdall-publish: {e}");
        std::process::exit(2);
    }
    let _guard = heimdall_telemetry::init("heimdall-publish", &telemetry)?;
    let bus = Bus::connect(&nats, "heimdall-publish").await?;
    bus.ensure_streams(&[Kind::Flows]).await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let per = args.per_batch.max(1);
    let started = Instant::now();
    let mut sent = 0;
    let mut n = 0;
    while sent < args.records {
        let take = per.min(args.records - sent);
        let batch = ConnBatch {
            batch_id: format!("{run}-{n}"),
            sensor_id: args.sensor.clone(),
            created_us: now_us(),
            records: (0..take)
                .map(|i| {
                    let k = sent + i;
                    ConnRecord {
                        uid: format!("C{run}{k:08}"),
                        sensor_id: args.sensor.clone(),
                        ts_us: now_us(),
                        id_orig_h: vec![192, 168, 1, 10 + (k % 40) as u8].into(),
                        id_orig_p: 49_152 + (k % 16_000) as u32,
                        id_resp_h: vec![10, 0, 0, 1].into(),
                        id_resp_p: 53,
                        proto: Transport::Udp as i32,
                        orig_bytes: Some(40 + (k % 60) as u64),
                        resp_bytes: Some(120 + (k % 300) as u64),
                        ..Default::default()
                    }
                })
                .collect(),
        };
        let subject = bus.subjects().publish(Kind::Flows, &args.sensor, 0);
        bus.publish(&subject, &batch.batch_id, &batch).await?;
        sent += take;
        n += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(records = sent, batches = n, seconds = secs, "published");
    eprintln!(
        "published {sent} records in {n} batches in {secs:.2} s ({:.0} records/s), run {run}",
        sent as f64 / secs
    );
    Ok(())
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}
