//! The start-up every consumer service shares: settings loaded and checked
//! (exit 2 on a problem), `--print-config`, logs and traces, the telemetry
//! listener, SIGTERM turned into a shutdown token.

use std::future::Future;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Error, Health, Metrics, TelemetryConfig};

/// A service's settings, loaded from the environment as one.
pub trait ServiceConfig: Sized {
    /// Every section from `loader`, all problems reported at once.
    fn load(loader: heimdall_config::Loader) -> Result<Self, heimdall_config::Error>;
    /// The effective settings, secrets redacted (`--print-config`).
    fn render(&self) -> String;
    /// The telemetry section.
    fn telemetry(&self) -> &TelemetryConfig;
}

/// The body of a service's `main`: loads `C` from the environment (a
/// problem is printed and the process exits with 2), prints it and returns
/// on `--print-config`, sets up logs and traces as `name`, binds the
/// telemetry listener, and calls `run` with a token cancelled on SIGTERM or
/// Ctrl-C.
#[allow(clippy::print_stdout, clippy::print_stderr)] // the settings and their problems are the output
pub async fn service_main<C, F, Fut>(name: &'static str, run: F) -> anyhow::Result<()>
where
    C: ServiceConfig,
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = match heimdall_config::Loader::from_env().and_then(C::load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        }
    };
    if std::env::args().any(|a| a == "--print-config") {
        print!("{}", config.render());
        return Ok(());
    }
    let _guard = crate::init(name, config.telemetry())?;
    let listener = TcpListener::bind(config.telemetry().listen).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::terminated().await;
        signal.cancel();
    });
    run(config, listener, shutdown).await
}

/// The telemetry listener of a running service, with the registry and the
/// health its components report to.
#[derive(Debug)]
pub struct Served {
    /// The process's metrics registry.
    pub metrics: Metrics,
    /// Liveness and readiness.
    pub health: Health,
    task: JoinHandle<Result<(), Error>>,
}

impl Served {
    /// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until
    /// `shutdown`, with `components` registered (not ready) in the health.
    pub fn start(
        listener: TcpListener,
        components: &[&str],
        shutdown: CancellationToken,
    ) -> Served {
        Served::start_with(listener, components, axum::Router::new(), shutdown)
    }

    /// [`Served::start`], with the service's own operator routes (`extra`)
    /// on the same listener.
    pub fn start_with(
        listener: TcpListener,
        components: &[&str],
        extra: axum::Router,
        shutdown: CancellationToken,
    ) -> Served {
        let metrics = Metrics::new();
        let health = Health::new();
        for c in components {
            health.register(c);
        }
        let task = tokio::spawn(crate::server::serve_with(
            listener,
            metrics.clone(),
            health.clone(),
            extra,
            shutdown,
        ));
        Served {
            metrics,
            health,
            task,
        }
    }

    /// Waits for the listener to end (after the shutdown token fired).
    pub async fn finish(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}

/// Declares a service's settings: a struct with one field per section, each
/// with its variable prefix, implementing [`ServiceConfig`] (load every
/// section and report all problems at once; render them with secrets
/// redacted). The struct needs a `telemetry` field.
///
/// ```text
/// heimdall_telemetry::service_config! {
///     /// Everything the bridge needs.
///     pub struct Config {
///         asgard: BridgeSettings = PREFIX,
///         nats: BusConfig = heimdall_bus::PREFIX,
///         telemetry: TelemetryConfig = heimdall_telemetry::PREFIX,
///     }
/// }
/// ```
#[macro_export]
macro_rules! service_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* $field:ident : $ty:ty = $prefix:expr),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty),+
        }

        impl $crate::ServiceConfig for $name {
            fn load(
                mut loader: $crate::__config::Loader,
            ) -> Result<Self, $crate::__config::Error> {
                let config = $name {
                    $($field: loader.section($prefix)),+
                };
                loader.finish().map(|()| config)
            }

            fn render(&self) -> String {
                [$($crate::__config::render($prefix, &self.$field)),+].concat()
            }

            fn telemetry(&self) -> &$crate::TelemetryConfig {
                &self.telemetry
            }
        }
    };
}
