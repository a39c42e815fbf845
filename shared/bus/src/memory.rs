//! The in-process backend: the same contract as JetStream (limits retention,
//! de-duplication window, durable consumers with explicit acknowledgement,
//! redelivery after the ack wait or a nak), kept in memory. It serves unit
//! tests and `heimdall run`, where every service lives in one process and a
//! restart of the process starts from an empty bus.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::Notify;

use crate::subjects::matches;
use crate::transport::{
    ConsumerSpec, Delivery, Inbox, Outgoing, PublishAck, StreamSpec, Transport,
};
use crate::{Error, Headers};

/// The in-memory bus. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct MemoryTransport {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken on every publish and every nak, so waiting inboxes look again.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    streams: BTreeMap<String, MemStream>,
}

#[derive(Debug)]
struct MemStream {
    spec: StreamSpec,
    messages: VecDeque<Stored>,
    next_seq: u64,
    bytes: i64,
    /// msg id -> (first seen, sequence)
    seen_ids: HashMap<String, (Instant, u64)>,
    consumers: HashMap<String, MemConsumer>,
}

#[derive(Debug)]
struct Stored {
    seq: u64,
    at: Instant,
    msg: Outgoing,
}

#[derive(Debug)]
struct MemConsumer {
    spec: ConsumerSpec,
    /// Next sequence not yet delivered to this consumer.
    cursor: u64,
    /// Delivered, not yet acknowledged: seq -> (deliveries, due for redelivery at).
    pending: BTreeMap<u64, (u64, Instant)>,
}

impl MemConsumer {
    /// A consumer of `spec` whose next delivery is sequence `cursor`.
    fn at(spec: ConsumerSpec, cursor: u64) -> Self {
        MemConsumer {
            spec,
            cursor,
            pending: BTreeMap::new(),
        }
    }
}

impl MemoryTransport {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `now + d`, or a day from now if that would overflow.
/// The stream `spec` consumes, or the error a consumer of a missing one
/// gets.
fn stream_of<'a>(state: &'a mut State, spec: &ConsumerSpec) -> Result<&'a mut MemStream, Error> {
    state
        .streams
        .get_mut(&spec.stream)
        .ok_or_else(|| Error::Consumer {
            stream: spec.stream.clone(),
            consumer: spec.durable.clone(),
            reason: "stream not found".into(),
        })
}

fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

fn size_of(msg: &Outgoing) -> i64 {
    let headers: usize = msg.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    (msg.payload.len() + headers + msg.subject.len()) as i64
}

impl MemStream {
    /// Drop messages past the age or byte limit, oldest first, and forget
    /// message ids older than the duplicate window.
    fn enforce_limits(&mut self, now: Instant) {
        while let Some(front) = self.messages.front() {
            let too_old = now.duration_since(front.at) > self.spec.max_age;
            let too_big = self.spec.max_bytes > 0 && self.bytes > self.spec.max_bytes;
            if !(too_old || too_big) {
                break;
            }
            let gone = self.messages.pop_front();
            if let Some(gone) = gone {
                self.bytes -= size_of(&gone.msg);
            }
        }
        let window = self.spec.duplicate_window;
        self.seen_ids
            .retain(|_, (at, _)| now.duration_since(*at) <= window);
    }
}

impl Transport for MemoryTransport {
    fn ensure_stream(&self, spec: StreamSpec) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut state = self.lock();
            for (name, other) in &state.streams {
                if *name != spec.name
                    && other
                        .spec
                        .subjects
                        .iter()
                        .any(|s| spec.subjects.contains(s))
                {
                    return Err(Error::Stream {
                        stream: spec.name.clone(),
                        reason: format!("subjects overlap with stream {name}"),
                    });
                }
            }
            match state.streams.get_mut(&spec.name) {
                Some(existing) => {
                    existing.spec = spec;
                    existing.enforce_limits(Instant::now());
                }
                None => {
                    state.streams.insert(
                        spec.name.clone(),
                        MemStream {
                            spec,
                            messages: VecDeque::new(),
                            next_seq: 1,
                            bytes: 0,
                            seen_ids: HashMap::new(),
                            consumers: HashMap::new(),
                        },
                    );
                }
            }
            Ok(())
        })
    }

    fn publish(&self, msg: Outgoing) -> BoxFuture<'_, Result<PublishAck, Error>> {
        Box::pin(async move {
            let now = Instant::now();
            let ack = {
                let mut state = self.lock();
                let stream = state
                    .streams
                    .values_mut()
                    .find(|s| s.spec.subjects.iter().any(|p| matches(p, &msg.subject)))
                    .ok_or_else(|| Error::Publish {
                        subject: msg.subject.clone(),
                        reason: "no stream captures this subject".into(),
                    })?;
                if msg.payload.len()
                    > usize::try_from(stream.spec.max_msg_size).unwrap_or(usize::MAX)
                {
                    return Err(Error::Publish {
                        subject: msg.subject.clone(),
                        reason: format!(
                            "message of {} bytes exceeds the stream's maximum",
                            msg.payload.len()
                        ),
                    });
                }
                stream.enforce_limits(now);
                if let Some((_, seq)) = stream.seen_ids.get(&msg.msg_id) {
                    return Ok(PublishAck {
                        sequence: *seq,
                        duplicate: true,
                    });
                }
                let seq = stream.next_seq;
                stream.next_seq += 1;
                stream.seen_ids.insert(msg.msg_id.clone(), (now, seq));
                if stream.spec.max_msgs_per_subject > 0 {
                    let keep = usize::try_from(stream.spec.max_msgs_per_subject - 1).unwrap_or(0);
                    let same: Vec<u64> = stream
                        .messages
                        .iter()
                        .filter(|m| m.msg.subject == msg.subject)
                        .map(|m| m.seq)
                        .collect();
                    let drop = same.len().saturating_sub(keep);
                    let gone: std::collections::HashSet<u64> =
                        same.into_iter().take(drop).collect();
                    let mut freed = 0;
                    stream.messages.retain(|m| {
                        let keep = !gone.contains(&m.seq);
                        if !keep {
                            freed += size_of(&m.msg);
                        }
                        keep
                    });
                    stream.bytes -= freed;
                }
                stream.bytes += size_of(&msg);
                stream.messages.push_back(Stored { seq, at: now, msg });
                stream.enforce_limits(now);
                PublishAck {
                    sequence: seq,
                    duplicate: false,
                }
            };
            self.shared.changed.notify_waiters();
            Ok(ack)
        })
    }

    fn consumer(&self, spec: ConsumerSpec) -> BoxFuture<'_, Result<Box<dyn Inbox>, Error>> {
        Box::pin(async move {
            let mut state = self.lock();
            let stream = stream_of(&mut state, &spec)?;
            if let Some(existing) = stream.consumers.get(&spec.durable)
                && existing.spec.filter != spec.filter
            {
                return Err(Error::Consumer {
                    stream: spec.stream.clone(),
                    consumer: spec.durable.clone(),
                    reason: format!(
                        "an existing durable consumer filters {}, not {}; use another name or delete it",
                        existing.spec.filter, spec.filter
                    ),
                });
            }
            if spec.latest {
                // The stream keeps one message per subject (documented on
                // ConsumerSpec::latest): start afresh at the oldest of them.
                let first = stream.messages.front().map_or(stream.next_seq, |m| m.seq);
                stream
                    .consumers
                    .insert(spec.durable.clone(), MemConsumer::at(spec.clone(), first));
            }
            stream
                .consumers
                .entry(spec.durable.clone())
                .and_modify(|c| c.spec = spec.clone())
                .or_insert_with(|| MemConsumer::at(spec.clone(), 1));
            Ok(Box::new(MemInbox {
                transport: self.clone(),
                stream: spec.stream,
                durable: spec.durable,
            }) as Box<dyn Inbox>)
        })
    }

    fn rewind(&self, spec: ConsumerSpec, start: u64) -> BoxFuture<'_, Result<u64, Error>> {
        Box::pin(async move {
            let from = {
                let mut state = self.lock();
                let stream = stream_of(&mut state, &spec)?;
                stream.enforce_limits(Instant::now());
                let first = stream.messages.front().map_or(stream.next_seq, |m| m.seq);
                let from = if start > stream.next_seq {
                    first
                } else {
                    start.max(first)
                };
                stream
                    .consumers
                    .insert(spec.durable.clone(), MemConsumer::at(spec, from));
                from
            };
            self.shared.changed.notify_waiters();
            Ok(from)
        })
    }

    fn delete_stream(&self, stream: String) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.lock().streams.remove(&stream);
            self.shared.changed.notify_waiters();
            Ok(())
        })
    }

    fn stream_len(&self, stream: String) -> BoxFuture<'_, Result<u64, Error>> {
        Box::pin(async move {
            let mut state = self.lock();
            let s = state
                .streams
                .get_mut(&stream)
                .ok_or_else(|| Error::Stream {
                    stream: stream.clone(),
                    reason: "stream not found".into(),
                })?;
            s.enforce_limits(Instant::now());
            Ok(s.messages.len() as u64)
        })
    }
}

struct MemInbox {
    transport: MemoryTransport,
    stream: String,
    durable: String,
}

/// What one look at the state found.
enum Look {
    Deliver(MemDelivery),
    WaitUntil(Option<Instant>),
}

impl MemInbox {
    fn look(&self) -> Result<Look, Error> {
        let now = Instant::now();
        let mut state = self.transport.lock();
        let stream = state
            .streams
            .get_mut(&self.stream)
            .ok_or_else(|| Error::Delivery(format!("stream {} was deleted", self.stream)))?;
        stream.enforce_limits(now);
        let MemStream {
            messages,
            consumers,
            next_seq,
            ..
        } = stream;
        // With an empty stream, the next message to arrive is the first.
        let first_seq = messages.front().map_or(*next_seq, |m| m.seq);
        let consumer = consumers
            .get_mut(&self.durable)
            .ok_or_else(|| Error::Delivery(format!("consumer {} was deleted", self.durable)))?;
        // Messages removed by retention cannot be redelivered.
        consumer.pending.retain(|seq, _| *seq >= first_seq);
        // Sequences have gaps where a per-subject limit removed a message.
        let get = |seq: u64| -> Option<&Stored> {
            let idx = messages.binary_search_by_key(&seq, |m| m.seq).ok()?;
            messages.get(idx)
        };

        // 1. A pending message whose ack wait or nak delay has run out.
        let due = consumer
            .pending
            .iter()
            .find(|(_, (_, at))| *at <= now)
            .map(|(s, _)| *s);
        if let Some(seq) = due {
            let ack_wait = consumer.spec.ack_wait;
            let entry = consumer.pending.get_mut(&seq);
            if let (Some((count, at)), Some(stored)) = (entry, get(seq)) {
                *count += 1;
                *at = later(now, ack_wait);
                return Ok(Look::Deliver(self.delivery(stored, *count)));
            }
        }
        // 2. The next new message, if the consumer may take more.
        if (consumer.pending.len() as i64) < consumer.spec.max_ack_pending {
            consumer.cursor = consumer.cursor.max(first_seq);
            let from = messages.partition_point(|m| m.seq < consumer.cursor);
            for stored in messages.range(from..) {
                consumer.cursor = stored.seq + 1;
                if matches(&consumer.spec.filter, &stored.msg.subject) {
                    consumer
                        .pending
                        .insert(stored.seq, (1, later(now, consumer.spec.ack_wait)));
                    return Ok(Look::Deliver(self.delivery(stored, 1)));
                }
            }
        }
        Ok(Look::WaitUntil(
            consumer.pending.values().map(|(_, at)| *at).min(),
        ))
    }

    fn delivery(&self, stored: &Stored, delivered: u64) -> MemDelivery {
        MemDelivery {
            transport: self.transport.clone(),
            stream: self.stream.clone(),
            durable: self.durable.clone(),
            seq: stored.seq,
            subject: stored.msg.subject.clone(),
            headers: {
                let mut h = stored.msg.headers.clone();
                h.insert(crate::MSG_ID, stored.msg.msg_id.clone());
                h
            },
            payload: stored.msg.payload.clone(),
            delivered,
        }
    }
}

impl Inbox for MemInbox {
    fn next(&mut self) -> BoxFuture<'_, Result<Box<dyn Delivery>, Error>> {
        Box::pin(async move {
            loop {
                // Register interest before looking, so a publish between the
                // look and the wait is not missed.
                let notified = self.transport.shared.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match self.look()? {
                    Look::Deliver(d) => return Ok(Box::new(d) as Box<dyn Delivery>),
                    Look::WaitUntil(at) => {
                        let wait = at
                            .map(|at| at.saturating_duration_since(Instant::now()))
                            .unwrap_or(Duration::from_secs(3600));
                        let _ = tokio::time::timeout(wait, notified).await;
                    }
                }
            }
        })
    }
}

struct MemDelivery {
    transport: MemoryTransport,
    stream: String,
    durable: String,
    seq: u64,
    subject: String,
    headers: Headers,
    payload: Bytes,
    delivered: u64,
}

impl MemDelivery {
    /// Apply a verdict: `None` removes the message from pending (ack, term),
    /// `Some(delay)` schedules a redelivery.
    fn settle(self, redeliver_in: Option<Duration>) {
        {
            let mut state = self.transport.lock();
            let consumer = state
                .streams
                .get_mut(&self.stream)
                .and_then(|s| s.consumers.get_mut(&self.durable));
            if let Some(c) = consumer {
                match redeliver_in {
                    None => {
                        c.pending.remove(&self.seq);
                    }
                    Some(delay) => {
                        if let Some(entry) = c.pending.get_mut(&self.seq) {
                            entry.1 = later(Instant::now(), delay);
                        }
                    }
                }
            }
        }
        self.transport.shared.changed.notify_waiters();
    }
}

impl Delivery for MemDelivery {
    fn subject(&self) -> &str {
        &self.subject
    }
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn payload(&self) -> &Bytes {
        &self.payload
    }
    fn delivered(&self) -> u64 {
        self.delivered
    }
    fn sequence(&self) -> u64 {
        self.seq
    }
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        self.settle(None);
        Box::pin(async { Ok(()) })
    }
    fn nak(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), Error>> {
        self.settle(Some(delay));
        Box::pin(async { Ok(()) })
    }
    fn term(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        self.settle(None);
        Box::pin(async { Ok(()) })
    }
}
