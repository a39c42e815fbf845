//! The per-service HTTP listener: `/metrics`, `/healthz`, `/readyz`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Error, Health, Metrics};

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Health,
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`
/// is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    serve_with(listener, metrics, health, Router::new(), shutdown).await
}

/// [`serve`], with a service's own operator routes (`extra`) beside the
/// telemetry ones.
pub async fn serve_with(
    listener: TcpListener,
    metrics: Metrics,
    health: Health,
    extra: Router,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
        .merge(extra);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn healthz(State(s): State<AppState>) -> Response {
    match s.health.dead() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("dead: {why}\n")).into_response(),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    let (ready, components) = s.health.readiness();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({ "ready": ready, "components": components })),
    )
        .into_response()
}

/// Resolves on SIGTERM or Ctrl-C, whichever comes first: every service's
/// `main` turns it into its shutdown token.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A minimal HTTP/1.0 GET, enough to read status and body.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        let code = buf[9..12].parse().expect("status code");
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    #[tokio::test]
    async fn endpoints_report_metrics_liveness_and_readiness() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Metrics::new();
        let records: Counter = Counter::default();
        metrics.register("records", "Records handled", records.clone());
        let health = Health::new();
        health.register("nats");
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, metrics, health.clone(), stop.clone()));

        records.inc_by(42);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("heimdall_records_total 42"), "{body}");

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(
            body.contains(r#""nats":{"detail":"starting","ready":false}"#),
            "{body}"
        );

        health.ready("nats", "connected to nats://127.0.0.1:4222");
        assert_eq!(get(addr, "/readyz").await.0, 200);

        health.set_dead("disk full");
        assert_eq!(get(addr, "/healthz").await.0, 503);
        assert_eq!(get(addr, "/readyz").await.0, 503);

        stop.cancel();
        server.await.expect("join").expect("clean shutdown");
    }
}
