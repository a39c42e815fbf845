//! Every subject and stream name Heimdall uses, in one place.
//!
//! Records are published per sensor and per partition:
//! `sensor.<sensor>.<kind>.p<partition>`. The partition is chosen by the
//! publisher from the device the records belong to (see [`partition_of`]), so
//! a stateful consumer (per-device baselines) can run as several replicas,
//! each owning a set of partitions, and no two replicas ever see one device.
//! With one partition everything goes to `p0`.
//!
//! A deployment may set a namespace (`HEIMDALL_NATS_NAMESPACE`), which
//! prefixes every subject and stream name, so several Heimdall installations
//! (or parallel tests) can share one NATS server without seeing each other.

use std::fmt;
use std::time::Duration;

/// The kinds of message on the bus, one JetStream stream each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `FlowBatch`/`ConnBatch`: finished connection records, from capture.
    Flows,
    /// `DnsBatch`: DNS transactions, from capture.
    Dns,
    /// `ObservationBatch`: device observations (ARP, DHCP, mDNS...), from capture.
    Observations,
    /// `DeviceEvent`: new, updated, merged devices, from fingerprint.
    Devices,
    /// `Alert` and `Incident`, from anomaly.
    Alerts,
    /// `BaselineBatch`: summaries of device baselines, from anomaly.
    Baselines,
    /// Intelligence from Asgard: golden profiles, threat signatures.
    Intel,
    /// Enforcement rules from Asgard, for a gateway enforcer.
    Enforcement,
    /// Settings for one sensor's services (`heimdall.enigma.v1.CaptureSettings`
    /// from Enigma, published by the enigma-uploader). The stream keeps only
    /// the latest message of each subject: it is the sensor's current state.
    Control,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 9] = [
        Kind::Flows,
        Kind::Dns,
        Kind::Observations,
        Kind::Devices,
        Kind::Alerts,
        Kind::Baselines,
        Kind::Intel,
        Kind::Enforcement,
        Kind::Control,
    ];

    /// The subject token of this kind (`flows`, `dns`, ...).
    pub fn token(self) -> &'static str {
        match self {
            Kind::Flows => "flows",
            Kind::Dns => "dns",
            Kind::Observations => "observations",
            Kind::Devices => "devices",
            Kind::Alerts => "alerts",
            Kind::Baselines => "baselines",
            Kind::Intel => "intel",
            Kind::Enforcement => "enforcement",
            Kind::Control => "control",
        }
    }

    /// Sensor data lives under `sensor.<id>.`; intelligence is global.
    fn per_sensor(self) -> bool {
        !matches!(self, Kind::Intel | Kind::Enforcement)
    }

    /// How long a stream of this kind keeps messages by default. Records are
    /// consumed within seconds; the age bound is how long a consumer may be
    /// down without losing data. Intelligence is small and kept longer so a
    /// new replica can rebuild its state.
    pub fn default_max_age(self) -> Duration {
        const DAY: u64 = 86_400;
        match self {
            Kind::Flows | Kind::Dns | Kind::Observations => Duration::from_secs(DAY),
            Kind::Devices | Kind::Alerts | Kind::Baselines => Duration::from_secs(7 * DAY),
            Kind::Intel | Kind::Enforcement | Kind::Control => Duration::from_secs(30 * DAY),
        }
    }

    /// Default byte bound of the stream; the oldest messages go first when it
    /// is reached. Sized for a Raspberry Pi's SD card.
    pub fn default_max_bytes(self) -> i64 {
        const MIB: i64 = 1024 * 1024;
        match self {
            Kind::Flows => 1024 * MIB,
            Kind::Dns | Kind::Observations => 256 * MIB,
            Kind::Devices | Kind::Alerts | Kind::Baselines => 128 * MIB,
            Kind::Intel | Kind::Enforcement => 64 * MIB,
            Kind::Control => 16 * MIB,
        }
    }

    /// Messages a stream of this kind keeps per subject (-1: no limit).
    /// Control messages are state, not history: only the newest counts.
    pub fn max_msgs_per_subject(self) -> i64 {
        match self {
            Kind::Control => 1,
            _ => -1,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Builds subject and stream names under one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subjects {
    namespace: String,
}

impl Subjects {
    /// Names under `namespace`; empty for none.
    pub fn new(namespace: impl Into<String>) -> Self {
        Subjects {
            namespace: namespace.into(),
        }
    }

    fn root(&self) -> String {
        if self.namespace.is_empty() {
            String::new()
        } else {
            format!("{}.", self.namespace)
        }
    }

    /// The subject one publisher writes `kind` records to.
    /// `sensor.<sensor>.<kind>.p<partition>` for sensor data,
    /// `intel.<kind-specific>` style `intel.p0` for global kinds.
    pub fn publish(&self, kind: Kind, sensor: &str, partition: u16) -> String {
        if kind.per_sensor() {
            format!(
                "{}sensor.{}.{}.p{partition}",
                self.root(),
                token(sensor),
                kind.token()
            )
        } else {
            format!("{}{}.p{partition}", self.root(), kind.token())
        }
    }

    /// Everything of `kind`, from every sensor and partition: the stream's
    /// subject filter.
    pub fn all(&self, kind: Kind) -> String {
        if kind.per_sensor() {
            format!("{}sensor.*.{}.*", self.root(), kind.token())
        } else {
            format!("{}{}.*", self.root(), kind.token())
        }
    }

    /// Every partition of `kind` from one sensor: a consumer's filter when
    /// work is split by sensor. Global kinds have no sensor: all of them.
    pub fn sensor(&self, kind: Kind, sensor: &str) -> String {
        if kind.per_sensor() {
            format!("{}sensor.{}.{}.*", self.root(), token(sensor), kind.token())
        } else {
            self.all(kind)
        }
    }

    /// One partition of `kind` across every sensor: a consumer's filter when
    /// work is split by device.
    pub fn partition(&self, kind: Kind, partition: u16) -> String {
        if kind.per_sensor() {
            format!("{}sensor.*.{}.p{partition}", self.root(), kind.token())
        } else {
            format!("{}{}.p{partition}", self.root(), kind.token())
        }
    }

    /// The JetStream stream that holds `kind` (`FLOWS`, or `TEST1_FLOWS`).
    pub fn stream(&self, kind: Kind) -> String {
        let base = kind.token().to_ascii_uppercase();
        if self.namespace.is_empty() {
            base
        } else {
            format!("{}_{base}", token(&self.namespace).to_ascii_uppercase())
        }
    }
}

/// Make `s` safe as one subject token or stream name: no dots, spaces or
/// wildcards, which NATS gives meaning to.
pub fn token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The partition that a device key (its MAC address, or its IP address when
/// the MAC is unknown) belongs to. FNV-1a: stable across processes, builds and
/// architectures, which a `HashMap` hasher is not.
pub fn partition_of(device_key: &[u8], partitions: u16) -> u16 {
    if partitions <= 1 {
        return 0;
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in device_key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(partitions)) as u16
}

/// NATS subject matching: `*` is one token, `>` the rest (one or more).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_shape() {
        let s = Subjects::default();
        assert_eq!(s.publish(Kind::Flows, "pi-1", 3), "sensor.pi-1.flows.p3");
        assert_eq!(s.all(Kind::Dns), "sensor.*.dns.*");
        assert_eq!(s.partition(Kind::Flows, 2), "sensor.*.flows.p2");
        assert_eq!(s.stream(Kind::Observations), "OBSERVATIONS");
        assert_eq!(s.publish(Kind::Intel, "ignored", 0), "intel.p0");

        let t = Subjects::new("test.42");
        assert_eq!(
            t.publish(Kind::Flows, "a.b c", 0),
            "test.42.sensor.a_b_c.flows.p0"
        );
        assert_eq!(t.stream(Kind::Flows), "TEST_42_FLOWS");
    }

    #[test]
    fn every_published_subject_is_inside_its_stream_and_partition() {
        let s = Subjects::new("ns");
        for kind in Kind::ALL {
            let subj = s.publish(kind, "sensor-7", 5);
            assert!(matches(&s.all(kind), &subj), "{kind}");
            assert!(matches(&s.partition(kind, 5), &subj), "{kind}");
            assert!(!matches(&s.partition(kind, 4), &subj), "{kind}");
            assert!(matches(&s.sensor(kind, "sensor-7"), &subj), "{kind}");
            if kind != Kind::Intel && kind != Kind::Enforcement {
                assert!(!matches(&s.sensor(kind, "sensor-8"), &subj), "{kind}");
            }
        }
    }

    #[test]
    fn wildcards_match_like_nats() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.d"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(!matches("a.*", "a.b.c"));
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of(b"\x00\x11\x22\x33\x44\x55", 1), 0);
        let p = partition_of(b"\x00\x11\x22\x33\x44\x55", 8);
        assert_eq!(p, partition_of(b"\x00\x11\x22\x33\x44\x55", 8));
        let mut seen = [0u32; 8];
        for i in 0u32..8000 {
            seen[usize::from(partition_of(&i.to_be_bytes(), 8))] += 1;
        }
        assert!(seen.iter().all(|n| (700..1300).contains(n)), "{seen:?}");
    }
}
