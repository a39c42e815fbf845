//! Talking to Asgard: enrollment, tokens, and calls that recover from an
//! expired token by themselves.
//!
//! A data call that gets 401 refreshes the access token once and tries
//! again; a refresh that gets 401 enrolls again (same enrollment token, same
//! hardware id: the same sensor id) and tries again. Credentials live in
//! `STATE_DIR/credentials.json`, mode 0600, written atomically; they never
//! reach a log, an error or `Debug` output.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heimdall_asgard_api::{IntelUpdate, Problem, RefreshRequest, RegisterRequest, TokenResponse};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::BridgeSettings;

/// Why a call did not succeed, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Try again later (network, 5xx, 429, 503), at least `wait` if given.
    Retry {
        wait: Option<Duration>,
        reason: String,
    },
    /// Asgard will never take this request as it is (400, 413, 410, 422).
    Refused { status: u16, reason: String },
    /// The sensor is disabled (403): keep everything, do not retry soon.
    Disabled(String),
    /// Neither refresh nor enrollment worked: an operator must act.
    Unauthorized(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Retry { reason, .. } => write!(f, "{reason} (will retry)"),
            CallError::Refused { status, reason } => write!(f, "refused with {status}: {reason}"),
            CallError::Disabled(r) => write!(f, "the sensor is disabled at Asgard: {r}"),
            CallError::Unauthorized(r) => write!(f, "{r}"),
        }
    }
}

/// What the sensor holds after enrolling. Secrets: `Debug` shows the
/// sensor id only.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub sensor_id: String,
    access_token: String,
    refresh_token: String,
    /// When to refresh (unix seconds): four fifths into the token's life.
    refresh_at: i64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("sensor_id", &self.sensor_id)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Credentials {
    fn from_tokens(sensor_id: String, t: TokenResponse) -> Self {
        Credentials {
            sensor_id,
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            refresh_at: unix_now() + (t.expires_in as i64 * 4 / 5).max(1),
        }
    }
}

/// The one Asgard client of the process.
#[derive(Debug)]
pub struct Asgard {
    http: reqwest::Client,
    base: String,
    settings: BridgeSettings,
    creds: Mutex<Option<Credentials>>,
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The problem's detail (or the status) for logs: never the request.
async fn reason(resp: reqwest::Response) -> String {
    let status = resp.status();
    match resp.json::<Problem>().await {
        Ok(p) if !p.detail.is_empty() => format!("{status}: {} ({})", p.detail, p.code),
        _ => status.to_string(),
    }
}

/// A transport failure, described without the URL's query.
fn network(e: reqwest::Error) -> CallError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    CallError::Retry {
        wait: None,
        reason: format!("Asgard {kind}: {}", e.without_url()),
    }
}

/// The answer's status as a `CallError` (anything but 2xx/304/401).
async fn classify(resp: reqwest::Response) -> CallError {
    let status = resp.status();
    let wait = retry_after(&resp);
    let why = reason(resp).await;
    match status {
        StatusCode::FORBIDDEN => CallError::Disabled(why),
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::GONE
        | StatusCode::CONFLICT => CallError::Refused {
            status: status.as_u16(),
            reason: why,
        },
        _ => CallError::Retry { wait, reason: why },
    }
}

impl Asgard {
    /// A client for `settings` (the CA file read now).
    pub fn new(settings: &BridgeSettings) -> anyhow::Result<Self> {
        let mut b = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!(
                "heimdall-asgard-bridge/",
                env!("CARGO_PKG_VERSION")
            ));
        if !settings.ca_file.is_empty() {
            let pem = std::fs::read(&settings.ca_file).map_err(|e| {
                anyhow::anyhow!("{}CA_FILE {}: {e}", crate::PREFIX, settings.ca_file)
            })?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(Asgard {
            http: b.build()?,
            base: settings.url.trim_end_matches('/').to_string(),
            settings: settings.clone(),
            creds: Mutex::new(None),
        })
    }

    fn creds_path(&self) -> PathBuf {
        PathBuf::from(&self.settings.state_dir).join("credentials.json")
    }

    fn save(&self, c: &Credentials) -> std::io::Result<()> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.creds_path();
        let tmp = path.with_extension("json.tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(&serde_json::to_vec(c).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    fn load(&self) -> Option<Credentials> {
        let bytes = std::fs::read(self.creds_path()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn hardware_id(&self) -> String {
        if !self.settings.hardware_id.is_empty() {
            return self.settings.hardware_id.clone();
        }
        std::fs::read_to_string("/etc/machine-id")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown-hardware".into())
    }

    /// Enroll with the enrollment token (again, after a refused refresh).
    async fn register(&self) -> Result<Credentials, CallError> {
        let token = std::fs::read_to_string(&self.settings.enrollment_token_file)
            .map(|t| t.trim().to_string())
            .map_err(|e| {
                CallError::Unauthorized(format!(
                    "cannot read HEIMDALL_ASGARD_ENROLLMENT_TOKEN_FILE {}: {e}",
                    self.settings.enrollment_token_file
                ))
            })?;
        let body = RegisterRequest {
            enrollment_token: token,
            hardware_id: self.hardware_id(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            platform: std::env::consts::OS.into(),
            capabilities: vec!["signatures".into(), "alerts".into(), "intel".into()],
        };
        let resp = self
            .http
            .post(format!("{}/v1/sensors/register", self.base))
            .json(&body)
            .send()
            .await
            .map_err(network)?;
        match resp.status() {
            StatusCode::OK | StatusCode::CREATED => {
                let t: TokenResponse = resp.json().await.map_err(network)?;
                let c = Credentials::from_tokens(t.sensor_id.clone(), t);
                if let Err(e) = self.save(&c) {
                    warn!(error = %e, "cannot store the credentials; enrolling again at next start");
                }
                info!(sensor = %c.sensor_id, "enrolled with Asgard");
                Ok(c)
            }
            StatusCode::UNAUTHORIZED | StatusCode::CONFLICT => {
                Err(CallError::Unauthorized(format!(
                    "Asgard refused the enrollment token ({}): put a valid one in HEIMDALL_ASGARD_ENROLLMENT_TOKEN_FILE; data stays queued",
                    reason(resp).await
                )))
            }
            _ => Err(classify(resp).await),
        }
    }

    /// New tokens with the refresh token; enroll again if it is refused.
    async fn refresh(&self, c: &Credentials) -> Result<Credentials, CallError> {
        let resp = self
            .http
            .post(format!("{}/v1/auth/refresh", self.base))
            .json(&RefreshRequest {
                sensor_id: c.sensor_id.clone(),
                refresh_token: c.refresh_token.clone(),
            })
            .send()
            .await
            .map_err(network)?;
        match resp.status() {
            StatusCode::OK => {
                let t: TokenResponse = resp.json().await.map_err(network)?;
                let fresh = Credentials::from_tokens(c.sensor_id.clone(), t);
                if let Err(e) = self.save(&fresh) {
                    warn!(error = %e, "cannot store the refreshed credentials");
                }
                Ok(fresh)
            }
            StatusCode::UNAUTHORIZED => {
                warn!("Asgard refused the refresh token; enrolling again");
                self.register().await
            }
            _ => Err(classify(resp).await),
        }
    }

    /// Valid credentials: loaded, enrolled, or refreshed when due.
    async fn current(&self) -> Result<Credentials, CallError> {
        let mut guard = self.creds.lock().await;
        let c = match guard.take().or_else(|| self.load()) {
            Some(c) if c.refresh_at > unix_now() => c,
            Some(c) => self.refresh(&c).await?,
            None => self.register().await?,
        };
        *guard = Some(c.clone());
        Ok(c)
    }

    /// After a 401 with `stale`: refresh (or enroll) unless another call
    /// already did.
    async fn recover(&self, stale: &Credentials) -> Result<Credentials, CallError> {
        let mut guard = self.creds.lock().await;
        if let Some(c) = guard.as_ref()
            && c.access_token != stale.access_token
        {
            return Ok(c.clone());
        }
        let c = self.refresh(stale).await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// The sensor id Asgard gave this sensor (enrolling if needed).
    pub async fn sensor_id(&self) -> Result<String, CallError> {
        Ok(self.current().await?.sensor_id)
    }

    /// Send one request built by `build` with the access token; on 401,
    /// recover once and send it again.
    async fn call(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        let mut c = self.current().await?;
        for attempt in 0..2 {
            let resp = build(&c.access_token).send().await.map_err(network)?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if attempt == 0 {
                info!("access token refused; refreshing");
                c = self.recover(&c).await?;
            }
        }
        Err(CallError::Unauthorized(
            "Asgard refused fresh credentials; data stays queued".into(),
        ))
    }

    /// POST `body` to `path`; the decoded answer.
    pub async fn post<T: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R, CallError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .call(|token| self.http.post(&url).bearer_auth(token).json(body))
            .await?;
        if resp.status().is_success() {
            resp.json().await.map_err(network)
        } else {
            Err(classify(resp).await)
        }
    }

    /// Intelligence since `cursor`; `None` when `etag` is still current.
    pub async fn intel(&self, cursor: &str, etag: &str) -> Result<Option<IntelUpdate>, CallError> {
        let url = if cursor.is_empty() {
            format!("{}/v1/intel", self.base)
        } else {
            format!("{}/v1/intel?cursor={cursor}", self.base)
        };
        let resp = self
            .call(|token| {
                let r = self.http.get(&url).bearer_auth(token);
                if etag.is_empty() {
                    r
                } else {
                    r.header(reqwest::header::IF_NONE_MATCH, format!("\"{etag}\""))
                }
            })
            .await?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => Ok(None),
            s if s.is_success() => resp.json().await.map(Some).map_err(network),
            _ => Err(classify(resp).await),
        }
    }
}
