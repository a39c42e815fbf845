//! The reference Asgard server (`heimdall-asgard-dev`): the sensor API of
//! `proto/asgard/v1/openapi.yaml` over HTTPS, for development, demos and the
//! asgard-bridge's tests. Asgard itself is not reachable from here; this
//! server implements its contract for real.
//!
//! What it promises:
//! - Enrollment with single-use tokens (a retry with the same token and
//!   hardware id gets the same sensor id), short-lived access tokens and
//!   rotating refresh tokens; tokens are stored as SHA-256 digests only.
//! - Uploads are validated, stored once per (sensor, kind, batch id) in its
//!   own schema (`asgard_dev`), and answered `accepted` or `duplicate`.
//! - Intelligence is served from its schema with cursors (deltas since the
//!   sensor's last answer, removals as ids) and ETags (`304` when nothing
//!   changed). It is loaded from a JSON file at start or at any time with
//!   `heimdall-asgard-dev load-intel FILE`.
//! - Every request body is kept as received (`asgard_dev.requests`), so a
//!   test can prove what did and did not leave a sensor.
//! - It can be told to fail: a share of requests, added latency, an outage
//!   window, and revoked tokens (`heimdall-asgard-dev revoke-tokens`).

// An error here is the HTTP answer itself, built once and returned by value
// as axum handlers return every answer.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use heimdall_asgard_api::{
    AlertBatch, BatchResult, FieldError, IntelUpdate, Problem, RefreshRequest, RegisterRequest,
    SignatureBatch, TokenResponse,
};
use heimdall_config::{Problem as SettingProblem, Validate};
use heimdall_store::{PgPool, StoreConfig};
use heimdall_telemetry::TelemetryConfig;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The variable prefix of [`DevSettings`]: `HEIMDALL_ASGARDDEV_`, apart from
/// the bridge's `HEIMDALL_ASGARD_` so one environment can hold both.
pub const PREFIX: &str = "HEIMDALL_ASGARDDEV_";
/// The server's schema.
pub const SCHEMA: &str = "asgard_dev";
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Items per intelligence answer; more set `has_more`.
const PAGE: i64 = 500;
/// Items per upload batch, as the contract bounds them.
const MAX_ITEMS: usize = 1000;

/// `HEIMDALL_ASGARDDEV_*`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct DevSettings {
    /// `LISTEN`: the HTTPS address. Default `127.0.0.1:8443`.
    pub listen: SocketAddr,
    /// `TLS_CERT_FILE`, `TLS_KEY_FILE`: PEM chain and key. Both empty:
    /// plain HTTP, allowed only on a loopback address.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// `ENROLLMENT_TOKENS_FILE`: one single-use enrollment token per line
    /// (`#` starts a comment). Required.
    pub enrollment_tokens_file: String,
    /// `INTEL_FILE`: intelligence to load at start (an IntelUpdate in JSON:
    /// `golden_profiles`, `threat_signatures`, `enforcement_rules`,
    /// `removed_*_ids`). Optional.
    pub intel_file: String,
    /// `ACCESS_TTL`: how long an access token lives. Default `15m`.
    #[serde(with = "heimdall_config::duration")]
    pub access_ttl: Duration,
    /// `REFRESH_TTL`: how long a refresh token lives. Default `30d`.
    #[serde(with = "heimdall_config::duration")]
    pub refresh_ttl: Duration,
    /// `POLL_INTERVAL_S`: the intelligence poll interval told to sensors.
    pub poll_interval_s: u64,
    /// `MAX_BODY_BYTES`: larger requests get 413. Default 5 MiB.
    pub max_body_bytes: usize,
    /// `FAIL_SHARE`: share of requests (0 to 1) answered with `FAIL_STATUS`.
    pub fail_share: f64,
    /// `FAIL_STATUS`: 429, 500 or 503 (default); 429 and 503 carry
    /// `Retry-After: RETRY_AFTER_S`.
    pub fail_status: u16,
    pub retry_after_s: u64,
    /// `LATENCY`: added to every request.
    #[serde(with = "heimdall_config::duration")]
    pub latency: Duration,
    /// `OUTAGE_AFTER`, `OUTAGE_FOR`: from this long after start, for this
    /// long, every request is 503.
    #[serde(with = "heimdall_config::duration")]
    pub outage_after: Duration,
    #[serde(with = "heimdall_config::duration")]
    pub outage_for: Duration,
}

impl Default for DevSettings {
    fn default() -> Self {
        DevSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            enrollment_tokens_file: String::new(),
            intel_file: String::new(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 86_400),
            poll_interval_s: 300,
            max_body_bytes: 5 << 20,
            fail_share: 0.0,
            fail_status: 503,
            retry_after_s: 1,
            latency: Duration::ZERO,
            outage_after: Duration::ZERO,
            outage_for: Duration::ZERO,
        }
    }
}

impl Validate for DevSettings {
    fn validate(&self, prefix: &str, problems: &mut Vec<SettingProblem>) {
        heimdall_config::check::tls_listener(
            problems,
            prefix,
            self.listen,
            &self.tls_cert_file,
            &self.tls_key_file,
        );
        let mut bad = |var: &str, message: String| {
            problems.push(SettingProblem {
                variable: format!("{prefix}{var}"),
                message,
            })
        };
        if self.enrollment_tokens_file.is_empty() {
            bad(
                "ENROLLMENT_TOKENS_FILE",
                "required: a file with one enrollment token per line".into(),
            );
        } else if let Err(e) = load_enrollment_tokens(&self.enrollment_tokens_file) {
            bad("ENROLLMENT_TOKENS_FILE", e);
        }
        if !self.intel_file.is_empty()
            && let Err(e) = read_intel(&self.intel_file)
        {
            bad("INTEL_FILE", e);
        }
        if !(0.0..=1.0).contains(&self.fail_share) {
            bad("FAIL_SHARE", "must be between 0 and 1".into());
        }
        if ![429, 500, 503].contains(&self.fail_status) {
            bad("FAIL_STATUS", "one of 429, 500, 503".into());
        }
        if self.access_ttl < Duration::from_secs(1) || self.refresh_ttl < self.access_ttl {
            bad(
                "ACCESS_TTL",
                "at least 1s, and REFRESH_TTL at least as long".into(),
            );
        }
    }
}

/// The enrollment tokens in `path` (never echoed in errors).
fn load_enrollment_tokens(path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let tokens: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if tokens.is_empty() {
        return Err(format!("{path} holds no enrollment tokens"));
    }
    Ok(tokens)
}

/// An intelligence file, parsed and validated.
pub fn read_intel(path: &str) -> Result<IntelUpdate, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut intel: IntelUpdate =
        serde_json::from_str(&text).map_err(|e| format!("{path} is not an IntelUpdate: {e}"))?;
    // A file needs no cursor of its own.
    intel.cursor = "file".into();
    let errors = intel.validate();
    if !errors.is_empty() {
        return Err(format!(
            "{path}: {}",
            heimdall_asgard_api::describe(&errors)
        ));
    }
    Ok(intel)
}

heimdall_telemetry::service_config! {
    /// Everything the server needs, loaded and validated as one.
    pub struct Config {
        asgard: DevSettings = PREFIX,
        database: StoreConfig = heimdall_store::PREFIX,
        telemetry: TelemetryConfig = heimdall_telemetry::PREFIX,
    }
}

/// The running server's state.
#[derive(Debug)]
struct App {
    settings: DevSettings,
    pool: PgPool,
    started: Instant,
    requests: Family<Vec<(String, String)>, Counter>,
}

fn digest(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A fresh random token (256 bits, hex).
fn new_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An `application/problem+json` answer.
fn problem(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    problem_with(status, code, detail, Vec::new(), None)
}

fn problem_with(
    status: StatusCode,
    code: &str,
    detail: impl Into<String>,
    errors: Vec<FieldError>,
    retry_after_s: Option<u64>,
) -> Response {
    let body = Problem {
        kind: format!("https://asgard.example/problems/{}", code.replace('_', "-")),
        title: status.canonical_reason().unwrap_or("error").into(),
        status: status.as_u16(),
        detail: detail.into(),
        code: code.into(),
        retry_after_s,
        errors,
    };
    let mut resp = (status, serde_json::to_string(&body).unwrap_or_default()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(s) = retry_after_s
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        h.insert(header::RETRY_AFTER, v);
    }
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    resp
}

fn internal(e: impl std::fmt::Display) -> Response {
    warn!(error = %e, "request failed inside the server");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the server could not complete the request; retry later",
    )
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        problem(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

impl App {
    /// New access and refresh tokens for `sensor`.
    async fn issue(&self, sensor: &str) -> Result<TokenResponse, sqlx::Error> {
        let (access, refresh) = (new_token(), new_token());
        let s = &self.settings;
        for (token, kind, ttl) in [
            (&access, "access", s.access_ttl),
            (&refresh, "refresh", s.refresh_ttl),
        ] {
            sqlx::query(
                "INSERT INTO tokens (token_hash, sensor_id, kind, expires_at) \
                 VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            )
            .bind(digest(token.as_bytes()))
            .bind(sensor)
            .bind(kind)
            .bind(ttl.as_secs_f64())
            .execute(&self.pool)
            .await?;
        }
        Ok(TokenResponse {
            access_token: access,
            refresh_token: refresh,
            token_type: "Bearer".into(),
            expires_in: s.access_ttl.as_secs().max(1),
            refresh_expires_in: Some(s.refresh_ttl.as_secs()),
            sensor_id: String::new(),
            intel_poll_interval_s: None,
        })
    }

    /// The sensor a bearer token belongs to, or the answer that refuses it.
    async fn sensor_of(&self, headers: &HeaderMap) -> Result<String, Response> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                problem(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "send Authorization: Bearer <access_token>",
                )
            })?;
        let row: Option<(String, bool, bool)> = sqlx::query_as(
            "SELECT t.sensor_id, t.revoked OR t.expires_at <= now(), s.disabled \
             FROM tokens t JOIN sensors s USING (sensor_id) \
             WHERE t.token_hash = $1 AND t.kind = 'access'",
        )
        .bind(digest(token.trim().as_bytes()))
        .fetch_optional(&self.pool)
        .await
        .map_err(internal)?;
        match row {
            None => Err(problem(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "unknown access token",
            )),
            Some((_, true, _)) => Err(problem(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "the access token expired or was revoked; refresh it",
            )),
            Some((_, _, true)) => Err(problem(
                StatusCode::FORBIDDEN,
                "sensor_disabled",
                "this sensor is disabled",
            )),
            Some((sensor, false, false)) => Ok(sensor),
        }
    }
}

async fn register(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let req: RegisterRequest = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut errors = Vec::new();
    for (field, value) in [
        ("enrollment_token", &req.enrollment_token),
        ("hardware_id", &req.hardware_id),
        ("software_version", &req.software_version),
    ] {
        if value.trim().is_empty() {
            errors.push(FieldError {
                field: field.into(),
                message: "required".into(),
            });
        }
    }
    if !errors.is_empty() {
        return problem_with(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "fields missing",
            errors,
            None,
        );
    }
    let hash = digest(req.enrollment_token.as_bytes());
    let result: Result<Response, sqlx::Error> = async {
        let mut tx = app.pool.begin().await?;
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT sensor_id, hardware_id FROM enrollments WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        let (sensor, status) = match row {
            None => {
                return Ok(problem(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "unknown or expired enrollment token",
                ));
            }
            Some((Some(sensor), Some(hw))) if hw == req.hardware_id => (sensor, StatusCode::OK),
            Some((Some(_), _)) => {
                return Ok(problem(
                    StatusCode::CONFLICT,
                    "enrollment_token_used",
                    "this enrollment token was used by another sensor",
                ));
            }
            Some((None, _)) => {
                let sensor = format!(
                    "sensor-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                sqlx::query("INSERT INTO sensors (sensor_id, hardware_id) VALUES ($1, $2)")
                    .bind(&sensor)
                    .bind(&req.hardware_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE enrollments SET sensor_id = $2, hardware_id = $3, used_at = now() \
                     WHERE token_hash = $1",
                )
                .bind(&hash)
                .bind(&sensor)
                .bind(&req.hardware_id)
                .execute(&mut *tx)
                .await?;
                (sensor, StatusCode::CREATED)
            }
        };
        tx.commit().await?;
        let mut tokens = app.issue(&sensor).await?;
        tokens.sensor_id = sensor.clone();
        tokens.intel_poll_interval_s = Some(app.settings.poll_interval_s);
        info!(sensor = %sensor, status = status.as_u16(), "sensor enrolled");
        Ok((status, axum::Json(tokens)).into_response())
    }
    .await;
    result.unwrap_or_else(internal)
}

async fn refresh(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let req: RefreshRequest = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let hash = digest(req.refresh_token.as_bytes());
    let result: Result<Response, sqlx::Error> = async {
        let row: Option<(String, bool)> = sqlx::query_as(
            "SELECT t.sensor_id, s.disabled FROM tokens t JOIN sensors s USING (sensor_id) \
             WHERE t.token_hash = $1 AND t.kind = 'refresh' AND NOT t.revoked \
             AND t.expires_at > now()",
        )
        .bind(&hash)
        .fetch_optional(&app.pool)
        .await?;
        let sensor = match row {
            Some((sensor, _)) if sensor != req.sensor_id => None,
            Some((_, true)) => {
                return Ok(problem(
                    StatusCode::FORBIDDEN,
                    "sensor_disabled",
                    "this sensor is disabled",
                ));
            }
            Some((sensor, false)) => Some(sensor),
            None => None,
        };
        let Some(sensor) = sensor else {
            return Ok(problem(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the refresh token is unknown, expired or revoked; enroll again",
            ));
        };
        // Rotation: the old refresh token keeps working for five minutes,
        // so a retry after a lost answer still succeeds.
        sqlx::query(
            "UPDATE tokens SET expires_at = least(expires_at, now() + interval '5 minutes') \
             WHERE token_hash = $1",
        )
        .bind(&hash)
        .execute(&app.pool)
        .await?;
        Ok(axum::Json(app.issue(&sensor).await?).into_response())
    }
    .await;
    result.unwrap_or_else(internal)
}

/// Store one upload batch once; the answer says whether it was new.
async fn store_batch(
    app: &App,
    sensor: &str,
    kind: &str,
    header: (&str, &str, usize),
    body: &[u8],
) -> Response {
    let (batch_id, batch_sensor, items) = header;
    let mut errors = Vec::new();
    if batch_id.is_empty() || batch_id.len() > 128 {
        errors.push(FieldError {
            field: "batch_id".into(),
            message: "1 to 128 characters".into(),
        });
    }
    if batch_sensor != sensor {
        errors.push(FieldError {
            field: "sensor_id".into(),
            message: "is not the sensor of the access token".into(),
        });
    }
    if items > MAX_ITEMS {
        errors.push(FieldError {
            field: kind.into(),
            message: format!("at most {MAX_ITEMS} per batch"),
        });
    }
    if !errors.is_empty() {
        return problem_with(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            "the batch fails validation",
            errors,
            None,
        );
    }
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let inserted = sqlx::query(
        "INSERT INTO batches (sensor_id, kind, batch_id, items, body) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
    )
    .bind(sensor)
    .bind(kind)
    .bind(batch_id)
    .bind(items as i32)
    .bind(json)
    .execute(&app.pool)
    .await;
    match inserted {
        Ok(r) => axum::Json(BatchResult {
            batch_id: batch_id.into(),
            status: if r.rows_affected() == 1 {
                "accepted"
            } else {
                "duplicate"
            }
            .into(),
            accepted: if r.rows_affected() == 1 {
                items as u64
            } else {
                0
            },
            server_time_us: now_us(),
        })
        .into_response(),
        Err(e) => internal(e),
    }
}

async fn signatures(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let sensor = match app.sensor_of(&headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match parse::<SignatureBatch>(&body) {
        Ok(b) => {
            let header = (
                b.batch_id.as_str(),
                b.sensor_id.as_str(),
                b.signatures.len(),
            );
            store_batch(&app, &sensor, "signatures", header, &body).await
        }
        Err(r) => r,
    }
}

async fn alerts(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let sensor = match app.sensor_of(&headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match parse::<AlertBatch>(&body) {
        Ok(b) => {
            let header = (b.batch_id.as_str(), b.sensor_id.as_str(), b.alerts.len());
            store_batch(&app, &sensor, "alerts", header, &body).await
        }
        Err(r) => r,
    }
}

/// kind, id, seq, body, removed.
type IntelRow = (String, String, i64, serde_json::Value, bool);

#[derive(Debug, Deserialize)]
struct IntelQuery {
    cursor: Option<String>,
}

async fn intel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<IntelQuery>,
) -> Response {
    if let Err(r) = app.sensor_of(&headers).await {
        return r;
    }
    let since = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match c.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "invalid_cursor",
                    "use the cursor of the previous answer, or none",
                );
            }
        },
    };
    let rows: Result<Vec<IntelRow>, _> = sqlx::query_as(
        "SELECT kind, id, seq, body, removed FROM intel \
         WHERE seq > $1 AND ($2 OR NOT removed) ORDER BY seq LIMIT $3",
    )
    .bind(since.unwrap_or(0))
    .bind(since.is_some())
    .bind(PAGE + 1)
    .fetch_all(&app.pool)
    .await;
    let mut rows = match rows {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let has_more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let cursor = match rows.last() {
        Some(r) => r.2,
        None => since.unwrap_or(0),
    };
    let etag = format!("i{cursor}");
    let quoted = format!("\"{etag}\"");
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == quoted || v.trim() == etag);
    if rows.is_empty() && since.is_some() && unchanged {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&quoted) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        return resp;
    }
    let mut update = IntelUpdate {
        cursor: cursor.to_string(),
        etag: etag.clone(),
        full_snapshot: since.is_none(),
        has_more,
        generated_us: now_us(),
        ..IntelUpdate::default()
    };
    for (kind, id, _, body, removed) in rows {
        match (kind.as_str(), removed) {
            ("profile", true) => update.removed_profile_ids.push(id),
            ("signature", true) => update.removed_signature_ids.push(id),
            ("rule", true) => update.removed_rule_ids.push(id),
            ("profile", false) => update
                .golden_profiles
                .extend(serde_json::from_value(body).ok()),
            ("signature", false) => update
                .threat_signatures
                .extend(serde_json::from_value(body).ok()),
            ("rule", false) => update
                .enforcement_rules
                .extend(serde_json::from_value(body).ok()),
            _ => {}
        }
    }
    let mut resp = axum::Json(update).into_response();
    if let Ok(v) = HeaderValue::from_str(&quoted) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Every request: failures on request, the body bound, then the handler;
/// the request is recorded with its status afterwards.
async fn around(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let s = &app.settings;
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, s.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!(
                    "bodies are at most {} bytes; split the batch",
                    s.max_body_bytes
                ),
            );
        }
    };
    if !s.latency.is_zero() {
        tokio::time::sleep(s.latency).await;
    }
    let since = app.started.elapsed();
    let outage =
        !s.outage_for.is_zero() && since >= s.outage_after && since < s.outage_after + s.outage_for;
    let response = if outage {
        problem_with(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "down on purpose (HEIMDALL_ASGARDDEV_OUTAGE_*)",
            Vec::new(),
            Some(s.retry_after_s),
        )
    } else if s.fail_share > 0.0 && rand::random::<f64>() < s.fail_share {
        let status = StatusCode::from_u16(s.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let retry = (status != StatusCode::INTERNAL_SERVER_ERROR).then_some(s.retry_after_s);
        problem_with(
            status,
            if status == StatusCode::TOO_MANY_REQUESTS {
                "rate_limited"
            } else {
                "unavailable"
            },
            "failing on purpose (HEIMDALL_ASGARDDEV_FAIL_SHARE)",
            Vec::new(),
            retry,
        )
    } else {
        next.run(Request::from_parts(parts, Body::from(bytes.clone())))
            .await
    };
    let status = response.status().as_u16();
    app.requests
        .get_or_create(&vec![
            ("path".into(), path.clone()),
            ("status".into(), status.to_string()),
        ])
        .inc();
    debug!(%method, %path, status, "request");
    let recorded =
        sqlx::query("INSERT INTO requests (method, path, status, body) VALUES ($1, $2, $3, $4)")
            .bind(&method)
            .bind(&path)
            .bind(i32::from(status))
            .bind(String::from_utf8_lossy(&bytes).into_owned())
            .execute(&app.pool)
            .await;
    if let Err(e) = recorded {
        warn!(error = %e, "cannot record a request");
    }
    response
}

/// Add the enrollment tokens of `path` that are not known yet.
async fn add_enrollment_tokens(pool: &PgPool, path: &str) -> anyhow::Result<usize> {
    let mut added = 0;
    for token in load_enrollment_tokens(path).map_err(anyhow::Error::msg)? {
        let r =
            sqlx::query("INSERT INTO enrollments (token_hash) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(digest(token.as_bytes()))
                .execute(pool)
                .await?;
        added += r.rows_affected() as usize;
    }
    Ok(added)
}

/// Store `intel`: new and changed items get a new sequence number, removed
/// ones become tombstones. Returns how many rows changed.
pub async fn load_intel(pool: &PgPool, intel: &IntelUpdate) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut changed = 0;
    let upsert = "INSERT INTO intel (kind, id, body) VALUES ($1, $2, $3) \
                  ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, removed = false, \
                  seq = nextval('intel_seq') \
                  WHERE intel.body IS DISTINCT FROM excluded.body OR intel.removed";
    let items = intel
        .golden_profiles
        .iter()
        .map(|p| ("profile", p.profile_id.clone(), serde_json::to_value(p)))
        .chain(
            intel
                .threat_signatures
                .iter()
                .map(|s| ("signature", s.id.clone(), serde_json::to_value(s))),
        )
        .chain(
            intel
                .enforcement_rules
                .iter()
                .map(|r| ("rule", r.id.clone(), serde_json::to_value(r))),
        );
    for (kind, id, body) in items {
        let body = body.map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        changed += sqlx::query(upsert)
            .bind(kind)
            .bind(id)
            .bind(body)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    let removals = intel
        .removed_profile_ids
        .iter()
        .map(|id| ("profile", id))
        .chain(
            intel
                .removed_signature_ids
                .iter()
                .map(|id| ("signature", id)),
        )
        .chain(intel.removed_rule_ids.iter().map(|id| ("rule", id)));
    for (kind, id) in removals {
        changed += sqlx::query(
            "UPDATE intel SET removed = true, seq = nextval('intel_seq') \
             WHERE kind = $1 AND id = $2 AND NOT removed",
        )
        .bind(kind)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(changed)
}

/// Revoke every access token (sensors must refresh), and with
/// `refresh_too` every refresh token as well (sensors must enroll again).
pub async fn revoke_tokens(pool: &PgPool, refresh_too: bool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE tokens SET revoked = true WHERE NOT revoked AND (kind = 'access' OR $1)",
    )
    .bind(refresh_too)
    .execute(pool)
    .await?
    .rows_affected())
}

/// The settings of a reference server on `listen` with the TLS identity
/// `cert`/`key` and the enrollment tokens in `tokens`, as environment
/// variables (for tests and scripts that start one).
pub fn settings_env(
    listen: SocketAddr,
    cert: &std::path::Path,
    key: &std::path::Path,
    tokens: &std::path::Path,
) -> Vec<(String, String)> {
    [
        ("LISTEN", listen.to_string()),
        ("TLS_CERT_FILE", cert.display().to_string()),
        ("TLS_KEY_FILE", key.display().to_string()),
        ("ENROLLMENT_TOKENS_FILE", tokens.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{PREFIX}{k}"), v))
    .collect()
}

/// The server's schema, migrated, from the `HEIMDALL_DATABASE_*` settings
/// alone (for the operator's subcommands).
pub async fn open_database() -> anyhow::Result<PgPool> {
    Ok(heimdall_store::open_from_env(SCHEMA, &MIGRATIONS).await?)
}

/// TLS on accepted connections, for `axum::serve`. A failed or slow
/// handshake drops that connection only.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => debug!(%addr, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%addr, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

fn tls_acceptor(s: &DevSettings) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&s.tls_cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{PREFIX}TLS_CERT_FILE {}: {e}", s.tls_cert_file))?;
    let key = PrivateKeyDer::from_pem_file(&s.tls_key_file)
        .map_err(|e| anyhow::anyhow!("{PREFIX}TLS_KEY_FILE {}: {e}", s.tls_key_file))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The API's routes over `app`.
fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/sensors/register", post(register))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/signatures", post(signatures))
        .route("/v1/alerts", post(alerts))
        .route("/v1/intel", get(intel))
        .layer(axum::middleware::from_fn_with_state(app.clone(), around))
        .with_state(app)
}

/// Run until `shutdown`: telemetry on `listener`, the API on
/// `settings.listen`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let served =
        heimdall_telemetry::Served::start(listener, &["database", "https"], shutdown.clone());
    let (metrics, health) = (served.metrics.clone(), served.health.clone());
    let pool = heimdall_store::open(&config.database, SCHEMA, &MIGRATIONS).await?;
    let s = config.asgard.clone();
    let added = add_enrollment_tokens(&pool, &s.enrollment_tokens_file).await?;
    if !s.intel_file.is_empty() {
        let intel = read_intel(&s.intel_file).map_err(anyhow::Error::msg)?;
        let changed = load_intel(&pool, &intel).await?;
        info!(file = %s.intel_file, changed, "intelligence loaded");
    }
    health.ready(
        "database",
        format!("migrated; {added} new enrollment tokens"),
    );
    let app = Arc::new(App {
        settings: s.clone(),
        pool,
        started: Instant::now(),
        requests: Family::default(),
    });
    metrics.register(
        "asgard_dev_requests",
        "Requests by path and status",
        app.requests.clone(),
    );
    let tcp = TcpListener::bind(s.listen).await?;
    let addr = tcp.local_addr()?;
    let tls = !s.tls_cert_file.is_empty();
    health.ready("https", format!("listening on {addr}"));
    info!(%addr, tls, "asgard reference server ready");
    let stop = shutdown.clone().cancelled_owned();
    if tls {
        let listener = TlsListener {
            tcp,
            acceptor: tls_acceptor(&s)?,
        };
        axum::serve(listener, router(app))
            .with_graceful_shutdown(stop)
            .await?;
    } else {
        axum::serve(tcp, router(app))
            .with_graceful_shutdown(stop)
            .await?;
    }
    shutdown.cancel();
    served.finish().await?;
    Ok(())
}
