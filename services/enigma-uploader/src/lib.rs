//! The Enigma uploader: connection and DNS records from NATS to the Enigma
//! cloud over gRPC, as compressed Zeek JSON-lines batches, each delivered
//! once through outages and crashes.
//!
//! What this service promises:
//! - A record is on disk (fsynced in the spool's write-ahead log) before its
//!   NATS message is acknowledged, and stays in the spool until Enigma
//!   acknowledged the batch that holds it; a redelivered message already
//!   spooled is recognised by its id and not spooled twice. Batches carry
//!   deterministic ids, so a retry after a lost answer is a DUPLICATE at
//!   the server, never a second copy.
//! - Retries back off exponentially with full jitter, honour
//!   `retry-after-ms` on RESOURCE_EXHAUSTED, and stop on UNAUTHENTICATED or
//!   PERMISSION_DENIED with an error that says which setting to fix (the
//!   spool keeps filling; `/readyz` says why uploads stopped). A batch the
//!   server calls malformed is quarantined, not retried forever.
//! - After the acknowledgement a batch is archived (as sent, compressed) or
//!   deleted; spool and archive stay within the retention time and a disk
//!   quota, oldest first, each removal logged and counted.
//! - The API key is a [`heimdall_config::Secret`]: it reaches only the
//!   request metadata (marked sensitive) and never a log, error, trace,
//!   metric or panic message.
//! - Every attempt is logged: batch, bytes, records, outcome, latency.
//! - Each sensor's capture settings are fetched from Enigma and every new
//!   version is published on the sensor's control subject for the capture
//!   service (see the `steering` module).

pub mod spool;
mod steering;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use heimdall_bus::{Bus, BusConfig, Kind, Received};
use heimdall_config::{Problem, Secret, Validate};
use heimdall_engine::zeeklog::{Format, LogWriter};
use heimdall_proto::enigma::v1::ingest_client::IngestClient;
use heimdall_proto::enigma::v1::{
    Compression, LogType, PayloadFormat, UploadBatchRequest, UploadStatus,
};
use heimdall_proto::sensor::v1::{ConnBatch, DnsBatch};
use heimdall_telemetry::{Health, Metrics, TelemetryConfig};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::{error, info, warn};

use spool::{Codec, Log, Spool};

/// The variable prefix of [`UploaderSettings`].
pub const PREFIX: &str = "HEIMDALL_ENIGMA_";

/// `HEIMDALL_ENIGMA_*`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct UploaderSettings {
    /// `HEIMDALL_ENIGMA_URL`: the Ingest endpoint, `https://host:port`
    /// (`http://` only for a loopback address).
    pub url: String,
    /// `HEIMDALL_ENIGMA_API_KEY` (or `HEIMDALL_ENIGMA_API_KEY_FILE`): the
    /// sensor's API key. Required; never printed.
    pub api_key: Secret,
    /// `HEIMDALL_ENIGMA_CA_FILE`: PEM certificates to trust for the server
    /// (a private CA, the reference server's); empty: the public web roots.
    pub ca_file: String,
    /// `HEIMDALL_ENIGMA_TLS_DOMAIN`: the name to check the certificate
    /// against, when it is not the URL's host.
    pub tls_domain: String,
    /// `HEIMDALL_ENIGMA_SPOOL_DIR`: batches wait here until uploaded.
    pub spool_dir: String,
    /// `HEIMDALL_ENIGMA_ARCHIVE_DIR`: uploaded batches go here; empty: they
    /// are deleted once acknowledged.
    pub archive_dir: String,
    /// `HEIMDALL_ENIGMA_COMPRESSION`: `zstd` (default) or `gzip`.
    pub compression: String,
    /// `HEIMDALL_ENIGMA_BATCH_RECORDS`: a batch closes at this many records.
    pub batch_records: u64,
    /// `HEIMDALL_ENIGMA_BATCH_BYTES`: ... or at this many bytes of log lines
    /// (compressed, a request stays well under gRPC's common 4 MiB).
    pub batch_bytes: u64,
    /// `HEIMDALL_ENIGMA_BATCH_AGE`: ... or this long after its first record.
    #[serde(with = "heimdall_config::duration")]
    pub batch_age: Duration,
    /// `HEIMDALL_ENIGMA_RETENTION`: spool and archive keep nothing older.
    /// Default `7d`.
    #[serde(with = "heimdall_config::duration")]
    pub retention: Duration,
    /// `HEIMDALL_ENIGMA_QUOTA_BYTES`: spool and archive together stay
    /// under this; the oldest files go first. Default 2 GiB.
    pub quota_bytes: u64,
    /// `HEIMDALL_ENIGMA_BACKOFF_MIN`, `..._BACKOFF_MAX`: retry delays.
    #[serde(with = "heimdall_config::duration")]
    pub backoff_min: Duration,
    #[serde(with = "heimdall_config::duration")]
    pub backoff_max: Duration,
    /// `HEIMDALL_ENIGMA_TIMEOUT`: one call's deadline. Default `30s`.
    #[serde(with = "heimdall_config::duration")]
    pub timeout: Duration,
    /// `HEIMDALL_ENIGMA_DURABLE`: consumer name prefix. Default
    /// `enigma-uploader`.
    pub durable: String,
    /// `HEIMDALL_ENIGMA_SENSORS`: sensors (comma-separated) whose capture
    /// settings are fetched even before their first record arrives.
    pub sensors: String,
    /// `HEIMDALL_ENIGMA_SETTINGS_EVERY`: how often each sensor's capture
    /// settings are fetched from Enigma and, when new, published for the
    /// capture service. Default `5m`; `0s` turns steering off.
    #[serde(with = "heimdall_config::duration")]
    pub settings_every: Duration,
}

impl Default for UploaderSettings {
    fn default() -> Self {
        UploaderSettings {
            url: String::new(),
            api_key: Secret::new(""),
            ca_file: String::new(),
            tls_domain: String::new(),
            spool_dir: "/var/lib/heimdall/enigma/spool".into(),
            archive_dir: String::new(),
            compression: "zstd".into(),
            batch_records: 20_000,
            batch_bytes: 8 << 20,
            batch_age: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 86_400),
            quota_bytes: 2 << 30,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            durable: "enigma-uploader".into(),
            sensors: String::new(),
            settings_every: Duration::from_secs(300),
        }
    }
}

impl UploaderSettings {
    fn codec(&self) -> Option<Codec> {
        match self.compression.as_str() {
            "zstd" => Some(Codec::Zstd),
            "gzip" => Some(Codec::Gzip),
            _ => None,
        }
    }
}

impl Validate for UploaderSettings {
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>) {
        heimdall_config::check::endpoint_url(
            problems,
            format!("{prefix}URL"),
            &self.url,
            "the Ingest endpoint",
        );
        let mut bad = |var: &str, message: String| {
            problems.push(Problem {
                variable: format!("{prefix}{var}"),
                message,
            })
        };
        if self.api_key.is_empty() {
            bad(
                "API_KEY",
                "required: set HEIMDALL_ENIGMA_API_KEY_FILE to a file holding the key".into(),
            );
        }
        if !self.ca_file.is_empty() && std::fs::metadata(&self.ca_file).is_err() {
            bad("CA_FILE", format!("cannot read {}", self.ca_file));
        }
        if self.spool_dir.is_empty() {
            bad("SPOOL_DIR", "required".into());
        }
        if self.codec().is_none() {
            bad("COMPRESSION", "zstd or gzip".into());
        }
        if self.batch_records == 0 || self.batch_bytes == 0 {
            bad(
                "BATCH_RECORDS",
                "batches need room for at least one record".into(),
            );
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            bad(
                "BACKOFF_MAX",
                "BACKOFF_MIN must be above zero and BACKOFF_MAX at least as long".into(),
            );
        }
    }
}

heimdall_telemetry::service_config! {
    /// Everything the uploader needs, loaded and validated as one.
    pub struct Config {
        enigma: UploaderSettings = PREFIX,
        nats: BusConfig = heimdall_bus::PREFIX,
        telemetry: TelemetryConfig = heimdall_telemetry::PREFIX,
    }
}

#[derive(Debug, Clone, Default)]
struct UploaderMetrics {
    spooled: Family<Vec<(String, String)>, Counter>,
    duplicates: Counter,
    attempts: Family<Vec<(String, String)>, Counter>,
    uploaded_records: Counter,
    removed: Family<Vec<(String, String)>, Counter>,
    ready: Gauge,
    settings_fetches: Family<Vec<(String, String)>, Counter>,
}

impl UploaderMetrics {
    fn register(&self, m: &Metrics) {
        m.register(
            "enigma_spooled_records",
            "Records written to the spool, by log",
            self.spooled.clone(),
        );
        m.register(
            "enigma_redelivered_messages",
            "Redelivered messages already spooled (not spooled again)",
            self.duplicates.clone(),
        );
        m.register(
            "enigma_upload_attempts",
            "Upload attempts by outcome",
            self.attempts.clone(),
        );
        m.register(
            "enigma_uploaded_records",
            "Records Enigma acknowledged",
            self.uploaded_records.clone(),
        );
        m.register(
            "enigma_removed_files",
            "Spool and archive files removed by retention, by reason",
            self.removed.clone(),
        );
        m.register(
            "enigma_capture_settings_fetches",
            "GetCaptureSettings calls by outcome",
            self.settings_fetches.clone(),
        );
        m.register(
            "enigma_ready_batches",
            "Sealed batches waiting for upload",
            self.ready.clone(),
        );
    }
}

/// The running uploader's shared state.
#[derive(Debug)]
pub struct Uploader {
    settings: UploaderSettings,
    spool: Mutex<Spool>,
    metrics: UploaderMetrics,
    health: Health,
    /// Uploads stopped: the server refused the key.
    refused: AtomicBool,
    /// Sensors whose records were spooled since start.
    seen: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// `LogWriter::conn` or `LogWriter::dns`.
type OpenLog = fn(Vec<u8>, Format, i64) -> std::io::Result<LogWriter<Vec<u8>>>;

/// Zeek JSON lines of a batch of records, with its time range.
fn json_lines<R>(
    records: &[R],
    open: OpenLog,
    write: fn(&mut LogWriter<Vec<u8>>, &R) -> std::io::Result<()>,
    ts: fn(&R) -> i64,
) -> std::io::Result<(Vec<u8>, i64, i64)> {
    let mut w = open(Vec::with_capacity(records.len() * 400), Format::Json, 0)?;
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for r in records {
        write(&mut w, r)?;
        first = first.min(ts(r));
        last = last.max(ts(r));
    }
    Ok((w.finish(0)?, first, last))
}

impl Uploader {
    /// Spools one NATS message's records; returns when they are durable.
    async fn spool(
        &self,
        msg_id: &str,
        sensor: &str,
        log: Log,
        lines: (Vec<u8>, i64, i64),
        records: usize,
    ) -> Result<(), String> {
        if records == 0 {
            return Ok(());
        }
        if let Ok(mut seen) = self.seen.lock()
            && !seen.contains(sensor)
        {
            seen.insert(sensor.to_string());
        }
        let mut spool = self.spool.lock().await;
        if spool.seen(msg_id) {
            self.metrics.duplicates.inc();
            return Ok(());
        }
        let (n, bytes) = spool
            .append(
                sensor,
                log,
                spool::Lines {
                    msg_id,
                    records: records as u32,
                    first_ts: lines.1,
                    last_ts: lines.2,
                    data: &lines.0,
                },
            )
            .map_err(|e| format!("cannot write the spool: {e}"))?;
        self.metrics
            .spooled
            .get_or_create(&vec![("log".into(), log.name().into())])
            .inc_by(records as u64);
        if n >= self.settings.batch_records || bytes >= self.settings.batch_bytes {
            spool
                .seal(&(sensor.to_string(), log))
                .map_err(|e| format!("cannot seal a batch: {e}"))?;
        }
        Ok(())
    }

    /// Enigma refused the key: say which setting to fix, and stop calling.
    fn refuse(&self, st: &tonic::Status) {
        error!(
            code = ?st.code(),
            reason = %st.message(),
            "Enigma refused the API key: check HEIMDALL_ENIGMA_API_KEY_FILE (and that the key belongs to this sensor); uploads stopped, batches stay in the spool"
        );
        self.health.not_ready(
            "enigma",
            format!(
                "Enigma refused the API key ({:?}); uploads stopped",
                st.code()
            ),
        );
        self.refused.store(true, Ordering::Relaxed);
    }

    /// The configured sensors and those seen in records.
    fn sensors(&self) -> std::collections::BTreeSet<String> {
        let mut all: std::collections::BTreeSet<String> = self
            .settings
            .sensors
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if let Ok(seen) = self.seen.lock() {
            all.extend(seen.iter().cloned());
        }
        all
    }

    async fn seal_due(&self, all: bool) {
        let mut spool = self.spool.lock().await;
        for key in spool.due(self.settings.batch_age, all) {
            if let Err(e) = spool.seal(&key) {
                error!(error = %e, "cannot seal a batch; will retry");
            }
        }
        if let Ok(r) = spool.ready() {
            self.metrics.ready.set(r.len() as i64);
        }
    }

    fn sweep(&self) {
        let s = &self.settings;
        let mut dirs = vec![
            PathBuf::from(&s.spool_dir).join("ready"),
            PathBuf::from(&s.spool_dir).join("quarantine"),
        ];
        if !s.archive_dir.is_empty() {
            dirs.push(PathBuf::from(&s.archive_dir));
        }
        match spool::sweep(&dirs, s.retention, s.quota_bytes) {
            Ok(removed) => {
                for r in removed {
                    warn!(file = %r.path.display(), bytes = r.bytes, reason = r.reason, "removed by retention");
                    self.metrics
                        .removed
                        .get_or_create(&vec![("reason".into(), r.reason.into())])
                        .inc();
                }
            }
            Err(e) => warn!(error = %e, "retention sweep failed; will retry"),
        }
    }
}

/// A batch of records from the bus that becomes log lines.
trait LogBatch: heimdall_bus::BusMessage {
    /// The stream it comes from.
    const KIND: Kind;
    /// The log it goes to.
    const LOG: Log;
    fn sensor(&self) -> &str;
    fn records(&self) -> usize;
    /// Its Zeek JSON lines and time range.
    fn lines(&self) -> std::io::Result<(Vec<u8>, i64, i64)>;
}

impl LogBatch for ConnBatch {
    const KIND: Kind = Kind::Flows;
    const LOG: Log = Log::Conn;
    fn sensor(&self) -> &str {
        &self.sensor_id
    }
    fn records(&self) -> usize {
        self.records.len()
    }
    fn lines(&self) -> std::io::Result<(Vec<u8>, i64, i64)> {
        json_lines(&self.records, LogWriter::conn, LogWriter::write_conn, |r| {
            r.ts_us
        })
    }
}

impl LogBatch for DnsBatch {
    const KIND: Kind = Kind::Dns;
    const LOG: Log = Log::Dns;
    fn sensor(&self) -> &str {
        &self.sensor_id
    }
    fn records(&self) -> usize {
        self.records.len()
    }
    fn lines(&self) -> std::io::Result<(Vec<u8>, i64, i64)> {
        json_lines(&self.records, LogWriter::dns, LogWriter::write_dns, |r| {
            r.ts_us
        })
    }
}

/// A consumer task that spools every batch of `B` (durable `<durable>-<kind>`).
fn consume<B: LogBatch>(
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    bus: &Bus,
    up: &Arc<Uploader>,
    stop: &CancellationToken,
    durable: &str,
) {
    let (bus, up, stop) = (bus.clone(), up.clone(), stop.clone());
    let spec = bus.consumer_spec(B::KIND, &format!("{durable}-{}", B::KIND.token()), None);
    tasks.spawn(async move {
        bus.consume::<B, _, _, String>(spec, stop, |m: Received<B>| {
            let up = up.clone();
            async move {
                let b = &m.message;
                let lines = b.lines().map_err(|e| e.to_string())?;
                up.spool(&m.msg_id, b.sensor(), B::LOG, lines, b.records())
                    .await
            }
        })
        .await
        .map_err(anyhow::Error::from)
    });
}

/// A gRPC channel to Enigma per the settings.
pub fn channel(s: &UploaderSettings) -> anyhow::Result<Channel> {
    let mut ep = Endpoint::from_shared(s.url.clone())?
        .connect_timeout(Duration::from_secs(10))
        .timeout(s.timeout)
        .tcp_nodelay(true);
    if s.url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if !s.ca_file.is_empty() {
            tls = tls.ca_certificate(Certificate::from_pem(std::fs::read(&s.ca_file)?));
        } else {
            tls = tls.with_webpki_roots();
        }
        if !s.tls_domain.is_empty() {
            tls = tls.domain_name(s.tls_domain.clone());
        }
        ep = ep.tls_config(tls)?;
    }
    Ok(ep.connect_lazy())
}

fn backoff(s: &UploaderSettings, attempt: u32) -> Duration {
    let cap = s
        .backoff_min
        .saturating_mul(1u32 << attempt.min(16))
        .min(s.backoff_max);
    // Full jitter: anywhere up to the cap, never below the minimum.
    let ms = cap.as_millis().max(1) as u64;
    Duration::from_millis(rand::random_range(0..=ms)).max(s.backoff_min)
}

/// The `authorization` metadata value, marked sensitive (never logged by
/// tonic or hyper). `None`, with the reason logged, when the key holds
/// characters a header cannot carry.
fn bearer(s: &UploaderSettings) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    match format!("Bearer {}", s.api_key.expose()).parse::<tonic::metadata::MetadataValue<_>>() {
        Ok(mut v) => {
            v.set_sensitive(true);
            Some(v)
        }
        Err(_) => {
            error!(
                "HEIMDALL_ENIGMA_API_KEY holds characters a gRPC header cannot carry; nothing is sent to Enigma"
            );
            None
        }
    }
}

/// The upload loop: the oldest ready batch first, until shutdown.
async fn upload_loop(up: Arc<Uploader>, channel: Channel, shutdown: CancellationToken) {
    let s = up.settings.clone();
    let mut client = IngestClient::new(channel).max_decoding_message_size(1 << 20);
    let Some(auth) = bearer(&s) else {
        up.health
            .not_ready("enigma", "the API key cannot be sent (invalid characters)");
        return;
    };
    let mut attempt: u32 = 0;
    // The batch last rebuilt after INVALID_ARGUMENT.
    let mut rebuilt: Option<String> = None;
    loop {
        if shutdown.is_cancelled() || up.refused.load(Ordering::Relaxed) {
            return;
        }
        let next = up
            .spool
            .lock()
            .await
            .ready()
            .ok()
            .and_then(|r| r.into_iter().next());
        let Some(path) = next else {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(100)) => continue,
            }
        };
        let batch = match spool::read_batch(&path) {
            Ok(b) => b,
            Err(e) => {
                error!(file = %path.display(), error = %e, "unreadable batch; quarantined");
                let q = up.spool.lock().await.quarantine_dir();
                let _ = std::fs::rename(&path, q.join(path.file_name().unwrap_or_default()));
                continue;
            }
        };
        let m = &batch.meta;
        let req = UploadBatchRequest {
            sensor_id: m.sensor_id.clone(),
            batch_id: m.batch_id.clone(),
            log_type: match m.log {
                Log::Conn => LogType::Conn,
                Log::Dns => LogType::Dns,
            } as i32,
            format: PayloadFormat::ZeekJsonLines as i32,
            compression: match m.codec {
                Codec::Zstd => Compression::Zstd,
                Codec::Gzip => Compression::Gzip,
            } as i32,
            checksum_sha256: Sha256::digest(&batch.payload).to_vec().into(),
            uncompressed_size: m.uncompressed,
            record_count: m.records,
            first_ts_us: m.first_ts_us,
            last_ts_us: m.last_ts_us,
            payload: batch.payload.clone().into(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            created_us: m.created_us,
        };
        let mut request = tonic::Request::new(req);
        request.metadata_mut().insert("authorization", auth.clone());
        let started = Instant::now();
        let result = client.upload_batch(request).await;
        let ms = started.elapsed().as_millis() as u64;
        let outcome = match &result {
            Ok(r) => UploadStatus::try_from(r.get_ref().status)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("UPLOAD_STATUS_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_default(),
            Err(st) => format!("{:?}", st.code()).to_ascii_lowercase(),
        };
        up.metrics
            .attempts
            .get_or_create(&vec![("outcome".into(), outcome.clone())])
            .inc();
        info!(
            batch = %m.batch_id,
            sensor = %m.sensor_id,
            log = m.log.name(),
            records = m.records,
            bytes = batch.payload.len(),
            attempt = attempt + 1,
            outcome = %outcome,
            ms,
            "upload attempt"
        );
        match result {
            Ok(_) => {
                attempt = 0;
                up.metrics.uploaded_records.inc_by(m.records);
                up.health
                    .ready("enigma", format!("last upload {}", m.batch_id));
                let archive = up.spool.lock().await.archive_dir().map(PathBuf::from);
                if let Err(e) = spool::retire(&path, archive.as_deref()) {
                    error!(file = %path.display(), error = %e, "cannot archive or delete an uploaded batch");
                }
            }
            Err(st) => {
                let wait = match st.code() {
                    Code::Unauthenticated | Code::PermissionDenied => {
                        up.refuse(&st);
                        return;
                    }
                    Code::InvalidArgument
                        if rebuilt.as_deref() != Some(m.batch_id.as_str())
                            && batch.verify().is_ok() =>
                    {
                        // Once: the spooled batch checks out, so it is read
                        // again from its file and sent anew.
                        warn!(batch = %m.batch_id, reason = %st.message(), "Enigma calls the batch malformed; it checks out on disk, sending it once more");
                        rebuilt = Some(m.batch_id.clone());
                        continue;
                    }
                    Code::InvalidArgument => {
                        let local = batch
                            .verify()
                            .err()
                            .map(|e| e.to_string())
                            .unwrap_or_default();
                        error!(batch = %m.batch_id, reason = %st.message(), damaged = %local, "Enigma calls the batch malformed; quarantined");
                        let q = up.spool.lock().await.quarantine_dir();
                        let _ =
                            std::fs::rename(&path, q.join(path.file_name().unwrap_or_default()));
                        continue;
                    }
                    Code::ResourceExhausted => {
                        let hint = st
                            .metadata()
                            .get("retry-after-ms")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                            .map(Duration::from_millis)
                            .unwrap_or_default();
                        attempt += 1;
                        hint.max(backoff(&s, attempt))
                    }
                    _ => {
                        attempt += 1;
                        backoff(&s, attempt)
                    }
                };
                up.health
                    .not_ready("enigma", format!("retrying: {:?}", st.code()));
                info!(batch = %m.batch_id, retry_in_ms = wait.as_millis() as u64, "backing off");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Run until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // One TLS provider for the whole process (ring, as every crate here).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let served =
        heimdall_telemetry::Served::start(listener, &["nats", "spool", "enigma"], shutdown.clone());
    let (metrics, health) = (served.metrics.clone(), served.health.clone());
    let s = config.enigma.clone();
    let codec = s
        .codec()
        .ok_or_else(|| anyhow::anyhow!("HEIMDALL_ENIGMA_COMPRESSION"))?;
    let archive = (!s.archive_dir.is_empty()).then(|| PathBuf::from(&s.archive_dir));
    let (spool, notes) = Spool::open(&PathBuf::from(&s.spool_dir), archive.as_deref(), codec)
        .map_err(|e| anyhow::anyhow!("spool {}: {e}", s.spool_dir))?;
    for n in notes {
        warn!("{n}");
    }
    health.ready("spool", s.spool_dir.clone());
    // Not ready for Enigma until the first acknowledgement.
    health.ready("enigma", "no upload yet");
    let up = Arc::new(Uploader {
        settings: s.clone(),
        spool: Mutex::new(spool),
        metrics: UploaderMetrics::default(),
        health: health.clone(),
        refused: AtomicBool::new(false),
        seen: std::sync::Mutex::default(),
    });
    up.metrics.register(&metrics);
    up.sweep();

    let bus = Bus::connect(&config.nats, "heimdall-enigma-uploader")
        .await?
        .with_health(health.clone());
    bus.register_metrics(&metrics);
    bus.ensure_streams(&[Kind::Flows, Kind::Dns]).await?;
    health.ready("nats", "consuming flows and dns");
    info!(url = %s.url, spool = %s.spool_dir, "enigma uploader ready");

    let mut tasks = tokio::task::JoinSet::new();
    consume::<ConnBatch>(&mut tasks, &bus, &up, &shutdown, &s.durable);
    consume::<DnsBatch>(&mut tasks, &bus, &up, &shutdown, &s.durable);
    {
        let (up, stop) = (up.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut sweeps = 0u32;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                up.seal_due(false).await;
                sweeps += 1;
                if sweeps.is_multiple_of(240) {
                    up.sweep();
                }
            }
            // What is spooled is sealed, so the next start uploads it.
            up.seal_due(true).await;
            Ok(())
        });
    }
    let ch = channel(&s)?;
    {
        let (up, ch, stop) = (up.clone(), ch.clone(), shutdown.clone());
        tasks.spawn(async move {
            upload_loop(up, ch, stop).await;
            Ok(())
        });
    }
    {
        let (up, bus, stop) = (up.clone(), bus.clone(), shutdown.clone());
        tasks.spawn(async move {
            steering::run(up, ch, bus, stop).await;
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
