//! The Asgard bridge: what the sensor learned goes to Asgard anonymized,
//! and what Asgard knows comes back onto the bus.
//!
//! What this service promises:
//! - Nothing leaves in clear that identifies a household: every outgoing
//!   item is built by [`convert`] through `heimdall_anonymize` (keyed
//!   prefix-preserving addresses, keyed pseudonyms, registered domains
//!   only), under a key from `HEIMDALL_ASGARD_ANON_KEY_FILE` that never
//!   leaves the sensor.
//! - A device's behavioural signature joins what it is (type, vendor,
//!   model from its device events) with what it does (the anomaly
//!   service's baseline summaries, `sensor.<id>.baselines`): sites as
//!   registered domains, ports, daily volumes, active hours, churn.
//! - Nothing is lost while Asgard or the network is away: device events,
//!   baseline summaries and alerts are queued in Postgres (schema `asgard_bridge`) before their
//!   NATS message is acknowledged, sent in batches whose ids depend only on
//!   their items (a retry is a duplicate at Asgard, never a second copy),
//!   and removed only once Asgard acknowledged them. The queue is bounded
//!   by age and size; what the bounds drop is logged and counted.
//! - Retries back off exponentially with full jitter and honour
//!   `Retry-After`. An expired or revoked token is refreshed, a refused
//!   refresh leads to enrolling again, both by themselves ([`client`]).
//! - Intelligence is polled with a cursor and an ETag, validated, and
//!   published on `intel.p0` (everything) and `enforcement.p0` (the
//!   enforcement rules, for a gateway enforcer); the cursor advances only
//!   after both are on the bus.
//! - Operators see the last contact, the queue depth and errors in metrics
//!   and on `/readyz`. Credentials are stored with mode 0600 and never
//!   logged.

pub mod client;
pub mod convert;
pub mod outbox;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heimdall_anonymize::Anonymizer;
use heimdall_asgard_api::{AlertBatch, BatchResult, BehaviourSignature, SignatureBatch};
use heimdall_bus::{Bus, BusConfig, Kind, Received};
use heimdall_config::{Problem, Validate};
use heimdall_proto::sensor::v1::{self as pb, alert_event};
use heimdall_store::{PgPool, StoreConfig};
use heimdall_telemetry::{Health, Metrics, TelemetryConfig};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use client::{Asgard, CallError};
use outbox::ItemKind;

/// The variable prefix of [`BridgeSettings`].
pub const PREFIX: &str = "HEIMDALL_ASGARD_";
/// The bridge's schema.
pub const SCHEMA: &str = "asgard_bridge";

/// The streams the bridge reads (devices, alerts, baseline summaries) and
/// writes (intelligence, enforcement rules).
pub const STREAMS: [Kind; 5] = [
    Kind::Devices,
    Kind::Alerts,
    Kind::Baselines,
    Kind::Intel,
    Kind::Enforcement,
];
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `HEIMDALL_ASGARD_*`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct BridgeSettings {
    /// `URL`: Asgard's base URL, `https://...` (`http://` only on loopback).
    pub url: String,
    /// `CA_FILE`: PEM certificates to trust instead of the public roots.
    pub ca_file: String,
    /// `ENROLLMENT_TOKEN_FILE`: the single-use enrollment token. Required
    /// to enroll (at first start, and again if Asgard forgets the sensor).
    pub enrollment_token_file: String,
    /// `HARDWARE_ID`: this machine's identity at enrollment. Default:
    /// /etc/machine-id.
    pub hardware_id: String,
    /// `ANON_KEY_FILE`: the anonymization secret (32+ random bytes, or 64
    /// hex digits). Required; it never leaves the sensor.
    pub anon_key_file: String,
    /// `STATE_DIR`: where the credentials are kept (mode 0600).
    pub state_dir: String,
    /// `BATCH_ITEMS`: items per upload at most (Asgard takes 1000).
    pub batch_items: i64,
    /// `SEND_EVERY`: how often the queue is looked at when idle.
    #[serde(with = "heimdall_config::duration")]
    pub send_every: Duration,
    /// `INTEL_EVERY`: how often intelligence is polled.
    #[serde(with = "heimdall_config::duration")]
    pub intel_every: Duration,
    /// `QUEUE_MAX_ITEMS`, `QUEUE_MAX_AGE`: the outbox's bounds; beyond them
    /// the oldest items are dropped, logged and counted.
    pub queue_max_items: i64,
    #[serde(with = "heimdall_config::duration")]
    pub queue_max_age: Duration,
    /// `BACKOFF_MIN`, `BACKOFF_MAX`: retry delays (full jitter).
    #[serde(with = "heimdall_config::duration")]
    pub backoff_min: Duration,
    #[serde(with = "heimdall_config::duration")]
    pub backoff_max: Duration,
    /// `TIMEOUT`: one request's deadline.
    #[serde(with = "heimdall_config::duration")]
    pub timeout: Duration,
    /// `DURABLE`: consumer name prefix.
    pub durable: String,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        BridgeSettings {
            url: String::new(),
            ca_file: String::new(),
            enrollment_token_file: String::new(),
            hardware_id: String::new(),
            anon_key_file: String::new(),
            state_dir: "/var/lib/heimdall/asgard".into(),
            batch_items: 500,
            send_every: Duration::from_secs(2),
            intel_every: Duration::from_secs(300),
            queue_max_items: 200_000,
            queue_max_age: Duration::from_secs(7 * 86_400),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            durable: "asgard-bridge".into(),
        }
    }
}

impl Validate for BridgeSettings {
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>) {
        heimdall_config::check::endpoint_url(
            problems,
            format!("{prefix}URL"),
            &self.url,
            "Asgard's base URL",
        );
        let mut bad = |var: &str, message: String| {
            problems.push(Problem {
                variable: format!("{prefix}{var}"),
                message,
            })
        };
        if self.anon_key_file.is_empty() {
            bad(
                "ANON_KEY_FILE",
                "required: a file of 32+ random bytes (head -c 32 /dev/urandom > FILE)".into(),
            );
        } else if let Err(e) = Anonymizer::from_file(std::path::Path::new(&self.anon_key_file)) {
            bad("ANON_KEY_FILE", e.to_string());
        }
        if self.enrollment_token_file.is_empty() {
            bad(
                "ENROLLMENT_TOKEN_FILE",
                "required: the file holding the enrollment token Asgard issued".into(),
            );
        }
        if self.state_dir.is_empty() {
            bad("STATE_DIR", "required".into());
        }
        if !(1..=1000).contains(&self.batch_items) {
            bad("BATCH_ITEMS", "between 1 and 1000".into());
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            bad(
                "BACKOFF_MAX",
                "BACKOFF_MIN above zero and BACKOFF_MAX at least as long".into(),
            );
        }
        if self.queue_max_items < 1 {
            bad("QUEUE_MAX_ITEMS", "at least 1".into());
        }
    }
}

heimdall_telemetry::service_config! {
    /// Everything the bridge needs, loaded and validated as one.
    pub struct Config {
        asgard: BridgeSettings = PREFIX,
        nats: BusConfig = heimdall_bus::PREFIX,
        database: StoreConfig = heimdall_store::PREFIX,
        telemetry: TelemetryConfig = heimdall_telemetry::PREFIX,
    }
}

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Default)]
struct BridgeMetrics {
    queued: Family<Labels, Counter>,
    sent: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    calls: Family<Labels, Counter>,
    depth: Gauge,
    last_contact: Gauge,
    intel_updates: Counter,
}

impl BridgeMetrics {
    fn register(&self, m: &Metrics) {
        m.register(
            "asgard_queued_items",
            "Items queued for Asgard, by kind",
            self.queued.clone(),
        );
        m.register(
            "asgard_sent_items",
            "Items Asgard acknowledged, by kind",
            self.sent.clone(),
        );
        m.register(
            "asgard_dropped_items",
            "Items dropped, by reason (age, size, refused)",
            self.dropped.clone(),
        );
        m.register(
            "asgard_calls",
            "Calls to Asgard by outcome",
            self.calls.clone(),
        );
        m.register(
            "asgard_queue_depth",
            "Items waiting in the outbox",
            self.depth.clone(),
        );
        m.register(
            "asgard_last_contact_unixtime",
            "When Asgard last answered a call (seconds since the epoch)",
            self.last_contact.clone(),
        );
        m.register(
            "asgard_intel_updates",
            "Intelligence updates published on the bus",
            self.intel_updates.clone(),
        );
    }
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The running bridge's shared state.
#[derive(Debug)]
struct Bridge {
    settings: BridgeSettings,
    pool: PgPool,
    anon: Anonymizer,
    asgard: Asgard,
    metrics: BridgeMetrics,
    health: Health,
    last_contact: AtomicI64,
}

fn backoff(s: &BridgeSettings, attempt: u32) -> Duration {
    let cap = s
        .backoff_min
        .saturating_mul(1u32 << attempt.min(16))
        .min(s.backoff_max);
    let ms = cap.as_millis().max(1) as u64;
    Duration::from_millis(rand::random_range(0..=ms)).max(s.backoff_min)
}

impl Bridge {
    fn contact(&self, outcome: &str) {
        self.metrics
            .calls
            .get_or_create(&label("outcome", outcome))
            .inc();
        if outcome == "ok" || outcome == "not_modified" {
            let now = now_us() / 1_000_000;
            self.last_contact.store(now, Ordering::Relaxed);
            self.metrics.last_contact.set(now);
            self.health
                .ready("asgard", format!("last contact at {now} (unix seconds)"));
        }
    }

    /// How a failed call shows on `/readyz`, and how long to wait.
    fn failed(&self, e: &CallError, attempt: u32) -> Duration {
        let s = &self.settings;
        let outcome = match e {
            CallError::Retry { .. } => "retry",
            CallError::Refused { .. } => "refused",
            CallError::Disabled(_) => "disabled",
            CallError::Unauthorized(_) => "unauthorized",
        };
        self.contact(outcome);
        let since = self.last_contact.load(Ordering::Relaxed);
        self.health.not_ready(
            "asgard",
            format!("{e}; last contact at {since} (unix seconds)"),
        );
        match e {
            CallError::Retry { wait, .. } => wait.unwrap_or_default().max(backoff(s, attempt)),
            CallError::Disabled(_) | CallError::Unauthorized(_) => s.backoff_max,
            CallError::Refused { .. } => s.backoff_min,
        }
    }

    /// Device-event signatures are remembered as what each device is;
    /// behaviour signatures (from baseline summaries: they carry a
    /// baseline version) are completed from them.
    async fn describe(
        &self,
        items: &mut [(ItemKind, serde_json::Value)],
    ) -> Result<(), sqlx::Error> {
        for (kind, v) in items.iter_mut() {
            if *kind != ItemKind::Signature {
                continue;
            }
            let Ok(sig) = serde_json::from_value::<BehaviourSignature>(v.clone()) else {
                continue;
            };
            if sig.baseline_version.is_none() {
                sqlx::query(
                    "INSERT INTO devices (anon_device_id, signature) VALUES ($1, $2::jsonb) \
                     ON CONFLICT (anon_device_id) DO UPDATE SET signature = EXCLUDED.signature, updated_at = now()",
                )
                .bind(&sig.anon_device_id)
                .bind(v.to_string())
                .execute(&self.pool)
                .await?;
                continue;
            }
            let known: Option<String> =
                sqlx::query_scalar("SELECT signature::text FROM devices WHERE anon_device_id = $1")
                    .bind(&sig.anon_device_id)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(known) = known.and_then(|k| serde_json::from_str(&k).ok())
                && let Ok(merged) = serde_json::to_value(convert::merge(sig, &known))
            {
                *v = merged;
            }
        }
        Ok(())
    }

    /// Queue the items of one bus message (once per message id).
    async fn queue(
        &self,
        msg_id: &str,
        mut items: Vec<(ItemKind, serde_json::Value)>,
    ) -> Result<(), String> {
        self.describe(&mut items)
            .await
            .map_err(|e| format!("cannot read or keep device descriptions: {e}"))?;
        let fresh = outbox::enqueue(&self.pool, msg_id, &items)
            .await
            .map_err(|e| format!("cannot queue for Asgard: {e}"))?;
        if fresh {
            for (k, _) in &items {
                self.metrics
                    .queued
                    .get_or_create(&label("kind", k.name()))
                    .inc();
            }
        }
        Ok(())
    }

    /// Send one batch of `kind` if any is waiting. `Ok(true)`: sent.
    async fn send_one(&self, kind: ItemKind, epoch: &str, limit: i64) -> Result<bool, CallError> {
        let rows = outbox::take(&self.pool, kind, limit)
            .await
            .map_err(|e| CallError::Retry {
                wait: None,
                reason: format!("cannot read the outbox: {e}"),
            })?;
        if rows.is_empty() {
            return Ok(false);
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let batch_id = outbox::batch_id(epoch, kind, &seqs);
        let sensor_id = self.asgard.sensor_id().await?;
        let created_us = now_us();
        let result: Result<BatchResult, CallError> = match kind {
            ItemKind::Signature => {
                let body = SignatureBatch {
                    batch_id: batch_id.clone(),
                    sensor_id,
                    created_us,
                    signatures: rows
                        .into_iter()
                        .filter_map(|(_, v)| serde_json::from_value(v).ok())
                        .collect(),
                };
                self.asgard.post(kind.path(), &body).await
            }
            ItemKind::Alert => {
                let body = AlertBatch {
                    batch_id: batch_id.clone(),
                    sensor_id,
                    created_us,
                    alerts: rows
                        .into_iter()
                        .filter_map(|(_, v)| serde_json::from_value(v).ok())
                        .collect(),
                };
                self.asgard.post(kind.path(), &body).await
            }
        };
        match result {
            Ok(r) => {
                self.contact("ok");
                info!(batch = %batch_id, kind = kind.name(), items = seqs.len(), status = %r.status, "batch delivered to Asgard");
                self.metrics
                    .sent
                    .get_or_create(&label("kind", kind.name()))
                    .inc_by(seqs.len() as u64);
                outbox::remove(&self.pool, &seqs)
                    .await
                    .map_err(|e| CallError::Retry {
                        wait: None,
                        reason: format!("cannot update the outbox: {e}"),
                    })?;
                Ok(true)
            }
            Err(CallError::Refused { status: 413, .. }) if seqs.len() > 1 => {
                Err(CallError::Refused {
                    status: 413,
                    reason: "batch too large".into(),
                })
            }
            Err(CallError::Refused { status, reason }) => {
                // Never accepted as it is: logged and dropped, not retried.
                error!(batch = %batch_id, kind = kind.name(), items = seqs.len(), status, %reason, "Asgard refused a batch; its items are dropped");
                self.metrics
                    .dropped
                    .get_or_create(&label("reason", "refused"))
                    .inc_by(seqs.len() as u64);
                let _ = outbox::remove(&self.pool, &seqs).await;
                self.contact("refused");
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Apply the queue's bounds and publish its depth.
    async fn bound(&self) {
        let s = &self.settings;
        match outbox::bound(&self.pool, s.queue_max_age, s.queue_max_items).await {
            Ok((aged, over)) => {
                for (reason, n) in [("age", aged), ("size", over)] {
                    if n > 0 {
                        warn!(
                            items = n,
                            reason, "queue bound reached: oldest items dropped"
                        );
                        self.metrics
                            .dropped
                            .get_or_create(&label("reason", reason))
                            .inc_by(n);
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot apply the queue bounds; will retry"),
        }
        if let Ok(n) = outbox::depth(&self.pool).await {
            self.metrics.depth.set(n);
        }
    }
}

/// Send until shutdown: each kind's oldest items first.
async fn send_loop(b: Arc<Bridge>, stop: CancellationToken) -> anyhow::Result<()> {
    let epoch = outbox::epoch(&b.pool).await?;
    let mut attempt = 0u32;
    let mut limit = b.settings.batch_items;
    let mut last_bound = tokio::time::Instant::now() - Duration::from_secs(3600);
    loop {
        if last_bound.elapsed() >= Duration::from_secs(5) {
            last_bound = tokio::time::Instant::now();
            b.bound().await;
        }
        let mut sent = false;
        let mut failure = None;
        for kind in ItemKind::ALL {
            match b.send_one(kind, &epoch, limit).await {
                Ok(s) => sent |= s,
                Err(CallError::Refused { status: 413, .. }) => {
                    limit = (limit / 2).max(1);
                    warn!(
                        limit,
                        "Asgard found a batch too large; sending smaller ones"
                    );
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let wait = match failure {
            Some(e) => {
                attempt += 1;
                let wait = b.failed(&e, attempt);
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot deliver to Asgard; items stay queued");
                wait
            }
            None if sent => {
                attempt = 0;
                limit = b.settings.batch_items;
                Duration::ZERO
            }
            None => {
                // Idle: the queue is empty or waiting; say how deep it is.
                if let Ok(n) = outbox::depth(&b.pool).await {
                    b.metrics.depth.set(n);
                }
                b.settings.send_every
            }
        };
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Poll intelligence until shutdown.
async fn intel_loop(b: Arc<Bridge>, bus: Bus, stop: CancellationToken) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        let cursor = outbox::get_state(&b.pool, "intel_cursor")
            .await?
            .unwrap_or_default();
        let etag = outbox::get_state(&b.pool, "intel_etag")
            .await?
            .unwrap_or_default();
        let wait = match b.asgard.intel(&cursor, &etag).await {
            Ok(None) => {
                b.contact("not_modified");
                attempt = 0;
                b.settings.intel_every
            }
            Ok(Some(update)) => {
                b.contact("ok");
                attempt = 0;
                let problems = update.validate();
                if !problems.is_empty() {
                    error!(cursor = %update.cursor, problems = %heimdall_asgard_api::describe(&problems), "Asgard sent intelligence that fails validation; not applied, asking again later");
                    b.metrics
                        .dropped
                        .get_or_create(&label("reason", "invalid_intel"))
                        .inc();
                    b.settings.intel_every
                } else {
                    publish_intel(&bus, &update).await?;
                    b.metrics.intel_updates.inc();
                    info!(
                        cursor = %update.cursor,
                        full = update.full_snapshot,
                        profiles = update.golden_profiles.len(),
                        signatures = update.threat_signatures.len(),
                        rules = update.enforcement_rules.len(),
                        "intelligence from Asgard published"
                    );
                    outbox::set_state(&b.pool, "intel_cursor", &update.cursor).await?;
                    outbox::set_state(&b.pool, "intel_etag", &update.etag).await?;
                    if update.has_more {
                        Duration::ZERO
                    } else {
                        b.settings.intel_every
                    }
                }
            }
            Err(CallError::Refused { status: 410, .. }) => {
                warn!("Asgard no longer has deltas from our cursor; asking for a full snapshot");
                outbox::set_state(&b.pool, "intel_cursor", "").await?;
                outbox::set_state(&b.pool, "intel_etag", "").await?;
                Duration::ZERO
            }
            Err(e) => {
                attempt += 1;
                let wait = b.failed(&e, attempt).min(b.settings.intel_every);
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot fetch intelligence");
                wait
            }
        };
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Everything on `intel.p0`; the enforcement rules also on
/// `enforcement.p0`. Message ids come from the update's ETag and cursor, so
/// a re-poll after a crash is recognised by the bus.
async fn publish_intel(bus: &Bus, update: &heimdall_asgard_api::IntelUpdate) -> anyhow::Result<()> {
    let proto = update.to_proto();
    let id = format!("intel-{}-{}", update.etag, update.cursor);
    bus.publish(&bus.subjects().publish(Kind::Intel, "", 0), &id, &proto)
        .await?;
    if !proto.enforcement_rules.is_empty() || !proto.removed_rule_ids.is_empty() {
        let rules = pb::IntelUpdate {
            golden_profiles: Vec::new(),
            threat_signatures: Vec::new(),
            removed_profile_ids: Vec::new(),
            removed_signature_ids: Vec::new(),
            ..proto
        };
        bus.publish(
            &bus.subjects().publish(Kind::Enforcement, "", 0),
            &id,
            &rules,
        )
        .await?;
    }
    Ok(())
}

/// A batch from the bus whose records become outgoing items.
trait Outgoing: heimdall_bus::BusMessage {
    /// The stream it comes from.
    const KIND: Kind;
    /// Its records, anonymized (see [`convert`]).
    fn items(&self, anon: &Anonymizer) -> Vec<(ItemKind, serde_json::Value)>;
}

impl Outgoing for pb::DeviceEventBatch {
    const KIND: Kind = Kind::Devices;
    fn items(&self, anon: &Anonymizer) -> Vec<(ItemKind, serde_json::Value)> {
        self.records
            .iter()
            .filter_map(|ev| convert::signature(anon, ev))
            .filter_map(|sig| serde_json::to_value(sig).ok())
            .map(|v| (ItemKind::Signature, v))
            .collect()
    }
}

impl Outgoing for pb::BaselineBatch {
    const KIND: Kind = Kind::Baselines;
    fn items(&self, anon: &Anonymizer) -> Vec<(ItemKind, serde_json::Value)> {
        self.records
            .iter()
            .map(|s| convert::summary(anon, s))
            .filter_map(|sig| serde_json::to_value(sig).ok())
            .map(|v| (ItemKind::Signature, v))
            .collect()
    }
}

impl Outgoing for pb::AlertBatch {
    const KIND: Kind = Kind::Alerts;
    fn items(&self, anon: &Anonymizer) -> Vec<(ItemKind, serde_json::Value)> {
        self.records
            .iter()
            .filter_map(|ev| match &ev.payload {
                Some(alert_event::Payload::Alert(a)) => Some(convert::alert(anon, a)),
                _ => None,
            })
            .filter_map(|a| serde_json::to_value(a).ok())
            .map(|v| (ItemKind::Alert, v))
            .collect()
    }
}

/// A consumer task that queues every batch of `M` (durable
/// `<durable>-<kind>`), acknowledging it once its items are in the outbox.
fn queue_from<M: Outgoing>(
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    bus: &Bus,
    bridge: &Arc<Bridge>,
    stop: &CancellationToken,
) {
    let (b, bus, stop) = (bridge.clone(), bus.clone(), stop.clone());
    let durable = format!("{}-{}", b.settings.durable, M::KIND.token());
    let spec = bus.consumer_spec(M::KIND, &durable, None);
    tasks.spawn(async move {
        bus.consume::<M, _, _, String>(spec, stop, |m: Received<M>| {
            let b = b.clone();
            async move {
                let items = m.message.items(&b.anon);
                b.queue(&m.msg_id, items).await
            }
        })
        .await
        .map_err(anyhow::Error::from)
    });
}

/// Run until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let served = heimdall_telemetry::Served::start(
        listener,
        &["database", "nats", "asgard"],
        shutdown.clone(),
    );
    let (metrics, health) = (served.metrics.clone(), served.health.clone());
    let s = config.asgard.clone();
    std::fs::create_dir_all(&s.state_dir)
        .map_err(|e| anyhow::anyhow!("{PREFIX}STATE_DIR {}: {e}", s.state_dir))?;
    let anon = Anonymizer::from_file(std::path::Path::new(&s.anon_key_file))?;
    let pool = heimdall_store::open(&config.database, SCHEMA, &MIGRATIONS).await?;
    health.ready("database", "migrated");
    health.not_ready("asgard", "no contact yet");
    let bridge = Arc::new(Bridge {
        asgard: Asgard::new(&s)?,
        settings: s.clone(),
        pool,
        anon,
        metrics: BridgeMetrics::default(),
        health: health.clone(),
        last_contact: AtomicI64::new(0),
    });
    bridge.metrics.register(&metrics);
    let bus = Bus::connect(&config.nats, "heimdall-asgard-bridge")
        .await?
        .with_health(health.clone());
    bus.register_metrics(&metrics);
    bus.ensure_streams(&STREAMS).await?;
    health.ready("nats", "consuming devices, alerts and baseline summaries");
    info!(url = %s.url, "asgard bridge ready");

    let mut tasks = tokio::task::JoinSet::new();
    queue_from::<pb::DeviceEventBatch>(&mut tasks, &bus, &bridge, &shutdown);
    queue_from::<pb::AlertBatch>(&mut tasks, &bus, &bridge, &shutdown);
    queue_from::<pb::BaselineBatch>(&mut tasks, &bus, &bridge, &shutdown);
    tasks.spawn(send_loop(bridge.clone(), shutdown.clone()));
    tasks.spawn(intel_loop(bridge.clone(), bus.clone(), shutdown.clone()));
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    shutdown.cancel();
    served.finish().await?;
    Ok(())
}
