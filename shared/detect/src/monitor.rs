//! Every detector behind one front: the shape detectors of the crate root,
//! the per-device baselines and the threat signatures, fed the same
//! records, with one suppression and incident logic for all of them. Both
//! `heimdall analyze` and the anomaly service drive this, so a capture
//! analyzed on a laptop raises what the service would.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use heimdall_proto::sensor::v1::{Alert, IntelUpdate, Observation, observation};
use serde::{Deserialize, Serialize};

use crate::baseline::{BaselineConfig, DeviceProfile, Profiler};
use crate::threat::Threats;
use crate::thresholds::{Resolved, Thresholds};
use crate::{DetectConfig, Detector, Flow};

/// The detectors of one sensor (one home).
///
/// It serializes (serde) to what it learnt from records: the detectors'
/// windows, suppressions and incidents, the profiles, and which MAC each
/// address had. Settings, intelligence, device names and alerts not yet
/// taken are left out: a service saves a monitor, makes a new one with its
/// settings, intelligence and devices, and [`Monitor::resume`]s the saved
/// one into it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Monitor {
    pub detector: Detector,
    pub profiler: Profiler,
    #[serde(skip)]
    pub threats: Threats,
    /// Device ids and types from the fingerprint service, by MAC.
    #[serde(skip)]
    devices: HashMap<[u8; 6], (String, String)>,
    /// The MAC each LAN address was last seen with.
    #[serde(with = "crate::pairs")]
    macs: HashMap<IpAddr, [u8; 6]>,
    /// The key each MAC's profile is kept under (its device id, else its
    /// MAC in text), made once rather than per record.
    #[serde(skip)]
    keys: HashMap<[u8; 6], String>,
    /// Golden profiles applied.
    #[serde(skip)]
    profiles: usize,
    /// Thresholds with type or device layers, and the global result.
    #[serde(skip)]
    thresholds: Option<(Arc<Thresholds>, Resolved)>,
    /// Sources whose thresholds are settled (see [`Detector::set_source`]).
    #[serde(skip)]
    settled: HashSet<IpAddr>,
}

impl Monitor {
    pub fn new(detect: DetectConfig, baseline: BaselineConfig) -> Self {
        Monitor {
            detector: Detector::new(detect),
            profiler: Profiler::new(baseline),
            ..Monitor::default()
        }
    }

    /// Applies a thresholds file: its global layer at once, its type and
    /// device layers to each source as its device becomes known.
    pub fn with_thresholds(mut self, t: Thresholds) -> Self {
        let base = t.global(self.detector.config(), self.profiler.cfg);
        self.detector.set_global(&base);
        self.profiler.cfg = base.baseline;
        if !t.uniform() {
            let t = Arc::new(t);
            self.profiler.thresholds = Some((t.clone(), base.clone()));
            self.thresholds = Some((t, base));
        }
        self
    }

    /// Gives the detector `ip`'s own thresholds, once per source (again
    /// after its device changed).
    fn settle(&mut self, ip: IpAddr, mac: Option<[u8; 6]>) {
        let Some((t, base)) = &self.thresholds else {
            return;
        };
        if self.settled.contains(&ip) {
            return;
        }
        let mac = mac.or_else(|| self.macs.get(&ip).copied());
        let (id, ty) = mac
            .and_then(|m| self.devices.get(&m))
            .map_or(("", ""), |(id, ty)| (id.as_str(), ty.as_str()));
        let mac_text = mac.map(heimdall_proto::addr::mac_text).unwrap_or_default();
        let ip_text = ip.to_string();
        let r = t
            .for_device(base, ty, &[id, &mac_text, &ip_text])
            .map(Arc::new);
        if self.settled.len() > 100_000 {
            self.settled.clear();
        }
        self.settled.insert(ip);
        self.detector.set_source(ip, r);
    }

    /// The key a device's baseline is kept under: its fingerprint device
    /// id, else its MAC, else its address.
    pub fn device_key(&self, ip: IpAddr, mac: Option<[u8; 6]>) -> String {
        match mac.or_else(|| self.macs.get(&ip).copied()) {
            Some(m) => match self.devices.get(&m) {
                Some((id, _)) => id.clone(),
                None => heimdall_proto::addr::mac_text(m),
            },
            None => ip.to_string(),
        }
    }

    /// Calls `f` with the profile key of the device at `ip` (see
    /// [`Monitor::device_key`]) without making the key anew per record.
    fn with_key(&mut self, ip: IpAddr, mac: Option<[u8; 6]>, f: impl FnOnce(&mut Profiler, &str)) {
        match mac.or_else(|| self.macs.get(&ip).copied()) {
            Some(m) => {
                if self.keys.len() > 100_000 {
                    self.keys.clear();
                }
                let devices = &self.devices;
                let key = self.keys.entry(m).or_insert_with(|| match devices.get(&m) {
                    Some((id, _)) => id.clone(),
                    None => heimdall_proto::addr::mac_text(m),
                });
                f(&mut self.profiler, key);
            }
            None => f(&mut self.profiler, &ip.to_string()),
        }
    }

    /// What the fingerprint service decided about a device. Returns true
    /// when a profile learnt under the MAC moved to the device's id.
    pub fn device(&mut self, mac: [u8; 6], device_id: &str, device_type: &str) -> bool {
        let before = heimdall_proto::addr::mac_text(mac);
        let mut moved = false;
        if !device_id.is_empty()
            && device_id != before
            && let Some(mut p) = self.profiler.devices.remove(&before)
        {
            // Learnt under its MAC before the device had an id.
            p.dirty = true;
            moved = true;
            self.profiler
                .devices
                .entry(device_id.to_string())
                .or_insert(p);
        }
        self.devices
            .insert(mac, (device_id.to_string(), device_type.to_string()));
        self.keys.remove(&mac);
        self.settled.clear();
        if !device_type.is_empty() {
            self.profiler.device_type(device_id, device_type);
        }
        moved
    }

    /// Takes over what `saved` learnt from records (see [`Monitor`]),
    /// keeping this monitor's settings and intelligence. Give it the
    /// devices ([`Monitor::device`]) afterwards.
    pub fn resume(&mut self, saved: Monitor) {
        self.detector.resume(saved.detector);
        self.profiler.resume(saved.profiler);
        self.macs = saved.macs;
        self.keys.clear();
        self.settled.clear();
    }

    /// Intelligence: threat signatures and golden profiles.
    pub fn intel(&mut self, u: &IntelUpdate) {
        if u.full_snapshot {
            self.threats.clear();
        }
        for id in &u.removed_signature_ids {
            self.threats.remove(id);
        }
        for s in &u.threat_signatures {
            self.threats.add(s);
        }
        for p in &u.golden_profiles {
            let name = heimdall_proto::sensor::v1::DeviceType::try_from(p.device_type)
                .map(|t| {
                    t.as_str_name()
                        .trim_start_matches("DEVICE_TYPE_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            if !name.is_empty() {
                self.profiler.golden(&name, p);
                self.profiles += 1;
            }
        }
    }

    /// Golden profiles applied so far.
    pub fn profiles(&self) -> usize {
        self.profiles
    }

    /// One finished connection.
    pub fn flow(&mut self, f: &Flow) {
        if let Some(m) = f.src_mac {
            if self.macs.len() > 100_000 {
                self.macs.clear();
            }
            if self.macs.insert(f.src, m) != Some(m) {
                self.settled.remove(&f.src);
            }
        }
        self.settle(f.src, f.src_mac);
        self.detector.flow(f);
        if let Some(a) = self.threats.flow(f) {
            self.detector.submit(a, Some(f.src), f.src_mac);
        }
        if crate::private(&f.src) {
            self.with_key(f.src, f.src_mac, |p, key| p.flow(key, f));
            self.submit_profiled();
        }
    }

    /// One DNS transaction: `rcode` 3 is NXDOMAIN; `answers` are the
    /// addresses it resolved to.
    pub fn dns(
        &mut self,
        ts_us: i64,
        src: IpAddr,
        query: &str,
        qtype: Option<u16>,
        rcode: Option<u8>,
        answers: &[IpAddr],
    ) {
        self.settle(src, None);
        self.detector.dns(ts_us, src, query, qtype);
        if rcode == Some(3) {
            self.detector.nxdomain(ts_us, src, query);
        }
        if let Some(a) = self.threats.lookup(ts_us, src, query) {
            self.detector.submit(a, Some(src), None);
        }
        if crate::private(&src) {
            self.with_key(src, None, |p, key| {
                p.dns(key, ts_us, query, answers, rcode == Some(3));
            });
        }
    }

    /// A connection record from the bus; one without addresses is skipped.
    pub fn conn_record(&mut self, r: &heimdall_proto::sensor::v1::ConnRecord) {
        if let Some(f) = Flow::from_record(r) {
            self.flow(&f);
        }
    }

    /// A DNS record from the bus; one without a query or a client address
    /// is skipped.
    pub fn dns_record(&mut self, r: &heimdall_proto::sensor::v1::DnsRecord) {
        let (Some(q), Some(src)) = (r.query.as_deref(), heimdall_proto::addr::ip(&r.id_orig_h))
        else {
            return;
        };
        let answers: Vec<IpAddr> = r
            .answer_addrs
            .iter()
            .filter_map(|a| heimdall_proto::addr::ip(a))
            .collect();
        self.dns(
            r.ts_us,
            src,
            q,
            r.qtype.and_then(|t| u16::try_from(t).ok()),
            r.rcode.and_then(|c| u8::try_from(c).ok()),
            &answers,
        );
    }

    /// One device observation (ARP feeds the host sweep detector).
    pub fn observation(&mut self, o: &Observation) {
        if let Some(observation::Kind::Arp(a)) = &o.kind
            && let (Some(ip), Ok(mac)) = (
                heimdall_proto::addr::ip(&a.sender_ip),
                <[u8; 6]>::try_from(a.sender_mac.as_ref()),
            )
            && !ip.is_unspecified()
        {
            self.macs.insert(ip, mac);
        }
        self.detector.observation(o);
    }

    /// Closes the hours of devices that went quiet, up to `ts_us`.
    pub fn advance(&mut self, ts_us: i64) {
        self.profiler.advance(ts_us);
    }

    fn submit_profiled(&mut self) {
        for (key, a) in self.profiler.take() {
            let (ip, mac) = self
                .profiler
                .devices
                .get(&key)
                .map_or((None, None), |d| (d.ip, d.mac));
            self.detector.submit(a, ip, mac);
        }
    }

    /// The alerts raised since the last call, each with its device id
    /// when the fingerprint service named the device.
    pub fn take(&mut self) -> Vec<Alert> {
        let mut out = self.detector.take();
        // A regular check-in to a destination the device has used for days
        // is its habit: beaconing is news only where the baseline is not.
        out.retain(|a| {
            if a.alert_type != "beaconing" {
                return true;
            }
            let (Some(src), Some(dst)) = (
                heimdall_proto::addr::ip(&a.src_ip),
                heimdall_proto::addr::ip(&a.dst_ip),
            ) else {
                return true;
            };
            let mac = <[u8; 6]>::try_from(a.src_mac.as_ref()).ok();
            !self.profiler.knows(&self.device_key(src, mac), &dst)
        });
        for a in &mut out {
            let mac = <[u8; 6]>::try_from(a.src_mac.as_ref()).ok().or_else(|| {
                heimdall_proto::addr::ip(&a.src_ip).and_then(|ip| self.macs.get(&ip).copied())
            });
            if let Some(m) = mac {
                if a.src_mac.is_empty() {
                    a.src_mac = m.to_vec().into();
                }
                if let Some((id, _)) = self.devices.get(&m) {
                    a.device_id = id.clone();
                }
            }
        }
        out
    }

    /// Every device's profile, for storing.
    pub fn profiles_of(&self) -> &HashMap<String, DeviceProfile> {
        &self.profiler.devices
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heimdall_proto::sensor::v1::{ConnState, Transport};

    #[test]
    fn a_profile_learnt_under_a_mac_moves_to_the_device_id() {
        let mut m = Monitor::new(DetectConfig::default(), BaselineConfig::default());
        let mac = [2, 0, 0, 0, 0, 7];
        let flow = |ts_us: i64| Flow {
            ts_us,
            src: "192.168.1.7".parse().expect("ip"),
            src_mac: Some(mac),
            dst: "52.1.2.3".parse().expect("ip"),
            dst_port: 443,
            transport: Transport::Tcp,
            state: ConnState::Sf,
            orig_bytes: 100,
            resp_bytes: 200,
            resp_pkts: 2,
            duration_us: 1_000_000,
        };
        m.flow(&flow(1_000_000));
        assert!(m.profiles_of().contains_key("02:00:00:00:00:07"));
        assert!(m.device(mac, "dev-7", "smart_plug"));
        assert!(!m.device(mac, "dev-7", "smart_plug"), "moved once");
        m.flow(&flow(2_000_000));
        assert_eq!(m.profiles_of().len(), 1);
        let p = &m.profiles_of()["dev-7"];
        assert_eq!(p.current.connections, 2);
        assert_eq!(p.device_type, "smart_plug");
        assert_eq!(
            m.device_key("192.168.1.7".parse().expect("ip"), None),
            "dev-7"
        );
    }

    #[test]
    fn thresholds_hold_per_device_type_and_per_device() {
        let t = Thresholds::parse(
            r#"
[type.camera]
scan_ports_fast = 4

[type.computer]
mute = ["port_scan"]

[device."02:00:00:00:00:03"]
scan_ports_fast = 40
"#,
            "t.toml",
        )
        .expect("thresholds");
        let mut m =
            Monitor::new(DetectConfig::default(), BaselineConfig::default()).with_thresholds(t);
        let devices = [
            ([2, 0, 0, 0, 0, 1], "dev-cam", "camera"),
            ([2, 0, 0, 0, 0, 2], "dev-pc", "computer"),
            ([2, 0, 0, 0, 0, 3], "dev-cam2", "camera"),
            ([2, 0, 0, 0, 0, 4], "dev-phone", "phone"),
        ];
        for (mac, id, ty) in devices {
            m.device(mac, id, ty);
        }
        // Each probes six ports of one LAN host: under the global 20.
        for (i, (mac, ..)) in devices.iter().enumerate() {
            for port in 0..6u16 {
                m.flow(&Flow {
                    ts_us: 1_000_000 + i64::from(port) * 1000,
                    src: format!("192.168.1.{}", 10 + i).parse().expect("ip"),
                    src_mac: Some(*mac),
                    dst: "192.168.1.200".parse().expect("ip"),
                    dst_port: 8000 + port,
                    transport: Transport::Tcp,
                    state: ConnState::Rej,
                    orig_bytes: 0,
                    resp_bytes: 0,
                    resp_pkts: 1,
                    duration_us: 0,
                });
            }
        }
        let scans: Vec<String> = m
            .take()
            .into_iter()
            .filter(|a| a.alert_type == "port_scan")
            .map(|a| {
                heimdall_proto::addr::ip(&a.src_ip)
                    .expect("src")
                    .to_string()
            })
            .collect();
        // The camera's type is stricter; the second camera's own setting
        // and the computer's mute win; the phone keeps the global 20.
        assert_eq!(scans, ["192.168.1.10"]);
    }
}
