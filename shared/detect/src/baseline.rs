//! Per-device baselines: what each device normally does, learnt from its
//! own traffic in hourly buckets over a rolling window, and the detectors
//! that compare the present against it (`new_destination`, `new_port`,
//! `volume_spike`, `exfiltration`, `unusual_time`).
//!
//! A baseline is updated incrementally: when an hour ends, that hour's
//! bucket is folded in and whatever fell out of the window is dropped; each
//! fold is a new version. A baseline judges only once it is confident
//! (enough hours of data, steady enough), or when a golden profile for the
//! device's type seeds it; until then the device is learning and raises
//! nothing from these detectors.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use heimdall_proto::sensor::v1::{
    Alert, BaselineSummary, DeviceType, GoldenProfile, PortUse, Quantiles, Severity, SiteUse,
    Transport,
};
use serde::{Deserialize, Serialize};

use crate::{Flow, HOUR, kv};

/// Thresholds of the baseline detectors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BaselineConfig {
    /// Days the rolling window keeps.
    pub window_days: u32,
    /// Days of data after which the data part of the confidence is full.
    pub learn_days: f64,
    /// A baseline judges from this confidence on (0..1).
    pub min_confidence: f64,
    /// new_destination stays quiet for devices that meet more than this
    /// many new destinations per day when they are normal (laptops, phones).
    pub max_churn_per_day: f64,
    /// new_port likewise, in new ports per day.
    pub max_port_churn_per_day: f64,
    /// volume_spike/exfiltration: how many robust deviations (MAD × 1.4826)
    /// above the median of the same hour of day ...
    pub volume_k: f64,
    /// ... and at least this many bytes above the usual maximum.
    pub volume_min_bytes: u64,
    /// exfiltration: an hour's upload at least this many times its download.
    pub exfil_ratio: f64,
    /// unusual_time: connections in an hour the device is never active in.
    pub unusual_min_connections: u64,
    /// unusual_time judges devices active in at most this many hours of
    /// the day (a device active around the clock has no unusual time).
    pub unusual_max_active_hours: usize,
    /// Minutes east of UTC of the home, for hour of day.
    pub utc_offset_minutes: i32,
    /// Destinations kept per baseline; a device that needs more is churning
    /// and new_destination does not judge it.
    pub max_destinations: usize,
    /// Devices tracked at most.
    pub max_devices: usize,
    /// A baseline is summarised for sharing (see [`summary`]) each time it
    /// has grown by this many hours; 0 never.
    pub summary_hours: u32,
    /// LAN fan-out: devices that contacted at most this many LAN hosts in
    /// any hour of the window (a plug: the gateway) are judged by it ...
    pub lan_quiet_max: u32,
    /// ... host_sweep when an hour has at least this many LAN hosts (and
    /// at least twice the window's most plus two) ...
    pub lan_min_hosts: u32,
    /// ... and port_scan when an hour has at least this many probed ports
    /// on one LAN host (and at least twice the window's most plus two).
    pub lan_min_ports: u32,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            window_days: 7,
            learn_days: 3.0,
            min_confidence: 0.5,
            max_churn_per_day: 1.5,
            max_port_churn_per_day: 0.5,
            volume_k: 8.0,
            volume_min_bytes: 20 * 1024 * 1024,
            exfil_ratio: 4.0,
            unusual_min_connections: 10,
            unusual_max_active_hours: 18,
            utc_offset_minutes: 0,
            max_destinations: 2000,
            max_devices: 10_000,
            summary_hours: 24,
            lan_quiet_max: 3,
            lan_min_hosts: 4,
            lan_min_ports: 4,
        }
    }
}

/// A stable 64-bit key for a destination or port (FNV-1a: the same on
/// every platform and version, so stored baselines stay valid).
fn key(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Where a connection went, as a baseline remembers it: the site the
/// device looked the address up as, else the address's /24 (IPv4) or /48
/// (IPv6), so CDN address churn is one destination.
fn destination(dst: &IpAddr, name: Option<&str>) -> u64 {
    match (name, dst) {
        (Some(n), _) => key(&[b"name", n.as_bytes()]),
        (None, IpAddr::V4(v4)) => key(&[b"v4", &v4.octets()[..3]]),
        (None, IpAddr::V6(v6)) => key(&[b"v6", &v6.octets()[..6]]),
    }
}

/// [`destination`] in words, for alerts.
fn destination_text(dst: &IpAddr, name: Option<&str>) -> String {
    match (name, dst) {
        (Some(n), _) => n.to_string(),
        (None, IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        (None, IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

fn port_key(transport: Transport, port: u16) -> u32 {
    (transport as u32) << 16 | u32::from(port)
}

fn port_text(k: u32) -> String {
    let t = Transport::try_from((k >> 16) as i32)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("TRANSPORT_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into());
    format!("{}/{t}", k & 0xffff)
}

/// One device's activity in one hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Hours since the epoch.
    pub hour: i64,
    pub connections: u64,
    pub failures: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub destinations: HashSet<u64>,
    pub ports: HashSet<u32>,
    pub dns_queries: u64,
    pub nxdomains: u64,
    /// Bytes received from destinations outside the baseline.
    #[serde(default)]
    pub bytes_down_new: u64,
    /// LAN hosts contacted (keys of their addresses).
    #[serde(default)]
    pub lan_hosts: HashSet<u64>,
    /// Probed (host key, port key) pairs on the LAN: connections that
    /// never became a session (at most [`LAN_PROBES_KEPT`]).
    #[serde(default)]
    pub lan_probes: HashSet<(u64, u32)>,
    /// Probed ports per LAN host, and the most of them on one host.
    #[serde(default, with = "crate::pairs")]
    pub lan_ports: HashMap<u64, u32>,
    #[serde(default)]
    pub lan_ports_most: u32,
}

/// Probed LAN (host, port) pairs a bucket keeps: a full port scan is
/// caught long before, and the hour's state stays small.
pub const LAN_PROBES_KEPT: usize = 4096;

impl Bucket {
    /// Counts a probe of `port` on LAN host `host`; true when it is new.
    fn lan_probe(&mut self, host: u64, port: u32) -> bool {
        if self.lan_probes.len() >= LAN_PROBES_KEPT || !self.lan_probes.insert((host, port)) {
            return false;
        }
        let n = self.lan_ports.entry(host).or_default();
        *n += 1;
        self.lan_ports_most = self.lan_ports_most.max(*n);
        true
    }
}

/// One hour of the day over the window: per day, bytes up, bytes down and
/// connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HourOfDay {
    /// (day since the epoch, bytes up, bytes down, connections).
    pub days: VecDeque<(i64, u64, u64, u64)>,
}

/// What a device's type normally does, from a golden profile: used while
/// the device's own baseline is young.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Seed {
    pub profile_id: String,
    pub profile_version: u64,
    pub destinations: HashSet<u64>,
    pub ports: HashSet<u32>,
    /// Hours of the day with any share of the type's activity.
    pub active_hours: Vec<bool>,
    /// The type's p99 of bytes per day, up and down: an hour above it is a
    /// spike for any device of the type.
    pub daily_up_p99: f64,
    pub daily_down_p99: f64,
}

impl Seed {
    /// The parts of `p` a young baseline can judge with.
    pub fn from_profile(p: &GoldenProfile) -> Seed {
        Seed {
            profile_id: p.profile_id.clone(),
            profile_version: p.version,
            destinations: p
                .typical_destinations
                .iter()
                .filter(|d| d.share >= 0.01)
                .map(|d| key(&[b"name", d.registered_domain.to_ascii_lowercase().as_bytes()]))
                .collect(),
            ports: p
                .typical_ports
                .iter()
                .filter(|x| x.share >= 0.01)
                .filter_map(|x| {
                    Some(port_key(
                        Transport::try_from(x.transport).ok()?,
                        u16::try_from(x.port).ok()?,
                    ))
                })
                .collect(),
            active_hours: if p.active_hours.len() == 24 {
                p.active_hours.iter().map(|s| *s > 0.002).collect()
            } else {
                vec![true; 24]
            },
            daily_up_p99: p.daily_bytes_up.as_ref().map_or(0.0, |q| q.p99.max(q.max)),
            daily_down_p99: p
                .daily_bytes_down
                .as_ref()
                .map_or(0.0, |q| q.p99.max(q.max)),
        }
    }
}

/// A device's baseline: one version of what it normally does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Grows by one with every fold (or rollback).
    pub version: u64,
    /// First and last hour folded in.
    pub first_hour: i64,
    pub last_hour: i64,
    /// Last hour with any activity folded in.
    #[serde(default)]
    pub last_active_hour: i64,
    /// Hours with any activity folded in.
    pub active_hours_seen: u64,
    /// Destination key → (first hour, last hour) seen.
    pub destinations: HashMap<u64, (i64, i64)>,
    /// Destination key → hours it was used in: a destination of many
    /// hours is a habit.
    #[serde(default)]
    pub dest_hours: HashMap<u64, u32>,
    /// Port key → (first hour, last hour) seen.
    pub ports: HashMap<u32, (i64, i64)>,
    /// Per hour of day (local), the days of the window.
    pub hours: Vec<HourOfDay>,
    /// Per hour of day, on how many days of the window it had activity.
    pub active: Vec<u32>,
    /// Hours of the week with activity (local; bit 0 is Monday 00:00), per
    /// week since the epoch, for the last [`WEEKS_KEPT`] weeks, flagged
    /// hours included: an hour the device used on the same weekday in an
    /// earlier week (Saturday morning) is not unusual, though the window
    /// lost it or never learnt it.
    #[serde(default)]
    pub weeks: Vec<(i64, [u64; 3])>,
    /// Per day of the window: the most LAN hosts contacted in one hour,
    /// and the most ports probed on one LAN host in one hour.
    #[serde(default)]
    pub lan: VecDeque<(i64, u32, u32)>,
    /// New destinations and ports per day after the first day.
    pub churn_per_day: f64,
    pub port_churn_per_day: f64,
    /// How far the baseline can be trusted, 0..1.
    pub confidence: f64,
    /// Set while a golden profile stands in for the device's own data.
    pub seed: Option<Seed>,
}

/// Weeks of hour-of-week activity a baseline keeps.
pub const WEEKS_KEPT: i64 = 4;

/// The week (since the Monday before the epoch) and the hour of the week
/// (Monday 00:00 = 0) of a local hour since the epoch.
fn week_hour(local_hour: i64) -> (i64, usize) {
    // 1970-01-01 was a Thursday: three days after a Monday.
    let from_monday = local_hour + 3 * 24;
    (
        from_monday.div_euclid(7 * 24),
        from_monday.rem_euclid(7 * 24) as usize,
    )
}

impl Baseline {
    /// Whether the device was active in this hour of the week (local hour
    /// since the epoch) in any week kept.
    pub fn used_this_hour_of_week(&self, local_hour: i64) -> bool {
        let (_, bit) = week_hour(local_hour);
        self.weeks
            .iter()
            .any(|(_, bits)| bits[bit / 64] >> (bit % 64) & 1 == 1)
    }

    /// The most LAN hosts in an hour, and the most ports probed on one LAN
    /// host in an hour, over the window.
    pub fn lan_max(&self) -> (u32, u32) {
        self.lan
            .iter()
            .fold((0, 0), |(h, p), (_, dh, dp)| (h.max(*dh), p.max(*dp)))
    }

    /// Days from the first to the last hour with activity: quiet hours
    /// folded after the last activity (a device switched off, a capture
    /// that ended) are not data.
    fn days(&self) -> f64 {
        if self.active_hours_seen == 0 {
            return 0.0;
        }
        (self.last_active_hour.max(self.first_hour) - self.first_hour + 1) as f64 / 24.0
    }

    /// Folds one finished hour in, drops what left the window, and makes
    /// this a new version.
    pub fn fold(&mut self, b: &Bucket, cfg: &BaselineConfig) {
        self.fold_judged(b, cfg, false);
    }

    /// [`Baseline::fold`]; `flagged` when the hour raised a volume or
    /// unusual-time alert: its destinations and ports are learnt, its
    /// volume and activity are not (an attack is not made normal by
    /// happening once).
    pub fn fold_judged(&mut self, b: &Bucket, cfg: &BaselineConfig, flagged: bool) {
        if self.hours.len() != 24 {
            self.hours = vec![HourOfDay::default(); 24];
            self.active = vec![0; 24];
        }
        if self.active_hours_seen == 0 {
            self.first_hour = b.hour;
        }
        let active = b.connections > 0 || b.dns_queries > 0;
        self.active_hours_seen += u64::from(active);
        if active {
            self.last_active_hour = self.last_active_hour.max(b.hour);
        }
        self.last_hour = self.last_hour.max(b.hour);
        let first_day_end = self.first_hour + 24;
        let mut new_dests = 0usize;
        for d in &b.destinations {
            *self.dest_hours.entry(*d).or_insert(0) += 1;
            let e = self.destinations.entry(*d).or_insert_with(|| {
                new_dests += 1;
                (b.hour, b.hour)
            });
            e.1 = e.1.max(b.hour);
        }
        for p in &b.ports {
            let e = self.ports.entry(*p).or_insert((b.hour, b.hour));
            e.1 = e.1.max(b.hour);
        }
        let local = b.hour + i64::from(cfg.utc_offset_minutes) / 60;
        let (day, hod) = (local.div_euclid(24), local.rem_euclid(24) as usize);
        // Unlike the window, the weeks keep flagged hours too: once is an
        // alert, the same hour of the next week is a habit.
        if active {
            let (week, bit) = week_hour(local);
            if let Some((_, bits)) = self.weeks.iter_mut().find(|(w, _)| *w == week) {
                bits[bit / 64] |= 1 << (bit % 64);
            } else {
                let mut bits = [0u64; 3];
                bits[bit / 64] |= 1 << (bit % 64);
                self.weeks.push((week, bits));
                self.weeks.sort_unstable_by_key(|(w, _)| *w);
            }
            self.weeks.retain(|(w, _)| *w > week - WEEKS_KEPT);
        }
        if !flagged {
            let h = &mut self.hours[hod];
            h.days.retain(|(d, ..)| *d != day);
            h.days
                .push_back((day, b.bytes_up, b.bytes_down, b.connections));
        }
        let window = i64::from(cfg.window_days);
        if !flagged {
            let hosts = b.lan_hosts.len() as u32;
            let ports = b.lan_ports_most;
            match self.lan.back_mut() {
                Some((d, h, p)) if *d == day => {
                    *h = (*h).max(hosts);
                    *p = (*p).max(ports);
                }
                _ => self.lan.push_back((day, hosts, ports)),
            }
        }
        while self.lan.front().is_some_and(|(d, ..)| *d <= day - window) {
            self.lan.pop_front();
        }
        for h in &mut self.hours {
            while h.days.front().is_some_and(|(d, ..)| *d <= day - window) {
                h.days.pop_front();
            }
        }
        for (i, h) in self.hours.iter().enumerate() {
            self.active[i] = h.days.iter().filter(|(_, _, _, c)| *c > 0).count() as u32;
        }
        let oldest = b.hour - window * 24;
        self.destinations.retain(|_, (_, last)| *last > oldest);
        self.ports.retain(|_, (_, last)| *last > oldest);
        if self.destinations.len() > cfg.max_destinations {
            // Keep the most recent; the churn figure already says this
            // device is not one to judge by destination.
            let mut v: Vec<(u64, (i64, i64))> = self.destinations.drain().collect();
            v.sort_by_key(|(_, (_, last))| std::cmp::Reverse(*last));
            v.truncate(cfg.max_destinations);
            self.destinations = v.into_iter().collect();
        }
        let kept = &self.destinations;
        self.dest_hours.retain(|k, _| kept.contains_key(k));
        let days = self.days();
        if days > 1.0 {
            let later = |first: i64| first >= first_day_end;
            let nd = self
                .destinations
                .values()
                .filter(|(f, _)| later(*f))
                .count();
            let np = self.ports.values().filter(|(f, _)| later(*f)).count();
            self.churn_per_day = nd as f64 / (days - 1.0);
            self.port_churn_per_day = np as f64 / (days - 1.0);
        } else {
            self.churn_per_day = new_dests as f64;
        }
        // Confidence: enough days of data, discounted by churn.
        let data = (days / cfg.learn_days).min(1.0);
        let steady = 1.0 / (1.0 + self.churn_per_day / 20.0);
        self.confidence = data * (0.5 + 0.5 * steady);
        if self.confidence >= cfg.min_confidence {
            self.seed = None;
        }
        self.version += 1;
    }

    /// Bytes (up, down) and connections that would be a spike in local
    /// hour `hod`: the robust upper bound of the same hour over the window
    /// (and its neighbours, so a slightly late habit is not a spike).
    fn limits(&self, hod: usize, cfg: &BaselineConfig) -> Option<(f64, f64, f64)> {
        if self.hours.len() != 24 {
            return None;
        }
        let mut up = Vec::new();
        let mut down = Vec::new();
        let mut conns = Vec::new();
        for off in [23, 0, 1] {
            for (_, u, d, c) in &self.hours[(hod + off) % 24].days {
                up.push(*u as f64);
                down.push(*d as f64);
                conns.push(*c as f64);
            }
        }
        if up.len() < 3 {
            return None;
        }
        let bound = |v: &mut Vec<f64>, floor: f64| {
            v.sort_by(f64::total_cmp);
            let med = v[v.len() / 2];
            let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
            dev.sort_by(f64::total_cmp);
            let mad = dev[dev.len() / 2] * 1.4826;
            let max = v[v.len() - 1];
            (med + cfg.volume_k * mad).max(max * 1.5 + floor)
        };
        let floor = cfg.volume_min_bytes as f64;
        Some((
            bound(&mut up, floor),
            bound(&mut down, floor),
            bound(&mut conns, 200.0),
        ))
    }
}

/// p50, p90, p99 and max of `v` (nearest rank), or `None` for no values.
fn quantiles(mut v: Vec<f64>) -> Option<Quantiles> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Some(Quantiles {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: v[v.len() - 1],
    })
}

/// What `p`'s baseline says, without any address: named destinations by
/// site (at most 20, used in at least two hours), ports, daily volumes,
/// the hours of the day it is active in, churn and confidence. The input
/// of a behavioural signature (the asgard-bridge anonymizes the rest).
pub fn summary(key: &str, p: &DeviceProfile, cfg: &BaselineConfig) -> BaselineSummary {
    let b = &p.baseline;
    let mut sites: Vec<(&str, u32)> = p
        .sites
        .iter()
        .filter_map(|(k, name)| Some((name.as_str(), *b.dest_hours.get(k)?)))
        .filter(|(_, h)| *h >= 2)
        .collect();
    sites.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    sites.truncate(20);
    let mut ports: Vec<u32> = b.ports.keys().copied().collect();
    ports.sort_unstable();
    ports.truncate(20);
    let mut days: HashMap<i64, (f64, f64)> = HashMap::new();
    let mut per_hour = Vec::new();
    let mut by_hod = [0.0f64; 24];
    for (hod, h) in b.hours.iter().enumerate().take(24) {
        for (day, up, down, conns) in &h.days {
            let e = days.entry(*day).or_default();
            e.0 += *up as f64;
            e.1 += *down as f64;
            if *conns > 0 {
                per_hour.push(*conns as f64);
                by_hod[hod] += *conns as f64;
            }
        }
    }
    let total: f64 = by_hod.iter().sum();
    let at = |hour: i64| hour * crate::HOUR;
    BaselineSummary {
        sensor_id: String::new(),
        device_key: key.to_string(),
        mac: p.mac.map(|m| m.to_vec().into()).unwrap_or_default(),
        device_type: DeviceType::from_str_name(&format!(
            "DEVICE_TYPE_{}",
            p.device_type.to_ascii_uppercase()
        ))
        .unwrap_or(DeviceType::Unspecified) as i32,
        version: b.version,
        confidence: b.confidence,
        window_start_us: at(b
            .first_hour
            .max(b.last_hour - i64::from(cfg.window_days) * 24 + 1)),
        window_end_us: at(b.last_hour + 1),
        active_hours_seen: b.active_hours_seen,
        top_sites: sites
            .into_iter()
            .map(|(site, hours)| SiteUse {
                site: site.to_string(),
                hours,
            })
            .collect(),
        destinations: b.destinations.len() as u64,
        ports: ports
            .into_iter()
            .map(|k| PortUse {
                transport: (k >> 16) as i32,
                port: k & 0xffff,
            })
            .collect(),
        daily_bytes_up: quantiles(days.values().map(|d| d.0).collect()),
        daily_bytes_down: quantiles(days.values().map(|d| d.1).collect()),
        active_hours: if total > 0.0 {
            by_hod.iter().map(|c| c / total).collect()
        } else {
            Vec::new()
        },
        connections_per_hour: quantiles(per_hour),
        destination_churn_per_day: b.churn_per_day,
        port_churn_per_day: b.port_churn_per_day,
        seed_profile_id: b
            .seed
            .as_ref()
            .map(|s| s.profile_id.clone())
            .unwrap_or_default(),
    }
}

/// A device's learning and judging state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceProfile {
    /// IP and MAC the device was last seen with, for alerts.
    pub ip: Option<IpAddr>,
    pub mac: Option<[u8; 6]>,
    /// Device type name from the fingerprint service, when known.
    pub device_type: String,
    pub baseline: Baseline,
    /// The hour being collected.
    pub current: Bucket,
    /// Alerts of the current hour already raised, by detector, so each
    /// fires once per hour per device.
    pub fired: HashSet<String>,
    /// Set when the baseline changed and is not yet stored.
    #[serde(skip)]
    pub dirty: bool,
    /// The site each named destination key stands for, for summaries
    /// (pruned to the baseline's destinations when summarised).
    #[serde(default)]
    pub sites: HashMap<u64, String>,
    /// Last hour of the baseline when it was last summarised.
    #[serde(default)]
    pub summarised_hour: i64,
    /// The thresholds resolved for this device at an address (see
    /// [`Profiler::thresholds`]), until its address, MAC or type changes.
    #[serde(skip)]
    resolved: Option<(IpAddr, BaselineConfig)>,
}

/// Which baseline detectors may fire for one device.
fn judging(p: &DeviceProfile, cfg: &BaselineConfig) -> bool {
    p.baseline.confidence >= cfg.min_confidence || p.baseline.seed.is_some()
}

/// Every device's profile; feed records in time order per device.
///
/// It serializes (serde) to the profiles and the names it learnt, without
/// its settings, golden profiles or anything not yet taken.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Profiler {
    #[serde(skip)]
    pub cfg: BaselineConfig,
    pub devices: HashMap<String, DeviceProfile>,
    /// Registered domain each address was last looked up as (in one home,
    /// an address means the same service whoever asked).
    #[serde(with = "crate::pairs")]
    names: HashMap<IpAddr, Arc<str>>,
    /// Golden profiles by device type name.
    #[serde(skip)]
    golden: HashMap<String, Seed>,
    /// Every baseline version made since the last call to
    /// [`Profiler::take_versions`], by device.
    #[serde(skip)]
    versions: Vec<(String, Baseline)>,
    /// Keep every version for [`Profiler::take_versions`] and a summary
    /// every [`BaselineConfig::summary_hours`] for
    /// [`Profiler::take_summaries`] (a service that stores and shares
    /// them); off, only the latest baseline is kept.
    #[serde(skip)]
    pub record_versions: bool,
    #[serde(skip)]
    summaries: Vec<BaselineSummary>,
    /// Thresholds per device type and device, over `cfg` (set by the
    /// monitor when a thresholds file has such layers).
    #[serde(skip)]
    pub thresholds: Option<(
        Arc<crate::thresholds::Thresholds>,
        crate::thresholds::Resolved,
    )>,
    #[serde(skip)]
    out: Vec<(String, Alert)>,
}

impl Profiler {
    pub fn new(cfg: BaselineConfig) -> Self {
        Profiler {
            cfg,
            ..Profiler::default()
        }
    }

    /// Alerts raised since the last call, with the device key each is
    /// about.
    pub fn take(&mut self) -> Vec<(String, Alert)> {
        std::mem::take(&mut self.out)
    }

    /// Every baseline version made since the last call, oldest first,
    /// with its device.
    pub fn take_versions(&mut self) -> Vec<(String, Baseline)> {
        std::mem::take(&mut self.versions)
    }

    /// Summaries of baselines that grew by a summary interval since the
    /// last call (`sensor_id` left empty for the caller).
    pub fn take_summaries(&mut self) -> Vec<BaselineSummary> {
        std::mem::take(&mut self.summaries)
    }

    /// A golden profile for a device type: seeds the baselines of young
    /// devices of that type, now and when they appear.
    pub fn golden(&mut self, device_type: &str, p: &GoldenProfile) {
        let seed = Seed::from_profile(p);
        for d in self.devices.values_mut() {
            if d.device_type == device_type && d.baseline.confidence < self.cfg.min_confidence {
                d.baseline.seed = Some(seed.clone());
                d.dirty = true;
            }
        }
        self.golden.insert(device_type.to_string(), seed);
    }

    /// What the fingerprint service says a device is.
    pub fn device_type(&mut self, device: &str, device_type: &str) {
        let cfg = self.cfg;
        let seed = self.golden.get(device_type).cloned();
        let Some(d) = self.device(device, 0) else {
            return;
        };
        if d.device_type != device_type {
            d.device_type = device_type.to_string();
            d.resolved = None;
            if d.baseline.confidence < cfg.min_confidence && seed.is_some() {
                d.baseline.seed = seed;
            }
            d.dirty = true;
        }
    }

    /// Takes over the profiles and names `saved` had learnt.
    pub fn resume(&mut self, saved: Profiler) {
        self.devices = saved.devices;
        self.names = saved.names;
    }

    /// Replaces a device's baseline (a stored one, or a rollback).
    pub fn restore(&mut self, device: &str, profile: DeviceProfile) {
        self.devices.insert(device.to_string(), profile);
    }

    /// The profile of `device`, rolling its hour forward to `ts_us`.
    fn device(&mut self, device: &str, ts_us: i64) -> Option<&mut DeviceProfile> {
        if !self.devices.contains_key(device) {
            if self.devices.len() >= self.cfg.max_devices {
                return None;
            }
            self.devices
                .insert(device.to_string(), DeviceProfile::default());
        }
        let cfg = self.cfg;
        let d = self.devices.get_mut(device)?;
        let hour = ts_us.div_euclid(HOUR);
        if ts_us > 0 && hour > d.current.hour {
            if d.current.hour > 0 {
                let done = std::mem::take(&mut d.current);
                let version = d.baseline.version;
                let flagged = [
                    "volume_spike",
                    "exfiltration",
                    "unusual_time",
                    "host_sweep",
                    "port_scan",
                ]
                .iter()
                .any(|t| d.fired.contains(*t));
                d.baseline.fold_judged(&done, &cfg, flagged);
                // Hours with nothing in them count as quiet hours of the
                // day, up to a day of them (a device switched off for a week
                // is not folded in hour by hour).
                let gap = (hour - done.hour - 1).min(24);
                for i in 1..=gap {
                    d.baseline.fold(
                        &Bucket {
                            hour: done.hour + i,
                            ..Bucket::default()
                        },
                        &cfg,
                    );
                }
                // One recompute, one version, however many hours it folded.
                d.baseline.version = version + 1;
                d.dirty = true;
                if self.record_versions {
                    self.versions.push((device.to_string(), d.baseline.clone()));
                    let every = i64::from(cfg.summary_hours);
                    // The first summary after a full interval of data.
                    let since = if d.summarised_hour == 0 {
                        d.baseline.first_hour - 1
                    } else {
                        d.summarised_hour
                    };
                    if every > 0 && d.baseline.last_hour - since >= every {
                        d.summarised_hour = d.baseline.last_hour;
                        let kept = &d.baseline.destinations;
                        d.sites.retain(|k, _| kept.contains_key(k));
                        self.summaries.push(summary(device, d, &cfg));
                    }
                }
            }
            d.current = Bucket {
                hour,
                ..Bucket::default()
            };
            d.fired.clear();
        }
        Some(d)
    }

    /// Every device's hour rolled forward to `ts_us` (call when time passes
    /// without traffic, so quiet devices' hours close too).
    pub fn advance(&mut self, ts_us: i64) {
        let keys: Vec<String> = self.devices.keys().cloned().collect();
        for k in keys {
            self.device(&k, ts_us);
        }
    }

    /// The thresholds that hold for `device` (at `ip`): its type's and its
    /// own layers over the global ones.
    /// Resolved once per device and address, not per connection.
    fn cfg_of(&mut self, device: &str, ip: &IpAddr) -> BaselineConfig {
        let Some((t, base)) = &self.thresholds else {
            return self.cfg;
        };
        let d = self.devices.get_mut(device);
        if let Some((at, cfg)) = d.as_ref().and_then(|d| d.resolved)
            && at == *ip
        {
            return cfg;
        }
        let (ty, mac) = d
            .as_ref()
            .map_or(("", None), |d| (d.device_type.as_str(), d.mac));
        let mac = mac.map(heimdall_proto::addr::mac_text).unwrap_or_default();
        let cfg = t
            .for_device(base, ty, &[device, &mac, &ip.to_string()])
            .map_or(self.cfg, |r| r.baseline);
        if let Some(d) = d {
            d.resolved = Some((*ip, cfg));
        }
        cfg
    }

    /// Whether `device`'s confident baseline holds the destination `dst`
    /// as a habit (used in many hours), not news.
    pub fn knows(&self, device: &str, dst: &IpAddr) -> bool {
        let Some(d) = self.devices.get(device) else {
            return false;
        };
        if d.baseline.confidence < self.cfg.min_confidence {
            return false;
        }
        let key = destination(dst, self.names.get(dst).map(|n| &**n));
        // Used in at least six hours (a nightly job within a week): a beacon that ran
        // for an hour or two once (and slipped by) does not make a later
        // one to the same network a habit.
        d.baseline.dest_hours.get(&key).is_some_and(|h| *h >= 6)
    }

    /// One DNS answer: remembers the registered domain of the addresses.
    pub fn dns(&mut self, device: &str, ts_us: i64, name: &str, addrs: &[IpAddr], nxdomain: bool) {
        // Connections are the clock (the DNS and connection streams are
        // consumed apart and one may run ahead of the other), and they
        // make a device: a look-up alone, perhaps before the device's MAC
        // is known, counts only for a device already profiled.
        let _ = ts_us;
        if let Some(d) = self.devices.get_mut(device) {
            d.dirty = true;
            d.current.dns_queries += 1;
            d.current.nxdomains += u64::from(nxdomain);
        }
        if addrs.is_empty() {
            return;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(base) = heimdall_anonymize::site(&name) else {
            return;
        };
        if self.names.len() > 200_000 {
            self.names.clear();
        }
        let base: Arc<str> = base.into();
        for a in addrs {
            self.names.insert(*a, base.clone());
        }
    }

    /// One finished connection from `device`.
    pub fn flow(&mut self, device: &str, f: &Flow) {
        let name = self.names.get(&f.dst).cloned();
        let cfg = self.cfg_of(device, &f.src);
        let Some(d) = self.device(device, f.ts_us) else {
            return;
        };
        d.dirty = true;
        d.ip = Some(f.src);
        if f.src_mac.is_some() && d.mac != f.src_mac {
            d.mac = f.src_mac;
            d.resolved = None;
        }
        let b = &mut d.current;
        b.connections += 1;
        b.failures += u64::from(f.is_probe());
        b.bytes_up += f.orig_bytes;
        b.bytes_down += f.resp_bytes;
        let external = !crate::private(&f.dst) && crate::unicast(&f.dst);
        let lan = crate::private(&f.dst) && crate::unicast(&f.dst) && f.dst != f.src;
        let mut new_lan_host = false;
        let mut new_lan_probe = false;
        if lan && b.lan_hosts.len() < 4096 {
            let host = match f.dst {
                IpAddr::V4(v) => key(&[b"lan4", &v.octets()]),
                IpAddr::V6(v) => key(&[b"lan6", &v.octets()]),
            };
            new_lan_host = b.lan_hosts.insert(host);
            if f.is_probe() {
                new_lan_probe = b.lan_probe(host, port_key(f.transport, f.dst_port));
            }
        }
        let dest = destination(&f.dst, name.as_deref());
        let port = port_key(f.transport, f.dst_port);
        let new_dest = external && b.destinations.insert(dest);
        if new_dest
            && let Some(n) = name.as_deref()
            && d.sites.len() < cfg.max_destinations * 2
        {
            d.sites.entry(dest).or_insert_with(|| n.to_string());
        }
        let known = d.baseline.destinations.contains_key(&dest)
            || d.baseline
                .seed
                .as_ref()
                .is_some_and(|s| s.destinations.contains(&dest));
        if !known {
            b.bytes_down_new += f.resp_bytes;
        }
        let new_port = !f.is_probe() && b.ports.insert(port);
        if !judging(d, &cfg) || f.ts_us <= 0 {
            return;
        }
        let mut alerts = Vec::new();
        let base = &d.baseline;
        let seed = base.seed.as_ref();
        let own = base.confidence >= cfg.min_confidence;
        if new_dest
            && !base.destinations.contains_key(&dest)
            && !seed.is_some_and(|s| s.destinations.contains(&dest))
            && (!own || base.churn_per_day <= cfg.max_churn_per_day)
        {
            let known = base.destinations.len();
            let dest_text = destination_text(&f.dst, name.as_deref());
            alerts.push(Alert {
                alert_type: "new_destination".into(),
                severity: if known <= 10 {
                    Severity::Medium
                } else {
                    Severity::Low
                } as i32,
                score: (1.0 - base.churn_per_day / (cfg.max_churn_per_day * 2.0)).clamp(0.3, 1.0),
                dst_ip: heimdall_proto::addr::ip_bytes(f.dst).into(),
                dst_port: Some(u32::from(f.dst_port)),
                dst_domain: name.as_deref().map(str::to_string),
                transport: f.transport as i32,
                description: format!(
                    "{} talked to {dest_text} ({}:{}), a destination it has not used in {} days; it normally keeps to {known} destinations and meets {:.1} new ones a day",
                    f.src,
                    f.dst,
                    f.dst_port,
                    cfg.window_days,
                    base.churn_per_day
                ),
                expected: format!("one of its {known} usual destinations"),
                observed: format!("a connection to {dest_text}"),
                evidence: vec![
                    kv("destination", dest_text),
                    kv("known_destinations", known.to_string()),
                    kv("new_per_day", format!("{:.2}", base.churn_per_day)),
                ],
                suppression_key: format!("new_destination|{device}|{dest:016x}"),
                ..Default::default()
            });
        }
        if new_port
            && !base.ports.contains_key(&port)
            && !seed.is_some_and(|s| s.ports.contains(&port))
            && (!own || base.port_churn_per_day <= cfg.max_port_churn_per_day)
        {
            let known: Vec<String> = {
                let mut v: Vec<u32> = base.ports.keys().copied().collect();
                v.sort_unstable();
                v.into_iter().take(8).map(port_text).collect()
            };
            alerts.push(Alert {
                alert_type: "new_port".into(),
                severity: Severity::Low as i32,
                score: 0.5,
                dst_ip: heimdall_proto::addr::ip_bytes(f.dst).into(),
                dst_port: Some(u32::from(f.dst_port)),
                transport: f.transport as i32,
                description: format!(
                    "{} used {} to {}, a port it has not used in {} days",
                    f.src,
                    port_text(port),
                    f.dst,
                    cfg.window_days
                ),
                expected: format!("its usual ports ({})", known.join(", ")),
                observed: format!("a session on {}", port_text(port)),
                evidence: vec![
                    kv("port", port_text(port)),
                    kv("known_ports", base.ports.len().to_string()),
                ],
                suppression_key: format!("new_port|{device}|{port}"),
                ..Default::default()
            });
        }
        // The LAN: a device that kept to a host or two (a plug and the
        // gateway) and now reaches many, or probes a LAN host's ports, is
        // mapping the network, however slowly.
        let (lan_hosts_max, lan_ports_max) = if new_lan_host || new_lan_probe {
            base.lan_max()
        } else {
            (u32::MAX, u32::MAX)
        };
        if own && base.days() >= 2.0 && lan_hosts_max <= cfg.lan_quiet_max {
            let days = cfg.window_days;
            // `n` of what `name` counts against `usual`, under the shape
            // detectors' suppression key: one scan, one alert.
            let lan_alert = |kind: &str,
                             (name, n, usual): (&str, u32, u32),
                             description: String,
                             (expected, observed): (String, String),
                             key: String| Alert {
                alert_type: kind.into(),
                severity: Severity::Medium as i32,
                score: (f64::from(n) / 20.0).clamp(0.5, 1.0),
                description,
                expected,
                observed,
                evidence: vec![
                    kv(name, n.to_string()),
                    kv("usual_max", usual.to_string()),
                    kv("method", "baseline".into()),
                ],
                suppression_key: key,
                ..Default::default()
            };
            let hosts = d.current.lan_hosts.len() as u32;
            if new_lan_host
                && hosts >= cfg.lan_min_hosts.max(2 * lan_hosts_max + 2)
                && !d.fired.contains("host_sweep")
            {
                alerts.push(lan_alert(
                    "host_sweep",
                    ("lan_hosts", hosts, lan_hosts_max),
                    format!(
                        "{} contacted {hosts} LAN hosts in this hour; in {days} days it never contacted more than {lan_hosts_max} in an hour",
                        f.src
                    ),
                    (
                        format!("at most {lan_hosts_max} LAN hosts an hour"),
                        format!("{hosts} LAN hosts, the latest {}", f.dst),
                    ),
                    crate::sweep_key(f),
                ));
            }
            let ports = if new_lan_probe {
                d.current.lan_ports_most
            } else {
                0
            };
            if ports >= cfg.lan_min_ports.max(2 * lan_ports_max + 2)
                && !d.fired.contains("port_scan")
            {
                alerts.push(lan_alert(
                    "port_scan",
                    ("ports", ports, lan_ports_max),
                    format!(
                        "{} probed {ports} ports of a LAN host in this hour ({} the latest); in {days} days it never probed more than {lan_ports_max}",
                        f.src, f.dst
                    ),
                    (
                        format!("at most {lan_ports_max} probed ports on a LAN host"),
                        format!("{ports} probed ports on {}", f.dst),
                    ),
                    crate::scan_key(f),
                ));
            }
        }
        let local = d.current.hour + i64::from(cfg.utc_offset_minutes) / 60;
        let hod = local.rem_euclid(24) as usize;
        let b = &d.current;
        // unusual_time: busy in an hour of day it never uses.
        let quiet_hour = if own {
            base.active.get(hod).is_some_and(|a| *a == 0)
                && !base.used_this_hour_of_week(local)
                && base.active.iter().filter(|a| **a > 0).count() <= cfg.unusual_max_active_hours
                && base.days() >= 2.0
        } else {
            seed.is_some_and(|s| !s.active_hours.get(hod).copied().unwrap_or(true))
        };
        if quiet_hour
            && b.connections >= cfg.unusual_min_connections
            && !d.fired.contains("unusual_time")
        {
            let usual: Vec<String> = (0..24)
                .filter(|h| base.active.get(*h).is_some_and(|a| *a > 0))
                .map(|h| format!("{h:02}"))
                .collect();
            alerts.push(Alert {
                alert_type: "unusual_time".into(),
                severity: Severity::Low as i32,
                score: 0.5,
                description: format!(
                    "{} made {} connections at {hod:02}:00-{hod:02}:59, an hour it has not been active in for {} days",
                    f.src, b.connections, cfg.window_days
                ),
                expected: format!("activity in its usual hours ({})", usual.join(" ")),
                observed: format!("{} connections at {hod:02}h", b.connections),
                evidence: vec![
                    kv("hour", hod.to_string()),
                    kv("connections", b.connections.to_string()),
                ],
                suppression_key: format!("unusual_time|{device}"),
                ..Default::default()
            });
        }
        let limits = if own {
            base.limits(hod, &cfg)
        } else {
            seed.filter(|s| s.daily_up_p99 > 0.0).map(|s| {
                let floor = cfg.volume_min_bytes as f64;
                (
                    s.daily_up_p99.max(floor),
                    s.daily_down_p99.max(floor),
                    f64::MAX,
                )
            })
        };
        if let Some((up_max, down_max, _)) = limits {
            let (up, down) = (b.bytes_up as f64, b.bytes_down as f64);
            if up > up_max && up >= cfg.exfil_ratio * down.max(1.0) {
                if !d.fired.contains("exfiltration") {
                    alerts.push(volume_alert("exfiltration", f, b, up, up_max, "sent"));
                }
            } else if (up > up_max || down > down_max) && !d.fired.contains("volume_spike") {
                let (v, m, dir) = if up > up_max {
                    (up, up_max, "sent")
                } else {
                    (down, down_max, "received")
                };
                let mut a = volume_alert("volume_spike", f, b, v, m, dir);
                if dir == "received" && (b.bytes_down_new as f64) < down_max {
                    // From its own usual servers: an update or a download
                    // someone asked for. Recorded, not notified.
                    a.severity = Severity::Low as i32;
                    a.description
                        .push_str(", all of it from destinations it normally uses");
                }
                alerts.push(a);
            }
        }
        let version = base.version;
        let mut ready = Vec::with_capacity(alerts.len());
        for mut a in alerts {
            if matches!(
                a.alert_type.as_str(),
                "unusual_time" | "exfiltration" | "volume_spike" | "host_sweep" | "port_scan"
            ) {
                d.fired.insert(a.alert_type.clone());
                if matches!(a.alert_type.as_str(), "exfiltration" | "volume_spike") {
                    a.suppression_key = format!("{}|{device}", a.alert_type);
                }
            }
            a.ts_us = f.ts_us;
            a.first_ts_us = f.ts_us;
            a.last_ts_us = f.ts_us;
            a.count = 1;
            a.baseline_version = Some(version);
            if own {
                a.evidence.push(kv("baseline_version", version.to_string()));
                a.evidence
                    .push(kv("confidence", format!("{:.2}", d.baseline.confidence)));
            } else if let Some(s) = &d.baseline.seed {
                a.evidence.push(kv("golden_profile", s.profile_id.clone()));
            }
            ready.push((device.to_string(), a));
        }
        self.out.extend(ready);
    }
}

fn volume_alert(kind: &str, f: &Flow, b: &Bucket, value: f64, limit: f64, dir: &str) -> Alert {
    let mb = |x: f64| x / 1e6;
    Alert {
        alert_type: kind.into(),
        severity: if kind == "exfiltration" {
            Severity::High
        } else {
            Severity::Medium
        } as i32,
        score: (value / (limit * 2.0)).clamp(0.5, 1.0),
        description: format!(
            "{} {dir} {:.1} MB in this hour (up {:.1} MB, down {:.1} MB); at this hour of day it has {dir} at most {:.1} MB{}",
            f.src,
            mb(value),
            mb(b.bytes_up as f64),
            mb(b.bytes_down as f64),
            mb(limit),
            if kind == "exfiltration" {
                ", and it is uploading far more than it downloads"
            } else {
                ""
            }
        ),
        expected: format!("at most {:.1} MB {dir} per hour", mb(limit)),
        observed: format!("{:.1} MB {dir} so far this hour", mb(value)),
        evidence: vec![
            kv("bytes_up", b.bytes_up.to_string()),
            kv("bytes_down", b.bytes_down.to_string()),
            kv("limit_bytes", format!("{limit:.0}")),
            kv("connections", b.connections.to_string()),
        ],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heimdall_proto::sensor::v1::ConnState;

    const DAY_US: i64 = 24 * HOUR;

    fn flow(ts_us: i64, dst: &str, port: u16, up: u64, down: u64) -> Flow {
        Flow {
            ts_us,
            src: "192.168.1.50".parse().expect("ip"),
            src_mac: Some([2, 0, 0, 0, 0, 0x50]),
            dst: dst.parse().expect("ip"),
            dst_port: port,
            transport: Transport::Tcp,
            state: ConnState::Sf,
            orig_bytes: up,
            resp_bytes: down,
            resp_pkts: 4,
            duration_us: 1_000_000,
        }
    }

    /// A smart plug: every 10 minutes to its cloud, 8 days.
    fn plug(p: &mut Profiler, days: i64) {
        let start = 1_700_000_000i64 / 3600 * HOUR;
        for m in (0..days * 24 * 60).step_by(10) {
            let ts = start + m * 60_000_000;
            p.dns(
                "plug",
                ts,
                "iot.tplinkcloud.com",
                &["52.1.2.3".parse().expect("ip")],
                false,
            );
            p.flow("plug", &flow(ts + 1000, "52.1.2.3", 443, 600, 900));
        }
    }

    #[test]
    fn a_learnt_plug_is_quiet_and_a_new_destination_stands_out() {
        let mut p = Profiler::new(BaselineConfig::default());
        plug(&mut p, 8);
        assert!(p.take().is_empty(), "normal behaviour raised alerts");
        let d = &p.devices["plug"];
        assert!(d.baseline.confidence >= 0.5, "{}", d.baseline.confidence);
        assert!(d.baseline.version > 100);
        let ts = d.current.hour * HOUR + 30 * 60_000_000;
        p.flow("plug", &flow(ts, "203.0.113.9", 8443, 100, 100));
        let alerts = p.take();
        let types: Vec<&str> = alerts.iter().map(|(_, a)| a.alert_type.as_str()).collect();
        assert!(types.contains(&"new_destination"), "{types:?}");
        assert!(types.contains(&"new_port"), "{types:?}");
        let nd = &alerts
            .iter()
            .find(|(_, a)| a.alert_type == "new_destination")
            .expect("alert")
            .1;
        assert!(
            nd.description.contains("203.0.113.0/24"),
            "{}",
            nd.description
        );
        assert!(nd.baseline_version.is_some());
    }

    #[test]
    fn a_baseline_is_summarised_once_a_day_by_site_without_addresses() {
        let mut p = Profiler::new(BaselineConfig::default());
        p.record_versions = true;
        plug(&mut p, 3);
        let sums = p.take_summaries();
        // Three days of data, the third hour-rolled only up to its last
        // hour: summaries after the first and second day.
        assert_eq!(sums.len(), 2, "{sums:?}");
        let s = &sums[1];
        assert_eq!(s.device_key, "plug");
        assert_eq!(s.version, 48);
        assert_eq!(
            s.top_sites,
            vec![SiteUse {
                site: "tplinkcloud.com".into(),
                hours: 48
            }]
        );
        assert_eq!(s.destinations, 1);
        assert_eq!(s.ports.len(), 1);
        assert_eq!(
            (s.ports[0].transport, s.ports[0].port),
            (Transport::Tcp as i32, 443)
        );
        assert_eq!(s.active_hours.len(), 24);
        assert!((s.active_hours.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // Six connections of 600 bytes up an hour: 86,400 bytes in a whole
        // UTC day; the window starts mid-day, so one day is partial.
        let up = s.daily_bytes_up.expect("daily up");
        assert_eq!(up.max, 86_400.0);
        assert!(up.p50 > 0.0 && up.p50 <= up.max, "{up:?}");
        assert_eq!(s.connections_per_hour.expect("per hour").p50, 6.0);
        assert_eq!(s.window_end_us - s.window_start_us, 48 * HOUR);
        let text = format!("{s:?}");
        assert!(
            !text.contains("52.1.2.3") && !text.contains("iot."),
            "{text}"
        );
    }

    /// A plug that kept to its cloud: four probed ports of the router are
    /// a port scan, four LAN hosts in an hour a sweep, both at the fourth.
    #[test]
    fn a_plug_that_kept_off_the_lan_is_caught_at_its_fourth_probe() {
        let mut p = Profiler::new(BaselineConfig::default());
        plug(&mut p, 8);
        assert!(p.take().is_empty());
        let probe = |ts: i64, dst: &str, port: u16| Flow {
            state: ConnState::Rej,
            orig_bytes: 0,
            resp_bytes: 0,
            resp_pkts: 1,
            ..flow(ts, dst, port, 0, 0)
        };
        let hour = p.devices["plug"].current.hour;
        let ts = hour * HOUR + 20 * 60_000_000;
        let mut raised = Vec::new();
        for (i, port) in [22u16, 23, 80, 8080].into_iter().enumerate() {
            p.flow(
                "plug",
                &probe(ts + i as i64 * 30_000_000, "192.168.1.1", port),
            );
            raised.push(
                p.take()
                    .into_iter()
                    .map(|(_, a)| a.alert_type)
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(raised[..3], [vec![], vec![], vec![]] as [Vec<String>; 3]);
        assert_eq!(raised[3], ["port_scan"]);
        let ts = (hour + 1) * HOUR + 5 * 60_000_000;
        let mut raised = Vec::new();
        for h in 0..4 {
            let dst = format!("192.168.1.{}", 30 + h);
            p.flow("plug", &probe(ts + h * 40_000_000, &dst, 80));
            raised.push(
                p.take()
                    .into_iter()
                    .map(|(_, a)| a.alert_type)
                    .collect::<Vec<_>>(),
            );
        }
        assert!(raised[..3].iter().all(Vec::is_empty), "{raised:?}");
        assert_eq!(raised[3], ["host_sweep"], "{raised:?}");
        // Flagged hours are not learnt: the plug's LAN habit stays nil.
        p.flow("plug", &flow((hour + 3) * HOUR, "52.1.2.3", 443, 600, 900));
        assert_eq!(p.devices["plug"].baseline.lan_max(), (0, 0));
    }

    /// A TV watched on weekday evenings and on weekend mornings too: its
    /// first Saturday morning is unusual, the Saturdays after it are not.
    #[test]
    fn a_weekend_habit_is_unusual_once_then_learnt_by_the_hour_of_the_week() {
        let mut p = Profiler::new(BaselineConfig::default());
        // Monday 2026-11-02 00:00 UTC.
        let monday = 1_793_577_600i64 * 1_000_000;
        let mut unusual_by_week = [0usize; 3];
        for day in 0..21i64 {
            let weekend = day % 7 >= 5;
            let hours: &[i64] = if weekend { &[10, 20, 21] } else { &[20, 21] };
            for h in 0..24 {
                let n = if hours.contains(&h) { 20 } else { 0 };
                for i in 0..n {
                    let ts = monday + day * DAY_US + h * HOUR + i * 120_000_000;
                    p.flow("tv", &flow(ts, "52.1.2.3", 443, 2_000, 90_000));
                }
            }
            let found = p
                .take()
                .into_iter()
                .filter(|(_, a)| a.alert_type == "unusual_time")
                .count();
            unusual_by_week[(day / 7) as usize] += found;
        }
        assert!(unusual_by_week[0] >= 1, "{unusual_by_week:?}");
        assert_eq!(unusual_by_week[1..], [0, 0], "{unusual_by_week:?}");
        let b = &p.devices["tv"].baseline;
        assert!(b.weeks.len() as i64 <= WEEKS_KEPT, "{:?}", b.weeks);
    }

    #[test]
    fn an_upload_burst_is_exfiltration_and_a_night_session_unusual() {
        let mut p = Profiler::new(BaselineConfig::default());
        plug(&mut p, 8);
        let d = &p.devices["plug"];
        let ts = d.current.hour * HOUR + 40 * 60_000_000;
        for i in 0..30 {
            p.flow("plug", &flow(ts + i, "52.1.2.3", 443, 5_000_000, 20_000));
        }
        let types: Vec<String> = p.take().into_iter().map(|(_, a)| a.alert_type).collect();
        assert_eq!(
            types.iter().filter(|t| *t == "exfiltration").count(),
            1,
            "{types:?}"
        );
    }

    #[test]
    fn a_golden_profile_protects_a_new_device_and_state_round_trips() {
        let mut p = Profiler::new(BaselineConfig::default());
        let profile = GoldenProfile {
            profile_id: "gp-plug".into(),
            version: 1,
            typical_destinations: vec![heimdall_proto::sensor::v1::DestinationExpectation {
                registered_domain: "tplinkcloud.com".into(),
                share: 0.9,
            }],
            typical_ports: vec![heimdall_proto::sensor::v1::PortExpectation {
                transport: Transport::Tcp as i32,
                port: 443,
                share: 0.9,
            }],
            ..Default::default()
        };
        p.golden("smart_plug", &profile);
        p.device_type("plug", "smart_plug");
        let ts = 1_700_000_000_000_000;
        p.dns(
            "plug",
            ts,
            "iot.tplinkcloud.com",
            &["52.1.2.3".parse().expect("ip")],
            false,
        );
        p.flow("plug", &flow(ts + 1, "52.1.2.3", 443, 600, 900));
        assert!(p.take().is_empty());
        p.flow("plug", &flow(ts + 2, "198.51.100.4", 23, 60, 90));
        let types: Vec<String> = p.take().into_iter().map(|(_, a)| a.alert_type).collect();
        assert_eq!(types, ["new_destination", "new_port"]);
        let saved = serde_json::to_string(&p.devices["plug"]).expect("json");
        let mut back: DeviceProfile = serde_json::from_str(&saved).expect("parse");
        back.dirty = p.devices["plug"].dirty;
        assert_eq!(back, p.devices["plug"]);
    }
}
