//! Records on their way to the bus: batches closed by size or time, and the
//! bounded buffer they wait in while NATS is away.
//!
//! The capture thread never waits for the bus: it hands closed batches to
//! the [`Outbox`] and goes back to packets. The publisher takes them out in
//! order. When the buffer holds more than its bound, the oldest batches are
//! dropped and counted (`capture_records_dropped_buffer_full_total`) with a
//! warning, so the newest records are the ones that survive an outage, as
//! in the JetStream streams themselves (discard old).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heimdall_bus::{Kind, Subjects, partition_of};
use heimdall_engine::{ConnRow, DnsRow};
use heimdall_proto::sensor::v1::{
    ConnBatch, ConnRecord, DnsBatch, DnsRecord, Observation, ObservationBatch, observation,
};
use tokio::sync::Notify;
use tracing::warn;

use crate::metrics::{CaptureMetrics, RecordKind};

/// What the three batch messages (`ConnBatch`, `DnsBatch`,
/// `ObservationBatch`) have in common: an id, a sensor, a time, records.
pub trait Batch: Sized {
    type Record;
    /// The stream the batch goes to.
    const STREAM: Kind;
    fn new(
        batch_id: String,
        sensor_id: String,
        created_us: i64,
        records: Vec<Self::Record>,
    ) -> Self;
    fn into_parts(self) -> (String, String, i64, Vec<Self::Record>);
    /// Into an [`Item`] for `subject`.
    fn item(self, subject: String) -> Item;
}

macro_rules! batch {
    ($batch:ident, $record:ty, $stream:expr, $variant:ident) => {
        impl Batch for $batch {
            type Record = $record;
            const STREAM: Kind = $stream;
            fn new(
                batch_id: String,
                sensor_id: String,
                created_us: i64,
                records: Vec<$record>,
            ) -> Self {
                $batch {
                    batch_id,
                    sensor_id,
                    created_us,
                    records,
                }
            }
            fn into_parts(self) -> (String, String, i64, Vec<$record>) {
                (self.batch_id, self.sensor_id, self.created_us, self.records)
            }
            fn item(self, subject: String) -> Item {
                Item::$variant {
                    subject,
                    batch: self,
                }
            }
        }
    };
}
batch!(ConnBatch, ConnRecord, Kind::Flows, Conn);
batch!(DnsBatch, DnsRecord, Kind::Dns, Dns);
batch!(ObservationBatch, Observation, Kind::Observations, Obs);

/// One bus message waiting to go out.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Conn {
        subject: String,
        batch: ConnBatch,
    },
    Dns {
        subject: String,
        batch: DnsBatch,
    },
    Obs {
        subject: String,
        batch: ObservationBatch,
    },
}

/// `$body` for whichever batch `$item` holds, with `$subject` and `$batch`
/// bound to it.
#[macro_export]
macro_rules! each_batch {
    ($item:expr, $subject:pat, $batch:ident => $body:expr) => {
        match $item {
            $crate::outbox::Item::Conn {
                subject: $subject,
                batch: $batch,
            } => $body,
            $crate::outbox::Item::Dns {
                subject: $subject,
                batch: $batch,
            } => $body,
            $crate::outbox::Item::Obs {
                subject: $subject,
                batch: $batch,
            } => $body,
        }
    };
}

impl Item {
    pub fn records(&self) -> usize {
        each_batch!(self, _, b => b.records.len())
    }

    pub fn kind(&self) -> RecordKind {
        match self {
            Item::Conn { .. } => RecordKind::Conn,
            Item::Dns { .. } => RecordKind::Dns,
            Item::Obs { .. } => RecordKind::Observation,
        }
    }

    pub fn batch_id(&self) -> &str {
        each_batch!(self, _, b => &b.batch_id)
    }

    /// Two halves with ids derived from this one (for a batch over the bus's
    /// message size); `None` when there is one record left.
    pub fn split(self) -> Option<(Item, Item)> {
        fn halves<B: Batch>(subject: String, batch: B) -> Option<(Item, Item)> {
            let (id, sensor, created, mut front) = batch.into_parts();
            if front.len() < 2 {
                return None;
            }
            let back = front.split_off(front.len() / 2);
            let half = |suffix: &str, records| {
                B::new(format!("{id}{suffix}"), sensor.clone(), created, records)
                    .item(subject.clone())
            };
            Some((half("a", front), half("b", back)))
        }
        each_batch!(self, subject, batch => halves(subject, batch))
    }
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Item>,
    records: usize,
    closed: bool,
    /// Records dropped since the last warning, and when that was.
    unreported: usize,
    last_warning: Option<Instant>,
}

/// The bounded buffer between the capture thread and the publisher.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    notify: Notify,
    max_records: usize,
    metrics: CaptureMetrics,
}

impl Outbox {
    pub fn new(max_records: usize, metrics: CaptureMetrics) -> Arc<Self> {
        Arc::new(Outbox {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            max_records,
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a batch; drops the oldest ones if the bound is passed.
    pub fn push(&self, item: Item) {
        let n = item.records();
        let mut q = self.lock();
        while q.records + n > self.max_records {
            let Some(old) = q.items.pop_front() else {
                break;
            };
            q.records -= old.records();
            q.unreported += old.records();
            self.metrics
                .kind(old.kind())
                .dropped_buffer_full
                .inc_by(old.records() as u64);
        }
        if n > self.max_records {
            q.unreported += n;
            self.metrics
                .kind(item.kind())
                .dropped_buffer_full
                .inc_by(n as u64);
        } else {
            q.records += n;
            q.items.push_back(item);
        }
        if q.unreported > 0
            && q.last_warning
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            warn!(
                dropped_records = q.unreported,
                buffer_records = self.max_records,
                "record buffer full while the bus is unreachable: oldest records dropped \
                 (raise HEIMDALL_CAPTURE_BUFFER_RECORDS to hold more)"
            );
            q.unreported = 0;
            q.last_warning = Some(Instant::now());
        }
        self.metrics.buffered_records.set(q.records as i64);
        drop(q);
        self.notify.notify_one();
    }

    /// No more batches will come; the publisher drains what is left.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    /// The next batch, waiting for one; `None` once closed and empty.
    pub async fn pop(&self) -> Option<Item> {
        loop {
            {
                let mut q = self.lock();
                if let Some(item) = q.items.pop_front() {
                    q.records -= item.records();
                    self.metrics.buffered_records.set(q.records as i64);
                    return Some(item);
                }
                if q.closed {
                    return None;
                }
            }
            // One consumer: a notify_one without a waiter leaves a permit,
            // so a push between the check and here is not missed.
            self.notify.notified().await;
        }
    }

    /// Everything still queued, removed (for the shutdown count).
    pub fn take_all(&self) -> Vec<Item> {
        let mut q = self.lock();
        q.records = 0;
        self.metrics.buffered_records.set(0);
        q.items.drain(..).collect()
    }

    /// Records waiting.
    pub fn len_records(&self) -> usize {
        self.lock().records
    }
}

/// Open batches, one per kind and partition, closed by size or age.
#[derive(Debug)]
pub struct Batcher {
    sensor: String,
    run: String,
    subjects: Subjects,
    partitions: u16,
    max_records: usize,
    max_age: Duration,
    seq: u64,
    conn: Vec<Open<ConnRecord>>,
    dns: Vec<Open<DnsRecord>>,
    obs: Vec<Open<Observation>>,
}

#[derive(Debug)]
struct Open<T> {
    records: Vec<T>,
    since: Option<Instant>,
}

impl<T> Open<T> {
    fn new() -> Self {
        Open {
            records: Vec::new(),
            since: None,
        }
    }

    /// Adds a record; the batch's records once it holds `max`.
    fn push(&mut self, record: T, max: usize) -> Option<Vec<T>> {
        self.since.get_or_insert_with(Instant::now);
        self.records.push(record);
        (self.records.len() >= max).then(|| self.take())
    }

    /// The records, if any, and once `max_age` old unless `all`.
    fn due(&mut self, all: bool, max_age: Duration) -> Option<Vec<T>> {
        let due = self.since.is_some_and(|t| all || t.elapsed() >= max_age);
        (due && !self.records.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Vec<T> {
        self.since = None;
        std::mem::take(&mut self.records)
    }
}

fn opens<T>(n: u16) -> Vec<Open<T>> {
    (0..n).map(|_| Open::new()).collect()
}

impl Batcher {
    /// Batch ids are `<sensor>-<run>-<seq>`, with `run` new on every start,
    /// so ids never repeat across restarts and a retried batch keeps its id.
    pub fn new(
        sensor: &str,
        subjects: Subjects,
        partitions: u16,
        max_records: usize,
        max_age: Duration,
    ) -> Self {
        let partitions = partitions.max(1);
        Batcher {
            sensor: sensor.to_string(),
            run: uuid::Uuid::now_v7().simple().to_string(),
            subjects,
            partitions,
            max_records: max_records.max(1),
            max_age,
            seq: 0,
            conn: opens(partitions),
            dns: opens(partitions),
            obs: opens(partitions),
        }
    }

    /// The partition of a device key (its MAC, or an address).
    fn partition(&self, device: &[u8]) -> usize {
        if self.partitions == 1 {
            0
        } else {
            partition_of(device, self.partitions) as usize
        }
    }

    /// Take the engine's finished rows; full batches go to `outbox`.
    /// A connection belongs to its local endpoint's device.
    pub fn add(
        &mut self,
        conns: &[ConnRow],
        dns: &[DnsRow],
        metrics: &CaptureMetrics,
        outbox: &Outbox,
    ) {
        for row in conns {
            let rec = row.to_proto(&self.sensor);
            let resp_is_device = rec.local_orig != Some(true) && rec.local_resp == Some(true);
            let p = self.partition(if resp_is_device {
                &rec.id_resp_h
            } else {
                &rec.id_orig_h
            });
            if let Some(full) = self.conn[p].push(rec, self.max_records) {
                outbox.push(self.close::<ConnBatch>(full, p));
            }
        }
        metrics.conn.produced.inc_by(conns.len() as u64);
        for row in dns {
            let rec = row.to_proto(&self.sensor);
            let p = self.partition(&rec.id_orig_h);
            if let Some(full) = self.dns[p].push(rec, self.max_records) {
                outbox.push(self.close::<DnsBatch>(full, p));
            }
        }
        metrics.dns.produced.inc_by(dns.len() as u64);
    }

    /// Take the engine's observations (partitioned by the device's MAC).
    pub fn add_observations(
        &mut self,
        obs: &mut Vec<Observation>,
        metrics: &CaptureMetrics,
        outbox: &Outbox,
    ) {
        metrics.observations.produced.inc_by(obs.len() as u64);
        for mut o in obs.drain(..) {
            o.sensor_id.clone_from(&self.sensor);
            let p = self.partition(match &o.kind {
                Some(observation::Kind::Arp(a)) => &a.sender_mac,
                Some(observation::Kind::Dhcpv4(d)) => &d.chaddr,
                _ => &o.src_mac,
            });
            if let Some(full) = self.obs[p].push(o, self.max_records) {
                outbox.push(self.close::<ObservationBatch>(full, p));
            }
        }
    }

    /// A closed batch of `records` for partition `p`.
    fn close<B: Batch>(&mut self, records: Vec<B::Record>, p: usize) -> Item {
        self.seq += 1;
        let id = format!("{}-{}-{}", self.sensor, self.run, self.seq);
        let subject = self.subjects.publish(B::STREAM, &self.sensor, p as u16);
        B::new(id, self.sensor.clone(), now_us(), records).item(subject)
    }

    /// Close batches older than the batch interval (or every open batch
    /// with `all`).
    pub fn flush(&mut self, all: bool, outbox: &Outbox) {
        for p in 0..self.partitions as usize {
            if let Some(r) = self.conn[p].due(all, self.max_age) {
                outbox.push(self.close::<ConnBatch>(r, p));
            }
            if let Some(r) = self.dns[p].due(all, self.max_age) {
                outbox.push(self.close::<DnsBatch>(r, p));
            }
            if let Some(r) = self.obs[p].due(all, self.max_age) {
                outbox.push(self.close::<ObservationBatch>(r, p));
            }
        }
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn_item(id: &str, n: usize) -> Item {
        Item::Conn {
            subject: "s".into(),
            batch: ConnBatch {
                batch_id: id.into(),
                records: vec![ConnRecord::default(); n],
                ..Default::default()
            },
        }
    }

    #[tokio::test]
    async fn past_the_bound_the_oldest_batches_go_and_are_counted() {
        let metrics = CaptureMetrics::default();
        let outbox = Outbox::new(10, metrics.clone());
        outbox.push(conn_item("a", 4));
        outbox.push(conn_item("b", 4));
        outbox.push(conn_item("c", 4));
        assert_eq!(outbox.len_records(), 8);
        assert_eq!(metrics.conn.dropped_buffer_full.get(), 4);
        // A batch bigger than the whole buffer cannot be kept at all.
        outbox.push(conn_item("huge", 11));
        assert_eq!(metrics.conn.dropped_buffer_full.get(), 4 + 8 + 11);
        outbox.push(conn_item("d", 1));
        outbox.close();
        let mut ids = Vec::new();
        while let Some(item) = outbox.pop().await {
            ids.push(item.batch_id().to_string());
        }
        assert_eq!(ids, ["d"]);
    }

    #[test]
    fn a_batch_splits_into_halves_with_derived_ids() {
        let (a, b) = conn_item("x", 5).split().expect("splits");
        assert_eq!((a.batch_id(), a.records()), ("xa", 2));
        assert_eq!((b.batch_id(), b.records()), ("xb", 3));
        assert!(conn_item("y", 1).split().is_none());
    }
}
