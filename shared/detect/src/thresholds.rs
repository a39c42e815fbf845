//! Thresholds per device type and per device, over the global ones.
//!
//! A thresholds file (TOML) changes what the detectors count as unusual,
//! in three layers: `[global]` over the built-in defaults, `[type.<name>]`
//! for every device of a type (the fingerprint service's taxonomy names:
//! `camera`, `smart_plug`, ...), and `[device."<key>"]` for one device (its
//! fingerprint device id, its MAC as `aa:bb:cc:dd:ee:ff`, or its address).
//! A later layer wins field by field; `mute` lists alert types a layer
//! silences, and mutes add up.
//!
//! ```toml
//! [global]
//! scan_ports_fast = 15
//!
//! [type.computer]
//! max_churn_per_day = 6.0
//!
//! [type.camera]
//! volume_k = 12.0
//! mute = ["unusual_time"]
//!
//! [device."aa:bb:cc:dd:ee:ff"]
//! mute = ["new_port"]
//! ```
//!
//! Counting windows (`fast_window_us` and the like) stay global: the
//! detectors keep one window of state per source, so a window is a
//! property of the detector, not of a device.

use std::collections::HashMap;

use serde::Deserialize;

use crate::DetectConfig;
use crate::baseline::BaselineConfig;

/// Every alert type a detector raises, for checking `mute` lists.
pub const ALERT_TYPES: [&str; 12] = [
    "port_scan",
    "host_sweep",
    "beaconing",
    "dns_tunneling",
    "dga",
    "brute_force",
    "new_destination",
    "new_port",
    "volume_spike",
    "exfiltration",
    "unusual_time",
    "threat_match",
];

/// One layer of changes; a field left out keeps the layer below.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// port_scan: distinct probed ports in the fast (1 min) and slow (1 h)
    /// window.
    pub scan_ports_fast: Option<usize>,
    pub scan_ports_slow: Option<usize>,
    /// host_sweep: distinct probed hosts (or ARP targets) likewise.
    pub sweep_hosts_fast: Option<usize>,
    pub sweep_hosts_slow: Option<usize>,
    /// beaconing: connections, share of regular intervals, tolerance.
    pub beacon_min_connections: Option<usize>,
    pub beacon_regular_share: Option<f64>,
    pub beacon_tolerance: Option<f64>,
    /// dns_tunneling: suspicious names, NULL queries.
    pub dns_suspicious_names: Option<usize>,
    pub dns_null_queries: Option<usize>,
    /// dga: NXDOMAIN names and the random-looking share of them.
    pub dga_nxdomains: Option<usize>,
    pub dga_random_share: Option<f64>,
    /// brute_force: short alike sessions to one login service.
    pub brute_sessions: Option<usize>,
    /// Baselines: the confidence from which they judge.
    pub min_confidence: Option<f64>,
    /// new_destination / new_port stay quiet above these daily churns.
    pub max_churn_per_day: Option<f64>,
    pub max_port_churn_per_day: Option<f64>,
    /// volume_spike / exfiltration: robust deviations, extra bytes, and
    /// the upload-to-download ratio.
    pub volume_k: Option<f64>,
    pub volume_min_bytes: Option<u64>,
    pub exfil_ratio: Option<f64>,
    /// unusual_time: connections in a quiet hour; devices active in more
    /// hours of the day than this are not judged.
    pub unusual_min_connections: Option<u64>,
    pub unusual_max_active_hours: Option<usize>,
    /// LAN fan-out against the baseline: devices that kept to this many
    /// LAN hosts an hour are judged; hosts and probed ports that alert.
    pub lan_quiet_max: Option<u32>,
    pub lan_min_hosts: Option<u32>,
    pub lan_min_ports: Option<u32>,
    /// Alert types this layer silences.
    #[serde(default)]
    pub mute: Vec<String>,
}

macro_rules! set {
    ($src:expr, $dst:expr, $($f:ident),*) => {
        $(if let Some(v) = $src.$f { $dst.$f = v; })*
    };
}

impl Overrides {
    fn apply(&self, d: &mut DetectConfig, b: &mut BaselineConfig) {
        set!(
            self,
            d,
            scan_ports_fast,
            scan_ports_slow,
            sweep_hosts_fast,
            sweep_hosts_slow,
            beacon_min_connections,
            beacon_regular_share,
            beacon_tolerance,
            dns_suspicious_names,
            dns_null_queries,
            dga_nxdomains,
            dga_random_share,
            brute_sessions
        );
        set!(
            self,
            b,
            min_confidence,
            max_churn_per_day,
            max_port_churn_per_day,
            volume_k,
            volume_min_bytes,
            exfil_ratio,
            unusual_min_connections,
            unusual_max_active_hours,
            lan_quiet_max,
            lan_min_hosts,
            lan_min_ports
        );
    }

    /// What is wrong with this layer, each as "field: what to do".
    fn problems(&self, at: &str, out: &mut Vec<String>) {
        let counts = [
            ("scan_ports_fast", self.scan_ports_fast),
            ("scan_ports_slow", self.scan_ports_slow),
            ("sweep_hosts_fast", self.sweep_hosts_fast),
            ("sweep_hosts_slow", self.sweep_hosts_slow),
            ("beacon_min_connections", self.beacon_min_connections),
            ("dns_suspicious_names", self.dns_suspicious_names),
            ("dns_null_queries", self.dns_null_queries),
            ("dga_nxdomains", self.dga_nxdomains),
            ("brute_sessions", self.brute_sessions),
            ("unusual_max_active_hours", self.unusual_max_active_hours),
            ("lan_min_hosts", self.lan_min_hosts.map(|v| v as usize)),
            ("lan_min_ports", self.lan_min_ports.map(|v| v as usize)),
        ];
        for (name, v) in counts {
            if v == Some(0) {
                out.push(format!(
                    "{at}.{name}: must be at least 1 (to silence the detector, list its alert type in `mute`)"
                ));
            }
        }
        let shares = [
            ("beacon_regular_share", self.beacon_regular_share),
            ("beacon_tolerance", self.beacon_tolerance),
            ("dga_random_share", self.dga_random_share),
            ("min_confidence", self.min_confidence),
        ];
        for (name, v) in shares {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                out.push(format!("{at}.{name}: {v} is outside 0..1"));
            }
        }
        let positive = [
            ("max_churn_per_day", self.max_churn_per_day),
            ("max_port_churn_per_day", self.max_port_churn_per_day),
            ("volume_k", self.volume_k),
            ("exfil_ratio", self.exfil_ratio),
        ];
        for (name, v) in positive {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                out.push(format!("{at}.{name}: {v} must be a number from 0 up"));
            }
        }
        for m in &self.mute {
            if !ALERT_TYPES.contains(&m.as_str()) {
                out.push(format!(
                    "{at}.mute: {m:?} is not an alert type (one of {})",
                    ALERT_TYPES.join(", ")
                ));
            }
        }
    }
}

/// The thresholds file: global, per device type, per device.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    #[serde(default)]
    pub global: Overrides,
    #[serde(default, rename = "type")]
    pub by_type: HashMap<String, Overrides>,
    #[serde(default, rename = "device")]
    pub by_device: HashMap<String, Overrides>,
}

/// The thresholds and mutes in force for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub detect: DetectConfig,
    pub baseline: BaselineConfig,
    pub mute: Vec<String>,
}

impl Resolved {
    /// Whether alerts of `alert_type` are silenced.
    pub fn muted(&self, alert_type: &str) -> bool {
        self.mute.iter().any(|m| m == alert_type)
    }
}

impl Thresholds {
    /// Parses and checks a thresholds file's text; `name` labels errors.
    /// Every problem is reported at once, each saying what to change.
    pub fn parse(text: &str, name: &str) -> Result<Thresholds, String> {
        let t: Thresholds = toml::from_str(text).map_err(|e| format!("{name}: {e}"))?;
        let mut problems = Vec::new();
        t.global.problems("global", &mut problems);
        let mut types: Vec<_> = t.by_type.iter().collect();
        types.sort_by(|a, b| a.0.cmp(b.0));
        for (ty, o) in types {
            let known = heimdall_proto::sensor::v1::DeviceType::from_str_name(&format!(
                "DEVICE_TYPE_{}",
                ty.to_ascii_uppercase()
            ))
            .is_some_and(|t| t != heimdall_proto::sensor::v1::DeviceType::Unspecified);
            if !known {
                problems.push(format!(
                    "type.{ty}: not a device type of proto/sensor/v1/device.proto (phone, computer, camera, smart_plug, ...)"
                ));
            }
            o.problems(&format!("type.{ty}"), &mut problems);
        }
        let mut devices: Vec<_> = t.by_device.iter().collect();
        devices.sort_by(|a, b| a.0.cmp(b.0));
        for (d, o) in devices {
            o.problems(&format!("device.{d:?}"), &mut problems);
        }
        if problems.is_empty() {
            Ok(t)
        } else {
            Err(format!("{name}: {}", problems.join("; ")))
        }
    }

    /// Reads and checks a thresholds file.
    pub fn load(path: &std::path::Path) -> Result<Thresholds, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the thresholds file {}: {e}", path.display()))?;
        Thresholds::parse(&text, &path.display().to_string())
    }

    /// True when nothing is set per type or per device (the global layer
    /// alone changes the defaults once, not per device).
    pub fn uniform(&self) -> bool {
        self.by_type.is_empty() && self.by_device.is_empty()
    }

    /// `detect` and `baseline` with the global layer applied.
    pub fn global(&self, detect: DetectConfig, baseline: BaselineConfig) -> Resolved {
        let (mut d, mut b) = (detect, baseline);
        self.global.apply(&mut d, &mut b);
        Resolved {
            detect: d,
            baseline: b,
            mute: self.global.mute.clone(),
        }
    }

    /// What holds for a device of `device_type` known by any of `keys`
    /// (device id, MAC text, address), over `base` (the global result).
    /// `None` when no type or device layer names it.
    pub fn for_device(
        &self,
        base: &Resolved,
        device_type: &str,
        keys: &[&str],
    ) -> Option<Resolved> {
        let by_type = self.by_type.get(device_type);
        let by_device: Vec<&Overrides> = keys
            .iter()
            .filter_map(|k| {
                self.by_device
                    .get(&k.to_ascii_lowercase())
                    .or(self.by_device.get(*k))
            })
            .collect();
        if by_type.is_none() && by_device.is_empty() {
            return None;
        }
        let mut r = base.clone();
        for o in by_type.into_iter().chain(by_device) {
            o.apply(&mut r.detect, &mut r.baseline);
            for m in &o.mute {
                if !r.mute.contains(m) {
                    r.mute.push(m.clone());
                }
            }
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_mutes_add_up() {
        let t = Thresholds::parse(
            r#"
[global]
scan_ports_fast = 15
mute = ["new_port"]

[type.camera]
scan_ports_fast = 5
volume_k = 12.0
mute = ["unusual_time"]

[device."AA:BB:CC:DD:EE:FF"]
scan_ports_fast = 3
"#,
            "t.toml",
        )
        .expect("valid");
        let base = t.global(DetectConfig::default(), BaselineConfig::default());
        assert_eq!(base.detect.scan_ports_fast, 15);
        assert!(base.muted("new_port"));
        assert!(t.for_device(&base, "phone", &["dev-1"]).is_none());
        let cam = t.for_device(&base, "camera", &["dev-2"]).expect("camera");
        assert_eq!(
            (cam.detect.scan_ports_fast, cam.baseline.volume_k),
            (5, 12.0)
        );
        assert!(cam.muted("unusual_time") && cam.muted("new_port"));
        let one = t
            .for_device(&base, "camera", &["dev-3", "AA:BB:CC:DD:EE:FF"])
            .expect("device");
        assert_eq!(one.detect.scan_ports_fast, 3);
        assert_eq!(one.baseline.volume_k, 12.0);
    }

    #[test]
    fn a_wrong_file_says_every_thing_to_fix() {
        let e = Thresholds::parse(
            "[type.toaster]\nscan_ports_fast = 0\nmute = [\"portscan\"]\n[global]\nmin_confidence = 2.0\n",
            "t.toml",
        )
        .expect_err("invalid");
        for part in [
            "type.toaster: not a device type",
            "type.toaster.scan_ports_fast: must be at least 1",
            "\"portscan\" is not an alert type",
            "global.min_confidence: 2 is outside 0..1",
        ] {
            assert!(e.contains(part), "{part:?} missing from {e}");
        }
        let e = Thresholds::parse("[global]\nscan_port = 3\n", "t.toml").expect_err("unknown");
        assert!(
            e.contains("unknown field") && e.contains("scan_port"),
            "{e}"
        );
    }
}
