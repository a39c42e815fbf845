//! The capture service: the one process that sees packets.
//!
//! It opens a network interface through libpcap (or reads capture files),
//! gives up its privileges as soon as the handle is open, runs the engine on
//! a plain thread, and publishes finished connection and DNS records in
//! batches on JetStream (`sensor.<id>.flows.p<n>`, `sensor.<id>.dns.p<n>`).
//! What it promises:
//! - No record is lost silently. While NATS is unreachable records wait in
//!   a bounded buffer and go out, in order and with stable batch ids, when it
//!   returns; past the bound the oldest are dropped and counted. Packets the
//!   kernel or the interface dropped are read from libpcap and counted.
//! - SIGTERM logs every open connection and publishes it before exit (within
//!   `HEIMDALL_CAPTURE_SHUTDOWN_GRACE`; what is left then is counted).
//! - The interface going down or away does not stop the service: it opens
//!   the interface again with backoff and says so in logs, metrics and
//!   `/readyz`.
//! - It keeps no privilege it does not need (see [`privileges`]).
//! - The windowed schedule analyzes only packets inside its windows.
//! - With `HEIMDALL_CAPTURE_STEERING=enigma` it follows Enigma's capture
//!   settings (schedule, filter, snap length, interface) without a restart,
//!   and refuses settings that cannot apply whole, leaving the capture as it
//!   was (see [`steer`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use heimdall_bus::{BusConfig, Subjects};
use heimdall_config::Loader;
use heimdall_telemetry::{Health, Metrics, TelemetryConfig};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub mod archive;
pub mod driver;
pub mod metrics;
pub mod outbox;
pub mod pktmon;
pub mod privileges;
mod publish;
pub mod settings;
pub mod source;
pub mod steer;
pub mod tcpdump;

pub use driver::{Ended, Schedule};
pub use settings::CaptureSettings;
use source::{FileSource, LiveOptions, LiveSource, Source};

/// Everything the capture service needs, loaded and validated as one.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub capture: CaptureSettings,
    pub nats: BusConfig,
    pub telemetry: TelemetryConfig,
}

impl Config {
    /// Load every section from `loader`, reporting all problems at once.
    pub fn load(mut loader: Loader) -> Result<Self, heimdall_config::Error> {
        let config = Config {
            capture: loader.section(settings::PREFIX),
            nats: loader.section(heimdall_bus::PREFIX),
            telemetry: loader.section(heimdall_telemetry::PREFIX),
        };
        loader.finish().map(|()| config)
    }

    /// The effective configuration with secrets redacted.
    pub fn render(&self) -> String {
        [
            heimdall_config::render(settings::PREFIX, &self.capture),
            heimdall_config::render(heimdall_bus::PREFIX, &self.nats),
            heimdall_config::render(heimdall_telemetry::PREFIX, &self.telemetry),
        ]
        .concat()
    }
}

/// How long a live read waits before the engine's timers get the wall clock.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Open the configured source. For an interface this needs CAP_NET_RAW;
/// call it before [`privileges::drop_privileges`].
pub fn open_source(s: &CaptureSettings) -> Result<Box<dyn Source>, source::Error> {
    Ok(match s.source {
        settings::SourceKind::Interface => Box::new(LiveSource::open(LiveOptions {
            interface: s.interface.clone(),
            snaplen: s.snaplen,
            promisc: s.promisc,
            immediate: s.immediate,
            buffer_bytes: s.buffer_bytes,
            filter: s.filter.clone(),
            poll: POLL,
        })?),
        settings::SourceKind::Files => {
            Box::new(FileSource::open(std::path::Path::new(&s.files), s.replay)?)
        }
        settings::SourceKind::Pktmon => {
            let pktmon = pktmon::Pktmon::new(pktmon::SystemRunner, s.pktmon()).map_err(|e| {
                source::Error::Open {
                    interface: "pktmon".into(),
                    message: e.to_string(),
                }
            })?;
            Box::new(pktmon::PktmonSource::new(pktmon))
        }
        settings::SourceKind::Tcpdump => Box::new(tcpdump::TcpdumpSource::start(s.tcpdump())?),
    })
}

/// Run until `shutdown` (or, for files, until they are read and published):
/// serve telemetry on `listener`, run the engine on `source` in its own
/// thread, publish what it produces.
pub async fn run(
    config: Config,
    source: Box<dyn Source>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<Ended> {
    let c = &config.capture;
    let engine = c
        .engine()
        .map_err(|e| anyhow::anyhow!("capture settings: {e}"))?;
    let registry = Metrics::new();
    let metrics = metrics::CaptureMetrics::default();
    metrics.register(&registry);
    let health = Health::new();
    health.register("source");
    health.register("nats");
    let telemetry_stop = CancellationToken::new();
    let telemetry = tokio::spawn(heimdall_telemetry::serve(
        listener,
        registry.clone(),
        health.clone(),
        telemetry_stop.clone(),
    ));

    let outbox = outbox::Outbox::new(c.buffer_records, metrics.clone());
    let hard = CancellationToken::new();
    let publisher = tokio::spawn(publish::run(
        config.nats.clone(),
        outbox.clone(),
        metrics.clone(),
        registry.clone(),
        health.clone(),
        hard.clone(),
    ));

    let steering = match c.steering {
        settings::SteeringKind::Off => None,
        settings::SteeringKind::Enigma => {
            let (tx, rx) = std::sync::mpsc::channel();
            tokio::spawn(steer::listen(
                config.nats.clone(),
                c.clone(),
                tx,
                metrics.clone(),
                health.clone(),
                hard.clone(),
            ));
            Some((rx, steer::SourceChange::local(c)))
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let schedule = match c.schedule {
        settings::ScheduleKind::Continuous => Schedule::Continuous,
        settings::ScheduleKind::Windowed => Schedule::Windowed {
            interval: c.interval,
            window: c.window,
        },
    };
    info!(
        sensor = %c.sensor_id,
        source = %source.describe(),
        ?schedule,
        "capture starting"
    );
    let driver = driver::Driver {
        source,
        engine,
        batcher: outbox::Batcher::new(
            &c.sensor_id,
            Subjects::new(config.nats.namespace.clone()),
            c.partitions,
            c.batch_records,
            c.batch_interval,
        ),
        outbox: outbox.clone(),
        stop: stop.clone(),
        schedule,
        metrics: metrics.clone(),
        health: health.clone(),
        stats_interval: c.stats_interval,
        reopen_without_caps_fails: !c.keep_reopen_caps,
        steering,
        archive: match c.archive() {
            Some(opts) => Some(
                archive::Archive::new(opts.clone())
                    .map_err(|e| anyhow::anyhow!("archive folder {}: {e}", opts.dir.display()))?,
            ),
            None => None,
        },
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let ended = driver.run();
            let _ = done_tx.send(ended);
        })?;

    let mut done_rx = done_rx;
    let ended = tokio::select! {
        e = &mut done_rx => e.unwrap_or(Ended::Failed("capture thread panicked".into())),
        _ = shutdown.cancelled() => {
            info!("stopping: logging every open connection and publishing what is left");
            stop.store(true, Ordering::Relaxed);
            done_rx.await.unwrap_or(Ended::Failed("capture thread panicked".into()))
        }
    };

    // The driver closed the outbox; wait for the publisher to empty it. A
    // shutdown request bounds the wait by the grace period.
    let grace = c.shutdown_grace;
    let mut publisher = publisher;
    let drained = tokio::select! {
        r = &mut publisher => { r?; true }
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => false,
    };
    if !drained {
        hard.cancel();
        publisher.await?;
    }
    info!(
        conn_published = metrics.conn.published.get(),
        dns_published = metrics.dns.published.get(),
        dropped = metrics.conn.dropped_shutdown.get()
            + metrics.dns.dropped_shutdown.get()
            + metrics.conn.dropped_buffer_full.get()
            + metrics.dns.dropped_buffer_full.get(),
        "capture finished"
    );
    telemetry_stop.cancel();
    telemetry.await??;
    match &ended {
        Ended::Failed(why) => Err(anyhow::anyhow!("{why}")),
        _ => Ok(ended),
    }
}
