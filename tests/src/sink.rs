//! A consumer service that writes connection batches into PostgreSQL.
//!
//! It is the smallest complete service: it shows the pattern every Heimdall
//! service follows, and the bus tests use it as the process they kill.

use heimdall_bus::{Bus, BusConfig, Kind, Received};
use heimdall_config::{Problem, Validate};
use heimdall_proto::sensor::v1::ConnBatch;
use heimdall_store::{PgPool, StoreConfig};
use heimdall_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument};

/// The schema this service owns.
pub const SCHEMA: &str = "sink";
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `HEIMDALL_SINK_*`: the sink's own settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct SinkSettings {
    /// `HEIMDALL_SINK_DURABLE`: consumer name; replicas with the same name
    /// share the work. Default `sink`.
    pub durable: String,
}

impl Default for SinkSettings {
    fn default() -> Self {
        SinkSettings {
            durable: "sink".into(),
        }
    }
}

impl Validate for SinkSettings {
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>) {
        if self.durable.is_empty() {
            problems.push(Problem {
                variable: format!("{prefix}DURABLE"),
                message: "must not be empty".into(),
            });
        }
    }
}

heimdall_telemetry::service_config! {
    /// Everything the sink needs, loaded and validated as one.
    pub struct Config {
        /// Own settings.
        sink: SinkSettings = "HEIMDALL_SINK_",
        /// Bus connection.
        nats: BusConfig = heimdall_bus::PREFIX,
        /// Database connection.
        database: StoreConfig = heimdall_store::PREFIX,
        /// Logs, traces, metrics listener.
        telemetry: TelemetryConfig = heimdall_telemetry::PREFIX,
    }
}

/// Run until `shutdown`: serve telemetry on `listener`, connect, migrate,
/// then consume every flows partition and write each batch in one
/// transaction before it is acknowledged.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let served =
        heimdall_telemetry::Served::start(listener, &["nats", "database"], shutdown.clone());
    let (metrics, health) = (served.metrics.clone(), served.health.clone());

    let pool = heimdall_store::open(&config.database, SCHEMA, &MIGRATIONS).await?;
    health.ready("database", "migrated");

    let bus = Bus::connect(&config.nats, "heimdall-sink")
        .await?
        .with_health(health.clone());
    bus.register_metrics(&metrics);
    bus.ensure_streams(&[Kind::Flows]).await?;
    health.ready("nats", "consuming flows");
    info!(durable = %config.sink.durable, "sink ready");

    let spec = bus.consumer_spec(Kind::Flows, &config.sink.durable, None);
    bus.consume::<ConnBatch, _, _, sqlx::Error>(spec, shutdown.clone(), |m| write_batch(&pool, m))
        .await?;
    shutdown.cancel();
    served.finish().await?;
    Ok(())
}

/// Bring the sink's schema up to date.
pub async fn migrate(pool: &PgPool) -> Result<(), heimdall_store::Error> {
    heimdall_store::migrate(pool, SCHEMA, &MIGRATIONS).await
}

/// Store one batch: all rows or none, and rows already present are skipped,
/// so a redelivered batch leaves the table as it was.
#[instrument(skip_all, fields(batch = %m.message.batch_id, records = m.message.records.len()))]
pub async fn write_batch(pool: &PgPool, m: Received<ConnBatch>) -> Result<(), sqlx::Error> {
    let b = &m.message;
    let uids: Vec<&str> = b.records.iter().map(|r| r.uid.as_str()).collect();
    let ts: Vec<i64> = b.records.iter().map(|r| r.ts_us).collect();
    let orig: Vec<Option<i64>> = b
        .records
        .iter()
        .map(|r| r.orig_bytes.map(|v| v as i64))
        .collect();
    let resp: Vec<Option<i64>> = b
        .records
        .iter()
        .map(|r| r.resp_bytes.map(|v| v as i64))
        .collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO conn_records (uid, batch_id, sensor_id, ts_us, orig_bytes, resp_bytes) \
         SELECT u, $2, $3, t, o, r FROM UNNEST($1::text[], $4::bigint[], $5::bigint[], $6::bigint[]) AS x(u, t, o, r) \
         ON CONFLICT (uid) DO NOTHING",
    )
    .bind(&uids)
    .bind(&b.batch_id)
    .bind(&b.sensor_id)
    .bind(&ts)
    .bind(&orig)
    .bind(&resp)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO deliveries (batch_id, delivered, records) VALUES ($1, $2, $3)")
        .bind(&b.batch_id)
        .bind(m.delivered as i64)
        .bind(b.records.len() as i32)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
