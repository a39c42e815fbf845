//! Logs, traces, metrics and health for every Heimdall service, set up the
//! same way everywhere.
//!
//! What this crate promises:
//! - [`init`] installs one `tracing` subscriber: human or JSON lines on stderr,
//!   filtered by `HEIMDALL_TELEMETRY_LOG` (RUST_LOG syntax), and, when an OTLP
//!   endpoint is configured (`HEIMDALL_TELEMETRY_OTLP_ENDPOINT` or the standard
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`), every span exported over OTLP/gRPC. The W3C
//!   trace-context propagator is always installed, so a span's context can be
//!   carried across NATS by `heimdall-bus`.
//! - [`Metrics`] is the one Prometheus registry of a process; components
//!   register their counters and gauges into it at start.
//! - [`Health`] holds liveness and per-component readiness.
//! - [`serve`] runs the small HTTP listener every service has: `/metrics`
//!   (Prometheus text), `/healthz` (alive) and `/readyz` (ready, with the state
//!   of each component as JSON). The caller hands in the listener and the
//!   shutdown token, so tests bind port 0 and stop it cleanly; [`Served`]
//!   starts it with the service's components registered.
//! - [`service_main`] is the `main` every consumer service shares: settings
//!   from the environment (exit 2 with every problem listed),
//!   `--print-config`, logs and traces, the listener, SIGTERM as shutdown.

use std::net::SocketAddr;

use heimdall_config::{Problem, Validate};
use serde::{Deserialize, Serialize};

#[doc(hidden)]
pub use heimdall_config as __config;
mod health;
mod metrics;
mod server;
mod service;
mod tracing_setup;

pub use health::{Health, Readiness};
pub use metrics::Metrics;
pub use server::{serve, terminated};
pub use service::{Served, ServiceConfig, service_main};
pub use tracing_setup::{Guard, init, init_with_provider, otel_layer};

/// The variable prefix of [`TelemetryConfig`].
pub const PREFIX: &str = "HEIMDALL_TELEMETRY_";

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for collectors (the default in containers).
    Json,
    /// Readable lines for a terminal.
    #[default]
    Human,
}

/// Telemetry settings, shared by every service (`HEIMDALL_TELEMETRY_*`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// `HEIMDALL_TELEMETRY_LOG_FORMAT`: `human` (default) or `json`.
    pub log_format: LogFormat,
    /// `HEIMDALL_TELEMETRY_LOG`: which events to log, in `RUST_LOG` syntax.
    /// Default `info`.
    pub log: String,
    /// `HEIMDALL_TELEMETRY_LISTEN`: address of the `/metrics`, `/healthz` and
    /// `/readyz` listener. Default `127.0.0.1:9090`; use `0.0.0.0:9090` in a
    /// container. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// `HEIMDALL_TELEMETRY_OTLP_ENDPOINT`: where to send traces over OTLP/gRPC,
    /// e.g. `http://otel-collector:4317`. Unset: the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is used if set; if neither is set, spans
    /// are not exported.
    pub otlp_endpoint: Option<String>,
    /// `HEIMDALL_TELEMETRY_TRACE_FILTER`: which spans are exported, in
    /// `RUST_LOG` syntax, independent of the log filter. Default `info`.
    pub trace_filter: String,
    /// `HEIMDALL_TELEMETRY_TRACE_SAMPLE_RATIO`: share of new traces recorded,
    /// 0.0 to 1.0. Default 1.0; traces started elsewhere follow their parent.
    pub trace_sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Human,
            log: "info".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            otlp_endpoint: None,
            trace_filter: "info".into(),
            trace_sample_ratio: 1.0,
        }
    }
}

impl Validate for TelemetryConfig {
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>) {
        for (name, filter) in [("LOG", &self.log), ("TRACE_FILTER", &self.trace_filter)] {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
                problems.push(Problem {
                    variable: format!("{prefix}{name}"),
                    message: format!("not a valid filter: {e}"),
                });
            }
        }
        if let Some(ep) = &self.otlp_endpoint {
            heimdall_config::check::url(
                problems,
                format!("{prefix}OTLP_ENDPOINT"),
                ep,
                &["http", "https"],
            );
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            problems.push(Problem {
                variable: format!("{prefix}TRACE_SAMPLE_RATIO"),
                message: format!(
                    "{} is out of range; use 0.0 to 1.0",
                    self.trace_sample_ratio
                ),
            });
        }
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OTLP exporter could not be built (bad endpoint, TLS setup).
    #[error("cannot set up OTLP trace export: {0}")]
    Otlp(String),
    /// A global subscriber was already installed in this process.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
    /// The log filter does not parse.
    #[error("bad log filter: {0}")]
    Filter(String),
    /// The health/metrics listener failed.
    #[error("telemetry listener failed: {0}")]
    Serve(#[from] std::io::Error),
}
