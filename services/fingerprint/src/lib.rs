//! The fingerprint service: device observations, connection records and DNS
//! records from NATS in; a device registry in its own PostgreSQL schema
//! (`fingerprint`) and device events on `sensor.<id>.devices` out.
//!
//! What this service promises:
//! - Each batch is applied to the sensor's registry and the devices it
//!   changed, with the events it caused, are written in one transaction
//!   before the batch is acknowledged. A redelivered batch changes nothing
//!   (evidence is kept once per rule and device), so a crash at any moment
//!   neither loses nor duplicates a device.
//! - Events go to NATS from an outbox table written in that transaction, so
//!   an event that is decided is published, once (deterministic event ids,
//!   the bus's de-duplication window for the retry after a crash).
//! - A restarted replica reloads its sensors' devices from the database
//!   before it takes a message.
//! - Golden profiles from Asgard (`intel.p0`) become device hints: a
//!   destination that a vendor's devices use and no other vendor's does is
//!   weak evidence of that vendor for a device that looks it up. Profiles
//!   are stored (`intel_profiles`) and in force again after a restart.
//! - Work is split by sensor (one home's devices are one registry: a phone
//!   that changes MAC must meet its old record): replicas take disjoint sets
//!   of sensors, by list (`HEIMDALL_FINGERPRINT_SENSORS`) or by hash
//!   (`HEIMDALL_FINGERPRINT_SHARD_INDEX` of `_SHARD_COUNT`, a StatefulSet's
//!   pod index), each with durable consumers of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heimdall_bus::{Bus, BusConfig, ConsumerSpec, Kind};
use heimdall_config::{Problem, Validate};
use heimdall_engine::ids::LocalNets;
use heimdall_fingerprint::registry::{DeviceState, decide};
use heimdall_fingerprint::rules::type_name;
use heimdall_fingerprint::{Registry, RegistryConfig, Rules};
use heimdall_proto::sensor::v1::{
    ConnBatch, DeviceEvent, DeviceEventBatch, DeviceEventKind, DeviceType, DnsBatch, GoldenProfile,
    IntelUpdate, ObservationBatch,
};
use heimdall_store::{PgPool, StoreConfig};
use heimdall_telemetry::{Metrics, TelemetryConfig};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

/// The schema this service owns.
pub const SCHEMA: &str = "fingerprint";
/// The variable prefix of [`FingerprintSettings`].
pub const PREFIX: &str = "HEIMDALL_FINGERPRINT_";
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `HEIMDALL_FINGERPRINT_*`: the service's own settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct FingerprintSettings {
    /// `HEIMDALL_FINGERPRINT_SENSORS`: the sensors whose devices this
    /// replica keeps, comma-separated; `*` (the default) for every sensor.
    /// Replicas must take disjoint sets.
    pub sensors: String,
    /// `HEIMDALL_FINGERPRINT_DURABLE`: prefix of the consumer names.
    /// Default `fingerprint`.
    pub durable: String,
    /// `HEIMDALL_FINGERPRINT_LOCAL_NETS`: networks whose addresses belong
    /// to devices on the LAN, in addition to the private address space
    /// (comma-separated CIDRs).
    pub local_nets: String,
    /// `HEIMDALL_FINGERPRINT_GRACE`: how long a device seen only with a
    /// randomized MAC waits before it is announced, in case it turns out to
    /// be a known device. Default `10s`.
    #[serde(with = "heimdall_config::duration")]
    pub grace: Duration,
    /// `HEIMDALL_FINGERPRINT_FLUSH_INTERVAL`: how often held-back devices
    /// are reconsidered when no traffic arrives. Default `5s`.
    #[serde(with = "heimdall_config::duration")]
    pub flush_interval: Duration,
    /// `HEIMDALL_FINGERPRINT_RULES_FILE`: rules to use instead of the
    /// built-in ones (the format of shared/fingerprint/data/rules.toml).
    pub rules_file: String,
    /// `HEIMDALL_FINGERPRINT_VENDORS_FILE`: vendor facts to use instead of
    /// the built-in ones (the format of shared/fingerprint/data/vendors.toml).
    pub vendors_file: String,
    /// `HEIMDALL_FINGERPRINT_MAX_DEVICES`: most devices per sensor.
    pub max_devices: usize,
    /// `HEIMDALL_FINGERPRINT_SHARD_COUNT`: replicas that split the sensors
    /// among them by a hash of the sensor id (each sees every message and
    /// keeps the sensors of its shard). Default 1.
    pub shard_count: u16,
    /// `HEIMDALL_FINGERPRINT_SHARD_INDEX`: this replica's shard, from 0
    /// (on Kubernetes, the StatefulSet pod index). Default 0.
    pub shard_index: u16,
}

impl Default for FingerprintSettings {
    fn default() -> Self {
        FingerprintSettings {
            sensors: "*".into(),
            durable: "fingerprint".into(),
            local_nets: String::new(),
            grace: Duration::from_secs(10),
            flush_interval: Duration::from_secs(5),
            rules_file: String::new(),
            vendors_file: String::new(),
            max_devices: 50_000,
            shard_count: 1,
            shard_index: 0,
        }
    }
}

impl FingerprintSettings {
    /// The sensors, or `None` for every sensor.
    pub fn sensor_list(&self) -> Option<Vec<String>> {
        let list: Vec<String> = self
            .sensors
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        (!list.iter().any(|s| s == "*") && !list.is_empty()).then_some(list)
    }

    fn nets(&self) -> Result<LocalNets, String> {
        let extra = LocalNets::parse(self.local_nets.split(',')).map_err(|e| e.to_string())?;
        Ok(LocalNets::private_address_space().union(&extra))
    }

    /// The rules: the files when given, else the built-in ones.
    pub fn rules(&self) -> Result<Rules, String> {
        if self.rules_file.is_empty() && self.vendors_file.is_empty() {
            return Rules::builtin().map_err(|e| e.to_string());
        }
        let read = |path: &str, builtin: &'static str| -> Result<(String, String), String> {
            if path.is_empty() {
                return Ok((builtin.to_string(), "built-in".into()));
            }
            std::fs::read_to_string(path)
                .map(|t| (t, path.to_string()))
                .map_err(|e| format!("cannot read {path}: {e}"))
        };
        let (r, rn) = read(&self.rules_file, heimdall_fingerprint::rules::BUILTIN_RULES)?;
        let (v, vn) = read(
            &self.vendors_file,
            heimdall_fingerprint::rules::BUILTIN_VENDORS,
        )?;
        Rules::parse(&r, &rn, &v, &vn).map_err(|e| e.to_string())
    }
}

impl Validate for FingerprintSettings {
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>) {
        let mut bad = |var: &str, message: String| {
            problems.push(Problem {
                variable: format!("{prefix}{var}"),
                message,
            })
        };
        if self.durable.is_empty() {
            bad("DURABLE", "must not be empty".into());
        }
        if self.sensors.trim().is_empty() {
            bad(
                "SENSORS",
                "give sensor ids separated by commas, or * for every sensor".into(),
            );
        }
        if let Err(e) = self.nets() {
            bad("LOCAL_NETS", e);
        }
        if self.flush_interval.is_zero() {
            bad(
                "FLUSH_INTERVAL",
                "must be longer than zero (like 5s)".into(),
            );
        }
        if self.shard_count == 0 || self.shard_index >= self.shard_count {
            bad(
                "SHARD_INDEX",
                format!(
                    "must be below HEIMDALL_FINGERPRINT_SHARD_COUNT ({})",
                    self.shard_count
                ),
            );
        }
        if self.max_devices == 0 {
            bad("MAX_DEVICES", "must be at least 1".into());
        }
        if let Err(e) = self.rules() {
            let var = if e.contains("vendors") {
                "VENDORS_FILE"
            } else {
                "RULES_FILE"
            };
            bad(var, e);
        }
    }
}

heimdall_telemetry::service_config! {
    /// Everything the service needs, loaded and validated as one.
    pub struct Config {
        fingerprint: FingerprintSettings = PREFIX,
        nats: BusConfig = heimdall_bus::PREFIX,
        database: StoreConfig = heimdall_store::PREFIX,
        telemetry: TelemetryConfig = heimdall_telemetry::PREFIX,
    }
}

/// Why a batch could not be applied; it is delivered again.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The database refused; the sensor's registry is reloaded from it.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A device state did not serialize.
    #[error("device state: {0}")]
    Json(serde_json::Error),
}

#[derive(Debug, Clone, Default)]
struct ServiceMetrics {
    records: Family<Vec<(String, String)>, Counter>,
    events: Family<Vec<(String, String)>, Counter>,
    devices: Gauge,
    hints: Gauge,
}

impl ServiceMetrics {
    fn register(&self, m: &Metrics) {
        m.register(
            "fingerprint_records",
            "Records applied to the registry, by kind",
            self.records.clone(),
        );
        m.register(
            "fingerprint_events",
            "Device events decided, by kind",
            self.events.clone(),
        );
        m.register(
            "fingerprint_devices",
            "Devices in this replica's registries",
            self.devices.clone(),
        );
        m.register(
            "fingerprint_intel_hints",
            "Device hints from golden profiles in force",
            self.hints.clone(),
        );
    }

    fn count(&self, kind: &str, n: usize) {
        self.records
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc_by(n as u64);
    }
}

/// The registries of this replica's sensors and the database behind them.
#[derive(Debug)]
pub struct Service {
    settings: FingerprintSettings,
    /// The rules of the settings ...
    rules: Arc<Rules>,
    /// ... with the device hints of the golden profiles in force.
    hinted: std::sync::RwLock<Arc<Rules>>,
    /// Golden profiles in force, by id.
    profiles: Mutex<HashMap<String, GoldenProfile>>,
    nets: LocalNets,
    pool: PgPool,
    registries: Mutex<HashMap<String, Registry>>,
    outbox: Notify,
    metrics: ServiceMetrics,
    /// Devices across registries, for the gauge.
    device_count: AtomicI64,
}

fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Service {
    /// A service over `pool` (migrated). Registries load lazily, per sensor.
    pub fn new(settings: FingerprintSettings, pool: PgPool) -> Result<Self, String> {
        let rules = Arc::new(settings.rules()?);
        let nets = settings.nets()?;
        Ok(Service {
            settings,
            hinted: std::sync::RwLock::new(rules.clone()),
            rules,
            profiles: Mutex::new(HashMap::new()),
            nets,
            pool,
            registries: Mutex::new(HashMap::new()),
            outbox: Notify::new(),
            metrics: ServiceMetrics::default(),
            device_count: AtomicI64::new(0),
        })
    }

    /// The rules in force: the settings' and the hints from intelligence.
    fn current_rules(&self) -> Arc<Rules> {
        self.hinted
            .read()
            .map_or_else(|_| self.rules.clone(), |r| r.clone())
    }

    /// Stores golden profiles from intelligence and turns them into device
    /// hints (see [`heimdall_fingerprint::rules::hints_from_profiles`]) for
    /// every registry. Returns how many hints are in force.
    pub async fn intel(&self, u: &IntelUpdate) -> Result<usize, HandleError> {
        let mut tx = self.pool.begin().await?;
        if u.full_snapshot {
            sqlx::query("DELETE FROM intel_profiles")
                .execute(&mut *tx)
                .await?;
        }
        for id in &u.removed_profile_ids {
            sqlx::query("DELETE FROM intel_profiles WHERE profile_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for p in &u.golden_profiles {
            sqlx::query(
                "INSERT INTO intel_profiles (profile_id, version, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (profile_id) DO UPDATE SET version = EXCLUDED.version, body = EXCLUDED.body \
                 WHERE intel_profiles.version <= EXCLUDED.version",
            )
            .bind(&p.profile_id)
            .bind(p.version as i64)
            .bind(p.encode_to_vec())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let mut profiles = self.profiles.lock().await;
        if u.full_snapshot {
            profiles.clear();
        }
        for id in &u.removed_profile_ids {
            profiles.remove(id);
        }
        for p in &u.golden_profiles {
            if profiles
                .get(&p.profile_id)
                .is_none_or(|old| old.version <= p.version)
            {
                profiles.insert(p.profile_id.clone(), p.clone());
            }
        }
        Ok(self.rehint(&profiles).await)
    }

    /// Loads the stored golden profiles (at start, before any message).
    pub async fn load_intel(&self) -> Result<usize, HandleError> {
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT profile_id, body FROM intel_profiles")
                .fetch_all(&self.pool)
                .await?;
        let mut profiles = self.profiles.lock().await;
        for (id, body) in rows {
            if let Ok(p) = GoldenProfile::decode(body.as_slice()) {
                profiles.insert(id, p);
            }
        }
        Ok(self.rehint(&profiles).await)
    }

    async fn rehint(&self, profiles: &HashMap<String, GoldenProfile>) -> usize {
        let mut list: Vec<GoldenProfile> = profiles.values().cloned().collect();
        list.sort_by(|a, b| a.profile_id.cmp(&b.profile_id));
        let hints = heimdall_fingerprint::rules::hints_from_profiles(&list);
        let rules = Arc::new(self.rules.with_hints(&hints));
        if let Ok(mut h) = self.hinted.write() {
            *h = rules.clone();
        }
        for reg in self.registries.lock().await.values_mut() {
            reg.set_rules(rules.clone());
        }
        self.metrics.hints.set(hints.len() as i64);
        info!(
            profiles = list.len(),
            hints = hints.len(),
            "device hints from intelligence in force"
        );
        hints.len()
    }

    /// The sensor is in this replica's list and shard.
    pub fn mine(&self, sensor: &str) -> bool {
        let s = &self.settings;
        s.sensor_list()
            .is_none_or(|l| l.iter().any(|x| x == sensor))
            && (s.shard_count <= 1
                || heimdall_bus::partition_of(sensor.as_bytes(), s.shard_count) == s.shard_index)
    }

    async fn load(&self, sensor: &str) -> Result<Registry, HandleError> {
        let cfg = RegistryConfig {
            sensor_id: sensor.to_string(),
            local_nets: self.nets.clone(),
            grace_us: self.settings.grace.as_micros() as i64,
            max_devices: self.settings.max_devices,
            ..RegistryConfig::default()
        };
        let mut reg = Registry::new(cfg, self.current_rules());
        let rows: Vec<serde_json::Value> =
            sqlx::query_scalar("SELECT state FROM devices WHERE sensor_id = $1")
                .bind(sensor)
                .fetch_all(&self.pool)
                .await?;
        let states = rows
            .into_iter()
            .map(serde_json::from_value::<DeviceState>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(HandleError::Json)?;
        info!(sensor, devices = states.len(), "registry loaded");
        reg.restore(states);
        Ok(reg)
    }

    /// Applies `f` to the sensor's registry, then stores what changed and
    /// the events in one transaction. On any failure the registry is
    /// dropped, to be reloaded from the database, and the batch comes again.
    pub async fn apply(
        &self,
        sensor: &str,
        now_us: i64,
        f: impl FnOnce(&mut Registry),
    ) -> Result<usize, HandleError> {
        if !self.mine(sensor) {
            // Another shard's sensor: acknowledged here, kept there.
            return Ok(0);
        }
        let mut regs = self.registries.lock().await;
        if !regs.contains_key(sensor) {
            let reg = self.load(sensor).await?;
            regs.insert(sensor.to_string(), reg);
        }
        let Some(reg) = regs.get_mut(sensor) else {
            return Ok(0);
        };
        f(reg);
        let result = self.persist(sensor, reg, now_us).await;
        if result.is_err() {
            regs.remove(sensor);
        }
        let total: usize = regs.values().map(Registry::len).sum();
        self.device_count.store(total as i64, Ordering::Relaxed);
        self.metrics.devices.set(total as i64);
        result
    }

    async fn persist(
        &self,
        sensor: &str,
        reg: &mut Registry,
        now_us: i64,
    ) -> Result<usize, HandleError> {
        let events = reg.flush(now_us);
        let (changed, removed) = reg.take_changed();
        if changed.is_empty() && removed.is_empty() && events.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        if !changed.is_empty() {
            // One statement for every changed device of the batch.
            let mut cols = DeviceColumns::default();
            for d in changed {
                let x = decide(d);
                cols.ids.push(d.device_id.clone());
                cols.revisions.push(d.revision as i64);
                cols.vendors.push(x.vendor);
                cols.types.push(type_name(x.device_type));
                cols.models.push(x.model);
                cols.confidences.push(x.confidence);
                cols.first.push(d.first_seen_us);
                cols.last.push(d.last_seen_us);
                cols.states
                    .push(serde_json::to_value(d).map_err(HandleError::Json)?);
            }
            sqlx::query(
                "INSERT INTO devices (sensor_id, device_id, revision, vendor, device_type, model, confidence, macs, first_seen_us, last_seen_us, state, updated_at) \
                 SELECT $1, id, rev, v, t, m, c, ARRAY(SELECT e->>'mac' FROM jsonb_array_elements(st->'macs') e), f, l, st, now() \
                 FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::float8[], $8::bigint[], $9::bigint[], $10::jsonb[]) \
                   AS x(id, rev, v, t, m, c, f, l, st) \
                 ON CONFLICT (sensor_id, device_id) DO UPDATE SET revision = EXCLUDED.revision, vendor = EXCLUDED.vendor, \
                 device_type = EXCLUDED.device_type, model = EXCLUDED.model, confidence = EXCLUDED.confidence, macs = EXCLUDED.macs, \
                 first_seen_us = EXCLUDED.first_seen_us, last_seen_us = EXCLUDED.last_seen_us, state = EXCLUDED.state, updated_at = now()",
            )
            .bind(sensor)
            .bind(&cols.ids)
            .bind(&cols.revisions)
            .bind(&cols.vendors)
            .bind(&cols.types)
            .bind(&cols.models)
            .bind(&cols.confidences)
            .bind(&cols.first)
            .bind(&cols.last)
            .bind(&cols.states)
            .execute(&mut *tx)
            .await?;
        }
        if !removed.is_empty() {
            sqlx::query("DELETE FROM devices WHERE sensor_id = $1 AND device_id = ANY($2)")
                .bind(sensor)
                .bind(&removed)
                .execute(&mut *tx)
                .await?;
        }
        for e in &events {
            let kind = DeviceEventKind::try_from(e.kind)
                .map(|k| {
                    k.as_str_name()
                        .trim_start_matches("DEVICE_EVENT_KIND_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            self.metrics
                .events
                .get_or_create(&vec![("kind".into(), kind.clone())])
                .inc();
            sqlx::query(
                "INSERT INTO device_events (event_id, sensor_id, device_id, kind, ts_us, body) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&e.event_id)
            .bind(sensor)
            .bind(e.device.as_ref().map(|d| d.device_id.as_str()).unwrap_or_default())
            .bind(kind)
            .bind(e.ts_us)
            .bind(e.encode_to_vec())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if !events.is_empty() {
            self.outbox.notify_one();
        }
        Ok(events.len())
    }

    /// Reconsiders every loaded registry at wall time (held-back devices
    /// whose grace period ended are announced).
    pub async fn tick(&self) -> Result<(), HandleError> {
        let sensors: Vec<String> = self.registries.lock().await.keys().cloned().collect();
        for s in sensors {
            self.apply(&s, wall_us(), |_| {}).await?;
        }
        Ok(())
    }

    /// Publishes unpublished events, oldest first, one batch per sensor;
    /// returns how many went out.
    pub async fn publish_outbox(&self, bus: &Bus) -> anyhow::Result<usize> {
        let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, sensor_id, body FROM device_events WHERE NOT published ORDER BY seq LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut sent = 0;
        for (sensor, seqs, events) in heimdall_bus::outbox::by_sensor::<DeviceEvent>(rows)? {
            let mut h = Sha1::new();
            for e in &events {
                h.update(e.event_id.as_bytes());
                h.update([0]);
            }
            let batch_id: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            let batch = DeviceEventBatch {
                batch_id: format!("devices-{batch_id}"),
                sensor_id: sensor.clone(),
                created_us: wall_us(),
                records: events,
            };
            let subject = bus.subjects().publish(Kind::Devices, &sensor, 0);
            bus.publish(&subject, &batch.batch_id, &batch).await?;
            sqlx::query("UPDATE device_events SET published = true WHERE seq = ANY($1)")
                .bind(&seqs)
                .execute(&self.pool)
                .await?;
            sent += batch.records.len();
        }
        Ok(sent)
    }

    /// Consumer specs for `kind`: one per configured sensor, or one for all.
    fn specs(&self, bus: &Bus, kind: Kind) -> Vec<ConsumerSpec> {
        let mut base = format!("{}-{}", self.settings.durable, kind.token());
        if self.settings.shard_count > 1 {
            // Each shard reads the whole stream with a position of its own.
            base = format!(
                "{base}-s{}of{}",
                self.settings.shard_index, self.settings.shard_count
            );
        }
        match self.settings.sensor_list() {
            None => vec![bus.consumer_spec(kind, &base, None)],
            Some(list) => list
                .iter()
                .map(|sensor| {
                    let mut spec = bus.consumer_spec(kind, &format!("{base}-{sensor}"), None);
                    spec.filter = bus.subjects().sensor(kind, sensor);
                    spec
                })
                .collect(),
        }
    }
}

/// Changed devices as columns, for one multi-row upsert.
#[derive(Debug, Default)]
struct DeviceColumns {
    ids: Vec<String>,
    revisions: Vec<i64>,
    vendors: Vec<String>,
    types: Vec<String>,
    models: Vec<String>,
    confidences: Vec<f64>,
    first: Vec<i64>,
    last: Vec<i64>,
    states: Vec<serde_json::Value>,
}

/// The latest record time of a batch, or wall time for an empty one.
fn latest(ts: impl Iterator<Item = i64>) -> i64 {
    ts.max().unwrap_or_else(wall_us)
}

/// Applies one batch's records to its sensor's registry, in order.
#[instrument(skip_all, fields(batch = %batch, kind = kind, records = records.len()))]
async fn on_batch<R>(
    svc: &Service,
    kind: &'static str,
    batch: &str,
    sensor: &str,
    records: &[R],
    ts_us: fn(&R) -> i64,
    apply: fn(&mut Registry, &R),
) -> Result<(), HandleError> {
    let now = latest(records.iter().map(ts_us));
    svc.apply(sensor, now, |reg| {
        for r in records {
            apply(reg, r);
        }
    })
    .await?;
    svc.metrics.count(kind, records.len());
    Ok(())
}

/// Bring the service's schema up to date.
pub async fn migrate(pool: &PgPool) -> Result<(), heimdall_store::Error> {
    heimdall_store::migrate(pool, SCHEMA, &MIGRATIONS).await
}

/// Run until `shutdown`: serve telemetry on `listener`, connect, migrate,
/// consume observations, connections and DNS for this replica's sensors,
/// publish device events.
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
    let svc = Arc::new(Service::new(config.fingerprint.clone(), pool).map_err(anyhow::Error::msg)?);
    svc.metrics.register(&metrics);
    svc.load_intel()
        .await
        .map_err(|e| anyhow::anyhow!("loading stored intelligence: {e}"))?;
    // Every configured sensor's devices are loaded before a message is taken.
    if let Some(list) = svc.settings.sensor_list() {
        for s in list {
            svc.apply(&s, 0, |_| {})
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    } else {
        let sensors: Vec<String> = sqlx::query_scalar("SELECT DISTINCT sensor_id FROM devices")
            .fetch_all(&svc.pool)
            .await?;
        for s in sensors {
            svc.apply(&s, 0, |_| {})
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }

    let bus = Bus::connect(&config.nats, "heimdall-fingerprint")
        .await?
        .with_health(health.clone());
    bus.register_metrics(&metrics);
    bus.ensure_streams(&[
        Kind::Observations,
        Kind::Flows,
        Kind::Dns,
        Kind::Devices,
        Kind::Intel,
    ])
    .await?;
    health.ready("nats", "consuming observations, flows, dns and intel");
    info!(sensors = %svc.settings.sensors, rules = svc.rules.len(), "fingerprint ready");

    let mut tasks = tokio::task::JoinSet::new();
    {
        // Every replica takes all intelligence, with a position of its own.
        let mut durable = format!("{}-intel", svc.settings.durable);
        if svc.settings.shard_count > 1 {
            durable = format!(
                "{durable}-s{}of{}",
                svc.settings.shard_index, svc.settings.shard_count
            );
        }
        if let Some(list) = svc.settings.sensor_list() {
            durable = format!("{durable}-{}", list.join("_"));
        }
        let spec = bus.consumer_spec(Kind::Intel, &durable, None);
        let (bus, svc, stop) = (bus.clone(), svc.clone(), shutdown.clone());
        tasks.spawn(async move {
            bus.consume::<IntelUpdate, _, _, HandleError>(spec, stop, |m| {
                let svc = svc.clone();
                async move { svc.intel(&m.message).await.map(|_| ()) }
            })
            .await
        });
    }
    for spec in svc.specs(&bus, Kind::Observations) {
        let (bus, svc, stop) = (bus.clone(), svc.clone(), shutdown.clone());
        tasks.spawn(async move {
            bus.consume::<ObservationBatch, _, _, HandleError>(spec, stop, |m| {
                let svc = svc.clone();
                async move {
                    let b = &m.message;
                    on_batch(
                        &svc,
                        "observation",
                        &b.batch_id,
                        &b.sensor_id,
                        &b.records,
                        |r| r.ts_us,
                        Registry::observe,
                    )
                    .await
                }
            })
            .await
        });
    }
    for spec in svc.specs(&bus, Kind::Flows) {
        let (bus, svc, stop) = (bus.clone(), svc.clone(), shutdown.clone());
        tasks.spawn(async move {
            bus.consume::<ConnBatch, _, _, HandleError>(spec, stop, |m| {
                let svc = svc.clone();
                async move {
                    let b = &m.message;
                    on_batch(
                        &svc,
                        "conn",
                        &b.batch_id,
                        &b.sensor_id,
                        &b.records,
                        |r| r.ts_us,
                        Registry::conn,
                    )
                    .await
                }
            })
            .await
        });
    }
    for spec in svc.specs(&bus, Kind::Dns) {
        let (bus, svc, stop) = (bus.clone(), svc.clone(), shutdown.clone());
        tasks.spawn(async move {
            bus.consume::<DnsBatch, _, _, HandleError>(spec, stop, |m| {
                let svc = svc.clone();
                async move {
                    let b = &m.message;
                    on_batch(
                        &svc,
                        "dns",
                        &b.batch_id,
                        &b.sensor_id,
                        &b.records,
                        |r| r.ts_us,
                        Registry::dns,
                    )
                    .await
                }
            })
            .await
        });
    }
    {
        let (bus, svc, stop) = (bus.clone(), svc.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(svc.settings.flush_interval);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = svc.outbox.notified() => {}
                    _ = tick.tick() => {
                        if let Err(e) = svc.tick().await {
                            warn!(error = %e, "reconsidering held-back devices failed; will retry");
                        }
                    }
                }
                loop {
                    match svc.publish_outbox(&bus).await {
                        Ok(0) => break,
                        Ok(n) => info!(events = n, "device events published"),
                        Err(e) => {
                            warn!(error = %e, "publishing device events failed; will retry");
                            break;
                        }
                    }
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    shutdown.cancel();
    served.finish().await?;
    Ok(())
}

/// The device type names of the taxonomy, for documentation and checks.
pub fn taxonomy() -> Vec<String> {
    (1..=22)
        .filter_map(|v| DeviceType::try_from(v).ok())
        .map(type_name)
        .collect()
}
