//! The message bus between Heimdall's services: typed protobuf messages over
//! NATS JetStream, with an in-process twin behind the same interface.
//!
//! What this crate promises:
//! - Subject and stream names come from [`subjects`] and nowhere else.
//! - [`Bus::ensure_streams`] creates every stream with explicit retention (an
//!   age and a byte bound, oldest dropped first) and a duplicate window.
//! - [`Bus::publish`] returns only after the bus stored the message, and sets
//!   a de-duplication id so a retried publish is stored once.
//! - [`Bus::consume`] runs a durable pull consumer: a message is acknowledged
//!   only after the handler returned `Ok`, and the acknowledgement is
//!   confirmed by the server; on `Err` it is delivered again after a back-off
//!   (or, for an `in_order` consumer, tried again in place while later
//!   messages wait);
//!   a message that does not decode is terminated and counted, never retried
//!   forever. Delivery is at-least-once, so handlers write idempotently
//!   (keyed on the record uid); together that is exactly-once in the store.
//! - Each delivery carries its stream sequence, and [`Bus::rewind`] sets a
//!   durable consumer back to the message after a stored one: a service
//!   that saves its state with the last sequence it applied replays what
//!   followed after a crash.
//! - The W3C trace context of the publishing span travels in the message
//!   headers; the consumer's span is its child, so one trace follows a batch
//!   across services.
//! - [`Bus::memory`] gives the same behaviour in one process, for tests and
//!   for `heimdall run` on a small box.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use heimdall_config::{Problem, Secret, Url, Validate};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

mod headers;
pub mod memory;
pub mod nats;
pub mod outbox;
pub mod subjects;
pub mod testing;
mod transport;

pub use headers::{CONTENT_TYPE, Headers, MSG_ID};
pub use subjects::{Kind, Subjects, partition_of};
pub use transport::{ConsumerSpec, Delivery, Inbox, Outgoing, PublishAck, StreamSpec, Transport};

/// Largest message the bus carries, headers included: NATS's default
/// `max_payload` (1 MiB), which Debian's server keeps.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Largest encoded payload [`Bus::publish`] accepts: the message limit less
/// room for headers (trace context, message id, type). Publishers close
/// batches before they reach it; anything larger is refused with a clear
/// error, not retried.
pub const MAX_PAYLOAD_BYTES: usize = MAX_MESSAGE_BYTES - 4096;

/// The variable prefix of [`BusConfig`].
pub const PREFIX: &str = "HEIMDALL_NATS_";

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Could not reach or talk to the NATS server.
    #[error("NATS connection: {0}")]
    Connect(String),
    /// Creating or updating a stream failed.
    #[error("stream {stream}: {reason}")]
    Stream {
        /// Stream name.
        stream: String,
        /// Server's reason.
        reason: String,
    },
    /// Creating or binding a consumer failed.
    #[error("consumer {consumer} on {stream}: {reason}")]
    Consumer {
        /// Stream name.
        stream: String,
        /// Durable name.
        consumer: String,
        /// Server's reason.
        reason: String,
    },
    /// Publishing failed: not stored, safe to retry with the same id.
    #[error("publish to {subject}: {reason}")]
    Publish {
        /// Subject.
        subject: String,
        /// Server's or client's reason.
        reason: String,
    },
    /// The message is over [`MAX_PAYLOAD_BYTES`]; retrying cannot help.
    #[error(
        "publish to {subject}: message of {size} bytes is over the bus limit of {MAX_PAYLOAD_BYTES}; close batches earlier"
    )]
    TooLarge {
        /// Subject.
        subject: String,
        /// Encoded size.
        size: usize,
    },
    /// Pulling or acknowledging failed.
    #[error("delivery: {0}")]
    Delivery(String),
}

/// NATS settings (`HEIMDALL_NATS_*`), shared by every service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct BusConfig {
    /// `HEIMDALL_NATS_URL`: server address(es), comma-separated.
    /// Default `nats://127.0.0.1:4222`. Credentials in it are masked in
    /// logs and `--print-config`.
    pub url: Url,
    /// `HEIMDALL_NATS_TOKEN` (or `HEIMDALL_NATS_TOKEN_FILE`): auth token, if
    /// the server requires one. Never logged.
    pub token: Secret,
    /// `HEIMDALL_NATS_USER` / `HEIMDALL_NATS_PASSWORD(_FILE)`: user and
    /// password auth, if the server requires it.
    pub user: String,
    /// See `user`.
    pub password: Secret,
    /// `HEIMDALL_NATS_NAMESPACE`: prefix for every subject and stream, so
    /// installations can share a server. Default empty.
    pub namespace: String,
    /// `HEIMDALL_NATS_REPLICAS`: stream replicas in a NATS cluster. Default 1.
    pub replicas: usize,
    /// `HEIMDALL_NATS_MEMORY_STORAGE`: keep streams in memory (tests only).
    /// Default false: on disk.
    pub memory_storage: bool,
    /// `HEIMDALL_NATS_MAX_AGE_SCALE`: multiplies every stream's default age
    /// bound (1.0 = one day for records, seven for devices and alerts).
    pub max_age_scale: f64,
    /// `HEIMDALL_NATS_MAX_BYTES_SCALE`: multiplies every stream's default byte
    /// bound (1.0 = 1 GiB for flows; see docs/architecture.md).
    pub max_bytes_scale: f64,
    /// `HEIMDALL_NATS_DUPLICATE_WINDOW`: how long a message id is remembered
    /// for de-duplication. Default `10m`.
    #[serde(with = "heimdall_config::duration")]
    pub duplicate_window: Duration,
    /// `HEIMDALL_NATS_ACK_WAIT`: redeliver a message not acknowledged within
    /// this time. Default `60s`.
    #[serde(with = "heimdall_config::duration")]
    pub ack_wait: Duration,
    /// `HEIMDALL_NATS_MAX_ACK_PENDING`: in-flight messages per consumer.
    /// Default 256.
    pub max_ack_pending: i64,
    /// `HEIMDALL_NATS_RETRY_DELAY`: first redelivery delay after a handler
    /// error; doubles per delivery up to 64 times this. Default `1s`.
    #[serde(with = "heimdall_config::duration")]
    pub retry_delay: Duration,
    /// `HEIMDALL_NATS_CONNECT_TIMEOUT`: per-attempt connect timeout. Default `5s`.
    #[serde(with = "heimdall_config::duration")]
    pub connect_timeout: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: Url::new("nats://127.0.0.1:4222"),
            token: Secret::default(),
            user: String::new(),
            password: Secret::default(),
            namespace: String::new(),
            replicas: 1,
            memory_storage: false,
            max_age_scale: 1.0,
            max_bytes_scale: 1.0,
            duplicate_window: Duration::from_secs(600),
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 256,
            retry_delay: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Validate for BusConfig {
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>) {
        for url in self.url.expose().split(',') {
            heimdall_config::check::url(
                problems,
                format!("{prefix}URL"),
                url.trim(),
                &["nats", "tls", "ws", "wss"],
            );
        }
        if self
            .namespace
            .contains(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            problems.push(Problem {
                variable: format!("{prefix}NAMESPACE"),
                message: "use letters, digits, '-' and '_' only".into(),
            });
        }
        heimdall_config::check::in_range(
            problems,
            format!("{prefix}REPLICAS"),
            self.replicas,
            1..=5,
        );
        heimdall_config::check::in_range(
            problems,
            format!("{prefix}MAX_AGE_SCALE"),
            self.max_age_scale,
            0.001..=1000.0,
        );
        heimdall_config::check::in_range(
            problems,
            format!("{prefix}MAX_BYTES_SCALE"),
            self.max_bytes_scale,
            0.001..=1000.0,
        );
        heimdall_config::check::in_range(
            problems,
            format!("{prefix}MAX_ACK_PENDING"),
            self.max_ack_pending,
            1..=100_000,
        );
        if self.user.is_empty() != self.password.is_empty() {
            problems.push(Problem {
                variable: format!("{prefix}PASSWORD"),
                message: "set both HEIMDALL_NATS_USER and HEIMDALL_NATS_PASSWORD, or neither"
                    .into(),
            });
        }
        let secs = |s: u64| Duration::from_secs(s);
        for (name, value, range) in [
            ("ACK_WAIT", self.ack_wait, secs(1)..=secs(3600)),
            (
                "RETRY_DELAY",
                self.retry_delay,
                Duration::from_millis(10)..=secs(600),
            ),
            (
                "DUPLICATE_WINDOW",
                self.duplicate_window,
                secs(1)..=secs(86_400),
            ),
            (
                "CONNECT_TIMEOUT",
                self.connect_timeout,
                Duration::from_millis(100)..=secs(300),
            ),
        ] {
            if !range.contains(&value) {
                problems.push(Problem {
                    variable: format!("{prefix}{name}"),
                    message: format!(
                        "out of range; use {} to {}",
                        heimdall_config::duration::format(range.start()),
                        heimdall_config::duration::format(range.end())
                    ),
                });
            }
        }
    }
}

/// A message type that can travel on the bus: a prost message with its
/// fully-qualified protobuf name.
pub trait BusMessage: prost::Message + prost::Name + Default + Send + 'static {}
impl<T: prost::Message + prost::Name + Default + Send + 'static> BusMessage for T {}

/// A decoded message handed to a consumer's handler.
#[derive(Debug)]
pub struct Received<M> {
    /// The subject it was published on.
    pub subject: String,
    /// Its de-duplication id.
    pub msg_id: String,
    /// How many times it has been delivered (1 the first time).
    pub delivered: u64,
    /// Its sequence number in the stream: a consumer that keeps state
    /// outside the bus stores the last one it applied with that state, and
    /// [`Bus::rewind`]s to the next after a restart.
    pub sequence: u64,
    /// The message.
    pub message: M,
}

/// Metric labels: a short list of (name, value).
type Labels = Vec<(String, String)>;

/// Counters every bus user exposes on `/metrics`.
#[derive(Clone, Debug)]
struct BusMetrics {
    published: Family<Labels, Counter>,
    publish_errors: Family<Labels, Counter>,
    duplicates: Family<Labels, Counter>,
    handled: Family<Labels, Counter>,
    handler_errors: Family<Labels, Counter>,
    poison: Family<Labels, Counter>,
    handle_seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl BusMetrics {
    fn new() -> Self {
        BusMetrics {
            published: Family::default(),
            publish_errors: Family::default(),
            duplicates: Family::default(),
            handled: Family::default(),
            handler_errors: Family::default(),
            poison: Family::default(),
            handle_seconds: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
        }
    }

    fn register(&self, m: &heimdall_telemetry::Metrics) {
        m.register(
            "bus_published",
            "Messages stored by the bus, by stream kind",
            self.published.clone(),
        );
        m.register(
            "bus_publish_errors",
            "Publishes that failed and must be retried",
            self.publish_errors.clone(),
        );
        m.register(
            "bus_duplicates",
            "Publishes the bus recognised as duplicates and dropped",
            self.duplicates.clone(),
        );
        m.register(
            "bus_handled",
            "Messages handled and acknowledged, by consumer",
            self.handled.clone(),
        );
        m.register(
            "bus_handler_errors",
            "Handler failures; the message is redelivered later",
            self.handler_errors.clone(),
        );
        m.register(
            "bus_poison",
            "Messages that could not be decoded and were terminated",
            self.poison.clone(),
        );
        m.register(
            "bus_handle_seconds",
            "Time from delivery to acknowledgement",
            self.handle_seconds.clone(),
        );
    }
}

/// The bus a service talks to. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus {
    transport: Arc<dyn Transport>,
    subjects: Subjects,
    config: Arc<BusConfig>,
    metrics: BusMetrics,
    health: Option<heimdall_telemetry::Health>,
}

impl Bus {
    /// Connect to NATS with `config`. Fails if no server answers within the
    /// connect timeout; once connected, the client reconnects by itself and
    /// operations fail (and are retried by callers) while it is away.
    pub async fn connect(config: &BusConfig, client_name: &str) -> Result<Self, Error> {
        let transport = nats::NatsTransport::connect(config, client_name).await?;
        Ok(Self::with_transport(Arc::new(transport), config))
    }

    /// An in-process bus with the same semantics (durable positions,
    /// redelivery, de-duplication, retention), for tests and one-process mode.
    pub fn memory(config: &BusConfig) -> Self {
        Self::with_transport(Arc::new(memory::MemoryTransport::new()), config)
    }

    /// A bus over any transport.
    pub fn with_transport(transport: Arc<dyn Transport>, config: &BusConfig) -> Self {
        Bus {
            transport,
            subjects: Subjects::new(config.namespace.clone()),
            config: Arc::new(config.clone()),
            metrics: BusMetrics::new(),
            health: None,
        }
    }

    /// Report each consumer's state on `/readyz` as component
    /// `consumer <durable>`: ready while it is bound, not ready (with the
    /// reason) while its pull is failing and it is being bound again.
    pub fn with_health(mut self, health: heimdall_telemetry::Health) -> Self {
        self.health = Some(health);
        self
    }

    fn report(&self, spec: &ConsumerSpec, ready: bool, detail: String) {
        if let Some(h) = &self.health {
            let component = format!("consumer {}", spec.durable);
            if ready {
                h.ready(&component, detail);
            } else {
                h.not_ready(&component, detail);
            }
        }
    }

    /// Expose the bus counters on the process's `/metrics`.
    pub fn register_metrics(&self, metrics: &heimdall_telemetry::Metrics) {
        self.metrics.register(metrics);
    }

    /// The subject names of this bus's namespace.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The stream definition for `kind` under this bus's configuration.
    pub fn stream_spec(&self, kind: Kind) -> StreamSpec {
        let c = &self.config;
        StreamSpec {
            name: self.subjects.stream(kind),
            subjects: vec![self.subjects.all(kind)],
            max_age: kind.default_max_age().mul_f64(c.max_age_scale),
            max_bytes: (kind.default_max_bytes() as f64 * c.max_bytes_scale) as i64,
            max_msg_size: MAX_MESSAGE_BYTES as i32,
            max_msgs_per_subject: kind.max_msgs_per_subject(),
            duplicate_window: c
                .duplicate_window
                .min(kind.default_max_age().mul_f64(c.max_age_scale)),
            replicas: c.replicas,
            memory: c.memory_storage,
        }
    }

    /// Create (or update to the configured limits) the streams for `kinds`.
    pub async fn ensure_streams(&self, kinds: &[Kind]) -> Result<(), Error> {
        for kind in kinds {
            self.transport
                .ensure_stream(self.stream_spec(*kind))
                .await?;
        }
        Ok(())
    }

    /// Delete the streams of `kinds` with everything in them. For tests and
    /// tear-down of a namespace; services never call it.
    pub async fn delete_streams(&self, kinds: &[Kind]) -> Result<(), Error> {
        for kind in kinds {
            self.transport
                .delete_stream(self.subjects.stream(*kind))
                .await?;
        }
        Ok(())
    }

    /// Messages currently held by the stream of `kind`.
    pub async fn stream_len(&self, kind: Kind) -> Result<u64, Error> {
        self.transport.stream_len(self.subjects.stream(kind)).await
    }

    /// Publish `message` to `subject` with de-duplication id `msg_id`.
    /// Returns once the bus has stored it (or recognised it as a duplicate).
    /// The current span's trace context rides along.
    pub async fn publish<M: BusMessage>(
        &self,
        subject: &str,
        msg_id: &str,
        message: &M,
    ) -> Result<PublishAck, Error> {
        let span = info_span!(
            "bus.publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = subject,
            messaging.message.id = msg_id,
            messaging.message.body.size = message.encoded_len(),
        );
        let size = message.encoded_len();
        if size > MAX_PAYLOAD_BYTES {
            return Err(Error::TooLarge {
                subject: subject.to_string(),
                size,
            });
        }
        let mut headers = Headers::new();
        headers.inject_span(&span);
        headers.insert(
            CONTENT_TYPE,
            format!("application/protobuf; proto={}", M::full_name()),
        );
        let out = Outgoing {
            subject: subject.to_string(),
            msg_id: msg_id.to_string(),
            headers,
            payload: Bytes::from(message.encode_to_vec()),
        };
        let labels = vec![("subject".to_string(), subject_kind(subject).to_string())];
        let result = self.transport.publish(out).instrument(span).await;
        match &result {
            Ok(ack) if ack.duplicate => {
                self.metrics.duplicates.get_or_create(&labels).inc();
            }
            Ok(_) => {
                self.metrics.published.get_or_create(&labels).inc();
            }
            Err(_) => {
                self.metrics.publish_errors.get_or_create(&labels).inc();
            }
        }
        result
    }

    /// A consumer definition with this bus's defaults on the stream of
    /// `kind`. `partition: None` receives every partition under the durable
    /// name `durable`; `Some(n)` receives partition `n` only, under
    /// `<durable>-p<n>`, so each partition keeps its own position and two
    /// replicas never share a device.
    pub fn consumer_spec(&self, kind: Kind, durable: &str, partition: Option<u16>) -> ConsumerSpec {
        let (durable, filter) = match partition {
            None => (subjects::token(durable), self.subjects.all(kind)),
            Some(p) => (
                format!("{}-p{p}", subjects::token(durable)),
                self.subjects.partition(kind, p),
            ),
        };
        ConsumerSpec {
            stream: self.subjects.stream(kind),
            durable,
            filter,
            ack_wait: self.config.ack_wait,
            max_ack_pending: self.config.max_ack_pending,
            max_deliver: -1,
            latest: false,
            in_order: false,
        }
    }

    /// Make the durable consumer of `spec` deliver again every message after
    /// stream sequence `after`, for a service whose state was stored with
    /// the messages up to `after` applied and which lost what it applied
    /// since (a crash). Call before [`Bus::consume`] binds the consumer.
    /// Returns the first sequence that will come; more than `after + 1`
    /// means retention removed messages in between, which cannot come again.
    pub async fn rewind(&self, spec: &ConsumerSpec, after: u64) -> Result<u64, Error> {
        self.transport.rewind(spec.clone(), after + 1).await
    }

    /// Run a durable consumer until `shutdown`: decode each message as `M`,
    /// call `handler` inside a span that continues the publisher's trace, and
    /// acknowledge only after the handler returned `Ok`. A handler error
    /// redelivers the message after a back-off that grows with each delivery.
    /// Transport failures are logged and retried; the loop ends only on
    /// shutdown or when the consumer cannot be created at all.
    pub async fn consume<M, F, Fut, E>(
        &self,
        spec: ConsumerSpec,
        shutdown: CancellationToken,
        mut handler: F,
    ) -> Result<(), Error>
    where
        M: BusMessage,
        F: FnMut(Received<M>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let labels = vec![("consumer".to_string(), spec.durable.clone())];
        let expected_type = format!("application/protobuf; proto={}", M::full_name());
        let mut inbox = self.transport.consumer(spec.clone()).await?;
        self.report(&spec, true, format!("bound to {}", spec.stream));
        let mut pause = Duration::from_millis(100);
        loop {
            let delivery = tokio::select! {
                biased;
                // Messages prefetched but not handled come back after the ack
                // wait (docs/decisions.md, 6).
                () = shutdown.cancelled() => return Ok(()),
                d = inbox.next() => d,
            };
            let delivery = match delivery {
                Ok(d) => {
                    pause = Duration::from_millis(100);
                    d
                }
                Err(e) => {
                    // The pull may have ended for good (consumer deleted,
                    // stream lost in a server restart): wait, then bind the
                    // consumer again, recreating it if needed.
                    warn!(consumer = %spec.durable, error = %e, retry_in = ?pause, "cannot pull messages; rebinding the consumer");
                    self.report(&spec, false, e.to_string());
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(10));
                    // A stream lost with a server restart (memory storage,
                    // or a wiped disk) is created again before rebinding.
                    if let Some(kind) = Kind::ALL
                        .into_iter()
                        .find(|k| self.subjects.stream(*k) == spec.stream)
                        && let Err(e) = self.transport.ensure_stream(self.stream_spec(kind)).await
                    {
                        warn!(stream = %spec.stream, error = %e, "cannot recreate the stream; will retry");
                    }
                    match self.transport.consumer(spec.clone()).await {
                        Ok(fresh) => {
                            inbox = fresh;
                            self.report(&spec, true, format!("bound again to {}", spec.stream));
                        }
                        Err(e) => {
                            warn!(consumer = %spec.durable, error = %e, "rebinding failed; will retry");
                        }
                    }
                    continue;
                }
            };
            let started = Instant::now();
            let span = info_span!(
                "bus.consume",
                otel.kind = "consumer",
                messaging.system = "nats",
                messaging.destination.name = delivery.subject(),
                messaging.consumer.group.name = %spec.durable,
                messaging.message.id = delivery.headers().get(MSG_ID).unwrap_or(""),
                delivered = delivery.delivered(),
            );
            delivery.headers().set_parent_of(&span);
            let wrong_type = match delivery.headers().get(CONTENT_TYPE) {
                Some(t) if t != expected_type => Some(t.to_string()),
                _ => None,
            };
            let decoded = match wrong_type {
                Some(t) => Err(format!("payload is {t}")),
                None => M::decode(delivery.payload().as_ref()).map_err(|e| e.to_string()),
            };
            let message = match decoded {
                Ok(m) => m,
                Err(e) => {
                    self.metrics.poison.get_or_create(&labels).inc();
                    span.in_scope(|| {
                        warn!(error = %e, expected = %M::full_name(), "message does not decode; terminating it");
                    });
                    if let Err(e) = delivery.term().await {
                        warn!(error = %e, "terminating a poison message failed; it will be redelivered");
                    }
                    continue;
                }
            };
            let (subject, msg_id, sequence) = (
                delivery.subject().to_string(),
                delivery
                    .headers()
                    .get(MSG_ID)
                    .unwrap_or_default()
                    .to_string(),
                delivery.sequence(),
            );
            let received = |message: M, delivered: u64| Received {
                subject: subject.clone(),
                msg_id: msg_id.clone(),
                delivered,
                sequence,
                message,
            };
            let mut delivered = delivery.delivered();
            let mut outcome = handler(received(message, delivered))
                .instrument(span.clone())
                .await;
            // In order: a failed message is tried again here, after a
            // back-off, and the ones behind it wait.
            while spec.in_order
                && let Err(e) = &outcome
            {
                self.metrics.handler_errors.get_or_create(&labels).inc();
                let shift = delivered.saturating_sub(1).min(6) as u32;
                let delay = self.config.retry_delay.saturating_mul(1 << shift);
                span.in_scope(|| warn!(error = %e, retry_in = ?delay, "handler failed; trying the message again before any later one"));
                tokio::select! {
                    // Not acknowledged: it comes again after the ack wait.
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
                // It decoded once; it decodes again.
                let Ok(message) = M::decode(delivery.payload().as_ref()) else {
                    break;
                };
                delivered += 1;
                outcome = handler(received(message, delivered))
                    .instrument(span.clone())
                    .await;
            }
            match outcome {
                Ok(()) => match delivery.ack().instrument(span).await {
                    Ok(()) => {
                        self.metrics.handled.get_or_create(&labels).inc();
                        self.metrics
                            .handle_seconds
                            .get_or_create(&labels)
                            .observe(started.elapsed().as_secs_f64());
                    }
                    // The write is done; the message will come again and the
                    // idempotent handler will skip it.
                    Err(e) => {
                        warn!(error = %e, "acknowledgement not confirmed; expect a redelivery")
                    }
                },
                Err(e) => {
                    self.metrics.handler_errors.get_or_create(&labels).inc();
                    let shift = delivered.saturating_sub(1).min(6) as u32;
                    let delay = self.config.retry_delay.saturating_mul(1 << shift);
                    span.in_scope(|| warn!(error = %e, retry_in = ?delay, "handler failed; message will be redelivered"));
                    if let Err(e) = delivery.nak(delay).await {
                        debug!(error = %e, "nak not delivered; the ack wait will expire instead");
                    }
                }
            }
        }
    }
}

/// The kind token of a subject, for metric labels with bounded cardinality.
fn subject_kind(subject: &str) -> &str {
    Kind::ALL
        .iter()
        .map(|k| k.token())
        .find(|t| subject.split('.').any(|part| part == *t))
        .unwrap_or("other")
}

#[cfg(test)]
mod tests;
