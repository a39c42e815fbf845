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

impl Item {
    pub fn records(&self) -> usize {
        match self {
            Item::Conn { batch, .. } => batch.records.len(),
            Item::Dns { batch, .. } => batch.records.len(),
            Item::Obs { batch, .. } => batch.records.len(),
        }
    }

    pub fn kind(&self) -> RecordKind {
        match self {
            Item::Conn { .. } => RecordKind::Conn,
            Item::Dns { .. } => RecordKind::Dns,
            Item::Obs { .. } => RecordKind::Observation,
        }
    }

    pub fn batch_id(&self) -> &str {
        match self {
            Item::Conn { batch, .. } => &batch.batch_id,
            Item::Dns { batch, .. } => &batch.batch_id,
            Item::Obs { batch, .. } => &batch.batch_id,
        }
    }

    /// Two halves with ids derived from this one (for a batch over the bus's
    /// message size); `None` when there is one record left.
    pub fn split(self) -> Option<(Item, Item)> {
        fn halves<T>(mut v: Vec<T>) -> Option<(Vec<T>, Vec<T>)> {
            if v.len() < 2 {
                return None;
            }
            let back = v.split_off(v.len() / 2);
            Some((v, back))
        }
        match self {
            Item::Conn { subject, batch } => {
                let (a, b) = halves(batch.records)?;
                let mk = |suffix: &str, records| Item::Conn {
                    subject: subject.clone(),
                    batch: ConnBatch {
                        batch_id: format!("{}{suffix}", batch.batch_id),
                        sensor_id: batch.sensor_id.clone(),
                        created_us: batch.created_us,
                        records,
                    },
                };
                Some((mk("a", a), mk("b", b)))
            }
            Item::Dns { subject, batch } => {
                let (a, b) = halves(batch.records)?;
                let mk = |suffix: &str, records| Item::Dns {
                    subject: subject.clone(),
                    batch: DnsBatch {
                        batch_id: format!("{}{suffix}", batch.batch_id),
                        sensor_id: batch.sensor_id.clone(),
                        created_us: batch.created_us,
                        records,
                    },
                };
                Some((mk("a", a), mk("b", b)))
            }
            Item::Obs { subject, batch } => {
                let (a, b) = halves(batch.records)?;
                let mk = |suffix: &str, records| Item::Obs {
                    subject: subject.clone(),
                    batch: ObservationBatch {
                        batch_id: format!("{}{suffix}", batch.batch_id),
                        sensor_id: batch.sensor_id.clone(),
                        created_us: batch.created_us,
                        records,
                    },
                };
                Some((mk("a", a), mk("b", b)))
            }
        }
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

    /// Put a batch back at the front (its publish was interrupted).
    pub fn unpop(&self, item: Item) {
        let mut q = self.lock();
        q.records += item.records();
        q.items.push_front(item);
        self.metrics.buffered_records.set(q.records as i64);
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

impl<T> Default for Open<T> {
    fn default() -> Self {
        Open {
            records: Vec::new(),
            since: None,
        }
    }
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
            conn: (0..partitions).map(|_| Open::default()).collect(),
            dns: (0..partitions).map(|_| Open::default()).collect(),
            obs: (0..partitions).map(|_| Open::default()).collect(),
        }
    }

    /// The partition of a record: its local endpoint's device.
    fn partition(
        &self,
        orig: &[u8],
        resp: &[u8],
        local_orig: Option<bool>,
        local_resp: Option<bool>,
    ) -> usize {
        if self.partitions == 1 {
            return 0;
        }
        let key = if local_orig != Some(true) && local_resp == Some(true) {
            resp
        } else {
            orig
        };
        partition_of(key, self.partitions) as usize
    }

    /// Take the engine's finished rows; full batches go to `outbox`.
    pub fn add(
        &mut self,
        conns: &[ConnRow],
        dns: &[DnsRow],
        metrics: &CaptureMetrics,
        outbox: &Outbox,
    ) {
        for row in conns {
            let rec = row.to_proto(&self.sensor);
            let p = self.partition(
                &rec.id_orig_h,
                &rec.id_resp_h,
                rec.local_orig,
                rec.local_resp,
            );
            let open = &mut self.conn[p];
            open.since.get_or_insert_with(Instant::now);
            open.records.push(rec);
            if open.records.len() >= self.max_records {
                let item = self.close_conn(p);
                outbox.push(item);
            }
        }
        metrics.conn.produced.inc_by(conns.len() as u64);
        for row in dns {
            let rec = row.to_proto(&self.sensor);
            let p = self.partition(&rec.id_orig_h, &rec.id_resp_h, None, None);
            let open = &mut self.dns[p];
            open.since.get_or_insert_with(Instant::now);
            open.records.push(rec);
            if open.records.len() >= self.max_records {
                let item = self.close_dns(p);
                outbox.push(item);
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
            let p = if self.partitions == 1 {
                0
            } else {
                let device = match &o.kind {
                    Some(observation::Kind::Arp(a)) => a.sender_mac.clone(),
                    Some(observation::Kind::Dhcpv4(d)) => d.chaddr.clone(),
                    _ => o.src_mac.clone(),
                };
                partition_of(&device, self.partitions) as usize
            };
            let open = &mut self.obs[p];
            open.since.get_or_insert_with(Instant::now);
            open.records.push(o);
            if open.records.len() >= self.max_records {
                let item = self.close_obs(p);
                outbox.push(item);
            }
        }
    }

    fn close_obs(&mut self, p: usize) -> Item {
        let records = std::mem::take(&mut self.obs[p].records);
        self.obs[p].since = None;
        Item::Obs {
            subject: self
                .subjects
                .publish(Kind::Observations, &self.sensor, p as u16),
            batch: ObservationBatch {
                batch_id: self.next_id(),
                sensor_id: self.sensor.clone(),
                created_us: now_us(),
                records,
            },
        }
    }

    fn next_id(&mut self) -> String {
        self.seq += 1;
        format!("{}-{}-{}", self.sensor, self.run, self.seq)
    }

    fn close_conn(&mut self, p: usize) -> Item {
        let records = std::mem::take(&mut self.conn[p].records);
        self.conn[p].since = None;
        Item::Conn {
            subject: self.subjects.publish(Kind::Flows, &self.sensor, p as u16),
            batch: ConnBatch {
                batch_id: self.next_id(),
                sensor_id: self.sensor.clone(),
                created_us: now_us(),
                records,
            },
        }
    }

    fn close_dns(&mut self, p: usize) -> Item {
        let records = std::mem::take(&mut self.dns[p].records);
        self.dns[p].since = None;
        Item::Dns {
            subject: self.subjects.publish(Kind::Dns, &self.sensor, p as u16),
            batch: DnsBatch {
                batch_id: self.next_id(),
                sensor_id: self.sensor.clone(),
                created_us: now_us(),
                records,
            },
        }
    }

    /// Close batches older than the batch interval (or every open batch
    /// with `all`).
    pub fn flush(&mut self, all: bool, outbox: &Outbox) {
        let due = |o: &Option<Instant>, age: Duration| o.is_some_and(|t| all || t.elapsed() >= age);
        for p in 0..self.partitions as usize {
            if due(&self.conn[p].since, self.max_age) && !self.conn[p].records.is_empty() {
                let item = self.close_conn(p);
                outbox.push(item);
            }
            if due(&self.dns[p].since, self.max_age) && !self.dns[p].records.is_empty() {
                let item = self.close_dns(p);
                outbox.push(item);
            }
            if due(&self.obs[p].since, self.max_age) && !self.obs[p].records.is_empty() {
                let item = self.close_obs(p);
                outbox.push(item);
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
