//! The capture service's counters, on `/metrics` as `heimdall_capture_*`.
//! Each is an atomic behind an `Arc`: the capture thread and the publisher
//! update them without locks.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// Counters for one record kind (`conn` or `dns`).
#[derive(Debug, Clone, Default)]
pub struct KindCounters {
    /// Records the engine produced.
    pub produced: Counter,
    /// Records the bus stored.
    pub published: Counter,
    /// Records dropped because the buffer was full while NATS was away.
    pub dropped_buffer_full: Counter,
    /// Records still unpublished when the shutdown grace ran out.
    pub dropped_shutdown: Counter,
}

/// Every counter of the service.
#[derive(Debug, Clone, Default)]
pub struct CaptureMetrics {
    pub packets: Counter,
    pub bytes: Counter,
    pub decode_errors: Counter,
    pub bad_checksums: Counter,
    pub evicted: Counter,
    pub active_connections: Gauge,
    pub kernel_received: Counter,
    pub kernel_dropped: Counter,
    pub interface_dropped: Counter,
    pub source_errors: Counter,
    pub source_reopens: Counter,
    pub outside_window: Counter,
    pub windows: Counter,
    pub conn: KindCounters,
    pub dns: KindCounters,
    pub observations: KindCounters,
    pub buffered_records: Gauge,
    pub publish_failures: Counter,
    pub archive_errors: Counter,
    pub files_dropped: Counter,
    pub archive_removed: Counter,
    pub steering_applied: Counter,
    pub steering_refused: Counter,
}

impl CaptureMetrics {
    /// Register everything on the process registry.
    pub fn register(&self, m: &heimdall_telemetry::Metrics) {
        let c = |name: &str, help: &str, counter: &Counter| {
            m.register(name, help, counter.clone());
        };
        c(
            "capture_packets",
            "Frames the engine processed",
            &self.packets,
        );
        c(
            "capture_bytes",
            "Bytes on the wire of those frames",
            &self.bytes,
        );
        c(
            "capture_decode_errors",
            "Frames that could not be decoded (truncated, unknown link type, bad IP header)",
            &self.decode_errors,
        );
        c(
            "capture_bad_checksums",
            "Packets dropped for a bad checksum",
            &self.bad_checksums,
        );
        c(
            "capture_evicted",
            "Connections logged early because the table was full",
            &self.evicted,
        );
        m.register(
            "capture_active_connections",
            "Connections tracked right now",
            self.active_connections.clone(),
        );
        c(
            "capture_kernel_received",
            "Packets the kernel passed to the capture (after the filter)",
            &self.kernel_received,
        );
        c(
            "capture_kernel_dropped",
            "Packets the kernel dropped because the capture buffer was full",
            &self.kernel_dropped,
        );
        c(
            "capture_interface_dropped",
            "Packets the interface or its driver dropped",
            &self.interface_dropped,
        );
        c(
            "capture_source_errors",
            "Read errors from the capture source (interface down or gone)",
            &self.source_errors,
        );
        c(
            "capture_source_reopens",
            "Times the capture handle was opened again after an error",
            &self.source_reopens,
        );
        c(
            "capture_outside_window",
            "Frames that arrived while the windowed schedule was closed (not analyzed)",
            &self.outside_window,
        );
        c("capture_windows", "Capture windows opened", &self.windows);
        for (kind, k) in [
            ("conn", &self.conn),
            ("dns", &self.dns),
            ("observation", &self.observations),
        ] {
            let l = [("kind", kind)];
            m.register_with_labels(
                "capture_records_produced",
                "Records the engine produced",
                &l,
                k.produced.clone(),
            );
            m.register_with_labels(
                "capture_records_published",
                "Records stored by the bus",
                &l,
                k.published.clone(),
            );
            m.register_with_labels(
                "capture_records_dropped_buffer_full",
                "Records dropped because the buffer was full while NATS was away",
                &l,
                k.dropped_buffer_full.clone(),
            );
            m.register_with_labels(
                "capture_records_dropped_shutdown",
                "Records still unpublished when the shutdown grace ran out",
                &l,
                k.dropped_shutdown.clone(),
            );
        }
        m.register(
            "capture_buffered_records",
            "Records waiting to be published",
            self.buffered_records.clone(),
        );
        c(
            "capture_files_dropped",
            "tcpdump files removed unread because more than 256 waited",
            &self.files_dropped,
        );
        c(
            "capture_archive_errors",
            "Archive files that could not be started or written (the capture goes on)",
            &self.archive_errors,
        );
        c(
            "capture_archive_removed",
            "Archive files removed by retention or quota",
            &self.archive_removed,
        );
        c(
            "capture_steering_applied",
            "Capture settings from Enigma applied",
            &self.steering_applied,
        );
        c(
            "capture_steering_refused",
            "Capture settings from Enigma refused (invalid, or the source could not take them)",
            &self.steering_refused,
        );
        c(
            "capture_publish_failures",
            "Publish attempts that failed (each is retried)",
            &self.publish_failures,
        );
    }

    /// The counters of one record kind.
    pub fn kind(&self, kind: RecordKind) -> &KindCounters {
        match kind {
            RecordKind::Conn => &self.conn,
            RecordKind::Dns => &self.dns,
            RecordKind::Observation => &self.observations,
        }
    }
}

/// The record kinds capture publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Conn,
    Dns,
    Observation,
}

impl RecordKind {
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Conn => "conn",
            RecordKind::Dns => "dns",
            RecordKind::Observation => "observation",
        }
    }
}
