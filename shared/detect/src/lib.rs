//! Heimdall's detectors: the shapes of attacks in the records themselves,
//! each device's learnt normal, and threat signatures from intelligence.
//!
//! What this crate promises:
//! - Shape detectors that need no history, each with thresholds in
//!   [`DetectConfig`]: `port_scan` (one source probing many ports of one
//!   host, fast or slow), `host_sweep` (one source probing one port, or
//!   ARP-asking for, many hosts), `beaconing` (connections to one
//!   destination at a regular interval, robust to jitter and to a few
//!   missed beats), `dns_tunneling` (many long, high-entropy names, or
//!   NULL-type queries, from one device), `dga` (bursts of random-looking
//!   names that do not exist, per device) and `brute_force` (many short,
//!   alike sessions to a login service).
//! - Per-device baselines ([`baseline`]): a rolling window of hourly
//!   buckets, folded in incrementally, one version per fold, with a
//!   confidence; `new_destination`, `new_port`, `volume_spike`,
//!   `exfiltration` and `unusual_time` (which also remembers four weeks of
//!   hours of the week) judge a device only against a confident baseline
//!   or a golden profile for its type, and a device that kept off the LAN
//!   is a `port_scan` or `host_sweep` at its fourth probed port or LAN host
//!   (under the same suppression key as the shape detectors).
//! - Threat signatures ([`threat`]): domains (and their subdomains),
//!   addresses and networks raise `threat_match` with the signature's
//!   severity.
//! - [`Monitor`] drives all of them from the same records, for `heimdall
//!   analyze` and the anomaly service alike.
//! - Every alert says what was expected, what was observed and the
//!   evidence, names the source (IP and MAC when known) and the
//!   destination, and carries a suppression key: one cause gives one
//!   alert per suppression period, not one per packet.
//! - Alerts from one device within an hour of each other share an incident;
//!   an hour without one closes it ([`Detector::close_idle_incidents`]), and
//!   so does a person ([`Detector::close_incident`]).
//! - State is bounded: windows expire, and the number of tracked keys is
//!   capped ([`DetectConfig::max_keys`], [`baseline::BaselineConfig`]);
//!   nothing grows with the length of a capture.
//! - Time is the records' own (`ts_us`), so a capture analyzed later gives
//!   the same alerts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

pub mod baseline;
pub mod monitor;
pub mod sim;
pub mod threat;
pub mod thresholds;

pub use monitor::Monitor;

use heimdall_proto::addr::ip_bytes;
use heimdall_proto::sensor::v1::{
    Alert, ArpOp, ConnState, KeyValue, Observation, Severity, Transport, observation,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MINUTE: i64 = 60_000_000;
pub(crate) const HOUR: i64 = 60 * MINUTE;
/// Alerts of one device at most this far apart (record time) share an
/// incident; after this long without one, the incident is closed.
pub const INCIDENT_GAP_US: i64 = HOUR;

/// Thresholds of every detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectConfig {
    /// Distinct probed ports of one host: in `fast_window`, in `slow_window`.
    pub scan_ports_fast: usize,
    pub scan_ports_slow: usize,
    /// Distinct probed hosts on one port (or ARP targets) likewise.
    pub sweep_hosts_fast: usize,
    pub sweep_hosts_slow: usize,
    pub fast_window_us: i64,
    pub slow_window_us: i64,
    /// Beaconing: at least this many connections to one destination ...
    pub beacon_min_connections: usize,
    /// ... this share of the intervals within `beacon_tolerance` of the
    /// median interval ...
    pub beacon_regular_share: f64,
    pub beacon_tolerance: f64,
    /// ... and a median interval in this range (µs) ...
    pub beacon_min_interval_us: i64,
    pub beacon_max_interval_us: i64,
    /// ... kept up for at least this long (a device's setup burst of
    /// polling is not a beacon; a beacon persists).
    pub beacon_min_span_us: i64,
    /// Host sweeps of addresses outside the private ranges need this many
    /// times the hosts (devices retry many cloud addresses when offline).
    pub sweep_external_factor: usize,
    /// DNS tunnels: suspicious names (or NULL-type queries) from one device
    /// within `dns_window_us`.
    pub dns_suspicious_names: usize,
    pub dns_null_queries: usize,
    pub dns_window_us: i64,
    /// DGA: names that did not exist (NXDOMAIN) from one device within
    /// `dga_window_us`, most of them random-looking.
    pub dga_nxdomains: usize,
    pub dga_random_share: f64,
    pub dga_window_us: i64,
    /// Brute force: short, alike sessions from one source to one login
    /// service within `brute_window_us`.
    pub brute_sessions: usize,
    pub brute_window_us: i64,
    /// One alert per suppression key per this long.
    pub suppress_us: i64,
    /// Keys tracked per detector at most.
    pub max_keys: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            scan_ports_fast: 20,
            scan_ports_slow: 60,
            sweep_hosts_fast: 20,
            sweep_hosts_slow: 60,
            fast_window_us: MINUTE,
            slow_window_us: HOUR,
            beacon_min_connections: 12,
            beacon_regular_share: 0.8,
            beacon_tolerance: 0.25,
            beacon_min_interval_us: 1_000_000,
            beacon_max_interval_us: 2 * HOUR,
            beacon_min_span_us: 5 * MINUTE,
            sweep_external_factor: 3,
            dns_suspicious_names: 20,
            dns_null_queries: 10,
            dns_window_us: 5 * MINUTE,
            dga_nxdomains: 20,
            dga_random_share: 0.5,
            dga_window_us: 10 * MINUTE,
            brute_sessions: 10,
            brute_window_us: 10 * MINUTE,
            suppress_us: HOUR,
            max_keys: 100_000,
        }
    }
}

/// One finished connection, as the detectors read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub ts_us: i64,
    pub src: IpAddr,
    pub src_mac: Option<[u8; 6]>,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub transport: Transport,
    pub state: ConnState,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
    pub resp_pkts: u64,
    pub duration_us: i64,
}

impl Flow {
    /// The detectors' view of a connection record from the bus; `None`
    /// when its addresses are missing.
    pub fn from_record(r: &heimdall_proto::sensor::v1::ConnRecord) -> Option<Flow> {
        Some(Flow {
            ts_us: r.ts_us,
            src: heimdall_proto::addr::ip(&r.id_orig_h)?,
            src_mac: <[u8; 6]>::try_from(r.orig_l2_addr.as_ref())
                .ok()
                .filter(|m| *m != [0; 6]),
            dst: heimdall_proto::addr::ip(&r.id_resp_h)?,
            dst_port: u16::try_from(r.id_resp_p).unwrap_or(0),
            transport: r.proto(),
            state: r.conn_state(),
            orig_bytes: r.orig_bytes.unwrap_or(0),
            resp_bytes: r.resp_bytes.unwrap_or(0),
            resp_pkts: r.resp_pkts.unwrap_or(0),
            duration_us: r.duration_us.unwrap_or(0),
        })
    }

    /// A probe: the originator sent no payload and no session followed.
    pub fn is_probe(&self) -> bool {
        self.orig_bytes == 0
            && matches!(
                self.state,
                ConnState::S0
                    | ConnState::Rej
                    | ConnState::Rsto
                    | ConnState::Rstos0
                    | ConnState::Rstr
                    | ConnState::Rstrh
                    | ConnState::Sh
                    | ConnState::Shr
                    | ConnState::Oth
            )
    }
}

/// Who did it, for alerts and incidents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Source {
    ip: Option<IpAddr>,
    mac: Option<[u8; 6]>,
}

impl Source {
    fn key(&self) -> String {
        match (self.ip, self.mac) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(m)) => heimdall_proto::addr::mac_text(m),
            (None, None) => String::new(),
        }
    }
}

pub(crate) fn unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.octets()[3] == 255)
        }
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    }
}

/// An address inside the home or an organisation (RFC 1918, link-local,
/// unique local): sweeping these is mapping the local network.
pub(crate) fn private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Distinct values seen per key, each with when it was last seen.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "V: Serialize",
    deserialize = "V: Deserialize<'de> + Eq + std::hash::Hash"
))]
struct Spread<V> {
    #[serde(with = "pairs")]
    seen: HashMap<V, i64>,
    first_us: i64,
    last_us: i64,
}

impl<V> Default for Spread<V> {
    fn default() -> Self {
        Spread {
            seen: HashMap::new(),
            first_us: 0,
            last_us: 0,
        }
    }
}

impl<V: std::hash::Hash + Eq + Copy> Spread<V> {
    fn add(&mut self, v: V, ts: i64) {
        if self.seen.is_empty() {
            self.first_us = ts;
        }
        self.seen.insert(v, ts);
        self.last_us = self.last_us.max(ts);
    }

    /// Distinct values within `window` before the latest.
    fn within(&self, window: i64) -> usize {
        self.seen
            .values()
            .filter(|t| **t >= self.last_us - window)
            .count()
    }

    fn expire(&mut self, before: i64) {
        self.seen.retain(|_, t| *t >= before);
    }
}

/// Connection starts and sizes to one destination.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Beats {
    starts: VecDeque<(i64, u64)>,
    alerted: bool,
}

/// DNS behaviour of one device in the current window.
#[derive(Debug, Default, Serialize, Deserialize)]
struct DnsWindow {
    start_us: i64,
    suspicious: HashSet<String>,
    nulls: usize,
    example: String,
    bases: HashMap<String, usize>,
}

/// Names that did not exist, from one device in the current window.
#[derive(Debug, Default, Serialize, Deserialize)]
struct NxWindow {
    start_us: i64,
    names: HashSet<String>,
    random: usize,
    example: String,
}

/// Services people log in to: many short, alike sessions to one of them
/// are password guessing.
const LOGIN_PORTS: [u16; 15] = [
    21, 22, 23, 25, 110, 143, 445, 465, 587, 993, 995, 1433, 3306, 3389, 5900,
];

/// Recent sessions (start, bytes sent, bytes received) from one source to
/// one login service.
type Sessions = VecDeque<(i64, u64, u64)>;

/// The detectors' state. Feed records, then take the alerts.
///
/// It serializes (serde) to what it has seen, without its settings and
/// without alerts not yet taken: see [`Monitor`] for saving and resuming.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Detector {
    #[serde(skip)]
    cfg: DetectConfig,
    /// Thresholds and mutes of sources whose device has its own (see
    /// [`thresholds`]); the rest use `cfg` and `mute`.
    #[serde(skip)]
    per_source: HashMap<IpAddr, std::sync::Arc<thresholds::Resolved>>,
    /// Alert types silenced for every source.
    #[serde(skip)]
    mute: Vec<String>,
    #[serde(with = "pairs")]
    ports: HashMap<(IpAddr, IpAddr), Spread<(u16, i32)>>,
    #[serde(with = "pairs")]
    hosts: HashMap<(IpAddr, u16, i32), Spread<IpAddr>>,
    #[serde(with = "pairs")]
    arp: HashMap<Source, Spread<IpAddr>>,
    #[serde(with = "pairs")]
    beats: HashMap<(IpAddr, IpAddr, u16, i32), Beats>,
    #[serde(with = "pairs")]
    dns: HashMap<IpAddr, DnsWindow>,
    #[serde(with = "pairs")]
    nx: HashMap<IpAddr, NxWindow>,
    #[serde(with = "pairs")]
    logins: HashMap<(IpAddr, IpAddr, u16), Sessions>,
    #[serde(with = "pairs")]
    macs: HashMap<IpAddr, [u8; 6]>,
    suppressed: HashMap<String, i64>,
    incidents: HashMap<String, (String, i64)>,
    latest_us: i64,
    events: u64,
    #[serde(skip)]
    out: Vec<Alert>,
}

/// The suppression key of a port scan by `f`'s source of `f`'s host, for
/// every detector that finds one: one scan, one alert.
pub(crate) fn scan_key(f: &Flow) -> String {
    format!("port_scan|{}|{}", f.src, f.dst)
}

/// The suppression key of a sweep by `f`'s source over `f`'s port.
pub(crate) fn sweep_key(f: &Flow) -> String {
    format!("host_sweep|{}|{}|{}", f.src, f.dst_port, f.transport as i32)
}

/// Maps written as lists of pairs, so their keys need not be strings.
pub(crate) mod pairs {
    use std::collections::HashMap;
    use std::hash::Hash;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &HashMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map)
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<HashMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

impl Detector {
    pub fn new(cfg: DetectConfig) -> Self {
        Detector {
            cfg,
            ..Detector::default()
        }
    }

    /// Incidents no alert can join any more (their device raised nothing
    /// for [`INCIDENT_GAP_US`] of record time): forgotten here and returned
    /// as (incident id, when it went quiet).
    pub fn close_idle_incidents(&mut self) -> Vec<(String, i64)> {
        let now = self.latest_us;
        let mut closed = Vec::new();
        self.incidents.retain(|_, (id, last)| {
            let open = now - *last <= INCIDENT_GAP_US;
            if !open {
                closed.push((id.clone(), *last + INCIDENT_GAP_US));
            }
            open
        });
        closed.sort();
        closed
    }

    /// A person closed `incident_id`: the device's next alert opens a new
    /// incident. Returns whether it was still open here.
    pub fn close_incident(&mut self, incident_id: &str) -> bool {
        let before = self.incidents.len();
        self.incidents.retain(|_, (id, _)| id != incident_id);
        self.incidents.len() != before
    }

    /// Takes over what `saved` had seen (windows, suppressions,
    /// incidents), keeping this detector's settings.
    pub fn resume(&mut self, saved: Detector) {
        let settings = (
            self.cfg,
            std::mem::take(&mut self.mute),
            std::mem::take(&mut self.out),
        );
        *self = saved;
        (self.cfg, self.mute, self.out) = settings;
    }

    /// The alerts raised since the last call.
    pub fn take(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.out)
    }

    /// The thresholds every source starts from.
    pub fn config(&self) -> DetectConfig {
        self.cfg
    }

    /// Thresholds and mutes for every source.
    pub fn set_global(&mut self, r: &thresholds::Resolved) {
        self.cfg = r.detect;
        self.mute.clone_from(&r.mute);
    }

    /// Thresholds and mutes of one source (`None`: the global ones).
    pub fn set_source(&mut self, ip: IpAddr, r: Option<std::sync::Arc<thresholds::Resolved>>) {
        match r {
            Some(r) => {
                if self.per_source.len() >= self.cfg.max_keys {
                    self.per_source.clear();
                }
                self.per_source.insert(ip, r);
            }
            None => {
                self.per_source.remove(&ip);
            }
        }
    }

    /// The thresholds that hold for `ip`.
    fn cfg_for(&self, ip: &IpAddr) -> DetectConfig {
        if self.per_source.is_empty() {
            return self.cfg;
        }
        self.per_source.get(ip).map_or(self.cfg, |r| r.detect)
    }

    /// Whether `alert_type` is silenced for `src`.
    fn muted(&self, alert_type: &str, src: &Source) -> bool {
        match src.ip.and_then(|ip| self.per_source.get(&ip)) {
            Some(r) => r.muted(alert_type),
            None => self.mute.iter().any(|m| m == alert_type),
        }
    }

    fn tick(&mut self, ts: i64) {
        self.latest_us = self.latest_us.max(ts);
        self.events += 1;
        if self.events.is_multiple_of(4096) {
            self.expire();
        }
    }

    /// Forget what no window can use any more, and keep key counts bounded.
    fn expire(&mut self) {
        let before = self.latest_us - self.cfg.slow_window_us;
        for s in self.ports.values_mut() {
            s.expire(before);
        }
        self.ports.retain(|_, s| !s.seen.is_empty());
        for s in self.hosts.values_mut() {
            s.expire(before);
        }
        self.hosts.retain(|_, s| !s.seen.is_empty());
        for s in self.arp.values_mut() {
            s.expire(before);
        }
        self.arp.retain(|_, s| !s.seen.is_empty());
        let idle = self.latest_us - self.cfg.beacon_max_interval_us * 2;
        self.beats
            .retain(|_, b| b.starts.back().is_some_and(|(t, _)| *t >= idle));
        let dns_before = self.latest_us - self.cfg.dns_window_us;
        self.dns.retain(|_, w| w.start_us >= dns_before);
        let nx_before = self.latest_us - self.cfg.dga_window_us;
        self.nx.retain(|_, w| w.start_us >= nx_before);
        let login_before = self.latest_us - self.cfg.brute_window_us;
        for q in self.logins.values_mut() {
            while q.front().is_some_and(|(t, _, _)| *t < login_before) {
                q.pop_front();
            }
        }
        self.logins.retain(|_, q| !q.is_empty());
        let sup = self.latest_us - self.cfg.suppress_us;
        self.suppressed.retain(|_, t| *t >= sup);
        let cap = self.cfg.max_keys;
        if self.ports.len() > cap {
            self.ports.clear();
        }
        if self.hosts.len() > cap {
            self.hosts.clear();
        }
        if self.beats.len() > cap {
            self.beats.retain(|_, b| b.starts.len() >= 4);
        }
        if self.macs.len() > cap {
            self.macs.clear();
        }
    }

    /// Raise `alert` unless its key fired within the suppression period;
    /// it joins the source's open incident (within an hour) or opens one.
    fn raise(&mut self, mut alert: Alert, src: Source) {
        if self.muted(&alert.alert_type, &src) {
            return;
        }
        let key = alert.suppression_key.clone();
        if let Some(t) = self.suppressed.get(&key)
            && alert.ts_us - *t < self.cfg.suppress_us
        {
            return;
        }
        self.suppressed.insert(key, alert.ts_us);
        let who = src.key();
        let incident = match self.incidents.get(&who) {
            Some((id, last)) if alert.ts_us - *last <= INCIDENT_GAP_US => id.clone(),
            _ => {
                let d = Sha256::digest(format!("{who}|{}", alert.ts_us));
                format!(
                    "I{}",
                    d[..8]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                )
            }
        };
        self.incidents.insert(who, (incident.clone(), alert.ts_us));
        let d = Sha256::digest(format!("{}|{}", alert.suppression_key, alert.ts_us));
        alert.alert_id = format!(
            "A{}",
            d[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        alert.incident_id = incident;
        if let Some(ip) = src.ip {
            alert.src_ip = ip_bytes(ip).into();
        }
        if let Some(mac) = src
            .mac
            .or_else(|| src.ip.and_then(|ip| self.macs.get(&ip).copied()))
        {
            alert.src_mac = mac.to_vec().into();
        }
        self.out.push(alert);
    }

    /// An alert from another detector (baselines, threat signatures):
    /// suppressed, correlated into the source's incident and given an id
    /// like the built-in ones.
    pub fn submit(&mut self, alert: Alert, ip: Option<IpAddr>, mac: Option<[u8; 6]>) {
        self.tick(alert.ts_us);
        self.raise(alert, Source { ip, mac });
    }

    /// One finished connection.
    pub fn flow(&mut self, f: &Flow) {
        self.tick(f.ts_us);
        if let Some(m) = f.src_mac {
            self.macs.insert(f.src, m);
        }
        let proto = f.transport as i32;
        if f.is_probe() && unicast(&f.dst) {
            let cfg = self.cfg_for(&f.src);
            let s = self.ports.entry((f.src, f.dst)).or_default();
            s.add((f.dst_port, proto), f.ts_us);
            let (fast, slow) = (s.within(cfg.fast_window_us), s.within(cfg.slow_window_us));
            if fast >= cfg.scan_ports_fast || slow >= cfg.scan_ports_slow {
                let (n, window, limit) = if fast >= cfg.scan_ports_fast {
                    (fast, cfg.fast_window_us, cfg.scan_ports_fast)
                } else {
                    (slow, cfg.slow_window_us, cfg.scan_ports_slow)
                };
                let first = s.first_us;
                let alert = scan_alert(
                    "port_scan",
                    f,
                    n,
                    limit,
                    window,
                    first,
                    format!("{} ports of {}", n, f.dst),
                    scan_key(f),
                );
                self.raise(
                    alert,
                    Source {
                        ip: Some(f.src),
                        mac: f.src_mac,
                    },
                );
            }
            let factor = if private(&f.dst) {
                1
            } else {
                cfg.sweep_external_factor
            };
            let (hosts_fast, hosts_slow) =
                (cfg.sweep_hosts_fast * factor, cfg.sweep_hosts_slow * factor);
            let s = self.hosts.entry((f.src, f.dst_port, proto)).or_default();
            s.add(f.dst, f.ts_us);
            let (fast, slow) = (s.within(cfg.fast_window_us), s.within(cfg.slow_window_us));
            if fast >= hosts_fast || slow >= hosts_slow {
                let (n, window, limit) = if fast >= hosts_fast {
                    (fast, cfg.fast_window_us, hosts_fast)
                } else {
                    (slow, cfg.slow_window_us, hosts_slow)
                };
                let first = s.first_us;
                let mut alert = scan_alert(
                    "host_sweep",
                    f,
                    n,
                    limit,
                    window,
                    first,
                    format!("{n} hosts on port {}", f.dst_port),
                    sweep_key(f),
                );
                alert.dst_ip = Default::default();
                self.raise(
                    alert,
                    Source {
                        ip: Some(f.src),
                        mac: f.src_mac,
                    },
                );
            }
        }
        if unicast(&f.dst) && f.ts_us > 0 {
            self.beat(f);
        }
        if LOGIN_PORTS.contains(&f.dst_port)
            && f.transport == Transport::Tcp
            && f.orig_bytes > 0
            && f.resp_bytes > 0
        {
            self.login(f);
        }
    }

    /// A session to a login service: short and like the others from the
    /// same source, many times, is someone trying passwords.
    fn login(&mut self, f: &Flow) {
        let cfg = self.cfg_for(&f.src);
        let key = (f.src, f.dst, f.dst_port);
        if !self.logins.contains_key(&key) && self.logins.len() >= cfg.max_keys {
            return;
        }
        let q = self.logins.entry(key).or_default();
        if f.duration_us > 30_000_000 || f.resp_bytes > 64 * 1024 {
            // A long or busy session is someone working, not guessing.
            q.clear();
            return;
        }
        q.push_back((f.ts_us, f.orig_bytes, f.resp_bytes));
        while q
            .front()
            .is_some_and(|(t, _, _)| *t < f.ts_us - cfg.brute_window_us)
        {
            q.pop_front();
        }
        if q.len() > 256 {
            q.pop_front();
        }
        if q.len() < cfg.brute_sessions {
            return;
        }
        let mut sizes: Vec<i64> = q.iter().map(|(_, o, _)| *o as i64).collect();
        sizes.sort_unstable();
        let m = median(&sizes).unwrap_or(0);
        let alike = sizes
            .iter()
            .filter(|s| (**s - m).abs() as f64 <= m as f64 * 0.3 + 64.0)
            .count() as f64
            / sizes.len() as f64;
        if alike < 0.8 {
            return;
        }
        let n = q.len();
        let first = q.front().map_or(f.ts_us, |(t, _, _)| *t);
        let internal = private(&f.dst) && private(&f.src);
        let alert = Alert {
            ts_us: f.ts_us,
            alert_type: "brute_force".into(),
            severity: if internal || n >= cfg.brute_sessions * 5 {
                Severity::High
            } else {
                Severity::Medium
            } as i32,
            score: (n as f64 / (cfg.brute_sessions as f64 * 4.0)).clamp(0.5, 1.0),
            dst_ip: ip_bytes(f.dst).into(),
            dst_port: Some(u32::from(f.dst_port)),
            transport: f.transport as i32,
            description: format!(
                "{} opened {n} short sessions to the login service {}:{} within {} min, {:.0}% of them the same size: password guessing",
                f.src,
                f.dst,
                f.dst_port,
                cfg.brute_window_us / MINUTE,
                alike * 100.0
            ),
            expected: "a few logins, each followed by a working session".into(),
            observed: format!("{n} short alike sessions (median {m} bytes sent)"),
            evidence: vec![
                kv("sessions", n.to_string()),
                kv("same_size_share", format!("{alike:.2}")),
                kv("median_orig_bytes", m.to_string()),
            ],
            suppression_key: format!("brute_force|{}|{}|{}", f.src, f.dst, f.dst_port),
            first_ts_us: first,
            last_ts_us: f.ts_us,
            count: n as u64,
            ..Default::default()
        };
        self.raise(
            alert,
            Source {
                ip: Some(f.src),
                mac: f.src_mac,
            },
        );
    }

    /// A name that did not exist (NXDOMAIN): bursts of random-looking ones
    /// from one device are a DGA looking for its controller. Single-label
    /// names (browsers' probes of the resolver) do not count.
    pub fn nxdomain(&mut self, ts_us: i64, src: IpAddr, name: &str) {
        self.tick(ts_us);
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !name.contains('.') || heimdall_anonymize::is_local_name(&name) {
            return;
        }
        let cfg = self.cfg_for(&src);
        let w = self.nx.entry(src).or_default();
        if ts_us - w.start_us > cfg.dga_window_us {
            *w = NxWindow {
                start_us: ts_us,
                ..NxWindow::default()
            };
        }
        if w.names.len() >= 10_000 || !w.names.insert(name.clone()) {
            return;
        }
        if random_label(&name) {
            w.random += 1;
            if w.example.is_empty() {
                w.example = name;
            }
        }
        let n = w.names.len();
        let share = w.random as f64 / n as f64;
        if n >= cfg.dga_nxdomains && share >= cfg.dga_random_share {
            let (example, start, random) = (w.example.clone(), w.start_us, w.random);
            let alert = Alert {
                ts_us,
                alert_type: "dga".into(),
                severity: Severity::High as i32,
                score: share.clamp(0.5, 1.0),
                description: format!(
                    "{src} looked up {n} names that do not exist within {:.0} s, {random} of them random-looking (e.g. {example}): a domain generation algorithm looking for its controller",
                    (ts_us - start) as f64 / 1e6
                ),
                expected: "an occasional mistyped or expired name".into(),
                observed: format!("{n} NXDOMAIN answers, {:.0}% random-looking", share * 100.0),
                evidence: vec![
                    kv("nxdomains", n.to_string()),
                    kv("random_share", format!("{share:.2}")),
                    kv("example", example),
                ],
                suppression_key: format!("dga|{src}"),
                first_ts_us: start,
                last_ts_us: ts_us,
                count: n as u64,
                ..Default::default()
            };
            self.raise(
                alert,
                Source {
                    ip: Some(src),
                    mac: None,
                },
            );
        }
    }

    fn beat(&mut self, f: &Flow) {
        let cfg = self.cfg_for(&f.src);
        let key = (f.src, f.dst, f.dst_port, f.transport as i32);
        if !self.beats.contains_key(&key) && self.beats.len() >= cfg.max_keys {
            return;
        }
        let b = self.beats.entry(key).or_default();
        b.starts.push_back((f.ts_us, f.orig_bytes));
        if b.starts.len() > 512 {
            b.starts.pop_front();
        }
        if b.alerted || b.starts.len() < cfg.beacon_min_connections {
            return;
        }
        let mut times: Vec<i64> = b.starts.iter().map(|(t, _)| *t).collect();
        times.sort_unstable();
        if times[times.len() - 1] - times[0] < cfg.beacon_min_span_us {
            return;
        }
        let intervals: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let Some(period) = median(&intervals) else {
            return;
        };
        if period < cfg.beacon_min_interval_us || period > cfg.beacon_max_interval_us {
            return;
        }
        let tol = (period as f64 * cfg.beacon_tolerance) as i64;
        let regular = intervals
            .iter()
            .filter(|i| (**i - period).abs() <= tol)
            .count() as f64
            / intervals.len() as f64;
        if regular < cfg.beacon_regular_share {
            return;
        }
        let mut sizes: Vec<i64> = b.starts.iter().map(|(_, s)| *s as i64).collect();
        sizes.sort_unstable();
        let size_median = median(&sizes).unwrap_or(0);
        let size_tol = (size_median as f64 * 0.25) as i64 + 64;
        let same_size = sizes
            .iter()
            .filter(|s| (**s - size_median).abs() <= size_tol)
            .count() as f64
            / sizes.len() as f64;
        b.alerted = true;
        let n = b.starts.len();
        let first = times[0];
        // Regular in time and size, and often: the shape of automated
        // check-ins. Severity grows with the rate; slow check-ins to one
        // host are usual for devices and stay informational without a
        // baseline to say otherwise.
        let per_hour = HOUR as f64 / period as f64;
        let severity = if per_hour >= 60.0 && same_size >= 0.7 {
            Severity::High
        } else if per_hour >= 12.0 {
            Severity::Medium
        } else {
            Severity::Low
        };
        let secs = period as f64 / 1e6;
        let alert = Alert {
            ts_us: f.ts_us,
            alert_type: "beaconing".into(),
            severity: severity as i32,
            score: (regular * 0.6 + same_size * 0.4).min(1.0),
            dst_ip: ip_bytes(f.dst).into(),
            dst_port: Some(u32::from(f.dst_port)),
            transport: f.transport as i32,
            description: format!(
                "{} connected to {}:{} {n} times at a regular {secs:.1} s interval ({:.0}% of intervals within {:.0}% of it)",
                f.src,
                f.dst,
                f.dst_port,
                regular * 100.0,
                cfg.beacon_tolerance * 100.0
            ),
            expected: "connections to one destination at irregular times, as people and most apps make them".into(),
            observed: format!("{n} connections every {secs:.1} s, {:.0}% of them the same size", same_size * 100.0),
            evidence: vec![
                kv("connections", n.to_string()),
                kv("median_interval_s", format!("{secs:.3}")),
                kv("regular_share", format!("{regular:.2}")),
                kv("same_size_share", format!("{same_size:.2}")),
                kv("median_orig_bytes", size_median.to_string()),
            ],
            suppression_key: format!("beaconing|{}|{}|{}", f.src, f.dst, f.dst_port),
            first_ts_us: first,
            last_ts_us: f.ts_us,
            count: n as u64,
            ..Default::default()
        };
        self.raise(
            alert,
            Source {
                ip: Some(f.src),
                mac: f.src_mac,
            },
        );
    }

    /// One DNS query.
    pub fn dns(&mut self, ts_us: i64, src: IpAddr, name: &str, qtype: Option<u16>) {
        self.tick(ts_us);
        let cfg = self.cfg_for(&src);
        let w = self.dns.entry(src).or_default();
        if ts_us - w.start_us > cfg.dns_window_us {
            *w = DnsWindow {
                start_us: ts_us,
                ..DnsWindow::default()
            };
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let base = heimdall_anonymize::registered_domain(&name).unwrap_or_else(|| {
            let labels: Vec<&str> = name.rsplitn(3, '.').collect();
            labels
                .iter()
                .take(2)
                .rev()
                .copied()
                .collect::<Vec<_>>()
                .join(".")
        });
        let null = qtype == Some(10);
        if null {
            w.nulls += 1;
        }
        if suspicious_name(&name, &base) || null {
            if w.suspicious.len() < 10_000 {
                w.suspicious.insert(name.clone());
            }
            *w.bases.entry(base).or_insert(0) += 1;
            if w.example.is_empty() || name.len() > w.example.len() {
                w.example = name.clone();
            }
        }
        let names = w.suspicious.len();
        if names >= cfg.dns_suspicious_names
            || (w.nulls >= cfg.dns_null_queries && names >= cfg.dns_null_queries)
        {
            let top = w
                .bases
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(b, _)| b.clone())
                .unwrap_or_default();
            let (nulls, example, start) = (w.nulls, w.example.clone(), w.start_us);
            let alert = Alert {
                ts_us,
                alert_type: "dns_tunneling".into(),
                severity: Severity::High as i32,
                score: (names as f64 / (cfg.dns_suspicious_names as f64 * 2.0)).clamp(0.5, 1.0),
                dst_domain: (top.len() <= 64 && top.split('.').count() <= 3).then(|| top.clone()),
                description: format!(
                    "{src} sent {names} DNS queries with long random-looking names ({nulls} of type NULL) in {:.0} s, mostly under {top}, e.g. {example}",
                    (ts_us - start) as f64 / 1e6
                ),
                expected:
                    "a few short, readable names per domain, of ordinary types (A, AAAA, HTTPS)"
                        .into(),
                observed: format!(
                    "{names} distinct encoded-looking names within {} s",
                    cfg.dns_window_us / 1_000_000
                ),
                evidence: vec![
                    kv("suspicious_names", names.to_string()),
                    kv("null_queries", nulls.to_string()),
                    kv("top_domain", top.clone()),
                    kv("example", example),
                ],
                // One device, one tunnel alert per period: encoded names
                // without a real domain (dnscat's direct mode) differ in
                // every "domain".
                suppression_key: format!("dns_tunneling|{src}"),
                first_ts_us: start,
                last_ts_us: ts_us,
                count: names as u64,
                ..Default::default()
            };
            self.raise(
                alert,
                Source {
                    ip: Some(src),
                    mac: None,
                },
            );
        }
    }

    /// One device observation; ARP requests feed the host sweep detector.
    pub fn observation(&mut self, o: &Observation) {
        let Some(observation::Kind::Arp(a)) = &o.kind else {
            return;
        };
        self.tick(o.ts_us);
        if a.op() != ArpOp::Request || a.gratuitous || a.probe {
            return;
        }
        let (Some(target), mac) = (
            heimdall_proto::addr::ip(&a.target_ip),
            <[u8; 6]>::try_from(a.sender_mac.as_ref()).ok(),
        ) else {
            return;
        };
        let src = Source {
            ip: heimdall_proto::addr::ip(&a.sender_ip).filter(|ip| !ip.is_unspecified()),
            mac,
        };
        let cfg = src.ip.map_or(self.cfg, |ip| self.cfg_for(&ip));
        let s = self.arp.entry(src).or_default();
        s.add(target, o.ts_us);
        let fast = s.within(cfg.fast_window_us);
        if fast >= cfg.sweep_hosts_fast {
            let first = s.first_us;
            let alert = Alert {
                ts_us: o.ts_us,
                alert_type: "host_sweep".into(),
                severity: Severity::High as i32,
                score: (fast as f64 / (cfg.sweep_hosts_fast as f64 * 4.0)).clamp(0.5, 1.0),
                description: format!(
                    "{} asked ARP for {fast} different addresses within {} s: it is mapping the local network",
                    src.key(),
                    cfg.fast_window_us / 1_000_000
                ),
                expected: "ARP requests for the gateway and the few hosts a device talks to".into(),
                observed: format!("ARP who-has for {fast} addresses"),
                evidence: vec![
                    kv("arp_targets", fast.to_string()),
                    kv("method", "arp".into()),
                ],
                suppression_key: format!("host_sweep|arp|{}", src.key()),
                first_ts_us: first,
                last_ts_us: o.ts_us,
                count: fast as u64,
                ..Default::default()
            };
            self.raise(alert, src);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn scan_alert(
    kind: &str,
    f: &Flow,
    n: usize,
    limit: usize,
    window: i64,
    first: i64,
    what: String,
    key: String,
) -> Alert {
    let severity = if n >= limit * 5 {
        Severity::High
    } else {
        Severity::Medium
    };
    let mins = window as f64 / MINUTE as f64;
    Alert {
        ts_us: f.ts_us,
        alert_type: kind.into(),
        severity: severity as i32,
        score: (n as f64 / (limit as f64 * 5.0)).clamp(0.5, 1.0),
        dst_ip: ip_bytes(f.dst).into(),
        dst_port: Some(u32::from(f.dst_port)),
        transport: f.transport as i32,
        description: format!(
            "{} probed {what} within {mins:.0} min without opening a session (unanswered or refused)",
            f.src
        ),
        expected: format!("fewer than {limit} probes of that kind within {mins:.0} min"),
        observed: format!("{n} probed"),
        evidence: vec![
            kv("distinct", n.to_string()),
            kv("window_s", (window / 1_000_000).to_string()),
        ],
        suppression_key: key,
        first_ts_us: first,
        last_ts_us: f.ts_us,
        count: n as u64,
        ..Default::default()
    }
}

pub(crate) fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v,
    }
}

fn median(v: &[i64]) -> Option<i64> {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len() / 2).copied()
}

/// Shannon entropy of the characters of `s`, in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in s.bytes().filter(|b| *b != b'.') {
        counts[b as usize] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / f64::from(n);
            -p * p.log2()
        })
        .sum()
}

/// A registered-domain label that looks machine-made: long enough, with
/// high character entropy or few vowels.
fn random_label(name: &str) -> bool {
    let base = heimdall_anonymize::registered_domain(name).unwrap_or_else(|| name.to_string());
    let label = base.split('.').next().unwrap_or("");
    if label.len() < 8 {
        return false;
    }
    let vowels = label.bytes().filter(|b| b"aeiou".contains(b)).count() as f64 / label.len() as f64;
    let digits = label.bytes().filter(u8::is_ascii_digit).count();
    entropy(label) >= 3.3 || vowels < 0.2 || digits >= 3
}

/// A name that looks like encoded data: the part below its registered
/// domain is long, or has a long label, and is random-looking.
fn suspicious_name(name: &str, base: &str) -> bool {
    let sub = name
        .strip_suffix(base)
        .unwrap_or(name)
        .trim_end_matches('.');
    let longest = sub.split('.').map(str::len).max().unwrap_or(0);
    (sub.len() >= 30 || longest >= 24) && entropy(sub) >= 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(ts_s: f64, src: &str, dst: &str, port: u16, state: ConnState, bytes: u64) -> Flow {
        Flow {
            ts_us: (ts_s * 1e6) as i64,
            src: src.parse().expect("ip"),
            src_mac: None,
            dst: dst.parse().expect("ip"),
            dst_port: port,
            transport: Transport::Tcp,
            state,
            orig_bytes: bytes,
            resp_bytes: bytes,
            resp_pkts: 1,
            duration_us: 1_000_000,
        }
    }

    #[test]
    fn a_fast_port_scan_is_one_alert_and_normal_browsing_none() {
        let mut d = Detector::new(DetectConfig::default());
        for p in 0..200u16 {
            d.flow(&flow(
                1.0 + f64::from(p) * 0.01,
                "10.0.0.5",
                "10.0.0.9",
                1000 + p,
                ConnState::S0,
                0,
            ));
        }
        // Browsing: sessions with payload, at irregular times.
        let mut t = 10.0;
        for i in 0..30u32 {
            t += f64::from((i * 53) % 40 + 1) / 3.0;
            let bytes = 500 + u64::from(i) * 211;
            d.flow(&flow(
                t,
                "10.0.0.6",
                "93.184.216.34",
                443,
                ConnState::Sf,
                bytes,
            ));
        }
        let alerts = d.take();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].alert_type, "port_scan");
        assert!(!alerts[0].incident_id.is_empty());
        assert!(alerts[0].description.contains("10.0.0.5"));
    }

    #[test]
    fn jittered_beacons_are_found_and_irregular_use_is_not() {
        let mut d = Detector::new(DetectConfig::default());
        let mut t = 0.0;
        for i in 0..40 {
            // 30 s ± 3 s, one missed beat.
            if i != 17 {
                d.flow(&flow(
                    t,
                    "192.168.1.20",
                    "198.51.100.7",
                    443,
                    ConnState::Sf,
                    320,
                ));
            }
            t += 30.0 + f64::from((i * 7) % 7) - 3.0;
        }
        let mut t = 0.0;
        for i in 0..40u32 {
            d.flow(&flow(
                t,
                "192.168.1.21",
                "198.51.100.8",
                443,
                ConnState::Sf,
                1000 + u64::from(i) * 97,
            ));
            t += f64::from((i * 37) % 300 + 1);
        }
        let alerts = d.take();
        let types: Vec<_> = alerts
            .iter()
            .map(|a| (a.alert_type.as_str(), a.src_ip.to_vec()))
            .collect();
        assert_eq!(types, [("beaconing", vec![192, 168, 1, 20])], "{alerts:?}");
        assert_eq!(alerts[0].severity, Severity::High as i32);
    }

    #[test]
    fn encoded_names_are_a_tunnel_and_ordinary_names_are_not() {
        let mut d = Detector::new(DetectConfig::default());
        let src: IpAddr = "10.0.0.30".parse().expect("ip");
        for i in 0..40 {
            d.dns(1_000_000 + i * 100_000, src, "www.example.com", Some(1));
            d.dns(
                1_000_000 + i * 100_000,
                src,
                &format!("cdn-{i}.images.example.net"),
                Some(1),
            );
        }
        assert!(d.take().is_empty());
        for i in 0..25u64 {
            let label: String = format!("{:x}", Sha256::digest(i.to_le_bytes()))[..40].to_string();
            d.dns(
                5_000_000 + i as i64 * 100_000,
                src,
                &format!("{label}.t.evil.example"),
                Some(16),
            );
        }
        let alerts = d.take();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].alert_type, "dns_tunneling");
        assert_eq!(alerts[0].dst_domain.as_deref(), Some("evil.example"));
    }

    #[test]
    fn broadcast_discovery_is_neither_a_beacon_nor_a_sweep() {
        let mut d = Detector::new(DetectConfig::default());
        for i in 0..40 {
            let mut f = flow(
                f64::from(i) * 90.0,
                "192.168.1.40",
                "255.255.255.255",
                9999,
                ConnState::S0,
                0,
            );
            f.transport = Transport::Udp;
            d.flow(&f);
        }
        assert!(d.take().is_empty());
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn a_short_burst_of_polling_is_not_a_beacon_and_offline_retries_are_not_a_sweep() {
        let mut d = Detector::new(DetectConfig::default());
        // A device polling its cloud every 2 s for a minute while it is set up.
        for i in 0..30 {
            d.flow(&Flow {
                ts_us: i * 2_000_000,
                src: "10.10.10.6".parse().expect("ip"),
                src_mac: None,
                dst: "130.211.93.93".parse().expect("ip"),
                dst_port: 80,
                transport: Transport::Tcp,
                state: ConnState::Sf,
                orig_bytes: 200,
                resp_bytes: 900,
                resp_pkts: 3,
                duration_us: 100_000,
            });
        }
        // Offline: SYNs to 30 cloud addresses on 443 within a minute.
        for i in 0..30u8 {
            d.flow(&Flow {
                ts_us: 100_000_000 + i64::from(i) * 1_000_000,
                src: "10.22.22.2".parse().expect("ip"),
                src_mac: None,
                dst: IpAddr::from([34, 120, 5, i]),
                dst_port: 443,
                transport: Transport::Tcp,
                state: ConnState::S0,
                orig_bytes: 0,
                resp_bytes: 0,
                resp_pkts: 0,
                duration_us: 0,
            });
        }
        assert!(d.take().is_empty());
    }
}

#[cfg(test)]
mod login_and_dga_tests {
    use super::*;

    fn session(t: i64, src: &str, dst: &str, port: u16, sent: u64, got: u64, dur_s: i64) -> Flow {
        Flow {
            ts_us: t,
            src: src.parse().expect("ip"),
            src_mac: None,
            dst: dst.parse().expect("ip"),
            dst_port: port,
            transport: Transport::Tcp,
            state: ConnState::Sf,
            orig_bytes: sent,
            resp_bytes: got,
            resp_pkts: 10,
            duration_us: dur_s * 1_000_000,
        }
    }

    #[test]
    fn forty_passwords_over_ssh_are_brute_force_and_working_sessions_are_not() {
        let mut d = Detector::new(DetectConfig::default());
        // 40 passwords, 3 per connection: 14 short connections in 5 min.
        for i in 0..14 {
            d.flow(&session(
                i * 20_000_000,
                "192.168.1.66",
                "192.168.1.10",
                22,
                2300 + (i as u64 % 3) * 50,
                2900,
                4,
            ));
        }
        // A person's shell sessions and git fetches to the same host.
        for i in 0..14 {
            d.flow(&session(
                i * 20_000_000,
                "192.168.1.67",
                "192.168.1.10",
                22,
                5000 + i as u64 * 3100,
                90_000,
                300,
            ));
        }
        let alerts = d.take();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].alert_type, "brute_force");
        assert_eq!(alerts[0].src_ip.to_vec(), vec![192, 168, 1, 66]);
        assert_eq!(alerts[0].severity, Severity::High as i32);
    }

    #[test]
    fn random_names_that_do_not_exist_are_a_dga_and_typos_and_probes_are_not() {
        let mut d = Detector::new(DetectConfig::default());
        let src: IpAddr = "192.168.1.50".parse().expect("ip");
        // Browser probes (single labels) and a few typos.
        for (i, n) in [
            "qwhxkzjfpv",
            "mnbvcxzlkj",
            "gooogle.com",
            "faceboook.com",
            "printer.lan",
        ]
        .iter()
        .enumerate()
        {
            d.nxdomain(i as i64 * 1_000_000, src, n);
        }
        assert!(d.take().is_empty());
        for i in 0..25u64 {
            let label: String = format!("{:x}", Sha256::digest(i.to_le_bytes()))
                .chars()
                .filter(|c| c.is_ascii_alphabetic() || *c == '7')
                .take(14)
                .collect();
            d.nxdomain(
                10_000_000 + i as i64 * 500_000,
                src,
                &format!("{label}x{i}q.com"),
            );
        }
        let alerts = d.take();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].alert_type, "dga");
    }
}
