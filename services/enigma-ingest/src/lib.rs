//! The reference Enigma ingest server: `heimdall.enigma.v1.Ingest` over gRPC
//! with TLS, for tests, demos and development while the real Enigma cloud is
//! out of reach.
//!
//! What this server promises:
//! - It speaks the contract of `proto/enigma/v1/ingest.proto` for real: API
//!   keys as `authorization: Bearer <key>` (unknown key: UNAUTHENTICATED;
//!   key of another sensor: PERMISSION_DENIED), SHA-256 checksums, zstd and
//!   gzip payloads, sizes and record counts checked (INVALID_ARGUMENT with
//!   what is wrong), one stored row per (sensor, batch id): a retry is a
//!   DUPLICATE, never a second copy.
//! - Keys are compared by their SHA-256 digest and never appear in a log,
//!   an error or a stored row.
//! - It fails on request, for tests and demos: a share of calls
//!   (`FAIL_SHARE`, with `FAIL_CODE`; RESOURCE_EXHAUSTED carries
//!   `retry-after-ms`), added latency (`LATENCY`), and an outage window
//!   (`OUTAGE_AFTER`, `OUTAGE_FOR`) during which every call is UNAVAILABLE.
//! - Every call is recorded in `enigma_ingest.calls` with its outcome.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heimdall_config::{Loader, Problem, Validate};
use heimdall_proto::enigma::v1::ingest_server::{Ingest, IngestServer};
use heimdall_proto::enigma::v1::{
    CaptureSettings, Compression, GetCaptureSettingsRequest, LogType, PayloadFormat,
    UploadBatchRequest, UploadBatchResponse, UploadStatus,
};
use heimdall_store::{PgPool, StoreConfig};
use heimdall_telemetry::TelemetryConfig;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// The schema this server owns.
pub const SCHEMA: &str = "enigma_ingest";
/// The variable prefix of [`IngestSettings`].
pub const PREFIX: &str = "HEIMDALL_INGEST_";
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The most a payload may decompress to.
const MAX_UNCOMPRESSED: u64 = 256 << 20;

/// `HEIMDALL_INGEST_*`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct IngestSettings {
    /// `HEIMDALL_INGEST_LISTEN`: the gRPC address. Default
    /// `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// `HEIMDALL_INGEST_TLS_CERT_FILE`, `..._TLS_KEY_FILE`: PEM
    /// certificate chain and private key. Both empty: plaintext, allowed
    /// only on a loopback address.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// `HEIMDALL_INGEST_KEYS_FILE`: one `<sensor-id> <api-key>` per
    /// line (`#` starts a comment). Required.
    pub keys_file: String,
    /// `HEIMDALL_INGEST_MAX_MESSAGE_BYTES`: largest request accepted.
    /// Default 4 MiB, as gRPC servers commonly have.
    pub max_message_bytes: usize,
    /// `HEIMDALL_INGEST_FAIL_SHARE`: share of calls (0 to 1) that
    /// fail with `FAIL_CODE`. Default 0.
    pub fail_share: f64,
    /// `HEIMDALL_INGEST_FAIL_CODE`: `unavailable`,
    /// `resource_exhausted` (with `retry-after-ms`), `internal` or
    /// `deadline_exceeded`. Default `unavailable`.
    pub fail_code: String,
    /// `HEIMDALL_INGEST_RETRY_AFTER_MS`: the hint sent with
    /// RESOURCE_EXHAUSTED. Default 1000.
    pub retry_after_ms: u64,
    /// `HEIMDALL_INGEST_LATENCY`: added to every call. Default 0.
    #[serde(with = "heimdall_config::duration")]
    pub latency: Duration,
    /// `HEIMDALL_INGEST_OUTAGE_AFTER` and `..._OUTAGE_FOR`: from
    /// this long after start, for this long, every call is UNAVAILABLE.
    /// Default: no outage.
    #[serde(with = "heimdall_config::duration")]
    pub outage_after: Duration,
    #[serde(with = "heimdall_config::duration")]
    pub outage_for: Duration,
    /// `HEIMDALL_INGEST_CAPTURE_INTERVAL_SECONDS`,
    /// `..._CAPTURE_WINDOW_SECONDS`, `..._CAPTURE_FILTER`: the capture
    /// settings handed to agents.
    pub capture_interval_seconds: u32,
    pub capture_window_seconds: u32,
    pub capture_filter: String,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            keys_file: String::new(),
            max_message_bytes: 4 << 20,
            fail_share: 0.0,
            fail_code: "unavailable".into(),
            retry_after_ms: 1000,
            latency: Duration::ZERO,
            outage_after: Duration::ZERO,
            outage_for: Duration::ZERO,
            capture_interval_seconds: 120,
            capture_window_seconds: 30,
            capture_filter: String::new(),
        }
    }
}

impl Validate for IngestSettings {
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>) {
        heimdall_config::check::tls_listener(
            problems,
            prefix,
            self.listen,
            &self.tls_cert_file,
            &self.tls_key_file,
        );
        let mut bad = |var: &str, message: String| {
            problems.push(Problem {
                variable: format!("{prefix}{var}"),
                message,
            })
        };
        if self.keys_file.is_empty() {
            bad(
                "KEYS_FILE",
                "required: a file with one '<sensor-id> <api-key>' per line".into(),
            );
        } else if let Err(e) = load_keys(&self.keys_file) {
            bad("KEYS_FILE", e);
        }
        if !(0.0..=1.0).contains(&self.fail_share) {
            bad("FAIL_SHARE", "must be between 0 and 1".into());
        }
        if fail_status(&self.fail_code, 0).is_none() {
            bad(
                "FAIL_CODE",
                "one of unavailable, resource_exhausted, internal, deadline_exceeded".into(),
            );
        }
        if self.capture_window_seconds > self.capture_interval_seconds {
            bad(
                "CAPTURE_WINDOW_SECONDS",
                "must not be longer than CAPTURE_INTERVAL_SECONDS".into(),
            );
        }
    }
}

fn fail_status(code: &str, retry_after_ms: u64) -> Option<Status> {
    Some(match code {
        "unavailable" => Status::unavailable("failing on purpose (HEIMDALL_INGEST_FAIL_SHARE)"),
        "internal" => Status::internal("failing on purpose (HEIMDALL_INGEST_FAIL_SHARE)"),
        "deadline_exceeded" => Status::deadline_exceeded("failing on purpose"),
        "resource_exhausted" => {
            let mut s = Status::resource_exhausted("rate limit (failing on purpose)");
            if let Ok(v) = retry_after_ms.to_string().parse() {
                s.metadata_mut().insert("retry-after-ms", v);
            }
            s
        }
        _ => return None,
    })
}

/// Key digest (SHA-256 of the key) to sensor id.
fn load_keys(path: &str) -> Result<HashMap<[u8; 32], Vec<String>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut keys = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(sensor), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
            // The line is not repeated: it may hold a key.
            return Err(format!(
                "{path} line {}: expected '<sensor-id> <api-key>'",
                n + 1
            ));
        };
        keys.entry(digest(key.as_bytes()))
            .or_insert_with(Vec::new)
            .push(sensor.to_string());
    }
    if keys.is_empty() {
        return Err(format!("{path} holds no keys"));
    }
    Ok(keys)
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

heimdall_telemetry::service_config! {
    /// Everything the server needs, loaded and validated as one.
    pub struct Config {
        ingest: IngestSettings = PREFIX,
        database: StoreConfig = heimdall_store::PREFIX,
        telemetry: TelemetryConfig = heimdall_telemetry::PREFIX,
    }
}

#[derive(Debug, Clone, Default)]
struct IngestMetrics {
    calls: Family<Vec<(String, String)>, Counter>,
    records: Counter,
}

/// The Ingest service.
#[derive(Debug)]
pub struct IngestService {
    settings: IngestSettings,
    /// Key digest to the sensors it covers (a key on several lines of the
    /// keys file covers several sensors, as a fleet key would).
    keys: HashMap<[u8; 32], Vec<String>>,
    pool: PgPool,
    started: Instant,
    metrics: IngestMetrics,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn enum_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

impl IngestService {
    async fn record(&self, method: &str, sensor: &str, batch: &str, outcome: &str) {
        self.metrics
            .calls
            .get_or_create(&vec![
                ("method".into(), method.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
        let r = sqlx::query(
            "INSERT INTO calls (method, sensor_id, batch_id, outcome) VALUES ($1, $2, $3, $4)",
        )
        .bind(method)
        .bind(sensor)
        .bind(batch)
        .bind(outcome)
        .execute(&self.pool)
        .await;
        if let Err(e) = r {
            warn!(error = %e, "cannot record a call");
        }
    }

    /// Latency, outage and the failing share, in that order.
    async fn chaos(&self) -> Result<(), Status> {
        let s = &self.settings;
        if !s.latency.is_zero() {
            tokio::time::sleep(s.latency).await;
        }
        let up = self.started.elapsed();
        if !s.outage_for.is_zero() && up >= s.outage_after && up < s.outage_after + s.outage_for {
            return Err(Status::unavailable(
                "outage (HEIMDALL_INGEST_OUTAGE_AFTER/_FOR)",
            ));
        }
        if s.fail_share > 0.0 && rand::random::<f64>() < s.fail_share {
            return Err(fail_status(&s.fail_code, s.retry_after_ms)
                .unwrap_or_else(|| Status::unavailable("failing on purpose")));
        }
        Ok(())
    }

    /// The sensors the call's key covers.
    fn authenticate(&self, md: &MetadataMap) -> Result<Vec<String>, Status> {
        let value = md.get("authorization").ok_or_else(|| {
            Status::unauthenticated(
                "no authorization metadata: send 'authorization: Bearer <api-key>'",
            )
        })?;
        let text = value
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization metadata is not text"))?;
        let key = text.strip_prefix("Bearer ").ok_or_else(|| {
            Status::unauthenticated("authorization metadata must be 'Bearer <api-key>'")
        })?;
        self.keys
            .get(&digest(key.trim().as_bytes()))
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown or revoked API key"))
    }

    async fn upload(
        &self,
        sensors: &[String],
        r: &UploadBatchRequest,
    ) -> Result<UploadBatchResponse, Status> {
        let sensor = r.sensor_id.as_str();
        if !sensors.iter().any(|s| s == sensor) {
            return Err(Status::permission_denied(format!(
                "the API key is not for sensor {:?}",
                r.sensor_id
            )));
        }
        if r.batch_id.is_empty() {
            return Err(Status::invalid_argument("batch_id is empty"));
        }
        let log_type = LogType::try_from(r.log_type).unwrap_or_default();
        let format = PayloadFormat::try_from(r.format).unwrap_or_default();
        let compression = Compression::try_from(r.compression).unwrap_or_default();
        if log_type == LogType::Unspecified
            || format == PayloadFormat::Unspecified
            || compression == Compression::Unspecified
        {
            return Err(Status::invalid_argument(
                "log_type, format and compression must be set",
            ));
        }
        if r.checksum_sha256.len() != 32 || digest(&r.payload)[..] != r.checksum_sha256[..] {
            return Err(Status::invalid_argument(
                "checksum_sha256 does not match the payload",
            ));
        }
        if r.uncompressed_size > MAX_UNCOMPRESSED {
            return Err(Status::invalid_argument(format!(
                "uncompressed_size over {MAX_UNCOMPRESSED} bytes"
            )));
        }
        let body = decompress(compression, &r.payload, r.uncompressed_size)
            .map_err(|e| Status::invalid_argument(format!("payload does not decompress: {e}")))?;
        if body.len() as u64 != r.uncompressed_size {
            return Err(Status::invalid_argument(format!(
                "payload decompresses to {} bytes, uncompressed_size says {}",
                body.len(),
                r.uncompressed_size
            )));
        }
        let lines = count_records(format, &body);
        if lines != r.record_count {
            return Err(Status::invalid_argument(format!(
                "payload holds {lines} records, record_count says {}",
                r.record_count
            )));
        }
        let inserted = sqlx::query(
            "INSERT INTO batches (sensor_id, batch_id, log_type, format, compression, records, payload_bytes, first_ts_us, last_ts_us, agent_version, created_us, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (sensor_id, batch_id) DO NOTHING",
        )
        .bind(sensor)
        .bind(&r.batch_id)
        .bind(enum_name(log_type.as_str_name(), "LOG_TYPE_"))
        .bind(enum_name(format.as_str_name(), "PAYLOAD_FORMAT_"))
        .bind(enum_name(compression.as_str_name(), "COMPRESSION_"))
        .bind(r.record_count as i64)
        .bind(r.payload.len() as i64)
        .bind(r.first_ts_us)
        .bind(r.last_ts_us)
        .bind(&r.agent_version)
        .bind(r.created_us)
        .bind(&body)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            warn!(error = %e, "cannot store a batch");
            Status::unavailable("storage unavailable; retry")
        })?
        .rows_affected();
        let (status, stored) = if inserted == 1 {
            self.metrics.records.inc_by(r.record_count);
            (UploadStatus::Accepted, r.record_count)
        } else {
            let n: i64 = sqlx::query_scalar(
                "SELECT records FROM batches WHERE sensor_id = $1 AND batch_id = $2",
            )
            .bind(sensor)
            .bind(&r.batch_id)
            .fetch_one(&self.pool)
            .await
            .map_err(|_| Status::unavailable("storage unavailable; retry"))?;
            (UploadStatus::Duplicate, n as u64)
        };
        Ok(UploadBatchResponse {
            batch_id: r.batch_id.clone(),
            status: status as i32,
            records_stored: stored,
            server_time_us: now_us(),
        })
    }
}

/// Decompresses at most `limit` bytes (and one more, to notice a lie).
fn decompress(c: Compression, payload: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(limit.min(64 << 20) as usize);
    let cap = limit + 1;
    match c {
        Compression::None => out.extend_from_slice(payload),
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(payload)?
                .take(cap)
                .read_to_end(&mut out)?;
        }
        Compression::Gzip => {
            flate2::read::GzDecoder::new(payload)
                .take(cap)
                .read_to_end(&mut out)?;
        }
        Compression::Unspecified => {
            return Err(std::io::Error::other("compression is unspecified"));
        }
    }
    Ok(out)
}

/// Records in a payload: lines, less Zeek's TSV header lines.
fn count_records(format: PayloadFormat, body: &[u8]) -> u64 {
    body.split(|&b| b == b'\n')
        .filter(|l| {
            let header = format == PayloadFormat::ZeekTsv && l.first() == Some(&b'#');
            !l.is_empty() && !header
        })
        .count() as u64
}

/// The gRPC face of the shared service state.
#[derive(Debug, Clone)]
pub struct Handler(Arc<IngestService>);

impl std::ops::Deref for Handler {
    type Target = IngestService;
    fn deref(&self) -> &IngestService {
        &self.0
    }
}

#[tonic::async_trait]
impl Ingest for Handler {
    async fn upload_batch(
        &self,
        request: Request<UploadBatchRequest>,
    ) -> Result<Response<UploadBatchResponse>, Status> {
        let started = Instant::now();
        let sensors = self.authenticate(request.metadata());
        let r = request.into_inner();
        let result = match sensors {
            Err(s) => Err(s),
            Ok(sensors) => match self.chaos().await {
                Err(s) => Err(s),
                Ok(()) => self.upload(&sensors, &r).await,
            },
        };
        let outcome = match &result {
            Ok(resp) => enum_name(
                UploadStatus::try_from(resp.status)
                    .unwrap_or_default()
                    .as_str_name(),
                "UPLOAD_STATUS_",
            ),
            Err(s) => format!("{:?}", s.code()).to_ascii_lowercase(),
        };
        info!(
            sensor = %r.sensor_id,
            batch = %r.batch_id,
            records = r.record_count,
            bytes = r.payload.len(),
            outcome = %outcome,
            ms = started.elapsed().as_millis() as u64,
            "upload"
        );
        self.record("upload_batch", &r.sensor_id, &r.batch_id, &outcome)
            .await;
        result.map(Response::new)
    }

    async fn get_capture_settings(
        &self,
        request: Request<GetCaptureSettingsRequest>,
    ) -> Result<Response<CaptureSettings>, Status> {
        let sensors = self.authenticate(request.metadata())?;
        let r = request.into_inner();
        let sensor = r.sensor_id.clone();
        if !sensors.contains(&sensor) {
            return Err(Status::permission_denied(format!(
                "the API key is not for sensor {:?}",
                r.sensor_id
            )));
        }
        self.chaos().await?;
        let s = &self.settings;
        let row: Option<(i32, i32, String, Vec<String>, i32)> = sqlx::query_as(
            "SELECT interval_seconds, window_seconds, bpf_filter, interfaces, snaplen \
             FROM capture_settings WHERE sensor_id = $1",
        )
        .bind(&sensor)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| {
            warn!(error = %e, "cannot read capture settings");
            Status::unavailable("capture settings are unavailable; retry later")
        })?;
        let mut out = match row {
            Some((interval, window, filter, interfaces, snaplen)) => CaptureSettings {
                interval_seconds: interval as u32,
                window_seconds: window as u32,
                bpf_filter: filter,
                interfaces,
                snaplen: snaplen as u32,
                ..Default::default()
            },
            None => CaptureSettings {
                interval_seconds: s.capture_interval_seconds,
                window_seconds: s.capture_window_seconds,
                bpf_filter: s.capture_filter.clone(),
                ..Default::default()
            },
        };
        out.retention_days = 7;
        out.preferred_compression = Compression::Zstd as i32;
        // The version is a digest of everything else: it changes exactly
        // when the settings do.
        let digest = Sha256::digest(out.encode_to_vec());
        out.version = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.record("get_capture_settings", &sensor, "", "ok").await;
        Ok(Response::new(out))
    }
}

/// What an operator sets for one sensor's capture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureRow {
    pub interval_seconds: u32,
    pub window_seconds: u32,
    pub bpf_filter: String,
    pub interfaces: Vec<String>,
    pub snaplen: u32,
}

/// Set `sensor`'s capture settings; agents get them on their next fetch.
pub async fn set_capture_settings(
    pool: &PgPool,
    sensor: &str,
    row: &CaptureRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO capture_settings \
         (sensor_id, interval_seconds, window_seconds, bpf_filter, interfaces, snaplen) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (sensor_id) DO UPDATE SET interval_seconds = $2, window_seconds = $3, \
         bpf_filter = $4, interfaces = $5, snaplen = $6, updated_at = now()",
    )
    .bind(sensor)
    .bind(i32::try_from(row.interval_seconds).unwrap_or(i32::MAX))
    .bind(i32::try_from(row.window_seconds).unwrap_or(i32::MAX))
    .bind(&row.bpf_filter)
    .bind(&row.interfaces)
    .bind(i32::try_from(row.snaplen).unwrap_or(i32::MAX))
    .execute(pool)
    .await
    .map(|_| ())
}

/// `heimdall-enigma-ingest set-capture-settings SENSOR [--interval S]
/// [--window S] [--filter EXPR] [--snaplen N] [--interface NAME]...`:
/// parse the arguments after the subcommand.
pub fn parse_capture_args(args: &[String]) -> Result<(String, CaptureRow), String> {
    let usage = "usage: heimdall-enigma-ingest set-capture-settings SENSOR [--interval SECONDS] \
                 [--window SECONDS] [--filter BPF] [--snaplen BYTES] [--interface NAME]...";
    let mut it = args.iter();
    let sensor = it.next().filter(|s| !s.starts_with("--")).ok_or(usage)?;
    let mut row = CaptureRow {
        interval_seconds: 120,
        window_seconds: 30,
        ..Default::default()
    };
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {usage}"))?;
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("{flag} takes a whole number, not {value:?}"))
        };
        match flag.as_str() {
            "--interval" => row.interval_seconds = number()?,
            "--window" => row.window_seconds = number()?,
            "--snaplen" => row.snaplen = number()?,
            "--filter" => row.bpf_filter.clone_from(value),
            "--interface" => row.interfaces.push(value.clone()),
            _ => return Err(format!("unknown option {flag}; {usage}")),
        }
    }
    if row.interval_seconds == 0 || row.window_seconds == 0 {
        return Err("--interval and --window must be at least 1 second".into());
    }
    if row.window_seconds > row.interval_seconds {
        return Err(format!(
            "--window {} is longer than --interval {}",
            row.window_seconds, row.interval_seconds
        ));
    }
    Ok((sensor.clone(), row))
}

/// The server's schema, migrated, from the `HEIMDALL_DATABASE_*` settings
/// alone (for the operator's subcommands).
pub async fn open_database() -> anyhow::Result<PgPool> {
    let mut loader = Loader::from_env()?;
    let store: StoreConfig = loader.section(heimdall_store::PREFIX);
    loader.finish()?;
    Ok(heimdall_store::open(&store, SCHEMA, &MIGRATIONS).await?)
}

/// Bring the schema up to date.
pub async fn migrate(pool: &PgPool) -> Result<(), heimdall_store::Error> {
    heimdall_store::migrate(pool, SCHEMA, &MIGRATIONS).await
}

/// Run until `shutdown`: telemetry on `listener`, the gRPC server on
/// `settings.listen`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // One TLS provider for the whole process (ring, as every crate here).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let served =
        heimdall_telemetry::Served::start(listener, &["database", "grpc"], shutdown.clone());
    let (metrics, health) = (served.metrics.clone(), served.health.clone());
    let pool = heimdall_store::open(&config.database, SCHEMA, &MIGRATIONS).await?;
    health.ready("database", "migrated");
    let keys = load_keys(&config.ingest.keys_file).map_err(anyhow::Error::msg)?;
    let svc = Arc::new(IngestService {
        settings: config.ingest.clone(),
        keys,
        pool,
        started: Instant::now(),
        metrics: IngestMetrics::default(),
    });
    metrics.register(
        "enigma_ingest_calls",
        "Calls by method and outcome",
        svc.metrics.calls.clone(),
    );
    metrics.register(
        "enigma_ingest_records",
        "Records stored",
        svc.metrics.records.clone(),
    );

    let mut builder = tonic::transport::Server::builder();
    let s = &config.ingest;
    if !s.tls_cert_file.is_empty() {
        let cert = std::fs::read(&s.tls_cert_file)
            .map_err(|e| anyhow::anyhow!("{PREFIX}TLS_CERT_FILE {}: {e}", s.tls_cert_file))?;
        let key = std::fs::read(&s.tls_key_file)
            .map_err(|e| anyhow::anyhow!("{PREFIX}TLS_KEY_FILE {}: {e}", s.tls_key_file))?;
        builder = builder.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        )?;
    }
    let grpc = TcpListener::bind(s.listen).await?;
    let addr = grpc.local_addr()?;
    health.ready("grpc", format!("listening on {addr}"));
    info!(%addr, tls = !s.tls_cert_file.is_empty(), "enigma ingest ready");
    let service = IngestServer::new(Handler(svc))
        .max_decoding_message_size(s.max_message_bytes)
        .max_encoding_message_size(1 << 20);
    let stop = shutdown.clone();
    builder
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            async move {
                stop.cancelled().await;
            },
        )
        .await?;
    shutdown.cancel();
    served.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn capture_settings_arguments_are_parsed_and_checked() {
        let (sensor, row) = parse_capture_args(&args(&[
            "pi-1",
            "--interval",
            "60",
            "--window",
            "15",
            "--filter",
            "not port 22",
            "--interface",
            "eth0",
            "--snaplen",
            "512",
        ]))
        .expect("valid");
        assert_eq!(sensor, "pi-1");
        assert_eq!(
            row,
            CaptureRow {
                interval_seconds: 60,
                window_seconds: 15,
                bpf_filter: "not port 22".into(),
                interfaces: vec!["eth0".into()],
                snaplen: 512,
            }
        );
        let err = |a: &[&str]| parse_capture_args(&args(a)).expect_err("refused");
        assert!(err(&[]).starts_with("usage"));
        assert!(err(&["pi-1", "--window", "200"]).contains("longer than --interval"));
        assert!(err(&["pi-1", "--interval", "x"]).contains("whole number"));
        assert!(err(&["pi-1", "--colour", "red"]).contains("unknown option --colour"));
        assert!(err(&["pi-1", "--filter"]).contains("needs a value"));
    }
}
