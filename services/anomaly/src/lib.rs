//! The anomaly service: connection, DNS and observation records, device
//! events and intelligence from NATS in; per-device baselines in its own
//! PostgreSQL schema (`anomaly`), and alerts and incidents stored there and
//! published on `sensor.<id>.alerts`.
//!
//! What this service promises:
//! - Every detector of `heimdall-detect` runs on every record: the shape
//!   detectors (scans, sweeps, beacons, DNS tunnels, DGAs, brute force),
//!   the baseline detectors (new destinations and ports, volume spikes,
//!   exfiltration, unusual hours) and threat signatures from Asgard.
//! - A batch's alerts, and any baseline versions it completed, are written
//!   in one transaction before the batch is acknowledged. Alert ids are
//!   deterministic, so a redelivered batch stores nothing twice; alerts go
//!   to NATS from that table (an outbox), once.
//! - Every fold of an hour into a baseline is a new version; the versions
//!   are kept (up to `HEIMDALL_ANOMALY_VERSIONS_KEPT` per device) and any
//!   device can be rolled back to one, by API (`POST
//!   /v1/baselines/{sensor}/{device}/rollback`) or command line
//!   (`heimdall-anomaly rollback`). A rollback is a new version too.
//! - Every `HEIMDALL_ANOMALY_CHECKPOINT_INTERVAL` and at shutdown, each
//!   monitor that changed is saved whole (the detectors' windows,
//!   suppressions and incidents, and the profiles: baseline plus the hour
//!   being collected) in one transaction with the stream position each
//!   consumer had been applied to. A restarted replica resumes the
//!   monitors, with the intelligence and device names it had, and has the
//!   bus deliver again every message after those positions before it takes
//!   a new one. A crash (SIGKILL included) therefore neither loses nor
//!   doubles what was applied: the alerts are those of a replica that never
//!   stopped. Only messages that stream retention removed while the replica
//!   was down are lost, and they are counted
//!   (`heimdall_anomaly_resume_gap_sequences`).
//! - Incidents close after an hour of record time (the newest record of
//!   their sensor's partition) without an alert, or when a person closes
//!   them (API, command line); a person
//!   may acknowledge one too. Every change of state is published from the
//!   incidents table, and after a person's close the device's next alert
//!   opens a new incident.
//! - Work is partitioned by device: the capture service publishes each
//!   device's records to one partition; a replica consumes the partitions
//!   listed in `HEIMDALL_ANOMALY_PARTITIONS` (all by default) with durable
//!   consumers of their own, so two replicas never hold one device.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heimdall_bus::{Bus, BusConfig, ConsumerSpec, Kind};
use heimdall_config::{Problem, Validate};
use heimdall_detect::baseline::{Baseline, BaselineConfig, DeviceProfile};
use heimdall_detect::thresholds::Thresholds;
use heimdall_detect::{DetectConfig, Monitor};
use heimdall_proto::sensor::v1::{
    Alert, AlertBatch, AlertEvent, BaselineBatch, BaselineSummary, ConnBatch, DeviceEventBatch,
    DnsBatch, GoldenProfile, IntelUpdate, ObservationBatch, Severity, ThreatSignature, alert_event,
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
use tracing::{info, warn};

mod api;
mod incidents;

pub use incidents::{Action, IncidentError, IncidentInfo, act, list as incidents};

/// The schema this service owns.
pub const SCHEMA: &str = "anomaly";
/// The variable prefix of [`AnomalySettings`].
pub const PREFIX: &str = "HEIMDALL_ANOMALY_";
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `HEIMDALL_ANOMALY_*`: the service's own settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct AnomalySettings {
    /// `HEIMDALL_ANOMALY_DURABLE`: prefix of the consumer names. Default
    /// `anomaly`.
    pub durable: String,
    /// `HEIMDALL_ANOMALY_PARTITIONS`: the partitions this replica takes,
    /// comma-separated (`0,1`); `*` (the default) for all of them in one
    /// consumer. Replicas must take disjoint sets covering every partition
    /// the capture service publishes (`HEIMDALL_CAPTURE_PARTITIONS`).
    pub partitions: String,
    /// `HEIMDALL_ANOMALY_PARTITION_COUNT`: how many partitions the capture
    /// service publishes (its `HEIMDALL_CAPTURE_PARTITIONS`). Used with
    /// `REPLICA_COUNT` when `PARTITIONS` is `*`. Default 1.
    pub partition_count: u16,
    /// `HEIMDALL_ANOMALY_REPLICA_COUNT` and `_REPLICA_INDEX`: with
    /// `PARTITIONS` at `*`, replica i of n takes the partitions p with
    /// p mod n = i (on Kubernetes, the StatefulSet pod index). Default 1
    /// and 0.
    pub replica_count: u16,
    pub replica_index: u16,
    /// `HEIMDALL_ANOMALY_CHECKPOINT_INTERVAL`: how often profiles are
    /// stored. Default `10s`.
    #[serde(with = "heimdall_config::duration")]
    pub checkpoint_interval: Duration,
    /// `HEIMDALL_ANOMALY_VERSIONS_KEPT`: baseline versions kept per device
    /// (one per hour of data). Default 336 (two weeks).
    pub versions_kept: u32,
    /// `HEIMDALL_ANOMALY_WINDOW_DAYS`: days a baseline remembers. Default 7.
    pub window_days: u32,
    /// `HEIMDALL_ANOMALY_LEARN_DAYS`: days of data for full confidence.
    /// Default 3.
    pub learn_days: f64,
    /// `HEIMDALL_ANOMALY_MIN_CONFIDENCE`: confidence from which a baseline
    /// judges (0..1). Default 0.5.
    pub min_confidence: f64,
    /// `HEIMDALL_ANOMALY_UTC_OFFSET_MINUTES`: the home's time zone, for
    /// hour-of-day habits. Default 0.
    pub utc_offset_minutes: i32,
    /// `HEIMDALL_ANOMALY_SUMMARY_HOURS`: a device's baseline is summarised
    /// on `sensor.<id>.baselines` (for the asgard-bridge's behavioural
    /// signatures) each time it has grown by this many hours of data; 0
    /// never. Default 24.
    pub summary_hours: u32,
    /// `HEIMDALL_ANOMALY_THRESHOLDS_FILE`: detector thresholds per device
    /// type and per device over the global ones (TOML, see
    /// docs/detection.md); empty for the built-in thresholds alone.
    pub thresholds_file: String,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        let b = BaselineConfig::default();
        AnomalySettings {
            durable: "anomaly".into(),
            partitions: "*".into(),
            partition_count: 1,
            replica_count: 1,
            replica_index: 0,
            checkpoint_interval: Duration::from_secs(10),
            versions_kept: 336,
            window_days: b.window_days,
            learn_days: b.learn_days,
            min_confidence: b.min_confidence,
            utc_offset_minutes: b.utc_offset_minutes,
            summary_hours: b.summary_hours,
            thresholds_file: String::new(),
        }
    }
}

impl AnomalySettings {
    /// The partitions, or `None` for all.
    pub fn partition_list(&self) -> Result<Option<Vec<u16>>, String> {
        let t = self.partitions.trim();
        if t == "*" {
            if self.replica_count <= 1 {
                return Ok(None);
            }
            if self.replica_index >= self.replica_count {
                return Err(format!(
                    "the replica index {} must be below the replica count {}",
                    self.replica_index, self.replica_count
                ));
            }
            let mine: Vec<u16> = (0..self.partition_count)
                .filter(|p| p % self.replica_count == self.replica_index)
                .collect();
            if mine.is_empty() {
                return Err(format!(
                    "replica {} of {} has no partition: HEIMDALL_ANOMALY_PARTITION_COUNT ({}) must be at least the replica count",
                    self.replica_index, self.replica_count, self.partition_count
                ));
            }
            return Ok(Some(mine));
        }
        let mut v = Vec::new();
        for p in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            v.push(
                p.parse::<u16>()
                    .map_err(|_| format!("{p:?} is not a partition number"))?,
            );
        }
        if v.is_empty() {
            return Err("give partition numbers separated by commas, or * for all".into());
        }
        v.sort_unstable();
        v.dedup();
        Ok(Some(v))
    }

    /// The thresholds file, read and checked; `None` without one.
    pub fn thresholds(&self) -> Result<Option<Thresholds>, String> {
        if self.thresholds_file.is_empty() {
            return Ok(None);
        }
        Thresholds::load(std::path::Path::new(&self.thresholds_file)).map(Some)
    }

    /// The thresholds of the baseline detectors.
    pub fn baseline(&self) -> BaselineConfig {
        BaselineConfig {
            window_days: self.window_days,
            learn_days: self.learn_days,
            min_confidence: self.min_confidence,
            utc_offset_minutes: self.utc_offset_minutes,
            summary_hours: self.summary_hours,
            ..BaselineConfig::default()
        }
    }
}

impl Validate for AnomalySettings {
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
        if let Err(e) = self.partition_list() {
            bad("PARTITIONS", e);
        }
        if self.checkpoint_interval.is_zero() {
            bad(
                "CHECKPOINT_INTERVAL",
                "must be longer than zero (like 10s)".into(),
            );
        }
        if self.versions_kept == 0 {
            bad("VERSIONS_KEPT", "must be at least 1".into());
        }
        if !(1..=60).contains(&self.window_days) {
            bad("WINDOW_DAYS", "must be between 1 and 60".into());
        }
        if !(self.learn_days > 0.0 && self.learn_days <= f64::from(self.window_days)) {
            bad(
                "LEARN_DAYS",
                format!(
                    "must be above 0 and at most the window ({} days)",
                    self.window_days
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            bad("MIN_CONFIDENCE", "must be between 0 and 1".into());
        }
        if self.utc_offset_minutes.abs() > 14 * 60 {
            bad(
                "UTC_OFFSET_MINUTES",
                "must be within ±840 (UTC-14 to UTC+14)".into(),
            );
        }
        if let Err(e) = self.thresholds() {
            bad("THRESHOLDS_FILE", e);
        }
    }
}

heimdall_telemetry::service_config! {
    /// Everything the service needs, loaded and validated as one.
    pub struct Config {
        anomaly: AnomalySettings = PREFIX,
        nats: BusConfig = heimdall_bus::PREFIX,
        database: StoreConfig = heimdall_store::PREFIX,
        telemetry: TelemetryConfig = heimdall_telemetry::PREFIX,
    }
}

/// Why a batch could not be applied; it is delivered again.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The database refused; the batch comes again.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored profile did not parse.
    #[error("profile: {0}")]
    Json(#[from] serde_json::Error),
}

/// Why a rollback was refused.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no device {device} on sensor {sensor} in this replica")]
    NoDevice { sensor: String, device: String },
    #[error("device {device} has no stored baseline version {version}")]
    NoVersion { device: String, version: u64 },
    #[error(transparent)]
    Handle(#[from] HandleError),
}

impl From<sqlx::Error> for RollbackError {
    fn from(e: sqlx::Error) -> Self {
        RollbackError::Handle(HandleError::Db(e))
    }
}

#[derive(Debug, Clone, Default)]
struct ServiceMetrics {
    records: Family<Vec<(String, String)>, Counter>,
    alerts: Family<Vec<(String, String)>, Counter>,
    versions: Counter,
    rollbacks: Counter,
    devices: Gauge,
    checkpoint_errors: Counter,
    resume_gaps: Counter,
}

impl ServiceMetrics {
    fn register(&self, m: &Metrics) {
        m.register(
            "anomaly_records",
            "Records run through the detectors, by kind",
            self.records.clone(),
        );
        m.register(
            "anomaly_alerts",
            "Alerts raised and stored, by type",
            self.alerts.clone(),
        );
        m.register(
            "anomaly_baseline_versions",
            "Baseline versions stored",
            self.versions.clone(),
        );
        m.register(
            "anomaly_rollbacks",
            "Baselines rolled back",
            self.rollbacks.clone(),
        );
        m.register(
            "anomaly_devices",
            "Devices profiled by this replica",
            self.devices.clone(),
        );
        m.register(
            "anomaly_checkpoint_errors",
            "Checkpoints of profiles that failed (retried at the next)",
            self.checkpoint_errors.clone(),
        );
        m.register(
            "anomaly_resume_gap_sequences",
            "Stream sequences removed by retention between the saved state and a restart (not applied)",
            self.resume_gaps.clone(),
        );
    }

    fn count(&self, kind: &str, n: usize) {
        self.records
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc_by(n as u64);
    }
}

/// Intelligence in force, kept to equip monitors created later.
#[derive(Debug, Default)]
struct Intel {
    signatures: HashMap<String, ThreatSignature>,
    profiles: HashMap<String, GoldenProfile>,
}

impl Intel {
    fn as_update(&self) -> IntelUpdate {
        IntelUpdate {
            threat_signatures: self.signatures.values().cloned().collect(),
            golden_profiles: self.profiles.values().cloned().collect(),
            ..IntelUpdate::default()
        }
    }
}

/// Device ids and types (as the fingerprint service named them) by MAC.
type Named = HashMap<[u8; 6], (String, String)>;

/// A sensor's partition: its devices' detectors.
type Part = (String, u16);

/// The monitors of this replica's partitions and the database behind them.
#[derive(Debug)]
pub struct Service {
    settings: AnomalySettings,
    pool: PgPool,
    monitors: Mutex<HashMap<Part, Monitor>>,
    intel: Mutex<Intel>,
    /// Device ids and types by sensor and MAC.
    devices: Mutex<HashMap<String, Named>>,
    outbox: Notify,
    metrics: ServiceMetrics,
    /// Thresholds per device type and device, from the settings' file.
    thresholds: Option<Thresholds>,
    /// How far each record consumer (by durable name) has been applied to
    /// the monitors: the stream sequence of its last message. Changed only
    /// with `monitors` locked, so a checkpoint stores both alike.
    positions: std::sync::Mutex<HashMap<String, u64>>,
    /// Monitors fed since the last checkpoint.
    changed: std::sync::Mutex<std::collections::HashSet<Part>>,
    /// Alerts, versions and summaries a failed transaction could not store:
    /// kept for the next attempt, since the records that made them are
    /// not fed again.
    unsaved: std::sync::Mutex<HashMap<Part, Unsaved>>,
}

/// What [`Service::persist`] has yet to store for one monitor.
#[derive(Debug, Default)]
struct Unsaved {
    alerts: Vec<Alert>,
    versions: Vec<(String, Baseline)>,
    summaries: Vec<BaselineSummary>,
    /// Incidents no alert can join any more, with when they went quiet.
    closed: Vec<(String, i64)>,
}

/// Locks a std mutex whose holder cannot leave it inconsistent.
fn held<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Publishes `records` as one batch on the sensor's alerts subject, named
/// `<kind>-<digest>` from `digest` (fed the events' ids), so a batch sent
/// again after a crash is recognised by the bus.
async fn send_events(
    bus: &Bus,
    sensor: &str,
    kind: &str,
    digest: Sha1,
    records: Vec<AlertEvent>,
) -> Result<(), heimdall_bus::Error> {
    let id: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let batch = AlertBatch {
        batch_id: format!("{kind}-{id}"),
        sensor_id: sensor.to_string(),
        created_us: wall_us(),
        records,
    };
    let subject = bus.subjects().publish(Kind::Alerts, sensor, 0);
    bus.publish(&subject, &batch.batch_id, &batch).await?;
    Ok(())
}

fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The partition of a subject (`...p3` → 3).
fn partition_of_subject(subject: &str) -> u16 {
    subject
        .rsplit('.')
        .next()
        .and_then(|t| t.strip_prefix('p'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A protobuf enum value's name as people read it: `SEVERITY_HIGH` with
/// `prefix` `SEVERITY_` is `high`.
fn short_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

fn severity_name(s: i32) -> String {
    Severity::try_from(s)
        .map(|s| short_name(s.as_str_name(), "SEVERITY_"))
        .unwrap_or_default()
}

impl Service {
    /// A service over `pool` (migrated). Partitions load lazily.
    pub fn new(settings: AnomalySettings, pool: PgPool) -> Self {
        // The settings were validated, the file with them; one changed
        // since is reported and left out.
        let thresholds = settings.thresholds().unwrap_or_else(|e| {
            warn!(error = %e, "thresholds file left out");
            None
        });
        Service {
            thresholds,
            settings,
            pool,
            monitors: Mutex::new(HashMap::new()),
            intel: Mutex::new(Intel::default()),
            devices: Mutex::new(HashMap::new()),
            outbox: Notify::new(),
            metrics: ServiceMetrics::default(),
            positions: std::sync::Mutex::new(HashMap::new()),
            changed: std::sync::Mutex::new(std::collections::HashSet::new()),
            unsaved: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Loads the intelligence and device names stored by earlier runs.
    pub async fn load_shared(&self) -> Result<(), HandleError> {
        let rows: Vec<(String, String, Vec<u8>)> =
            sqlx::query_as("SELECT kind, id, body FROM intel")
                .fetch_all(&self.pool)
                .await?;
        let mut intel = self.intel.lock().await;
        for (kind, id, body) in rows {
            match kind.as_str() {
                "signature" => {
                    if let Ok(s) = ThreatSignature::decode(body.as_slice()) {
                        intel.signatures.insert(id, s);
                    }
                }
                _ => {
                    if let Ok(p) = GoldenProfile::decode(body.as_slice()) {
                        intel.profiles.insert(id, p);
                    }
                }
            }
        }
        let rows: Vec<(String, Vec<u8>, String, String)> =
            sqlx::query_as("SELECT sensor_id, mac, device_id, device_type FROM devices")
                .fetch_all(&self.pool)
                .await?;
        let mut devices = self.devices.lock().await;
        for (sensor, mac, id, t) in rows {
            if let Ok(m) = <[u8; 6]>::try_from(mac.as_slice()) {
                devices.entry(sensor).or_default().insert(m, (id, t));
            }
        }
        info!(
            signatures = intel.signatures.len(),
            profiles = intel.profiles.len(),
            "intelligence loaded"
        );
        Ok(())
    }

    async fn load(&self, sensor: &str, part: u16) -> Result<Monitor, HandleError> {
        let mut m = Monitor::new(DetectConfig::default(), self.settings.baseline());
        if let Some(t) = &self.thresholds {
            m = m.with_thresholds(t.clone());
        }
        m.profiler.record_versions = true;
        m.intel(&self.intel.lock().await.as_update());
        let saved: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT body FROM monitor_state WHERE sensor_id = $1 AND part = $2")
                .bind(sensor)
                .bind(i32::from(part))
                .fetch_optional(&self.pool)
                .await?;
        let saved = saved.and_then(|body| match serde_json::from_slice::<Monitor>(&body) {
            Ok(m) => Some(m),
            Err(e) => {
                warn!(sensor, partition = part, error = %e, "the saved monitor does not read; starting from the stored profiles");
                None
            }
        });
        if let Some(saved) = saved {
            m.resume(saved);
            if let Some(devs) = self.devices.lock().await.get(sensor) {
                for (mac, (id, t)) in devs {
                    m.device(*mac, id, t);
                }
            }
            info!(
                sensor,
                partition = part,
                devices = m.profiles_of().len(),
                "monitor resumed"
            );
            return Ok(m);
        }
        if let Some(devs) = self.devices.lock().await.get(sensor) {
            for (mac, (id, t)) in devs {
                m.device(*mac, id, t);
            }
        }
        let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT device_key, body FROM profiles WHERE sensor_id = $1 AND part = $2",
        )
        .bind(sensor)
        .bind(i32::from(part))
        .fetch_all(&self.pool)
        .await?;
        let n = rows.len();
        for (key, body) in rows {
            match serde_json::from_value::<DeviceProfile>(body) {
                Ok(p) => m.profiler.restore(&key, p),
                // One unreadable row must not stop the partition: that
                // device learns again.
                Err(e) => {
                    warn!(sensor, device = key, error = %e, "a stored profile does not read; the device starts afresh")
                }
            }
        }
        info!(sensor, partition = part, devices = n, "profiles loaded");
        Ok(m)
    }

    /// Runs `f` on the monitor of the sensor's partition, then stores the
    /// alerts and baseline versions it produced in one transaction.
    ///
    /// `from` names the message: its consumer's durable name and its stream
    /// sequence. A message at or below the consumer's position was fed
    /// already (it comes again because storing failed, or the
    /// acknowledgement was lost): `f` is skipped and only what is still
    /// unsaved is stored. On a failure what was not stored is kept for the
    /// next attempt and the batch comes again.
    pub async fn apply(
        &self,
        sensor: &str,
        part: u16,
        from: Option<(&str, u64)>,
        f: impl FnOnce(&mut Monitor),
    ) -> Result<usize, HandleError> {
        // A message with no stream sequence is fed untracked.
        let from = from.filter(|(_, seq)| *seq > 0);
        let mut mons = self.monitors.lock().await;
        let key = (sensor.to_string(), part);
        // Record consumers are in order (the bus tries a failed message
        // again before any later one), so a message that could not be fed
        // here is never overtaken.
        self.prepare(&mut mons, sensor, part).await?;
        let Some(m) = mons.get_mut(&key) else {
            return Ok(0);
        };
        let fed = match from {
            Some((durable, seq)) => {
                let mut positions = held(&self.positions);
                if positions.get(durable).is_some_and(|p| *p >= seq) {
                    false
                } else {
                    positions.insert(durable.to_string(), seq);
                    true
                }
            }
            None => true,
        };
        if fed {
            f(m);
            held(&self.changed).insert(key.clone());
        }
        let result = self.persist(sensor, part, m).await;
        let devices: usize = mons.values().map(|m| m.profiles_of().len()).sum();
        self.metrics.devices.set(devices as i64);
        result
    }

    /// Loads the partition's monitor if needed and stores what an earlier
    /// batch left unsaved: both before a record is fed, so unsaved output
    /// never grows past one batch and a checkpoint never saves a position
    /// past an alert that is not stored.
    async fn prepare(
        &self,
        mons: &mut HashMap<Part, Monitor>,
        sensor: &str,
        part: u16,
    ) -> Result<(), HandleError> {
        let key = (sensor.to_string(), part);
        if !mons.contains_key(&key) {
            let m = self.load(sensor, part).await?;
            mons.insert(key.clone(), m);
        }
        let unsaved = held(&self.unsaved).remove(&key);
        if let (Some(u), Some(m)) = (unsaved, mons.get(&key))
            && let Err(e) = self.store(sensor, m, &u).await
        {
            held(&self.unsaved).insert(key, u);
            return Err(e);
        }
        Ok(())
    }

    async fn persist(
        &self,
        sensor: &str,
        part: u16,
        m: &mut Monitor,
    ) -> Result<usize, HandleError> {
        let key = (sensor.to_string(), part);
        let mut u = held(&self.unsaved).remove(&key).unwrap_or_default();
        u.alerts.extend(m.take());
        u.versions.extend(m.profiler.take_versions());
        u.summaries.extend(m.profiler.take_summaries());
        u.closed.extend(m.detector.close_idle_incidents());
        if u.alerts.is_empty()
            && u.versions.is_empty()
            && u.summaries.is_empty()
            && u.closed.is_empty()
        {
            return Ok(0);
        }
        let result = self.store(sensor, m, &u).await;
        if result.is_err() {
            held(&self.unsaved).insert(key, u);
        }
        result
    }

    /// One transaction: `u`'s summaries, versions (with the profiles they
    /// belong to) and alerts (with their incidents).
    async fn store(&self, sensor: &str, m: &Monitor, u: &Unsaved) -> Result<usize, HandleError> {
        let (alerts, versions, summaries) = (&u.alerts, &u.versions, &u.summaries);
        let mut tx = self.pool.begin().await?;
        for mut sum in summaries.iter().cloned() {
            sum.sensor_id = sensor.to_string();
            sqlx::query(
                "INSERT INTO summaries (sensor_id, device_key, version, body) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (sensor_id, device_key, version) DO NOTHING",
            )
            .bind(sensor)
            .bind(&sum.device_key)
            .bind(sum.version as i64)
            .bind(sum.encode_to_vec())
            .execute(&mut *tx)
            .await?;
        }
        let mut devices: Vec<&str> = Vec::new();
        for (key, b) in versions {
            store_version(&mut tx, sensor, key, b, "learnt").await?;
            if !devices.contains(&key.as_str()) {
                devices.push(key);
            }
        }
        // The profiles themselves are stored with the monitor at the next
        // checkpoint, with the consumer positions they go with.
        for key in &devices {
            let Some(p) = m.profiler.devices.get(*key) else {
                continue;
            };
            sqlx::query(
                "DELETE FROM baseline_versions WHERE sensor_id = $1 AND device_key = $2 AND version <= $3",
            )
            .bind(sensor)
            .bind(key)
            .bind(p.baseline.version as i64 - i64::from(self.settings.versions_kept))
            .execute(&mut *tx)
            .await?;
        }
        for mut a in alerts.iter().cloned() {
            a.sensor_id = sensor.to_string();
            let inserted = sqlx::query(
                "INSERT INTO alerts (alert_id, sensor_id, device_id, alert_type, severity, score, ts_us, incident_id, description, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (alert_id) DO NOTHING",
            )
            .bind(&a.alert_id)
            .bind(sensor)
            .bind(&a.device_id)
            .bind(&a.alert_type)
            .bind(a.severity)
            .bind(a.score)
            .bind(a.ts_us)
            .bind(&a.incident_id)
            .bind(&a.description)
            .bind(a.encode_to_vec())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                continue;
            }
            self.metrics
                .alerts
                .get_or_create(&vec![("type".into(), a.alert_type.clone())])
                .inc();
            let device = if a.device_id.is_empty() {
                heimdall_proto::addr::ip(&a.src_ip)
                    .map(|ip| ip.to_string())
                    .unwrap_or_default()
            } else {
                a.device_id.clone()
            };
            sqlx::query(
                "INSERT INTO incidents (incident_id, sensor_id, device_id, opened_us, updated_us, severity, alert_types, alert_count, summary) \
                 VALUES ($1, $2, $3, $4, $4, $5, ARRAY[$6], 1, $7) \
                 ON CONFLICT (incident_id) DO UPDATE SET updated_us = GREATEST(incidents.updated_us, EXCLUDED.updated_us), \
                 severity = GREATEST(incidents.severity, EXCLUDED.severity), \
                 alert_types = (SELECT array_agg(DISTINCT t ORDER BY t) FROM unnest(incidents.alert_types || EXCLUDED.alert_types) t), \
                 alert_count = incidents.alert_count + 1 \
                 WHERE incidents.state <> 3",
            )
            .bind(&a.incident_id)
            .bind(sensor)
            .bind(&device)
            .bind(a.ts_us)
            .bind(a.severity)
            .bind(&a.alert_type)
            .bind(&a.description)
            .execute(&mut *tx)
            .await?;
        }
        for (id, quiet_since) in &u.closed {
            sqlx::query(
                "UPDATE incidents SET state = 3, closed_us = $2, changed_by = 'inactivity', note = NULL, \
                 state_published = false WHERE incident_id = $1 AND state <> 3",
            )
            .bind(id)
            .bind(quiet_since)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.metrics.versions.inc_by(versions.len() as u64);
        if !alerts.is_empty() || !summaries.is_empty() || !u.closed.is_empty() {
            self.outbox.notify_one();
        }
        Ok(alerts.len())
    }

    /// Saves every monitor fed since the last checkpoint, the profiles
    /// that changed, and how far each consumer had been applied, in one
    /// transaction; returns how many profiles were stored.
    pub async fn checkpoint(&self) -> Result<usize, HandleError> {
        let mut mons = self.monitors.lock().await;
        self.checkpoint_with(&mut mons, &[]).await
    }

    /// [`Service::checkpoint`] with the monitors locked, marking the
    /// incidents `detached` in the same transaction.
    pub(crate) async fn checkpoint_with(
        &self,
        mons: &mut HashMap<Part, Monitor>,
        detached: &[String],
    ) -> Result<usize, HandleError> {
        // Output not yet stored first: positions must not pass it.
        let waiting: Vec<Part> = held(&self.unsaved).keys().cloned().collect();
        for (sensor, part) in waiting {
            self.prepare(mons, &sensor, part).await?;
        }
        let changed = held(&self.changed).clone();
        let positions = held(&self.positions).clone();
        let mut tx = self.pool.begin().await?;
        let mut written = Vec::new();
        let mut saved = 0;
        for ((sensor, part), m) in mons.iter() {
            let dirty: Vec<&String> = m
                .profiler
                .devices
                .iter()
                .filter(|(_, p)| p.dirty)
                .map(|(k, _)| k)
                .collect();
            if dirty.is_empty() && !changed.contains(&(sensor.clone(), *part)) {
                continue;
            }
            for k in &dirty {
                if let Some(p) = m.profiler.devices.get(*k) {
                    store_profile(&mut tx, sensor, *part, k, p).await?;
                }
            }
            sqlx::query(
                "INSERT INTO monitor_state (sensor_id, part, body, saved_at) VALUES ($1, $2, $3, now()) \
                 ON CONFLICT (sensor_id, part) DO UPDATE SET body = EXCLUDED.body, saved_at = now()",
            )
            .bind(sensor)
            .bind(i32::from(*part))
            .bind(serde_json::to_vec(m)?)
            .execute(&mut *tx)
            .await?;
            saved += 1;
            written.push((
                (sensor.clone(), *part),
                dirty.into_iter().cloned().collect::<Vec<_>>(),
            ));
        }
        if saved == 0 && detached.is_empty() {
            return Ok(0);
        }
        if !detached.is_empty() {
            sqlx::query("UPDATE incidents SET detached = true WHERE incident_id = ANY($1)")
                .bind(detached)
                .execute(&mut *tx)
                .await?;
        }
        for (durable, seq) in &positions {
            sqlx::query(
                "INSERT INTO consumer_positions (durable, stream_seq, saved_at) VALUES ($1, $2, now()) \
                 ON CONFLICT (durable) DO UPDATE SET stream_seq = EXCLUDED.stream_seq, saved_at = now()",
            )
            .bind(durable)
            .bind(*seq as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let mut profiles = 0;
        let mut still = held(&self.changed);
        for (key, dirty) in written {
            still.remove(&key);
            if let Some(m) = mons.get_mut(&key) {
                for k in &dirty {
                    if let Some(p) = m.profiler.devices.get_mut(k) {
                        p.dirty = false;
                    }
                }
            }
            profiles += dirty.len();
        }
        Ok(profiles)
    }

    /// Rolls `device`'s baseline back to stored `version`; the result is a
    /// new version. Returns the new version number.
    pub async fn rollback(
        &self,
        sensor: &str,
        device: &str,
        version: u64,
    ) -> Result<u64, RollbackError> {
        let part: Option<i32> = sqlx::query_scalar(
            "SELECT part FROM profiles WHERE sensor_id = $1 AND device_key = $2",
        )
        .bind(sensor)
        .bind(device)
        .fetch_optional(&self.pool)
        .await?;
        let mut mons = self.monitors.lock().await;
        let holding = mons
            .iter()
            .find(|((s, _), m)| s == sensor && m.profiles_of().contains_key(device))
            .map(|(k, _)| k.1);
        let part = match (holding, part) {
            (Some(p), _) => p,
            (None, Some(p)) if self.owns(p as u16) => {
                let p = p as u16;
                let m = self.load(sensor, p).await?;
                mons.insert((sensor.to_string(), p), m);
                p
            }
            _ => {
                return Err(RollbackError::NoDevice {
                    sensor: sensor.into(),
                    device: device.into(),
                });
            }
        };
        let stored: Option<serde_json::Value> = sqlx::query_scalar(
            "SELECT baseline FROM baseline_versions WHERE sensor_id = $1 AND device_key = $2 AND version = $3",
        )
        .bind(sensor)
        .bind(device)
        .bind(version as i64)
        .fetch_optional(&self.pool)
        .await?;
        let Some(stored) = stored else {
            return Err(RollbackError::NoVersion {
                device: device.into(),
                version,
            });
        };
        let mut old: Baseline = serde_json::from_value(stored).map_err(HandleError::Json)?;
        let newest: Option<i64> = sqlx::query_scalar(
            "SELECT max(version) FROM baseline_versions WHERE sensor_id = $1 AND device_key = $2",
        )
        .bind(sensor)
        .bind(device)
        .fetch_one(&self.pool)
        .await?;
        let Some(m) = mons.get_mut(&(sensor.to_string(), part)) else {
            return Err(RollbackError::NoDevice {
                sensor: sensor.into(),
                device: device.into(),
            });
        };
        let Some(p) = m.profiler.devices.get_mut(device) else {
            return Err(RollbackError::NoDevice {
                sensor: sensor.into(),
                device: device.into(),
            });
        };
        old.version = (newest.unwrap_or(0) as u64).max(p.baseline.version) + 1;
        p.baseline = old;
        let mut tx = self.pool.begin().await?;
        store_version(
            &mut tx,
            sensor,
            device,
            &p.baseline,
            &format!("rollback to {version}"),
        )
        .await?;
        store_profile(&mut tx, sensor, part, device, p).await?;
        sqlx::query("DELETE FROM rollback_requests WHERE sensor_id = $1 AND device_key = $2")
            .bind(sensor)
            .bind(device)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        p.dirty = false;
        let new_version = p.baseline.version;
        self.metrics.rollbacks.inc();
        info!(
            sensor,
            device,
            to = version,
            new_version,
            "baseline rolled back"
        );
        // The saved monitor holds the rolled-back baseline too, so a crash
        // now does not bring the old one back.
        held(&self.changed).insert((sensor.to_string(), part));
        self.checkpoint_with(&mut mons, &[]).await?;
        Ok(new_version)
    }

    /// Applies rollbacks asked for from the command line for devices this
    /// replica holds.
    pub async fn rollback_requests(&self) -> Result<usize, HandleError> {
        let rows: Vec<(String, String, i64, i32)> = sqlx::query_as(
            "SELECT r.sensor_id, r.device_key, r.version, p.part FROM rollback_requests r \
             JOIN profiles p USING (sensor_id, device_key)",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut done = 0;
        for (sensor, device, version, part) in rows {
            if !self.owns(part as u16) {
                continue;
            }
            match self.rollback(&sensor, &device, version as u64).await {
                Ok(_) => done += 1,
                Err(RollbackError::Handle(e)) => return Err(e),
                Err(e) => {
                    warn!(sensor, device, error = %e, "rollback request refused; dropping it");
                    sqlx::query(
                        "DELETE FROM rollback_requests WHERE sensor_id = $1 AND device_key = $2",
                    )
                    .bind(&sensor)
                    .bind(&device)
                    .execute(&self.pool)
                    .await?;
                }
            }
        }
        Ok(done)
    }

    fn owns(&self, part: u16) -> bool {
        match self.settings.partition_list() {
            Ok(Some(list)) => list.contains(&part),
            _ => true,
        }
    }

    /// Stores and applies intelligence.
    pub async fn intel(&self, u: &IntelUpdate) -> Result<(), HandleError> {
        let mut tx = self.pool.begin().await?;
        if u.full_snapshot {
            sqlx::query("DELETE FROM intel").execute(&mut *tx).await?;
        }
        for id in &u.removed_signature_ids {
            sqlx::query("DELETE FROM intel WHERE kind = 'signature' AND id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for id in &u.removed_profile_ids {
            sqlx::query("DELETE FROM intel WHERE kind = 'profile' AND id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let rows = u
            .threat_signatures
            .iter()
            .map(|s| ("signature", s.id.clone(), s.encode_to_vec()))
            .chain(
                u.golden_profiles
                    .iter()
                    .map(|p| ("profile", p.profile_id.clone(), p.encode_to_vec())),
            );
        for (kind, id, body) in rows {
            sqlx::query(
                "INSERT INTO intel (kind, id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (kind, id) DO UPDATE SET body = EXCLUDED.body",
            )
            .bind(kind)
            .bind(id)
            .bind(body)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        {
            let mut intel = self.intel.lock().await;
            if u.full_snapshot {
                *intel = Intel::default();
            }
            for id in &u.removed_signature_ids {
                intel.signatures.remove(id);
            }
            for id in &u.removed_profile_ids {
                intel.profiles.remove(id);
            }
            for s in &u.threat_signatures {
                intel.signatures.insert(s.id.clone(), s.clone());
            }
            for p in &u.golden_profiles {
                intel.profiles.insert(p.profile_id.clone(), p.clone());
            }
        }
        for m in self.monitors.lock().await.values_mut() {
            m.intel(u);
        }
        info!(
            signatures = u.threat_signatures.len(),
            profiles = u.golden_profiles.len(),
            removed = u.removed_signature_ids.len() + u.removed_profile_ids.len(),
            "intelligence applied"
        );
        Ok(())
    }

    /// Stores and applies what the fingerprint service decided.
    pub async fn devices(&self, b: &DeviceEventBatch) -> Result<(), HandleError> {
        let mut named = Vec::new();
        for e in &b.records {
            let Some(d) = &e.device else { continue };
            let t = d.device_type().as_str_name();
            let t = t.trim_start_matches("DEVICE_TYPE_").to_ascii_lowercase();
            let t = if t == "unspecified" { String::new() } else { t };
            for m in &d.macs {
                if let Ok(mac) = <[u8; 6]>::try_from(m.mac.as_ref()) {
                    named.push((mac, d.device_id.clone(), t.clone()));
                }
            }
        }
        if named.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (mac, id, t) in &named {
            sqlx::query(
                "INSERT INTO devices (sensor_id, mac, device_id, device_type) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (sensor_id, mac) DO UPDATE SET device_id = EXCLUDED.device_id, device_type = EXCLUDED.device_type",
            )
            .bind(&b.sensor_id)
            .bind(mac.as_slice())
            .bind(id)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        {
            let mut devices = self.devices.lock().await;
            let s = devices.entry(b.sensor_id.clone()).or_default();
            for (mac, id, t) in &named {
                s.insert(*mac, (id.clone(), t.clone()));
            }
        }
        let mut moved = Vec::new();
        for ((sensor, _), m) in self.monitors.lock().await.iter_mut() {
            if *sensor == b.sensor_id {
                for (mac, id, t) in &named {
                    if m.device(*mac, id, t) {
                        moved.push((heimdall_proto::addr::mac_text(*mac), id.clone()));
                    }
                }
            }
        }
        if moved.is_empty() {
            return Ok(());
        }
        // Profiles learnt under a MAC now live under the device's id:
        // stored under the new key first, then the old row goes.
        self.checkpoint().await?;
        for (old, id) in &moved {
            sqlx::query(
                "DELETE FROM profiles p WHERE p.sensor_id = $1 AND p.device_key = $2 \
                 AND EXISTS (SELECT 1 FROM profiles q WHERE q.sensor_id = $1 AND q.device_key = $3)",
            )
            .bind(&b.sensor_id)
            .bind(old)
            .bind(id)
            .execute(&self.pool)
            .await?;
            // Its history follows it, so a rollback finds it by id.
            sqlx::query(
                "UPDATE baseline_versions v SET device_key = $3 WHERE v.sensor_id = $1 AND v.device_key = $2 \
                 AND NOT EXISTS (SELECT 1 FROM baseline_versions w WHERE w.sensor_id = $1 AND w.device_key = $3 AND w.version = v.version)",
            )
            .bind(&b.sensor_id)
            .bind(old)
            .bind(id)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Publishes unpublished alerts (and the state of their incidents),
    /// oldest first, one batch per sensor; returns how many alerts went out.
    pub async fn publish_outbox(&self, bus: &Bus) -> anyhow::Result<usize> {
        let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, sensor_id, body FROM alerts WHERE NOT published ORDER BY seq LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut sent = 0;
        for (sensor, seqs, mut alerts) in heimdall_bus::outbox::by_sensor::<Alert>(rows)? {
            for a in &mut alerts {
                a.sensor_id.clone_from(&sensor);
            }
            let mut incident_ids: Vec<String> =
                alerts.iter().map(|a| a.incident_id.clone()).collect();
            incident_ids.sort();
            incident_ids.dedup();
            let incidents = self.incidents(&incident_ids).await?;
            let mut h = Sha1::new();
            let mut records = Vec::new();
            for a in alerts {
                h.update(a.alert_id.as_bytes());
                h.update([0]);
                records.push(AlertEvent {
                    event_id: a.alert_id.clone(),
                    sensor_id: sensor.clone(),
                    ts_us: a.ts_us,
                    payload: Some(alert_event::Payload::Alert(a)),
                });
            }
            for i in incidents {
                records.push(AlertEvent {
                    event_id: format!("{}-{}", i.incident_id, i.alert_ids.len()),
                    sensor_id: sensor.clone(),
                    ts_us: i.updated_us,
                    payload: Some(alert_event::Payload::Incident(i)),
                });
            }
            send_events(bus, &sensor, "alerts", h, records).await?;
            sqlx::query("UPDATE alerts SET published = true WHERE seq = ANY($1)")
                .bind(&seqs)
                .execute(&self.pool)
                .await?;
            sent += seqs.len();
        }
        Ok(sent)
    }

    /// Publishes waiting baseline summaries, oldest first, one batch per
    /// sensor on `sensor.<id>.baselines.p0`, and drops them from the table
    /// (the stream keeps them from there); returns how many went out.
    pub async fn publish_summaries(&self, bus: &Bus) -> anyhow::Result<usize> {
        let rows: Vec<(i64, String, Vec<u8>)> =
            sqlx::query_as("SELECT seq, sensor_id, body FROM summaries ORDER BY seq LIMIT 500")
                .fetch_all(&self.pool)
                .await?;
        let mut sent = 0;
        for (sensor, seqs, records) in heimdall_bus::outbox::by_sensor::<BaselineSummary>(rows)? {
            // The same rows make the same id: a retry after a failed
            // update is recognised by the bus.
            let batch = BaselineBatch {
                batch_id: format!("baselines-{sensor}-{}-{}", seqs[0], seqs[seqs.len() - 1]),
                sensor_id: sensor.clone(),
                created_us: wall_us(),
                records,
            };
            let subject = bus.subjects().publish(Kind::Baselines, &sensor, 0);
            bus.publish(&subject, &batch.batch_id, &batch).await?;
            sqlx::query("DELETE FROM summaries WHERE seq = ANY($1)")
                .bind(&seqs)
                .execute(&self.pool)
                .await?;
            sent += seqs.len();
        }
        Ok(sent)
    }

    /// Has the bus deliver again every record message after the positions
    /// saved with the monitors, so what was applied after the last
    /// checkpoint (and lost with a crash) is applied again, once. A consumer
    /// with no saved position gets every message the stream still holds,
    /// as a consumer made for the first time does.
    async fn resume_consumers(&self, bus: &Bus) -> anyhow::Result<()> {
        let stored: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
            "SELECT durable, stream_seq FROM consumer_positions",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        for kind in [Kind::Flows, Kind::Dns, Kind::Observations] {
            for spec in self.specs(bus, kind) {
                // A consumer with no saved position applied nothing that a
                // checkpoint holds: all it ever delivered comes again.
                let after = stored.get(&spec.durable).map_or(0, |seq| *seq as u64);
                let from = bus.rewind(&spec, after).await?;
                // A stream younger than the position (deleted and made
                // again) starts over: nothing of it was applied.
                held(&self.positions)
                    .insert(spec.durable.clone(), after.min(from.saturating_sub(1)));
                if from > after + 1 && after > 0 {
                    self.metrics.resume_gaps.inc_by(from - after - 1);
                    warn!(
                        consumer = %spec.durable,
                        saved_at = after,
                        resumes_at = from,
                        "retention removed messages after the saved position; what they held is lost"
                    );
                } else {
                    info!(consumer = %spec.durable, resumes_at = from, "consumer resumes after the saved state");
                }
            }
        }
        Ok(())
    }

    /// Consumer specs for `kind`: one per partition of this replica, or one
    /// for all.
    /// In order: a record message is fed only after every earlier one of
    /// its consumer, which the positions saved with the monitors rely on.
    fn specs(&self, bus: &Bus, kind: Kind) -> Vec<ConsumerSpec> {
        let base = format!("{}-{}", self.settings.durable, kind.token());
        let spec = |p: Option<u16>| ConsumerSpec {
            in_order: true,
            ..bus.consumer_spec(kind, &base, p)
        };
        match self.settings.partition_list() {
            Ok(Some(list)) => list.into_iter().map(|p| spec(Some(p))).collect(),
            _ => vec![spec(None)],
        }
    }

    /// A consumer of every message of a broadcast kind (devices, intel),
    /// named per replica so each replica sees all of them.
    fn broadcast_spec(&self, bus: &Bus, kind: Kind) -> ConsumerSpec {
        let who = match self.settings.partition_list() {
            Ok(Some(list)) => list
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join("_"),
            _ => "all".into(),
        };
        bus.consumer_spec(
            kind,
            &format!("{}-{}-{who}", self.settings.durable, kind.token()),
            None,
        )
    }
}

async fn store_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    sensor: &str,
    device: &str,
    b: &Baseline,
    reason: &str,
) -> Result<(), HandleError> {
    sqlx::query(
        "INSERT INTO baseline_versions (sensor_id, device_key, version, confidence, reason, baseline) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sensor_id, device_key, version) DO NOTHING",
    )
    .bind(sensor)
    .bind(device)
    .bind(b.version as i64)
    .bind(b.confidence)
    .bind(reason)
    .bind(serde_json::to_value(b)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn store_profile(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    sensor: &str,
    part: u16,
    device: &str,
    p: &DeviceProfile,
) -> Result<(), HandleError> {
    sqlx::query(
        "INSERT INTO profiles (sensor_id, device_key, part, version, confidence, device_type, body, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, now()) \
         ON CONFLICT (sensor_id, device_key) DO UPDATE SET part = EXCLUDED.part, version = EXCLUDED.version, \
         confidence = EXCLUDED.confidence, device_type = EXCLUDED.device_type, body = EXCLUDED.body, updated_at = now()",
    )
    .bind(sensor)
    .bind(device)
    .bind(i32::from(part))
    .bind(p.baseline.version as i64)
    .bind(p.baseline.confidence)
    .bind(&p.device_type)
    .bind(serde_json::to_value(p)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Bring the service's schema up to date.
pub async fn migrate(pool: &PgPool) -> Result<(), heimdall_store::Error> {
    heimdall_store::migrate(pool, SCHEMA, &MIGRATIONS).await
}

/// The database from the `HEIMDALL_DATABASE_*` settings alone, migrated:
/// for the operator subcommands.
pub async fn open_database() -> anyhow::Result<PgPool> {
    Ok(heimdall_store::open_from_env(SCHEMA, &MIGRATIONS).await?)
}

/// One stored baseline version, for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionInfo {
    pub version: u64,
    pub created_at: String,
    pub confidence: f64,
    pub reason: String,
    pub destinations: usize,
    pub ports: usize,
}

/// The stored versions of a device's baseline, newest first.
pub async fn versions(
    pool: &PgPool,
    sensor: &str,
    device: &str,
) -> Result<Vec<VersionInfo>, sqlx::Error> {
    type Row = (i64, String, f64, String, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT version, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), confidence, reason, \
         (SELECT count(*) FROM jsonb_object_keys(baseline->'destinations')), \
         (SELECT count(*) FROM jsonb_object_keys(baseline->'ports')) \
         FROM baseline_versions WHERE sensor_id = $1 AND device_key = $2 ORDER BY version DESC",
    )
    .bind(sensor)
    .bind(device)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(v, c, conf, r, d, p)| VersionInfo {
            version: v as u64,
            created_at: c,
            confidence: conf,
            reason: r,
            destinations: d as usize,
            ports: p as usize,
        })
        .collect())
}

/// Asks the service to roll a device back (it applies the request at once
/// when running, else when it starts). Refuses a version that is not
/// stored.
pub async fn request_rollback(
    pool: &PgPool,
    sensor: &str,
    device: &str,
    version: u64,
) -> Result<(), String> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM baseline_versions WHERE sensor_id = $1 AND device_key = $2 AND version = $3",
    )
    .bind(sensor)
    .bind(device)
    .bind(version as i64)
    .fetch_optional(pool)
    .await
    .map_err(|e| e.to_string())?;
    if exists.is_none() {
        return Err(format!(
            "device {device} on sensor {sensor} has no stored baseline version {version}; `heimdall-anomaly versions {sensor} {device}` lists them"
        ));
    }
    sqlx::query(
        "INSERT INTO rollback_requests (sensor_id, device_key, version) VALUES ($1, $2, $3) \
         ON CONFLICT (sensor_id, device_key) DO UPDATE SET version = EXCLUDED.version, requested_at = now()",
    )
    .bind(sensor)
    .bind(device)
    .bind(version as i64)
    .execute(pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Whether a rollback request is still waiting.
pub async fn rollback_pending(pool: &PgPool, sensor: &str, device: &str) -> Result<bool, String> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rollback_requests WHERE sensor_id = $1 AND device_key = $2",
    )
    .bind(sensor)
    .bind(device)
    .fetch_one(pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok(n > 0)
}

/// Feeds one batch's records to its partition's detectors.
async fn on_batch<R>(
    svc: &Service,
    kind: &'static str,
    sensor: &str,
    (subject, durable, seq): (&str, &str, u64),
    records: &[R],
    feed: fn(&mut Monitor, &R),
) -> Result<(), HandleError> {
    let part = partition_of_subject(subject);
    svc.apply(sensor, part, Some((durable, seq)), |m| {
        for r in records {
            feed(m, r);
        }
    })
    .await?;
    svc.metrics.count(kind, records.len());
    Ok(())
}

/// Spawns a consumer of `M` batches of `kind` for each spec.
macro_rules! consume_records {
    ($tasks:expr, $svc:expr, $bus:expr, $stop:expr, $kind:expr, $msg:ty, $label:expr, $feed:expr) => {
        for spec in $svc.specs(&$bus, $kind) {
            let (bus, svc, stop) = ($bus.clone(), $svc.clone(), $stop.clone());
            let durable: Arc<str> = spec.durable.as_str().into();
            $tasks.spawn(async move {
                bus.consume::<$msg, _, _, HandleError>(spec, stop, |m| {
                    let (svc, durable) = (svc.clone(), durable.clone());
                    async move {
                        let b = &m.message;
                        let from = (m.subject.as_str(), &*durable, m.sequence);
                        on_batch(&svc, $label, &b.sensor_id, from, &b.records, $feed).await
                    }
                })
                .await?;
                Ok::<(), anyhow::Error>(())
            });
        }
    };
}

/// Run until `shutdown`: serve telemetry and the baseline API on
/// `listener`, connect, migrate, resume from stored state, consume this
/// replica's partitions, publish alerts, checkpoint.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let slot: Arc<OnceLock<Arc<Service>>> = Arc::new(OnceLock::new());
    let served = heimdall_telemetry::Served::start_with(
        listener,
        &["nats", "database"],
        api::router(slot.clone()),
        shutdown.clone(),
    );
    let (metrics, health) = (served.metrics.clone(), served.health.clone());

    let pool = heimdall_store::open(&config.database, SCHEMA, &MIGRATIONS).await?;
    health.ready("database", "migrated");
    let svc = Arc::new(Service::new(config.anomaly.clone(), pool));
    svc.metrics.register(&metrics);
    svc.load_shared()
        .await
        .map_err(|e| anyhow::anyhow!("loading stored state: {e}"))?;
    // Every stored partition of this replica is loaded before a message is
    // taken, so a restart resumes where it stopped.
    let parts: Vec<(String, i32)> = sqlx::query_as(
        "SELECT sensor_id, part FROM monitor_state UNION SELECT sensor_id, part FROM profiles",
    )
    .fetch_all(&svc.pool)
    .await?;
    for (sensor, part) in parts {
        if svc.owns(part as u16) {
            svc.apply(&sensor, part as u16, None, |_| {})
                .await
                .map_err(|e| anyhow::anyhow!("loading profiles: {e}"))?;
        }
    }
    let _ = slot.set(svc.clone());

    let bus = Bus::connect(&config.nats, "heimdall-anomaly")
        .await?
        .with_health(health.clone());
    bus.register_metrics(&metrics);
    bus.ensure_streams(&[
        Kind::Flows,
        Kind::Dns,
        Kind::Observations,
        Kind::Devices,
        Kind::Intel,
        Kind::Alerts,
        Kind::Baselines,
    ])
    .await?;
    svc.resume_consumers(&bus).await?;
    health.ready(
        "nats",
        "consuming flows, dns, observations, devices and intel",
    );
    info!(partitions = %svc.settings.partitions, "anomaly ready");

    let mut tasks: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    consume_records!(
        tasks,
        svc,
        bus,
        shutdown,
        Kind::Flows,
        ConnBatch,
        "conn",
        Monitor::conn_record
    );
    consume_records!(
        tasks,
        svc,
        bus,
        shutdown,
        Kind::Dns,
        DnsBatch,
        "dns",
        Monitor::dns_record
    );
    consume_records!(
        tasks,
        svc,
        bus,
        shutdown,
        Kind::Observations,
        ObservationBatch,
        "observation",
        Monitor::observation
    );
    {
        let spec = svc.broadcast_spec(&bus, Kind::Devices);
        let (bus, svc, stop) = (bus.clone(), svc.clone(), shutdown.clone());
        tasks.spawn(async move {
            bus.consume::<DeviceEventBatch, _, _, HandleError>(spec, stop, |m| {
                let svc = svc.clone();
                async move { svc.devices(&m.message).await }
            })
            .await?;
            Ok(())
        });
    }
    {
        let spec = svc.broadcast_spec(&bus, Kind::Intel);
        let (bus, svc, stop) = (bus.clone(), svc.clone(), shutdown.clone());
        tasks.spawn(async move {
            bus.consume::<IntelUpdate, _, _, HandleError>(spec, stop, |m| {
                let svc = svc.clone();
                async move { svc.intel(&m.message).await }
            })
            .await?;
            Ok(())
        });
    }
    {
        let (bus, svc, stop) = (bus.clone(), svc.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut checkpoint = tokio::time::interval(svc.settings.checkpoint_interval);
            let mut requests = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = svc.outbox.notified() => {}
                    _ = checkpoint.tick() => {
                        if let Err(e) = svc.checkpoint().await {
                            svc.metrics.checkpoint_errors.inc();
                            warn!(error = %e, "checkpoint failed; will retry");
                        }
                    }
                    _ = requests.tick() => {
                        if let Err(e) = svc.rollback_requests().await {
                            warn!(error = %e, "reading rollback requests failed; will retry");
                        }
                        if let Err(e) = svc.detach_closed().await {
                            warn!(error = %e, "applying closed incidents failed; will retry");
                        }
                    }
                }
                loop {
                    match svc.publish_outbox(&bus).await {
                        Ok(0) => break,
                        Ok(n) => info!(alerts = n, "alerts published"),
                        Err(e) => {
                            warn!(error = %e, "publishing alerts failed; will retry");
                            break;
                        }
                    }
                }
                loop {
                    match svc.publish_incident_states(&bus).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => {
                            warn!(error = %e, "publishing incident states failed; will retry");
                            break;
                        }
                    }
                }
                loop {
                    match svc.publish_summaries(&bus).await {
                        Ok(0) => break,
                        Ok(n) => info!(summaries = n, "baseline summaries published"),
                        Err(e) => {
                            warn!(error = %e, "publishing baseline summaries failed; will retry");
                            break;
                        }
                    }
                }
            }
            // The last checkpoint: a restart resumes from here.
            match svc.checkpoint().await {
                Ok(n) => info!(profiles = n, "profiles stored at shutdown"),
                Err(e) => warn!(error = %e, "the shutdown checkpoint failed"),
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    shutdown.cancel();
    served.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_split_the_partitions_and_bad_settings_say_what_to_fix() {
        let mut s = AnomalySettings {
            partition_count: 8,
            replica_count: 3,
            replica_index: 1,
            ..AnomalySettings::default()
        };
        assert_eq!(s.partition_list(), Ok(Some(vec![1, 4, 7])));
        s.partitions = "2, 0,2".into();
        assert_eq!(s.partition_list(), Ok(Some(vec![0, 2])));
        s.partitions = "x".into();
        let mut problems = Vec::new();
        s.validate(PREFIX, &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].variable, "HEIMDALL_ANOMALY_PARTITIONS");
        s.partitions = "*".into();
        s.partition_count = 2;
        s.replica_index = 2;
        assert!(
            s.partition_list()
                .is_err_and(|e| e.contains("PARTITION_COUNT"))
        );
        assert_eq!(partition_of_subject("ns.sensor.home-1.flows.p12"), 12);
    }
}
