//! The device registry: observations, connections and DNS records in;
//! devices with fused vendor, type, model and OS, and device events, out.
//!
//! Evidence is kept as claims, one per rule (or per OUI) and device, so
//! seeing the same fact again changes nothing but its time. The decision is
//! recomputed from the claims whenever a device changes:
//! - type: for each type, `1 - Π(1 - w)` over the claims that point to it;
//!   the best type wins and its score is the confidence;
//! - vendor, model and OS: the value with the most weight behind it;
//! - a device that shows it runs a general-purpose system (a phone's or a
//!   computer's user agent, say) has the names it looks up discounted: its
//!   apps talk to many clouds, which says little about what it is.
//!
//! A device is found by MAC. A locally administered (randomized) MAC that
//! shows an identifier another device already showed joins that device;
//! until then it is held back for a grace period before it is announced, so
//! a phone that joins with a new random MAC and introduces itself by DHCP
//! within seconds is never announced as a stranger.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use heimdall_engine::ids::LocalNets;
use heimdall_engine::ip::Addr;
use heimdall_proto::sensor::v1::{
    ConnRecord, ConnState, Device, DeviceEvent, DeviceEventKind, DeviceIp, DeviceMac, DeviceType,
    DnsRecord, Evidence, EvidenceSource, Observation, Transport,
};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::oui;
use crate::rules::{Rules, Signal, type_name};
use crate::signals::{self, Facts};

/// How the registry behaves.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The sensor whose network this is; part of every id.
    pub sensor_id: String,
    /// Addresses inside these networks belong to devices on the LAN.
    pub local_nets: LocalNets,
    /// How long a device seen only with a randomized MAC is held back
    /// before it is announced (packet time).
    pub grace_us: i64,
    /// The most devices kept; past it new MACs are counted and ignored.
    pub max_devices: usize,
    /// The most DNS lookups kept while their address has no device yet.
    pub max_pending: usize,
    /// How long such a lookup waits for its device.
    pub pending_us: i64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            sensor_id: "sensor".into(),
            local_nets: LocalNets::private_address_space(),
            grace_us: 10_000_000,
            max_devices: 50_000,
            max_pending: 8192,
            pending_us: 600_000_000,
        }
    }
}

/// Counters for metrics and the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RegistryStats {
    pub observations: u64,
    pub conns: u64,
    pub dns: u64,
    /// Observations that named no device (no usable source MAC).
    pub ignored: u64,
    pub devices_created: u64,
    /// New MACs ignored because `max_devices` was reached.
    pub devices_refused: u64,
    pub merges: u64,
    /// DNS lookups dropped because their device never showed up in time or
    /// the pending buffer was full.
    pub pending_dropped: u64,
    pub events: u64,
}

const MAX_IPS: usize = 16;
const MAX_NAMES: usize = 16;
const MAX_IDENTS: usize = 32;
const MAX_CLAIMS: usize = 256;
const MAX_MACS: usize = 32;
/// Distinct outside addresses a MAC must carry to be taken for a router.
const ROUTER_FOREIGN: usize = 3;
/// How much a general-purpose device's looked-up names count.
const GENERAL_DISCOUNT: f64 = 0.25;
/// Vendor weight of an OUI (of a module maker's OUI).
const OUI_VENDOR: f64 = 0.5;
const MODULE_VENDOR: f64 = 0.15;

/// One MAC of a device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MacSeen {
    pub mac: String,
    pub first_us: i64,
    pub last_us: i64,
}

/// One address of a device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IpSeen {
    pub ip: IpAddr,
    pub first_us: i64,
    pub last_us: i64,
}

/// One piece of evidence: what a rule (or the OUI) concluded and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claim {
    /// `EvidenceSource` value.
    pub source: i32,
    /// What was seen and which rule read it.
    pub detail: String,
    /// How much it counts for the type.
    pub weight: f64,
    /// How much it counts for the vendor.
    pub vendor_weight: f64,
    /// The rule's weight, for model and OS.
    pub strength: f64,
    pub vendor: Option<String>,
    /// `DeviceType` value, 0 for none.
    pub device_type: i32,
    pub model: Option<String>,
    pub os: Option<String>,
    /// The device runs a general-purpose system.
    pub general: bool,
    /// From a name the device looked up (discounted on general devices).
    pub from_domain: bool,
    pub ts_us: i64,
}

/// What was last announced about a device; events fire when it changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Shown {
    pub vendor: String,
    pub device_type: i32,
    pub model: String,
    pub os: String,
    pub confidence: f64,
    pub hostnames: Vec<String>,
    pub macs: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Everything the registry keeps about one device: what the store saves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceState {
    pub device_id: String,
    pub macs: Vec<MacSeen>,
    pub ips: Vec<IpSeen>,
    pub hostnames: Vec<String>,
    pub idents: Vec<String>,
    pub claims: BTreeMap<String, Claim>,
    /// Outside addresses this MAC carried (a router's), up to a few.
    pub foreign: Vec<IpAddr>,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    pub revision: u64,
    /// A NEW event went out.
    pub announced: bool,
    pub shown: Shown,
    /// Ids of announced devices merged into this one since the last event.
    pub merged_from: Vec<String>,
    /// A device seen only with randomized MACs is not announced before
    /// this time (registry time: the latest record time it has seen, so
    /// records that arrive late or out of order still get their grace).
    #[serde(default)]
    pub held_until_us: i64,
}

/// The fused view of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub vendor: String,
    pub device_type: DeviceType,
    pub confidence: f64,
    pub model: String,
    pub os: String,
}

/// The registry of one sensor's devices.
#[derive(Debug)]
pub struct Registry {
    cfg: RegistryConfig,
    rules: Arc<Rules>,
    devices: HashMap<String, DeviceState>,
    by_mac: HashMap<[u8; 6], String>,
    by_ip: HashMap<IpAddr, String>,
    by_ident: HashMap<String, String>,
    /// Lookups waiting for their address's device, by address.
    pending: HashMap<IpAddr, Vec<(String, i64)>>,
    pending_len: usize,
    dirty: BTreeSet<String>,
    /// Device ids that were merged away (the store deletes them).
    removed: Vec<String>,
    /// Device ids whose state changed since `take_changed`.
    changed: BTreeSet<String>,
    /// What was last handed to the store per device: a digest of the
    /// state that matters and the last-seen time, so a device seen again
    /// with nothing new is written at most once a minute.
    stored: HashMap<String, (u64, i64)>,
    now_us: i64,
    stats: RegistryStats,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    oui::mac_of(&v)
}

impl Registry {
    pub fn new(cfg: RegistryConfig, rules: Arc<Rules>) -> Self {
        Registry {
            cfg,
            rules,
            devices: HashMap::new(),
            by_mac: HashMap::new(),
            by_ip: HashMap::new(),
            by_ident: HashMap::new(),
            pending: HashMap::new(),
            pending_len: 0,
            dirty: BTreeSet::new(),
            removed: Vec::new(),
            changed: BTreeSet::new(),
            stored: HashMap::new(),
            now_us: 0,
            stats: RegistryStats::default(),
        }
    }

    pub fn stats(&self) -> RegistryStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    fn local(&self, ip: IpAddr) -> bool {
        self.cfg.local_nets.contains(&Addr::from(ip))
    }

    fn tick(&mut self, ts_us: i64) {
        if ts_us > self.now_us {
            self.now_us = ts_us;
        }
    }

    // ------------------------------------------------------------ input

    /// One observation from the capture service.
    pub fn observe(&mut self, o: &Observation) {
        self.stats.observations += 1;
        self.tick(o.ts_us);
        match signals::facts(o) {
            Some(f) => self.apply(f, o.ts_us),
            None => self.stats.ignored += 1,
        }
    }

    /// One connection record: where both ends' MACs are known and their
    /// addresses local, it places the devices; the ports a device answers
    /// on and asks for are signals; a MAC carrying outside addresses is a
    /// router's.
    pub fn conn(&mut self, c: &ConnRecord) {
        self.stats.conns += 1;
        self.tick(c.ts_us);
        let proto = match Transport::try_from(c.proto).unwrap_or_default() {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            _ => "",
        };
        let answered = c.resp_pkts.unwrap_or(0) > 0
            && !matches!(
                ConnState::try_from(c.conn_state).unwrap_or_default(),
                ConnState::Rej | ConnState::S0 | ConnState::Unspecified
            );
        let ends = [
            (&c.orig_l2_addr, &c.id_orig_h, true),
            (&c.resp_l2_addr, &c.id_resp_h, false),
        ];
        for (mac, ip, is_orig) in ends {
            let (Some(mac), Some(ip)) = (oui::mac_of(mac), heimdall_proto::addr::ip(ip)) else {
                continue;
            };
            if oui::group(mac) || mac == [0; 6] || !signals::usable(ip) {
                continue;
            }
            // A randomized MAC becomes a device through what it says about
            // itself (ARP, DHCP...), where its identity can show, never
            // through a connection record that may arrive first.
            if oui::locally_administered(mac) && !self.by_mac.contains_key(&mac) {
                continue;
            }
            let mut f = Facts {
                mac,
                ..Default::default()
            };
            if self.local(ip) {
                f.ip = Some(ip);
                if !proto.is_empty() {
                    if is_orig {
                        f.signals
                            .push((Signal::Contacts, format!("{proto}/{}", c.id_resp_p)));
                    } else if answered {
                        f.signals
                            .push((Signal::Serves, format!("{proto}/{}", c.id_resp_p)));
                    }
                }
                self.apply(f, c.ts_us);
            } else if let Some(id) = self.device_for_mac(mac, c.ts_us) {
                self.foreign(&id, ip, c.ts_us);
            }
        }
    }

    /// One DNS transaction: the name a device looked up.
    pub fn dns(&mut self, d: &DnsRecord) {
        self.stats.dns += 1;
        self.tick(d.ts_us);
        let Some(q) = d.query.as_deref() else { return };
        let q = q.trim_end_matches('.');
        if q.is_empty() || q.ends_with(".arpa") || q.ends_with(".local") || d.id_resp_p == 5353 {
            return;
        }
        let Some(ip) = heimdall_proto::addr::ip(&d.id_orig_h) else {
            return;
        };
        if !self.local(ip) {
            return;
        }
        match self.by_ip.get(&ip).cloned() {
            Some(id) => self.domain(&id, q, d.ts_us),
            None => {
                if self.pending_len >= self.cfg.max_pending {
                    self.stats.pending_dropped += 1;
                } else {
                    self.pending
                        .entry(ip)
                        .or_default()
                        .push((q.to_string(), d.ts_us));
                    self.pending_len += 1;
                }
            }
        }
    }

    fn domain(&mut self, id: &str, name: &str, ts_us: i64) {
        let findings: Vec<_> = self
            .rules
            .matches(Signal::Domain, name)
            .into_iter()
            .map(|f| claim_of(&f, Signal::Domain, name, ts_us))
            .collect();
        if let Some(d) = self.devices.get_mut(id) {
            d.last_seen_us = d.last_seen_us.max(ts_us);
            for (key, claim) in findings {
                add_claim(d, key, claim);
            }
            self.dirty.insert(id.to_string());
        }
    }

    fn foreign(&mut self, id: &str, ip: IpAddr, ts_us: i64) {
        let Some(d) = self.devices.get_mut(id) else {
            return;
        };
        if d.foreign.len() >= ROUTER_FOREIGN || d.foreign.contains(&ip) {
            return;
        }
        d.foreign.push(ip);
        if d.foreign.len() == ROUTER_FOREIGN {
            add_claim(
                d,
                "router:forwards".into(),
                Claim {
                    source: EvidenceSource::Traffic as i32,
                    detail: "carries traffic of addresses outside the local networks (a router or gateway)".into(),
                    weight: 0.8,
                    vendor_weight: 0.0,
                    strength: 0.8,
                    vendor: None,
                    device_type: DeviceType::Network as i32,
                    model: None,
                    os: None,
                    general: false,
                    from_domain: false,
                    ts_us,
                },
            );
            self.dirty.insert(id.to_string());
        }
    }

    /// The device that owns `mac`, made when the MAC is new.
    fn device_for_mac(&mut self, mac: [u8; 6], ts_us: i64) -> Option<String> {
        if let Some(id) = self.by_mac.get(&mac) {
            return Some(id.clone());
        }
        if self.devices.len() >= self.cfg.max_devices {
            self.stats.devices_refused += 1;
            return None;
        }
        let text = oui::mac_text(mac);
        let mut h = Sha1::new();
        h.update(self.cfg.sensor_id.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update(ts_us.to_be_bytes());
        let id = format!("dev-{}", &hex(&h.finalize())[..20]);
        let mut d = DeviceState {
            device_id: id.clone(),
            macs: vec![MacSeen {
                mac: text,
                first_us: ts_us,
                last_us: ts_us,
            }],
            ips: Vec::new(),
            hostnames: Vec::new(),
            idents: Vec::new(),
            claims: BTreeMap::new(),
            foreign: Vec::new(),
            first_seen_us: ts_us,
            last_seen_us: ts_us,
            revision: 0,
            announced: false,
            shown: Shown::default(),
            merged_from: Vec::new(),
            held_until_us: ts_us.max(self.now_us).saturating_add(self.cfg.grace_us),
        };
        self.oui_claim(&mut d, mac, ts_us);
        self.by_mac.insert(mac, id.clone());
        self.devices.insert(id.clone(), d);
        self.dirty.insert(id.clone());
        self.stats.devices_created += 1;
        Some(id)
    }

    fn oui_claim(&self, d: &mut DeviceState, mac: [u8; 6], ts_us: i64) {
        let Some(a) = oui::lookup(mac) else { return };
        let fact = self.rules.vendor(a.organization);
        let prefix = &oui::mac_text(mac)[..if a.bits == 24 {
            8
        } else if a.bits == 28 {
            10
        } else {
            13
        }];
        let what = if fact.module {
            " (a maker of network modules: the part, not the product)"
        } else {
            ""
        };
        let key = format!("oui:{}", a.organization);
        add_claim(
            d,
            key,
            Claim {
                source: EvidenceSource::Oui as i32,
                detail: format!(
                    "MAC prefix {} is registered to {:?}{what}",
                    prefix.to_ascii_uppercase(),
                    a.organization
                ),
                weight: if fact.device_type.is_some() {
                    fact.weight
                } else {
                    0.0
                },
                vendor_weight: if fact.module {
                    MODULE_VENDOR
                } else {
                    OUI_VENDOR
                },
                strength: 0.0,
                vendor: Some(fact.brand),
                device_type: fact.device_type.map_or(0, |t| t as i32),
                model: None,
                os: None,
                general: false,
                from_domain: false,
                ts_us,
            },
        );
    }

    /// Applies what one observation (or connection end) showed.
    fn apply(&mut self, mut f: Facts, ts_us: i64) {
        let Some(mut id) = self.device_for_mac(f.mac, ts_us) else {
            return;
        };
        // Identities: a randomized MAC that shows another device's
        // identifier is that device.
        let mut idents = std::mem::take(&mut f.idents);
        for h in &f.hostnames {
            if h.len() >= 3 && !self.rules.generic_hostname(h) {
                idents.push(format!("host:{}", h.to_ascii_lowercase()));
            }
        }
        for ident in &idents {
            match self.by_ident.get(ident).cloned() {
                Some(other)
                    if other != id
                        && self.devices.contains_key(&other)
                        && oui::locally_administered(f.mac) =>
                {
                    self.merge(&id, &other);
                    id = other;
                }
                _ => {}
            }
        }
        for ident in idents {
            self.by_ident.insert(ident.clone(), id.clone());
            if let Some(d) = self.devices.get_mut(&id)
                && !d.idents.contains(&ident)
                && d.idents.len() < MAX_IDENTS
            {
                d.idents.push(ident);
            }
        }

        let mut claims = Vec::new();
        for (signal, value) in &f.signals {
            for finding in self.rules.matches(*signal, value) {
                claims.push(claim_of(&finding, *signal, value, ts_us));
            }
        }
        let mac_text = oui::mac_text(f.mac);
        let Some(d) = self.devices.get_mut(&id) else {
            return;
        };
        d.last_seen_us = d.last_seen_us.max(ts_us);
        if let Some(m) = d.macs.iter_mut().find(|m| m.mac == mac_text) {
            m.last_us = m.last_us.max(ts_us);
        }
        for h in f.hostnames {
            if !h.is_empty() && !d.hostnames.contains(&h) && d.hostnames.len() < MAX_NAMES {
                d.hostnames.push(h);
            }
        }
        for (key, claim) in claims {
            add_claim(d, key, claim);
        }
        self.dirty.insert(id.clone());
        if let Some(ip) = f.ip
            && self.local(ip)
        {
            self.place(&id, ip, ts_us);
        }
        if let Some((mac, ip)) = f.lease
            && self.local(ip)
            && let Some(client) = self.device_for_mac(mac, ts_us)
        {
            self.place(&client, ip, ts_us);
        }
    }

    /// `ip` is now `id`'s; lookups that waited for it are applied.
    fn place(&mut self, id: &str, ip: IpAddr, ts_us: i64) {
        let Some(d) = self.devices.get_mut(id) else {
            return;
        };
        match d.ips.iter_mut().find(|s| s.ip == ip) {
            Some(s) => s.last_us = s.last_us.max(ts_us),
            None => {
                if d.ips.len() >= MAX_IPS {
                    // The one not seen for longest goes.
                    if let Some(i) = d
                        .ips
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.last_us)
                        .map(|(i, _)| i)
                    {
                        d.ips.remove(i);
                    }
                }
                d.ips.push(IpSeen {
                    ip,
                    first_us: ts_us,
                    last_us: ts_us,
                });
                self.dirty.insert(id.to_string());
            }
        }
        if self.by_ip.get(&ip).map(String::as_str) != Some(id) {
            self.by_ip.insert(ip, id.to_string());
        }
        if let Some(waiting) = self.pending.remove(&ip) {
            self.pending_len -= waiting.len();
            for (name, ts) in waiting {
                self.domain(id, &name, ts);
            }
        }
    }

    /// Folds device `from` into `into`; `into` keeps its id.
    fn merge(&mut self, from: &str, into: &str) {
        let Some(src) = self.devices.remove(from) else {
            return;
        };
        self.stats.merges += 1;
        self.removed.push(from.to_string());
        self.dirty.remove(from);
        self.changed.remove(from);
        for m in &src.macs {
            if let Some(mac) = parse_mac(&m.mac) {
                self.by_mac.insert(mac, into.to_string());
            }
        }
        for s in &src.ips {
            if self.by_ip.get(&s.ip).map(String::as_str) == Some(from) {
                self.by_ip.insert(s.ip, into.to_string());
            }
        }
        for i in &src.idents {
            self.by_ident.insert(i.clone(), into.to_string());
        }
        let Some(d) = self.devices.get_mut(into) else {
            return;
        };
        for m in src.macs {
            if !d.macs.iter().any(|x| x.mac == m.mac) && d.macs.len() < MAX_MACS {
                d.macs.push(m);
            }
        }
        for s in src.ips {
            if !d.ips.iter().any(|x| x.ip == s.ip) && d.ips.len() < MAX_IPS {
                d.ips.push(s);
            }
        }
        for h in src.hostnames {
            if !d.hostnames.contains(&h) && d.hostnames.len() < MAX_NAMES {
                d.hostnames.push(h);
            }
        }
        for i in src.idents {
            if !d.idents.contains(&i) && d.idents.len() < MAX_IDENTS {
                d.idents.push(i);
            }
        }
        for (k, c) in src.claims {
            add_claim(d, k, c);
        }
        d.first_seen_us = d.first_seen_us.min(src.first_seen_us);
        d.last_seen_us = d.last_seen_us.max(src.last_seen_us);
        if src.announced {
            d.merged_from.push(src.device_id);
        }
        d.merged_from.extend(src.merged_from);
        self.dirty.insert(into.to_string());
    }

    // ------------------------------------------------------------ output

    /// Decides what changed and returns the events, in a stable order.
    /// `now_us` is packet (or wall) time: it ends grace periods and ages
    /// out lookups that waited too long for their device.
    pub fn flush(&mut self, now_us: i64) -> Vec<DeviceEvent> {
        self.tick(now_us);
        let now = self.now_us;
        if self.pending_len > 0 {
            let max_age = self.cfg.pending_us;
            let mut dropped = 0;
            self.pending.retain(|_, v| {
                let before = v.len();
                v.retain(|(_, ts)| now - ts <= max_age);
                dropped += before - v.len();
                !v.is_empty()
            });
            self.pending_len -= dropped;
            self.stats.pending_dropped += dropped as u64;
        }
        let mut events = Vec::new();
        let dirty = std::mem::take(&mut self.dirty);
        for id in dirty {
            let Some(d) = self.devices.get(&id) else {
                continue;
            };
            let randomized_only = d
                .macs
                .iter()
                .filter_map(|m| parse_mac(&m.mac))
                .all(oui::locally_administered);
            if !d.announced && randomized_only && now < d.held_until_us {
                // Held back: it may yet turn out to be a known device.
                self.dirty.insert(id);
                continue;
            }
            let decision = decide(d);
            let shown = shown_of(d, &decision);
            let kind = if !d.announced {
                Some(DeviceEventKind::New)
            } else if !d.merged_from.is_empty() {
                Some(DeviceEventKind::Merged)
            } else if shown.device_type != d.shown.device_type {
                Some(DeviceEventKind::TypeChanged)
            } else if shown != d.shown {
                Some(DeviceEventKind::Updated)
            } else {
                None
            };
            let digest = material(d);
            let stale = self.stored.get(&id).is_none_or(|&(sig, seen)| {
                sig != digest || d.last_seen_us - seen >= STORE_LAST_SEEN_US
            });
            if stale || kind.is_some() {
                self.changed.insert(id.clone());
            }
            let Some(kind) = kind else { continue };
            let previous = d.shown.device_type;
            let Some(d) = self.devices.get_mut(&id) else {
                continue;
            };
            d.revision += 1;
            d.announced = true;
            let merged_from = std::mem::take(&mut d.merged_from);
            d.shown = shown;
            let device = snapshot(&self.cfg.sensor_id, d, &decision);
            events.push(DeviceEvent {
                event_id: format!("{}-{}", d.device_id, d.revision),
                sensor_id: self.cfg.sensor_id.clone(),
                ts_us: now,
                kind: kind as i32,
                device: Some(device),
                previous_type: if kind == DeviceEventKind::TypeChanged {
                    previous
                } else {
                    0
                },
                merged_from,
            });
        }
        self.stats.events += events.len() as u64;
        events
    }

    /// Every device as a `Device` message, ordered by first sight.
    pub fn devices(&self) -> Vec<Device> {
        let mut v: Vec<&DeviceState> = self.devices.values().collect();
        v.sort_by(|a, b| (a.first_seen_us, &a.device_id).cmp(&(b.first_seen_us, &b.device_id)));
        v.into_iter()
            .map(|d| snapshot(&self.cfg.sensor_id, d, &decide(d)))
            .collect()
    }

    /// Ids of devices whose state changed since the last call, and of
    /// devices merged away (to delete): what a store must write.
    pub fn take_changed(&mut self) -> (Vec<&DeviceState>, Vec<String>) {
        let changed = std::mem::take(&mut self.changed);
        let removed = std::mem::take(&mut self.removed);
        for id in &changed {
            if let Some(d) = self.devices.get(id) {
                self.stored
                    .insert(id.clone(), (material(d), d.last_seen_us));
            }
        }
        for id in &removed {
            self.stored.remove(id);
        }
        (
            changed
                .iter()
                .filter_map(|id| self.devices.get(id))
                .collect(),
            removed,
        )
    }

    /// Judges what comes next with `rules` (the same rules with device
    /// hints from intelligence added or withdrawn); evidence already
    /// gathered stays.
    pub fn set_rules(&mut self, rules: Arc<Rules>) {
        self.rules = rules;
    }

    /// Loads devices a store saved; their MACs, addresses and identifiers
    /// find them again.
    pub fn restore(&mut self, states: impl IntoIterator<Item = DeviceState>) {
        for d in states {
            for m in &d.macs {
                if let Some(mac) = parse_mac(&m.mac) {
                    self.by_mac.insert(mac, d.device_id.clone());
                }
            }
            for s in &d.ips {
                self.by_ip.insert(s.ip, d.device_id.clone());
            }
            for i in &d.idents {
                self.by_ident.insert(i.clone(), d.device_id.clone());
            }
            self.now_us = self.now_us.max(d.last_seen_us);
            self.stored
                .insert(d.device_id.clone(), (material(&d), d.last_seen_us));
            if !d.announced {
                self.dirty.insert(d.device_id.clone());
            }
            self.devices.insert(d.device_id.clone(), d);
        }
    }
}

/// How stale a stored last-seen time may get before the device is written
/// again for that alone.
const STORE_LAST_SEEN_US: i64 = 60_000_000;

/// A digest of what a store must not lose: everything but times.
fn material(d: &DeviceState) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    d.revision.hash(&mut h);
    d.announced.hash(&mut h);
    d.held_until_us.hash(&mut h);
    for m in &d.macs {
        m.mac.hash(&mut h);
    }
    for s in &d.ips {
        s.ip.hash(&mut h);
    }
    d.hostnames.hash(&mut h);
    d.idents.hash(&mut h);
    d.foreign.hash(&mut h);
    for k in d.claims.keys() {
        k.hash(&mut h);
    }
    d.merged_from.hash(&mut h);
    h.finish()
}

fn claim_of(
    f: &crate::rules::Finding<'_>,
    signal: Signal,
    value: &str,
    ts_us: i64,
) -> (String, Claim) {
    let r = f.rule;
    let shown: String = value.chars().take(120).collect();
    (
        format!("rule:{}", r.id),
        Claim {
            source: r.signal.source() as i32,
            detail: format!(
                "{} {shown:?} (rule {}: {})",
                describe(signal),
                r.id,
                r.source
            ),
            weight: if r.device_type.is_some() {
                r.weight
            } else {
                0.0
            },
            vendor_weight: if f.vendor.is_some() { r.weight } else { 0.0 },
            strength: r.weight,
            vendor: f.vendor.clone(),
            device_type: r.device_type.map_or(0, |t| t as i32),
            model: f.model.clone(),
            os: f.os.clone(),
            general: r.general,
            from_domain: matches!(signal, Signal::Domain | Signal::Ja4),
            ts_us,
        },
    )
}

fn describe(s: Signal) -> &'static str {
    match s {
        Signal::Hostname => "host name",
        Signal::DhcpVendorClass => "DHCP vendor class",
        Signal::DhcpParams => "DHCP parameter request list",
        Signal::Dhcpv6Vendor => "DHCPv6 vendor class",
        Signal::MdnsService => "mDNS service",
        Signal::MdnsInstance => "mDNS instance",
        Signal::MdnsTxt => "mDNS TXT",
        Signal::SsdpServer => "SSDP server",
        Signal::SsdpUserAgent => "SSDP user agent",
        Signal::SsdpType => "SSDP type",
        Signal::SsdpLocation => "SSDP description URL",
        Signal::HttpUserAgent => "HTTP user agent",
        Signal::HttpUri => "HTTP request",
        Signal::Domain => "looks up",
        Signal::Ja4 => "TLS JA4",
        Signal::Serves => "answers on",
        Signal::Contacts => "asks for",
    }
}

fn add_claim(d: &mut DeviceState, key: String, claim: Claim) {
    if let Some(c) = d.claims.get_mut(&key) {
        c.ts_us = c.ts_us.max(claim.ts_us);
        return;
    }
    if d.claims.len() < MAX_CLAIMS {
        d.claims.insert(key, claim);
    }
}

/// The effective type weight of a claim on this device.
fn effective(c: &Claim, general: bool) -> (f64, f64) {
    if general && c.from_domain {
        (
            c.weight * GENERAL_DISCOUNT,
            c.vendor_weight * GENERAL_DISCOUNT,
        )
    } else {
        (c.weight, c.vendor_weight)
    }
}

/// Fuses a device's claims.
pub fn decide(d: &DeviceState) -> Decision {
    let general = d.claims.values().any(|c| c.general);
    let mut types: BTreeMap<i32, f64> = BTreeMap::new();
    let mut vendors: BTreeMap<String, (f64, f64, String)> = BTreeMap::new();
    let mut model: Option<(f64, &str)> = None;
    let mut os: Option<(f64, &str)> = None;
    for c in d.claims.values() {
        let (w, vw) = effective(c, general);
        if c.device_type != 0 && w > 0.0 {
            let miss = types.entry(c.device_type).or_insert(1.0);
            *miss *= 1.0 - w.min(0.999);
        }
        if let Some(v) = &c.vendor
            && vw > 0.0
        {
            let e = vendors
                .entry(v.to_ascii_lowercase())
                .or_insert((1.0, 0.0, v.clone()));
            e.0 *= 1.0 - vw.min(0.999);
            if vw > e.1 {
                e.1 = vw;
                e.2 = v.clone();
            }
        }
        let strength = if general && c.from_domain {
            c.strength * GENERAL_DISCOUNT
        } else {
            c.strength
        };
        if let Some(m) = c.model.as_deref()
            && model.is_none_or(|(bw, _)| strength > bw)
        {
            model = Some((strength, m));
        }
        if let Some(o) = c.os.as_deref()
            && os.is_none_or(|(bw, _)| strength > bw)
        {
            os = Some((strength, o));
        }
    }
    let (device_type, confidence) = types
        .iter()
        .map(|(t, miss)| (*t, 1.0 - miss))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        .map_or((DeviceType::Unknown, 0.0), |(t, s)| {
            (DeviceType::try_from(t).unwrap_or(DeviceType::Unknown), s)
        });
    let vendor = vendors
        .values()
        .max_by(|a, b| (1.0 - a.0).total_cmp(&(1.0 - b.0)).then(b.2.cmp(&a.2)))
        .map(|v| v.2.clone())
        .unwrap_or_default();
    Decision {
        vendor,
        device_type,
        confidence: (confidence * 1000.0).round() / 1000.0,
        model: model.map(|m| m.1.to_string()).unwrap_or_default(),
        os: os.map(|o| o.1.to_string()).unwrap_or_default(),
    }
}

fn shown_of(d: &DeviceState, x: &Decision) -> Shown {
    Shown {
        vendor: x.vendor.clone(),
        device_type: x.device_type as i32,
        model: x.model.clone(),
        os: x.os.clone(),
        // Confidence moves in steps of a tenth before it is news.
        confidence: (x.confidence * 10.0).round() / 10.0,
        hostnames: d.hostnames.clone(),
        macs: d.macs.iter().map(|m| m.mac.clone()).collect(),
        ips: d.ips.iter().map(|s| s.ip).collect(),
    }
}

/// The device as the proto shows it: most recent MACs and addresses first,
/// strongest evidence first.
pub fn snapshot(sensor_id: &str, d: &DeviceState, x: &Decision) -> Device {
    let general = d.claims.values().any(|c| c.general);
    let mut macs = d.macs.clone();
    macs.sort_by_key(|m| std::cmp::Reverse(m.last_us));
    let mut ips = d.ips.clone();
    ips.sort_by_key(|s| std::cmp::Reverse(s.last_us));
    let mut evidence: Vec<Evidence> = d
        .claims
        .values()
        .map(|c| {
            let (w, vw) = effective(c, general);
            Evidence {
                source: c.source,
                detail: c.detail.clone(),
                weight: (w.max(vw) * 1000.0).round() / 1000.0,
                suggests_type: c.device_type,
                ts_us: c.ts_us,
            }
        })
        .collect();
    evidence.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.detail.cmp(&b.detail)));
    Device {
        device_id: d.device_id.clone(),
        sensor_id: sensor_id.to_string(),
        macs: macs
            .iter()
            .filter_map(|m| {
                let mac = parse_mac(&m.mac)?;
                Some(DeviceMac {
                    mac: mac.to_vec().into(),
                    first_seen_us: m.first_us,
                    last_seen_us: m.last_us,
                    locally_administered: oui::locally_administered(mac),
                })
            })
            .collect(),
        ips: ips
            .iter()
            .map(|s| DeviceIp {
                ip: heimdall_proto::addr::ip_bytes(s.ip).into(),
                first_seen_us: s.first_us,
                last_seen_us: s.last_us,
            })
            .collect(),
        vendor: x.vendor.clone(),
        device_type: x.device_type as i32,
        model: x.model.clone(),
        os: x.os.clone(),
        hostnames: d.hostnames.clone(),
        confidence: x.confidence,
        evidence,
        first_seen_us: d.first_seen_us,
        last_seen_us: d.last_seen_us,
        label: String::new(),
        revision: d.revision,
    }
}

/// One line of devices.jsonl.
pub fn device_json(d: &Device) -> serde_json::Value {
    let mac = |b: &[u8]| oui::mac_of(b).map(oui::mac_text).unwrap_or_default();
    serde_json::json!({
        "device_id": d.device_id,
        "mac": d.macs.first().map(|m| mac(&m.mac)).unwrap_or_default(),
        "macs": d.macs.iter().map(|m| mac(&m.mac)).collect::<Vec<_>>(),
        "ips": d.ips.iter().filter_map(|i| heimdall_proto::addr::ip(&i.ip)).map(|i| i.to_string()).collect::<Vec<_>>(),
        "vendor": d.vendor,
        "device_type": type_name(DeviceType::try_from(d.device_type).unwrap_or(DeviceType::Unknown)),
        "model": d.model,
        "os": d.os,
        "hostname": d.hostnames.first().cloned().unwrap_or_default(),
        "hostnames": d.hostnames,
        "confidence": d.confidence,
        "first_seen": d.first_seen_us as f64 / 1e6,
        "last_seen": d.last_seen_us as f64 / 1e6,
        "evidence": d.evidence.iter().map(|e| serde_json::json!({
            "source": EvidenceSource::try_from(e.source).map(|s| s.as_str_name().trim_start_matches("EVIDENCE_SOURCE_").to_ascii_lowercase()).unwrap_or_default(),
            "detail": e.detail,
            "weight": e.weight,
            "suggests_type": if e.suggests_type == 0 { String::new() } else { type_name(DeviceType::try_from(e.suggests_type).unwrap_or(DeviceType::Unknown)) },
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use heimdall_proto::sensor::v1::{
        ArpObservation, Dhcpv4Observation, HttpObservation, observation::Kind,
    };

    fn registry() -> Registry {
        Registry::new(
            RegistryConfig::default(),
            Arc::new(Rules::builtin().expect("rules")),
        )
    }

    fn arp(mac: [u8; 6], ip: [u8; 4], ts: i64) -> Observation {
        Observation {
            ts_us: ts,
            src_mac: mac.to_vec().into(),
            kind: Some(Kind::Arp(ArpObservation {
                op: 1,
                sender_mac: mac.to_vec().into(),
                sender_ip: ip.to_vec().into(),
                target_ip: ip.to_vec().into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn dhcp(mac: [u8; 6], host: &str, ts: i64) -> Observation {
        Observation {
            ts_us: ts,
            src_mac: mac.to_vec().into(),
            kind: Some(Kind::Dhcpv4(Dhcpv4Observation {
                message_type: 3,
                chaddr: mac.to_vec().into(),
                host_name: host.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn dns(ip: [u8; 4], name: &str, ts: i64) -> DnsRecord {
        DnsRecord {
            ts_us: ts,
            id_orig_h: ip.to_vec().into(),
            id_resp_p: 53,
            query: Some(name.into()),
            ..Default::default()
        }
    }

    fn find(reg: &Registry, mac: [u8; 6]) -> Device {
        reg.devices()
            .into_iter()
            .find(|d| d.macs.iter().any(|m| oui::mac_of(&m.mac) == Some(mac)))
            .expect("device")
    }

    #[test]
    fn a_lookup_waits_for_its_address_to_have_a_device() {
        let mut reg = registry();
        let hue = [0x00, 0x17, 0x88, 1, 2, 3];
        reg.dns(&dns([192, 168, 1, 9], "bridge.meethue.com", 1));
        assert!(reg.is_empty());
        reg.observe(&arp(hue, [192, 168, 1, 9], 2));
        let d = find(&reg, hue);
        assert_eq!(d.device_type, DeviceType::Hub as i32);
        assert!(
            d.evidence.iter().any(|e| e.detail.contains("meethue.com")),
            "{d:#?}"
        );
        // Lookups from outside the local networks are not about devices.
        reg.dns(&dns([8, 8, 8, 8], "bridge.meethue.com", 3));
        assert_eq!(reg.pending_len, 0);
        // Lookups that never find a device age out, counted.
        reg.dns(&dns([192, 168, 1, 200], "example.com", 4));
        reg.flush(4 + 601_000_000);
        assert_eq!((reg.pending_len, reg.stats().pending_dropped), (0, 1));
    }

    #[test]
    fn a_golden_profiles_distinct_destination_is_a_vendor_hint() {
        use heimdall_proto::sensor::v1::{DestinationExpectation, GoldenProfile};
        let dest = |d: &str, share: f64| DestinationExpectation {
            registered_domain: d.into(),
            share,
        };
        let profiles = vec![
            GoldenProfile {
                profile_id: "gp-acme-cam".into(),
                device_type: DeviceType::Camera as i32,
                vendor: "Acme".into(),
                model: "Acme Cam 2".into(),
                typical_destinations: vec![
                    dest("acmecam-cloud.com", 0.95),
                    dest("amazonaws.com", 0.99),
                    dest("sharedcdn.net", 0.9),
                    dest("rarely-acme.com", 0.2),
                ],
                ..Default::default()
            },
            GoldenProfile {
                profile_id: "gp-other-plug".into(),
                device_type: DeviceType::SmartPlug as i32,
                vendor: "Other".into(),
                typical_destinations: vec![dest("sharedcdn.net", 0.8)],
                ..Default::default()
            },
        ];
        let hints = crate::rules::hints_from_profiles(&profiles);
        let domains: Vec<&str> = hints.iter().map(|h| h.domain.as_str()).collect();
        // Shared infrastructure, a domain two vendors use and a rare one
        // are no hints.
        assert_eq!(domains, ["acmecam-cloud.com"]);
        let mut reg = registry();
        reg.set_rules(Arc::new(
            Rules::builtin().expect("rules").with_hints(&hints),
        ));
        // An unknown maker (a locally administered MAC) that looks up the
        // camera cloud.
        let cam = [0x02, 0x11, 0x22, 1, 2, 3];
        reg.observe(&arp(cam, [192, 168, 1, 30], 1));
        reg.dns(&dns([192, 168, 1, 30], "eu.acmecam-cloud.com", 2));
        let d = find(&reg, cam);
        assert_eq!(d.vendor, "Acme", "{d:#?}");
        assert_eq!(d.device_type, DeviceType::Camera as i32, "{d:#?}");
        assert!(
            d.evidence
                .iter()
                .any(|e| e.detail.contains("intel:gp-acme-cam:acmecam-cloud.com")
                    || e.detail.contains("golden profile gp-acme-cam")),
            "{:#?}",
            d.evidence
        );
        // A device that only uses the shared CDN gets nothing from it.
        let other = [0x02, 0x11, 0x22, 4, 5, 6];
        reg.observe(&arp(other, [192, 168, 1, 31], 3));
        reg.dns(&dns([192, 168, 1, 31], "img.sharedcdn.net", 4));
        assert_eq!(find(&reg, other).vendor, "");
    }

    #[test]
    fn a_mac_carrying_outside_addresses_is_a_router() {
        let mut reg = registry();
        let (router, host) = ([0x00, 0x1d, 0x0f, 1, 1, 1], [0x00, 0x17, 0x88, 1, 2, 3]);
        for (i, remote) in [[1, 1, 1, 1], [8, 8, 8, 8], [9, 9, 9, 9]]
            .into_iter()
            .enumerate()
        {
            reg.conn(&ConnRecord {
                ts_us: i as i64,
                id_orig_h: vec![192, 168, 1, 9].into(),
                id_resp_h: remote.to_vec().into(),
                id_resp_p: 443,
                proto: Transport::Tcp as i32,
                orig_l2_addr: host.to_vec().into(),
                resp_l2_addr: router.to_vec().into(),
                ..Default::default()
            });
        }
        let r = find(&reg, router);
        assert_eq!(r.device_type, DeviceType::Network as i32, "{r:#?}");
        assert!(
            r.ips.is_empty(),
            "outside addresses are not the router's own"
        );
        assert_eq!(find(&reg, host).ips.len(), 1);
    }

    #[test]
    fn fixed_macs_sharing_a_name_stay_two_devices() {
        let mut reg = registry();
        let (a, b) = ([0x50, 0xc7, 0xbf, 0, 0, 1], [0x50, 0xc7, 0xbf, 0, 0, 2]);
        reg.observe(&dhcp(a, "HS100(EU)", 1));
        reg.observe(&dhcp(b, "HS100(EU)", 2));
        assert_eq!(reg.len(), 2);
        let events = reg.flush(3);
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.kind == DeviceEventKind::New as i32));
        assert_eq!(find(&reg, a).device_type, DeviceType::SmartPlug as i32);
    }

    #[test]
    fn a_phone_looking_up_a_console_cloud_is_still_a_phone() {
        let mut reg = registry();
        let phone = [0x4c, 0x6a, 0xf6, 1, 2, 3];
        reg.observe(&arp(phone, [192, 168, 1, 5], 1));
        reg.observe(&Observation {
            ts_us: 2,
            src_mac: phone.to_vec().into(),
            src_ip: vec![192, 168, 1, 5].into(),
            kind: Some(Kind::Http(HttpObservation {
                user_agent: "Dalvik/2.1.0 (Linux; U; Android 9; Nokia 2.2 Build/PPR1)".into(),
                ..Default::default()
            })),
            ..Default::default()
        });
        for n in [
            "accounts.nintendo.net",
            "api.playstation.net",
            "devs.tplinkcloud.com",
        ] {
            reg.dns(&dns([192, 168, 1, 5], n, 3));
        }
        let d = find(&reg, phone);
        assert_eq!(d.device_type, DeviceType::Phone as i32, "{d:#?}");
        assert_eq!(d.os, "Android 9");
        assert_eq!(d.model, "Nokia 2.2");
        assert_eq!(d.vendor, "HMD Global (Nokia)");
    }

    #[test]
    fn a_restored_registry_decides_the_same_and_announces_nothing_again() {
        let mut reg = registry();
        let plug = [0x50, 0xc7, 0xbf, 0, 0, 1];
        reg.observe(&dhcp(plug, "HS110(EU)", 1));
        reg.observe(&arp(plug, [192, 168, 1, 7], 2));
        assert_eq!(reg.flush(3).len(), 1);
        let (changed, _) = reg.take_changed();
        let saved: Vec<serde_json::Value> = changed
            .iter()
            .map(|d| serde_json::to_value(d).expect("json"))
            .collect();
        let mut again = registry();
        again.restore(
            saved
                .into_iter()
                .map(|v| serde_json::from_value(v).expect("state")),
        );
        assert_eq!(again.devices(), reg.devices());
        again.observe(&dhcp(plug, "HS110(EU)", 4));
        assert!(again.flush(5).is_empty(), "nothing new, no event");
        assert_eq!(again.len(), 1);
    }
}
