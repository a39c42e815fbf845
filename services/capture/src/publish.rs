//! The publisher: batches from the outbox onto JetStream, in order, each
//! retried with the same message id until the bus has stored it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use heimdall_bus::{Bus, BusConfig, Kind};
use heimdall_telemetry::{Health, Metrics};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::CaptureMetrics;
use crate::outbox::{Item, Outbox};

/// The streams capture publishes to.
const STREAMS: [Kind; 3] = [Kind::Flows, Kind::Dns, Kind::Observations];

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(10);

/// Exponential backoff with jitter: the next delay after `d`, and the wait
/// for this one (between half and all of it, so many sensors coming back
/// at once do not retry in step).
fn backoff(d: &mut Duration) -> Duration {
    let wait = d.mul_f64(0.5 + rand::random::<f64>() * 0.5);
    *d = (*d * 2).min(MAX_DELAY);
    wait
}

/// Connect (retrying until `hard` fires), then publish until the outbox is
/// closed and empty. When `hard` fires, whatever is left is counted as
/// dropped at shutdown and logged.
pub async fn run(
    cfg: BusConfig,
    outbox: Arc<Outbox>,
    metrics: CaptureMetrics,
    registry: Metrics,
    health: Health,
    hard: CancellationToken,
) {
    let Some(bus) = connect(&cfg, &registry, &health, &hard).await else {
        drop_rest(&outbox, Vec::new(), &metrics);
        return;
    };
    let mut failing_since: Option<Instant> = None;
    loop {
        let item = tokio::select! {
            item = outbox.pop() => item,
            _ = hard.cancelled() => None,
        };
        let Some(item) = item else { break };
        let mut stack = vec![item];
        while let Some(item) = stack.pop() {
            match publish_one(&bus, item, &metrics, &health, &hard, &mut failing_since).await {
                Outcome::Stored => {}
                Outcome::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Outcome::Interrupted(item) => {
                    stack.push(item);
                    drop_rest(&outbox, stack, &metrics);
                    return;
                }
            }
        }
    }
    if hard.is_cancelled() {
        drop_rest(&outbox, Vec::new(), &metrics);
    }
}

async fn connect(
    cfg: &BusConfig,
    registry: &Metrics,
    health: &Health,
    hard: &CancellationToken,
) -> Option<Bus> {
    let mut delay = FIRST_DELAY;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let attempt = async {
            let bus = Bus::connect(cfg, "heimdall-capture").await?;
            bus.ensure_streams(&STREAMS).await?;
            Ok::<_, heimdall_bus::Error>(bus)
        };
        let result = tokio::select! {
            r = attempt => r,
            _ = hard.cancelled() => return None,
        };
        match result {
            Ok(bus) => {
                bus.register_metrics(registry);
                health.ready("nats", "publishing");
                info!(attempts, "connected to NATS; publishing records");
                return Some(bus);
            }
            Err(e) => {
                health.not_ready("nats", e.to_string());
                if attempts == 1 || attempts.is_power_of_two() {
                    warn!(attempts, error = %e, "NATS unreachable; records wait in the buffer");
                }
                let wait = backoff(&mut delay);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = hard.cancelled() => return None,
                }
            }
        }
    }
}

enum Outcome {
    Stored,
    Split(Item, Item),
    Interrupted(Item),
}

async fn publish_one(
    bus: &Bus,
    item: Item,
    metrics: &CaptureMetrics,
    health: &Health,
    hard: &CancellationToken,
    failing_since: &mut Option<Instant>,
) -> Outcome {
    let mut delay = FIRST_DELAY;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let result = crate::each_batch!(&item, subject, batch => bus.publish(subject, &batch.batch_id, batch).await);
        match result {
            Ok(_) => {
                metrics
                    .kind(item.kind())
                    .published
                    .inc_by(item.records() as u64);
                if let Some(since) = failing_since.take() {
                    info!(
                        outage_s = since.elapsed().as_secs_f64(),
                        "publishing again; buffered records are going out"
                    );
                    health.ready("nats", "publishing");
                }
                return Outcome::Stored;
            }
            Err(heimdall_bus::Error::TooLarge { size, .. }) => {
                let id = item.batch_id().to_string();
                let kind = item.kind();
                match item.split() {
                    Some((a, b)) => {
                        info!(batch = %id, size, "batch over the message limit; sent in halves");
                        return Outcome::Split(a, b);
                    }
                    None => {
                        // One record over a megabyte cannot happen with the
                        // engine's bounds; count it rather than loop.
                        warn!(batch = %id, size, "a single record exceeds the message limit; dropped");
                        metrics.kind(kind).dropped_buffer_full.inc();
                        return Outcome::Stored;
                    }
                }
            }
            Err(e) => {
                metrics.publish_failures.inc();
                if failing_since.is_none() {
                    *failing_since = Some(Instant::now());
                    warn!(batch = %item.batch_id(), error = %e, "publish failed; retrying with backoff");
                } else if attempts.is_power_of_two() {
                    warn!(batch = %item.batch_id(), attempts, error = %e, "publish still failing");
                }
                health.not_ready("nats", e.to_string());
                let wait = backoff(&mut delay);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = hard.cancelled() => return Outcome::Interrupted(item),
                }
                // A stream lost in a server restart (memory storage) or
                // deleted by an operator is made again.
                let _ = bus.ensure_streams(&STREAMS).await;
            }
        }
    }
}

/// Count everything still waiting (and `current`, taken out of the outbox
/// already) as dropped at shutdown.
fn drop_rest(outbox: &Outbox, current: Vec<Item>, metrics: &CaptureMetrics) {
    let mut lost = [0u64; 3];
    for item in current.into_iter().chain(outbox.take_all()) {
        let n = item.records() as u64;
        metrics.kind(item.kind()).dropped_shutdown.inc_by(n);
        lost[item.kind() as usize] += n;
    }
    if lost.iter().any(|&n| n > 0) {
        warn!(
            conn_records = lost[0],
            dns_records = lost[1],
            observations = lost[2],
            "shutdown grace over with NATS unreachable: these records were not published"
        );
    }
}
