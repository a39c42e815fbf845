//! What a bus backend must do. Two backends implement it: JetStream
//! ([`crate::nats`]) and an in-process twin ([`crate::memory`]). Everything
//! typed (protobuf, spans, metrics, retry policy) lives above this line, in
//! [`crate::Bus`], so both backends behave the same way to a service.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::{Error, Headers};

/// A message on its way out.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Full subject.
    pub subject: String,
    /// De-duplication id: a second message with the same id inside the
    /// stream's duplicate window is dropped by the bus.
    pub msg_id: String,
    /// Headers, including trace context.
    pub headers: Headers,
    /// Encoded protobuf.
    pub payload: Bytes,
}

/// What `publish` learned from the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// Stream sequence of the stored message.
    pub sequence: u64,
    /// True when the bus already had this message id and dropped this copy.
    pub duplicate: bool,
}

/// A stream: which subjects it stores and how much of them.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    /// Stream name (no dots or spaces).
    pub name: String,
    /// Subject filters captured by the stream.
    pub subjects: Vec<String>,
    /// Oldest messages are removed beyond this age.
    pub max_age: Duration,
    /// Oldest messages are removed beyond this many bytes.
    pub max_bytes: i64,
    /// Largest single message accepted.
    pub max_msg_size: i32,
    /// Messages kept per subject, the oldest removed first (-1: no limit).
    pub max_msgs_per_subject: i64,
    /// Window in which a repeated message id is recognised as a duplicate.
    pub duplicate_window: Duration,
    /// Number of replicas in a NATS cluster (1 on a single server).
    pub replicas: usize,
    /// Keep messages in memory only (tests); otherwise on disk.
    pub memory: bool,
}

/// A durable pull consumer on one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSpec {
    /// Stream to read.
    pub stream: String,
    /// Durable name: the position survives restarts of the service and of
    /// the server. Replicas that share a name share the work.
    pub durable: String,
    /// Only subjects matching this filter are delivered.
    pub filter: String,
    /// A message not acknowledged within this time is delivered again.
    pub ack_wait: Duration,
    /// Messages delivered but not yet acknowledged, at most.
    pub max_ack_pending: i64,
    /// Give up on a message after this many deliveries (-1: never).
    pub max_deliver: i64,
    /// Start from the newest message of each subject, afresh on every bind,
    /// instead of resuming the durable position: for state kept one message
    /// per subject ([`crate::Kind::Control`]), which a restarted service must
    /// read again.
    pub latest: bool,
    /// A failed message is tried again in place, after the back-off, before
    /// any later one is handled (the consumer keeps stream order), instead
    /// of being delivered again later while later ones go on. Decided by
    /// the client alone; the server's consumer is the same.
    pub in_order: bool,
}

/// A pulled message, waiting for its verdict.
pub trait Delivery: Send {
    /// The subject it was published to.
    fn subject(&self) -> &str;
    /// Its headers.
    fn headers(&self) -> &Headers;
    /// Its payload.
    fn payload(&self) -> &Bytes;
    /// How many times it has been delivered, this one included.
    fn delivered(&self) -> u64;
    /// Its sequence number in the stream (1 for the first message).
    fn sequence(&self) -> u64;
    /// Done: never deliver it again. Returns after the bus confirmed it.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>>;
    /// Failed for now: deliver it again after `delay`.
    fn nak(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), Error>>;
    /// Poison: never deliver it again, without processing it.
    fn term(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>>;
}

/// The stream of deliveries for one consumer.
pub trait Inbox: Send {
    /// The next delivery; waits until there is one. An error is a transport
    /// failure the caller may retry after a pause.
    fn next(&mut self) -> BoxFuture<'_, Result<Box<dyn Delivery>, Error>>;
}

/// A bus backend.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Create the stream, or bring an existing one to `spec`'s limits.
    fn ensure_stream(&self, spec: StreamSpec) -> BoxFuture<'_, Result<(), Error>>;
    /// Store `msg`; returns once the bus has it durably.
    fn publish(&self, msg: Outgoing) -> BoxFuture<'_, Result<PublishAck, Error>>;
    /// Bind to (creating if needed) a durable consumer.
    fn consumer(&self, spec: ConsumerSpec) -> BoxFuture<'_, Result<Box<dyn Inbox>, Error>>;
    /// Set the durable consumer's position so that its next delivery is the
    /// message with stream sequence `start` (recreating the consumer; what
    /// it had delivered and not acknowledged comes again from there). When
    /// retention has removed that message, it starts at the oldest one
    /// left; when the stream is younger than `start` (it was deleted and
    /// made again), at its first message. Returns the sequence it starts
    /// at.
    fn rewind(&self, spec: ConsumerSpec, start: u64) -> BoxFuture<'_, Result<u64, Error>>;
    /// Remove `stream` and its consumers; no error if it does not exist.
    fn delete_stream(&self, stream: String) -> BoxFuture<'_, Result<(), Error>>;
    /// Messages stored in `stream` and not yet removed by retention.
    fn stream_len(&self, stream: String) -> BoxFuture<'_, Result<u64, Error>>;
}
