//! The reference Asgard server over HTTPS on 127.0.0.1 with the real
//! PostgreSQL, spoken to by a real HTTP client (reqwest, rustls): the
//! contract of proto/asgard/v1/openapi.yaml, call by call.

use std::path::PathBuf;

use heimdall_asgard_api::{
    BatchResult, IntelUpdate, Problem, RefreshRequest, RegisterRequest, SignatureBatch,
    ThreatSignature, TokenResponse,
};
use heimdall_store::testing::TestDb;
use heimdall_telemetry::ServiceConfig;
use heimdall_tests::{process, tls};
use reqwest::StatusCode;
use serde_json::json;

struct Server {
    _dir: tempfile::TempDir,
    db: TestDb,
    base: String,
    client: reqwest::Client,
    tokens: Vec<String>,
    stop: tokio_util::sync::CancellationToken,
}

impl Server {
    async fn start(extra: &[(&str, &str)]) -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let path: PathBuf = dir.path().to_path_buf();
        let pki = tls::make(&path).expect("test certificates (openssl; make setup installs it)");
        let tokens: Vec<String> = (0..3)
            .map(|i| format!("enroll-{i}-{}", uuid::Uuid::new_v4().simple()))
            .collect();
        std::fs::write(path.join("enroll"), tokens.join("\n")).expect("tokens");
        let db = TestDb::new()
            .await
            .expect("PostgreSQL must be running (make setup)");
        let https = process::free_port().expect("port");
        let telemetry = process::free_port().expect("port");
        let mut env = heimdall_asgard_dev::settings_env(
            https,
            &pki.server_cert,
            &pki.server_key,
            &path.join("enroll"),
        );
        env.push(("HEIMDALL_DATABASE_URL".into(), db.url().to_string()));
        env.push(("HEIMDALL_TELEMETRY_LISTEN".into(), telemetry.to_string()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let loader = heimdall_config::Loader::from_parts(env, None).expect("settings");
        let config = heimdall_asgard_dev::Config::load(loader).expect("settings");
        let stop = process::serve_in_thread(telemetry, move |listener, stop| {
            heimdall_asgard_dev::run(config, listener, stop)
        })
        .await;
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_cert).expect("ca")).expect("ca");
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .expect("client");
        Server {
            _dir: dir,
            db,
            base: format!("https://localhost:{}", https.port()),
            client,
            tokens,
            stop,
        }
    }

    async fn pool(&self) -> sqlx::PgPool {
        heimdall_store::connect(self.db.config(), heimdall_asgard_dev::SCHEMA)
            .await
            .expect("pool")
    }

    async fn register(&self, token: &str, hw: &str) -> (StatusCode, String) {
        let r = self
            .client
            .post(format!("{}/v1/sensors/register", self.base))
            .json(&RegisterRequest {
                enrollment_token: token.into(),
                hardware_id: hw.into(),
                software_version: "test".into(),
                ..Default::default()
            })
            .send()
            .await
            .expect("register");
        (r.status(), r.text().await.expect("body"))
    }

    async fn upload(&self, access: &str, batch: &SignatureBatch) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/signatures", self.base))
            .bearer_auth(access)
            .json(batch)
            .send()
            .await
            .expect("upload")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn batch(id: &str, sensor: &str) -> SignatureBatch {
    serde_json::from_value(json!({
        "batch_id": id, "sensor_id": sensor, "created_us": 1,
        "signatures": [{"anon_device_id": "d1", "device_type": "smart_plug",
                        "window_start_us": 0, "window_end_us": 1, "features": {}}]
    }))
    .expect("batch")
}

fn problem(text: &str) -> Problem {
    serde_json::from_str(text).expect("problem+json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_uploads_and_refresh_follow_the_contract() {
    let s = Server::start(&[("HEIMDALL_ASGARDDEV_MAX_BODY_BYTES", "65536")]).await;
    let (status, body) = s.register("no-such-token", "hw-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem(&body).code, "invalid_token");

    let (status, body) = s.register(&s.tokens[0], "hw-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first: TokenResponse = serde_json::from_str(&body).expect("tokens");
    assert!(first.sensor_id.starts_with("sensor-"));
    assert_eq!(first.token_type, "Bearer");
    assert_eq!(first.intel_poll_interval_s, Some(300));
    // A retry after a lost answer: the same sensor, new tokens.
    let (status, body) = s.register(&s.tokens[0], "hw-1").await;
    assert_eq!(status, StatusCode::OK);
    let again: TokenResponse = serde_json::from_str(&body).expect("tokens");
    assert_eq!(again.sensor_id, first.sensor_id);
    assert_ne!(again.access_token, first.access_token);
    let (status, body) = s.register(&s.tokens[0], "hw-2").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem(&body).code, "enrollment_token_used");

    // Uploads: stored once, duplicates recognised, bad ones explained.
    let sensor = first.sensor_id.clone();
    let r = s.upload(&first.access_token, &batch("b-1", &sensor)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let res: BatchResult = r.json().await.expect("result");
    assert_eq!((res.status.as_str(), res.accepted), ("accepted", 1));
    let res: BatchResult = s
        .upload(&again.access_token, &batch("b-1", &sensor))
        .await
        .json()
        .await
        .expect("result");
    assert_eq!((res.status.as_str(), res.accepted), ("duplicate", 0));
    let r = s
        .upload(&first.access_token, &batch("b-2", "someone-else"))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let p = problem(&r.text().await.expect("body"));
    assert_eq!(p.errors[0].field, "sensor_id");
    let r = s.upload("not-a-token", &batch("b-3", &sensor)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let mut big = batch("b-4", &sensor);
    big.signatures[0].vendor = "x".repeat(70_000);
    let r = s.upload(&first.access_token, &big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Access tokens revoked: 401 token_expired, a refresh brings a new one.
    let pool = s.pool().await;
    heimdall_asgard_dev::revoke_tokens(&pool, false)
        .await
        .expect("revoke");
    let r = s.upload(&first.access_token, &batch("b-5", &sensor)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        problem(&r.text().await.expect("body")).code,
        "token_expired"
    );
    let refresh = |token: String| {
        let (client, base, sensor) = (s.client.clone(), s.base.clone(), sensor.clone());
        async move {
            client
                .post(format!("{base}/v1/auth/refresh"))
                .json(&RefreshRequest {
                    sensor_id: sensor,
                    refresh_token: token,
                })
                .send()
                .await
                .expect("refresh")
        }
    };
    let r = refresh(again.refresh_token.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let fresh: TokenResponse = r.json().await.expect("tokens");
    let r = s.upload(&fresh.access_token, &batch("b-5", &sensor)).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Refresh tokens revoked too: the sensor must enroll again.
    heimdall_asgard_dev::revoke_tokens(&pool, true)
        .await
        .expect("revoke");
    let r = refresh(fresh.refresh_token.clone()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = s.register(&s.tokens[0], "hw-1").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "enrolling again with the same token works"
    );

    // Every body is kept as received, tokens nowhere in clear.
    let stored: Vec<(String, i32, String)> =
        sqlx::query_as("SELECT path, status, body FROM requests ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("requests");
    assert!(
        stored
            .iter()
            .any(|(p, st, b)| p == "/v1/signatures" && *st == 200 && b.contains("b-1"))
    );
    let tokens: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM tokens")
        .fetch_all(&pool)
        .await
        .expect("tokens");
    assert!(tokens.iter().all(|t| t.len() == 32), "digests only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intelligence_comes_as_snapshot_then_deltas_with_etags() {
    let s = Server::start(&[]).await;
    let (_, body) = s.register(&s.tokens[1], "hw-9").await;
    let t: TokenResponse = serde_json::from_str(&body).expect("tokens");
    let pool = s.pool().await;
    let sig = |id: &str, value: &str| ThreatSignature {
        id: id.into(),
        kind: "domain".into(),
        value: value.into(),
        severity: "high".into(),
        ..Default::default()
    };
    let first = IntelUpdate {
        threat_signatures: vec![sig("sig-1", "evil.example"), sig("sig-2", "worse.example")],
        ..Default::default()
    };
    heimdall_asgard_dev::load_intel(&pool, &first)
        .await
        .expect("load");
    let get = |cursor: Option<String>, etag: Option<String>| {
        let (client, base, token) = (s.client.clone(), s.base.clone(), t.access_token.clone());
        async move {
            let url = match cursor {
                Some(c) => format!("{base}/v1/intel?cursor={c}"),
                None => format!("{base}/v1/intel"),
            };
            let mut r = client.get(url).bearer_auth(token);
            if let Some(e) = etag {
                r = r.header("If-None-Match", e);
            }
            r.send().await.expect("intel")
        }
    };
    let r = get(None, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().expect("etag").to_string();
    let snap: IntelUpdate = r.json().await.expect("json");
    assert!(snap.full_snapshot && !snap.has_more);
    assert_eq!(snap.threat_signatures.len(), 2);
    assert_eq!(etag, format!("\"{}\"", snap.etag));
    // Nothing changed: 304.
    let r = get(Some(snap.cursor.clone()), Some(etag.clone())).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // A change: only the delta, removals as ids; loading it twice changes
    // nothing more.
    let change = IntelUpdate {
        threat_signatures: vec![sig("sig-3", "new.example")],
        removed_signature_ids: vec!["sig-1".into()],
        ..Default::default()
    };
    assert_eq!(
        heimdall_asgard_dev::load_intel(&pool, &change)
            .await
            .expect("load"),
        2
    );
    assert_eq!(
        heimdall_asgard_dev::load_intel(&pool, &change)
            .await
            .expect("load"),
        0
    );
    let delta: IntelUpdate = get(Some(snap.cursor.clone()), Some(etag))
        .await
        .json()
        .await
        .expect("json");
    assert!(!delta.full_snapshot);
    let ids: Vec<&str> = delta
        .threat_signatures
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(ids, ["sig-3"]);
    assert_eq!(delta.removed_signature_ids, ["sig-1"]);
    assert!(delta.validate().is_empty());
    let r = get(Some("yesterday".into()), None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_fails_on_request_with_retry_after() {
    let s = Server::start(&[
        ("HEIMDALL_ASGARDDEV_FAIL_SHARE", "1"),
        ("HEIMDALL_ASGARDDEV_FAIL_STATUS", "429"),
        ("HEIMDALL_ASGARDDEV_RETRY_AFTER_S", "7"),
    ])
    .await;
    let r = s
        .client
        .post(format!("{}/v1/sensors/register", s.base))
        .json(&json!({}))
        .send()
        .await
        .expect("call");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "7");
    let p = problem(&r.text().await.expect("body"));
    assert_eq!(
        (p.code.as_str(), p.retry_after_s),
        ("rate_limited", Some(7))
    );
}
