//! The engine: packets in, connection and DNS records out. It owns the flow
//! table (bounded, with Zeek's timers driven by packet time), fragment
//! reassembly, tunnel decapsulation, and the per-connection analyzers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use heimdall_proto::sensor::v1::{ConnState, Observation, Transport, observation};

use crate::dns;
use crate::frag::{FragLimits, Reassembler};
use crate::history::{History, Letter};
use crate::ids::{LocalNets, UidGen, icmp_counterpart, uid_string};
use crate::ip::{self, Addr, IpPacket};
use crate::link::{self, L3Kind};
use crate::observe;
use crate::reader::Packet;
use crate::rows::{ConnRow, DnsRow, Parents};
use crate::service::{self, Detector, Expected};
use crate::tcp::{self, Segment, Tcp};

const SEC: i64 = 1_000_000_000;

/// Engine settings. The defaults are Zeek's.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Networks whose addresses count as local (local_orig/local_resp).
    pub local_nets: LocalNets,
    /// Which checksums are verified (packets failing them are dropped and
    /// counted, and the connection history shows `C`).
    pub checksums: Checksums,
    /// Most connections tracked at once; beyond it the least recently
    /// scheduled connection is logged early and counted as evicted.
    pub max_connections: usize,
    pub tcp_inactivity_ns: i64,
    pub udp_inactivity_ns: i64,
    pub icmp_inactivity_ns: i64,
    pub unknown_inactivity_ns: i64,
    /// Seed for connection uids (a fixed seed makes runs repeatable).
    pub uid_seed: u64,
    /// Sensor id stamped on every record.
    pub sensor_id: String,
    /// Count gaps in connections whose handshake was not seen, too.
    pub report_gaps_for_partial: bool,
    /// Lift device observations (ARP, DHCPv4) out of the traffic into
    /// `Output::observations`. Off by default: `heimdall analyze` writes
    /// only conn and dns logs; the capture service turns it on.
    pub observations: bool,
}

/// Checksum policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksums {
    /// Every IP, TCP, UDP and ICMP checksum (Zeek's default).
    All,
    /// IPv4 header checksums (a zero one, never computed, passes) and the
    /// UDP checksums of VXLAN encapsulations; transport checksums otherwise
    /// pass, because a capture taken on a host whose network card computes
    /// them shows them wrong for every packet the host sends (checksum
    /// offload). This is the default.
    Auto,
    /// None (Zeek's -C).
    None,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            local_nets: LocalNets::private_address_space(),
            checksums: Checksums::Auto,
            max_connections: 1_000_000,
            tcp_inactivity_ns: 300 * SEC,
            udp_inactivity_ns: 60 * SEC,
            icmp_inactivity_ns: 60 * SEC,
            unknown_inactivity_ns: 60 * SEC,
            uid_seed: 0x4865_696d_6461_6c6c,
            sensor_id: String::new(),
            report_gaps_for_partial: false,
            observations: false,
        }
    }
}

/// Counters for the summary line and for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub packets: u64,
    pub bytes: u64,
    /// Frames with no network layer we track (ARP, LLDP, 802.11 management...).
    pub non_ip: u64,
    /// Frames or packets that could not be decoded (truncated headers,
    /// unknown link types, bad IP headers).
    pub decode_errors: u64,
    pub bad_checksums: u64,
    pub connections: u64,
    pub dns_transactions: u64,
    /// Connections logged early because the table was full.
    pub evicted: u64,
    pub fragments: u64,
    pub fragments_dropped: u64,
    pub tunnel_packets: u64,
    /// Tunnels nested deeper than followed.
    pub tunnel_too_deep: u64,
    /// Connections tracked right now.
    pub active: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Key {
    a: Addr,
    b: Addr,
    pa: u16,
    pb: u16,
    proto: u8,
    /// One-way ICMP keys keep their direction.
    oneway: bool,
}

impl Key {
    fn new(proto: u8, src: Addr, sp: u16, dst: Addr, dp: u16) -> Self {
        if (src, sp) <= (dst, dp) {
            Key {
                a: src,
                b: dst,
                pa: sp,
                pb: dp,
                proto,
                oneway: false,
            }
        } else {
            Key {
                a: dst,
                b: src,
                pa: dp,
                pb: sp,
                proto,
                oneway: false,
            }
        }
    }
}

/// FNV-style multiply-xor hashing: keys are not attacker-chosen in a way
/// that matters here (a flood fills the bounded table either way).
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut v = [0u8; 8];
            v[..chunk.len()].copy_from_slice(chunk);
            self.0 =
                (self.0.rotate_left(5) ^ u64::from_le_bytes(v)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u16(&mut self, i: u16) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Inactivity,
    TcpAttempt,
    TcpExpire,
    TcpClose,
    DnsExpire,
}

#[derive(Debug, Default, Clone, Copy)]
struct Side {
    pkts: u64,
    ip_bytes: u64,
    /// UDP/ICMP payload bytes.
    size: u64,
    active: bool,
    chk: u64,
    chk_threshold: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Encap {
    parents: [u128; 4],
    depth: u8,
}

impl Encap {
    fn push(&self, uid: u128) -> Option<Encap> {
        if self.depth as usize >= 2 {
            return None;
        }
        let mut e = *self;
        e.parents[e.depth as usize] = uid;
        e.depth += 1;
        Some(e)
    }
    fn innermost(&self) -> Option<u128> {
        (self.depth > 0).then(|| self.parents[self.depth as usize - 1])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tunnel {
    Vxlan,
    Geneve,
    Gtp,
    Teredo,
    Ayiya,
    /// CAPWAP data channel (wireless access points and their controller).
    Capwap,
}

#[derive(Debug)]
struct Conn {
    key: Key,
    generation: u32,
    uid: u128,
    orig: Addr,
    resp: Addr,
    orig_p: u16,
    resp_p: u16,
    ip_proto: u8,
    start_ns: i64,
    last_ns: i64,
    o: Side,
    r: Side,
    history: History,
    tcp: Option<Box<Tcp>>,
    inactivity_ns: i64,
    svc: Detector,
    dns: Option<Box<dns::Session>>,
    parents: Parents,
    /// Started mid-stream (no SYN or SYN-ACK as first packet).
    partial: bool,
    tunnel: Option<Tunnel>,
    tunnel_violation: bool,
    x_added: bool,
    /// The client's opening bytes, kept while a ClientHello or HTTP request
    /// header is incomplete (observations only; empty and unallocated
    /// otherwise).
    opening: Vec<u8>,
    /// The opening was decided (or observations are off).
    opening_done: bool,
    /// Link-layer addresses of originator and responder (Zeek's
    /// mac-logging), from the first frame; zero when observations are off.
    l2: [[u8; 6]; 2],
    /// A QUIC client's Initial CRYPTO data while its hello is incomplete.
    quic: Option<Box<observe::quic::Assembly>>,
}

impl Conn {
    fn side(&mut self, is_orig: bool) -> &mut Side {
        if is_orig { &mut self.o } else { &mut self.r }
    }

    /// A UDP analyzer decided the roles are the other way round: addresses
    /// and ports swap, the per-side counters stay where they are (as Zeek's
    /// UDP analyzer keeps them).
    fn flip_udp(&mut self) {
        std::mem::swap(&mut self.orig, &mut self.resp);
        std::mem::swap(&mut self.orig_p, &mut self.resp_p);
        self.l2.swap(0, 1);
        self.history.flip();
    }

    fn dns_ctx(&self) -> dns::ConnCtx {
        dns::ConnCtx {
            orig_p: self.orig_p,
            resp_p: self.resp_p,
            resp_multicast: is_multicast(&self.resp),
        }
    }
}

/// The DNS rows the analyzer finished (`done`), with their connection's ids.
fn emit_dns(c: &Conn, done: &mut Vec<dns::Info>, out: &mut Vec<DnsRow>, stats: &mut Stats) {
    let transport = if c.ip_proto == 6 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    for info in done.drain(..) {
        stats.dns_transactions += 1;
        out.push(DnsRow {
            uid: c.uid,
            orig: c.orig,
            orig_p: c.orig_p,
            resp: c.resp,
            resp_p: c.resp_p,
            transport,
            info,
        });
    }
}

fn is_multicast(a: &Addr) -> bool {
    if a.is_v4() {
        a.0[12] & 0xf0 == 0xe0
    } else {
        a.0[0] == 0xff
    }
}

fn is_limited_broadcast(a: &Addr) -> bool {
    a.is_v4() && a.0[12..] == [255, 255, 255, 255]
}

/// Rows the engine produced; write them out, then hand them back with
/// [`Engine::clear_output`] so their buffers are reused.
#[derive(Debug, Default)]
pub struct Output {
    pub conns: Vec<ConnRow>,
    pub dns: Vec<DnsRow>,
    /// Device observations, when `EngineConfig::observations` is on; the
    /// sensor id is left for the publisher to fill in.
    pub observations: Vec<Observation>,
}

/// Finished connections' TCP, DNS and detector state kept for reuse, at
/// most this many of each (their buffers stay allocated).
const MAX_SPARE: usize = 1024;

/// Packets to records.
pub struct Engine {
    cfg: EngineConfig,
    table: FastMap<Key, u32>,
    slots: Vec<Option<Conn>>,
    free: Vec<u32>,
    generations: Vec<u32>,
    timers: BinaryHeap<TimerEntry>,
    frags: Reassembler,
    uids: UidGen,
    ip_tunnels: FastMap<(Addr, Addr), (u128, i64)>,
    expected: Vec<(Expected, i64)>,
    expect_scratch: Vec<Expected>,
    dns_scratch: dns::Out,
    /// Finished connections' state, reused by the next ones.
    spare_svc: Vec<Detector>,
    // Boxed because connections hold them boxed: a box moves between a
    // connection and its pool without a new allocation.
    #[allow(clippy::vec_box)]
    spare_tcp: Vec<Box<Tcp>>,
    #[allow(clippy::vec_box)]
    spare_dns: Vec<Box<dns::Session>>,
    now: i64,
    stats: Stats,
    /// The current frame's link-layer addresses and outer VLAN.
    l2: ([u8; 6], [u8; 6], Option<u16>),
    /// Record uids of observations (a generator of their own, so turning
    /// observations on does not change connection uids).
    obs_uids: UidGen,
    pub out: Output,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("stats", &self.stats)
            .finish()
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        let uids = UidGen::new(cfg.uid_seed);
        let obs_uids = UidGen::new(cfg.uid_seed ^ 0x6f62_7365_7276_6521);
        Engine {
            cfg,
            table: FastMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            timers: BinaryHeap::new(),
            frags: Reassembler::new(FragLimits::default()),
            uids,
            ip_tunnels: FastMap::default(),
            expected: Vec::new(),
            expect_scratch: Vec::new(),
            dns_scratch: dns::Out::default(),
            spare_svc: Vec::new(),
            spare_tcp: Vec::new(),
            spare_dns: Vec::new(),
            now: i64::MIN,
            stats: Stats::default(),
            l2: ([0; 6], [0; 6], None),
            obs_uids,
            out: Output::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.active = self.table.len() as u64;
        s.fragments = self.frags.stats.fragments;
        s.fragments_dropped = self.frags.stats.dropped + self.frags.stats.invalid;
        s
    }

    /// Hands the written rows back: their buffers are reused for the next
    /// ones. Call it after writing `out`.
    pub fn clear_output(&mut self) {
        self.out.conns.clear();
        self.out.observations.clear();
        for row in self.out.dns.drain(..) {
            self.dns_scratch.recycle(row.info);
        }
    }

    /// One captured frame.
    pub fn packet(&mut self, pkt: &Packet<'_>) {
        self.stats.packets += 1;
        self.stats.bytes += pkt.wire_len as u64;
        self.advance(pkt.ts_ns);
        match link::decode(pkt.linktype, pkt.data) {
            Ok(l3) => {
                if self.cfg.observations {
                    self.l2 = (
                        l3.src_mac.unwrap_or_default(),
                        l3.dst_mac.unwrap_or_default(),
                        l3.vlan,
                    );
                }
                match l3.kind {
                    L3Kind::Ipv4 | L3Kind::Ipv6 => self.ip(l3.data, Encap::default()),
                    L3Kind::Arp => {
                        self.stats.non_ip += 1;
                        if self.cfg.observations
                            && let Some(arp) = observe::arp(l3.data)
                        {
                            self.observe(
                                None,
                                Transport::Unspecified,
                                None,
                                observation::Kind::Arp(arp),
                            );
                        }
                    }
                    _ => self.stats.non_ip += 1,
                }
            }
            Err(link::LinkError::NotData) => self.stats.non_ip += 1,
            Err(_) => self.stats.decode_errors += 1,
        }
    }

    /// Adds an observation of the current frame: `ends` are its IP
    /// addresses and ports (none for ARP), `conn_uid` its connection.
    fn observe(
        &mut self,
        ends: Option<(&Addr, &Addr, u16, u16)>,
        transport: Transport,
        conn_uid: Option<u128>,
        kind: observation::Kind,
    ) {
        let (src, dst, src_port, dst_port) = match ends {
            Some((s, d, sp, dp)) => (Some(s), Some(d), sp, dp),
            None => (None, None, 0, 0),
        };
        let ip = |a: Option<&Addr>| a.map(|a| a.octets().to_vec()).unwrap_or_default();
        let (src_mac, dst_mac, vlan) = self.l2;
        let o = Observation {
            ts_us: self.now.div_euclid(1000),
            record_uid: uid_string('O', self.obs_uids.next_id()),
            src_mac: if src_mac == [0; 6] {
                Vec::new()
            } else {
                src_mac.to_vec()
            }
            .into(),
            dst_mac: if dst_mac == [0; 6] {
                Vec::new()
            } else {
                dst_mac.to_vec()
            }
            .into(),
            src_ip: ip(src).into(),
            dst_ip: ip(dst).into(),
            src_port: src_port as u32,
            dst_port: dst_port as u32,
            transport: transport as i32,
            conn_uid: conn_uid.map(|u| uid_string('C', u)).unwrap_or_default(),
            vlan: vlan.map(i32::from),
            kind: Some(kind),
            ..Default::default()
        };
        self.out.observations.push(o);
    }

    /// Moves the clock to `ts_ns` without a packet, firing the timers due by
    /// then. A live capture calls it while the link is quiet, so connections
    /// end on time even when no packet comes to move the clock.
    pub fn tick(&mut self, ts_ns: i64) {
        self.advance(ts_ns);
    }

    /// Fires every timer due by `ts` (packet time drives all timers).
    fn advance(&mut self, ts: i64) {
        if ts > self.now {
            self.now = ts;
        }
        while let Some(Reverse((t, slot, generation, kind))) = self.timers.peek().copied() {
            if t > self.now {
                break;
            }
            self.timers.pop();
            self.fire(t, slot, generation, kind);
        }
    }

    fn fire(&mut self, t: i64, slot: u32, generation: u32, kind: TimerKind) {
        let Some(Some(c)) = self.slots.get(slot as usize) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        let remove = match kind {
            TimerKind::Inactivity => {
                if c.last_ns + c.inactivity_ns <= t {
                    true
                } else {
                    let next = c.last_ns + c.inactivity_ns;
                    self.timers.push(timer(next, slot, generation, kind));
                    false
                }
            }
            TimerKind::TcpAttempt => c.tcp.as_ref().is_some_and(|tcp| tcp.attempt_unanswered()),
            TimerKind::TcpExpire => {
                let due =
                    c.last_ns + 5 * SEC < t && c.tcp.as_ref().is_some_and(|tcp| tcp.expire_ok());
                if !due {
                    self.timers.push(timer(t + 6 * SEC, slot, generation, kind));
                }
                due
            }
            TimerKind::TcpClose => true,
            TimerKind::DnsExpire => {
                if t - c.last_ns >= 9 * SEC {
                    true
                } else {
                    self.timers
                        .push(timer(t + 10 * SEC, slot, generation, kind));
                    false
                }
            }
        };
        if remove {
            self.remove(slot);
        }
    }

    /// End of input: every connection is logged.
    pub fn finish(&mut self) {
        // In timer order, as Zeek drains its timers at termination.
        let mut order: Vec<(i64, u32)> = Vec::with_capacity(self.table.len());
        while let Some(Reverse((t, slot, generation, _))) = self.timers.pop() {
            if let Some(Some(c)) = self.slots.get(slot as usize)
                && c.generation == generation
            {
                order.push((t, slot));
            }
        }
        for (_, slot) in order {
            if matches!(self.slots.get(slot as usize), Some(Some(_))) {
                self.remove(slot);
            }
        }
        let rest: Vec<u32> = self.table.values().copied().collect();
        for slot in rest {
            self.remove(slot);
        }
    }

    // ---------------------------------------------------------------- IP

    fn ip(&mut self, data: &[u8], encap: Encap) {
        let auto = self.cfg.checksums == Checksums::Auto;
        let pkt = match ip::parse_with(data, self.cfg.checksums != Checksums::None, auto) {
            Ok(p) => p,
            // A zero IPv4 header checksum was never computed: the packet left
            // a host whose network card fills it in (checksum offload, common
            // on Windows and macOS and on virtual interfaces). Auto accepts it.
            Err(ip::IpError::BadChecksum)
                if auto && data.len() >= 12 && data[10] == 0 && data[11] == 0 =>
            {
                match ip::parse_with(data, false, true) {
                    Ok(p) => p,
                    Err(_) => {
                        self.stats.decode_errors += 1;
                        return;
                    }
                }
            }
            Err(ip::IpError::BadChecksum) => {
                self.stats.bad_checksums += 1;
                return;
            }
            Err(_) => {
                self.stats.decode_errors += 1;
                return;
            }
        };
        if pkt.frag.is_some() {
            if let Some(full) = self.frags.add(self.now, &pkt)
                && let Ok(whole) = ip::parse(&full, false)
            {
                self.transport(&whole, encap);
            }
            return;
        }
        self.transport(&pkt, encap);
    }

    fn transport(&mut self, p: &IpPacket<'_>, encap: Encap) {
        if encap.depth > 0 {
            self.stats.tunnel_packets += 1;
        }
        match p.proto {
            6 => self.tcp(p, encap),
            17 => self.udp(p, encap),
            1 | 58 => self.icmp(p, encap),
            4 | 41 => {
                let uid = self.ip_tunnel_uid(p.src, p.dst);
                match encap.push(uid) {
                    Some(e) => self.ip(p.payload, e),
                    None => self.stats.tunnel_too_deep += 1,
                }
            }
            47 => self.gre(p, encap),
            59 => {}
            50 | 135 if p.v6 => {}
            _ => self.unknown(p, encap),
        }
    }

    fn ip_tunnel_uid(&mut self, a: Addr, b: Addr) -> u128 {
        let key = if a <= b { (a, b) } else { (b, a) };
        let now = self.now;
        if self.ip_tunnels.len() > 65_536 {
            self.ip_tunnels
                .retain(|_, (_, last)| now - *last < 24 * 3600 * SEC);
            if self.ip_tunnels.len() > 65_536 {
                // Still full of live tunnels: start over rather than grow.
                self.ip_tunnels.clear();
            }
        }
        let fresh = self.uids.next_id();
        let e = self.ip_tunnels.entry(key).or_insert((fresh, now));
        if now - e.1 >= 24 * 3600 * SEC {
            e.0 = fresh;
        }
        e.1 = now;
        e.0
    }

    fn gre(&mut self, p: &IpPacket<'_>, encap: Encap) {
        let g = p.payload;
        if g.len() < 4 {
            self.stats.decode_errors += 1;
            return;
        }
        let flags = g[0];
        let version = g[1] & 0x07;
        let proto = u16::from_be_bytes([g[2], g[3]]);
        if flags & 0x40 != 0 || flags & 0x07 != 0 || version > 1 {
            self.stats.decode_errors += 1;
            return;
        }
        let mut off = 4;
        if flags & 0x80 != 0 {
            off += 4;
        }
        if flags & 0x20 != 0 {
            off += 4;
        }
        let seq = flags & 0x10 != 0;
        if seq {
            off += 4;
        }
        if version == 1 && g[1] & 0x80 != 0 {
            off += 4;
        }
        if g.len() < off {
            self.stats.decode_errors += 1;
            return;
        }
        let body = &g[off..];
        let uid = self.ip_tunnel_uid(p.src, p.dst);
        let Some(inner) = encap.push(uid) else {
            self.stats.tunnel_too_deep += 1;
            return;
        };
        let l3 = match (version, proto) {
            (1, 0x880b) => link::ppp(body).ok(),
            (0, 0x0800) | (0, 0x86dd) => link::raw_ip(body).ok(),
            (0, 0x6558) => link::ethernet(body).ok(),
            (0, 0x88be) => {
                if seq {
                    body.get(8..).and_then(|b| link::ethernet(b).ok())
                } else {
                    link::ethernet(body).ok()
                }
            }
            (0, 0x22eb) => {
                let sub = body.get(11).is_some_and(|b| b & 0x01 != 0);
                body.get(if sub { 20 } else { 12 }..)
                    .and_then(|b| link::ethernet(b).ok())
            }
            (0, t) if (0x8200..=0x8300).contains(&t) || t == 0x9000 => link::ieee80211(body).ok(),
            _ => None,
        };
        match l3 {
            Some(l3) if matches!(l3.kind, L3Kind::Ipv4 | L3Kind::Ipv6) => self.ip(l3.data, inner),
            Some(_) => self.stats.non_ip += 1,
            None => self.stats.decode_errors += 1,
        }
    }

    // -------------------------------------------------------- connections

    fn lookup(&self, key: &Key) -> Option<u32> {
        self.table.get(key).copied()
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        key: Key,
        orig: Addr,
        orig_p: u16,
        resp: Addr,
        resp_p: u16,
        ip_proto: u8,
        flip: bool,
        encap: Encap,
    ) -> u32 {
        while self.table.len() >= self.cfg.max_connections.max(1) {
            if !self.evict_one() {
                break;
            }
        }
        let (orig, orig_p, resp, resp_p) = if flip {
            (resp, resp_p, orig, orig_p)
        } else {
            (orig, orig_p, resp, resp_p)
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.generations[slot as usize].wrapping_add(1);
        self.generations[slot as usize] = generation;
        let inactivity_ns = match ip_proto {
            6 | 17 => self.cfg.udp_inactivity_ns,
            1 | 58 => self.cfg.icmp_inactivity_ns,
            _ => self.cfg.unknown_inactivity_ns,
        };
        let mut history = History::default();
        if flip {
            history.flip();
        }
        let udp = ip_proto == 17;
        let wants_dns = (udp || ip_proto == 6) && dns::is_dns_port(udp, resp_p);
        let now = self.now;
        // TCP, DNS and detector state come from finished connections.
        let tcp = (ip_proto == 6).then(|| {
            let fresh = Tcp::new(self.cfg.report_gaps_for_partial);
            match self.spare_tcp.pop() {
                Some(mut t) => {
                    *t = fresh;
                    t
                }
                None => Box::new(fresh),
            }
        });
        let dns = wants_dns.then(|| match self.spare_dns.pop() {
            Some(mut d) => {
                d.reset(&mut self.dns_scratch);
                d
            }
            None => Box::new(dns::Session::new()),
        });
        let mut svc = self.spare_svc.pop().unwrap_or_default();
        svc.reset();
        let mut c = Conn {
            key,
            generation,
            uid: self.uids.next_id(),
            orig,
            resp,
            orig_p,
            resp_p,
            ip_proto,
            start_ns: now,
            last_ns: now,
            o: Side::default(),
            r: Side::default(),
            history,
            tcp,
            inactivity_ns,
            svc,
            dns,
            parents: Parents::default(),
            partial: false,
            tunnel: None,
            tunnel_violation: false,
            x_added: false,
            opening: Vec::new(),
            opening_done: !self.cfg.observations,
            l2: if flip {
                [self.l2.1, self.l2.0]
            } else {
                [self.l2.0, self.l2.1]
            },
            quic: None,
        };
        if let Some(p) = encap.innermost() {
            c.parents.add(p);
        }
        // An announced FTP data connection.
        if ip_proto == 6 && !self.expected.is_empty() {
            self.expected.retain(|(_, exp)| *exp > now);
            if let Some(i) = self.expected.iter().position(|(e, _)| {
                e.port == c.resp_p && (e.resp.is_unspecified() || Addr::from(e.resp) == c.resp)
            }) {
                self.expected.remove(i);
                c.svc.add_first("ftp-data");
            }
        }
        self.timers.push(timer(
            now + inactivity_ns,
            slot,
            generation,
            TimerKind::Inactivity,
        ));
        if ip_proto == 6 {
            self.timers
                .push(timer(now + 5 * SEC, slot, generation, TimerKind::TcpExpire));
        }
        if udp && c.dns.is_some() {
            self.timers.push(timer(
                now + 10 * SEC,
                slot,
                generation,
                TimerKind::DnsExpire,
            ));
        }
        self.slots[slot as usize] = Some(c);
        self.table.insert(key, slot);
        self.stats.connections += 1;
        slot
    }

    fn evict_one(&mut self) -> bool {
        while let Some(Reverse((_, slot, generation, _))) = self.timers.pop() {
            if let Some(Some(c)) = self.slots.get(slot as usize)
                && c.generation == generation
            {
                self.stats.evicted += 1;
                self.remove(slot);
                return true;
            }
        }
        false
    }

    /// Logs a connection and frees its slot.
    fn remove(&mut self, slot: u32) {
        let Some(mut c) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.table.remove(&c.key);
        self.free.push(slot);
        let ctx = c.dns_ctx();
        if let Some(d) = c.dns.as_mut() {
            d.finish(&ctx, self.now, &mut self.dns_scratch);
        }
        emit_dns(
            &c,
            &mut self.dns_scratch.done,
            &mut self.out.dns,
            &mut self.stats,
        );
        let row = self.row(&c);
        self.out.conns.push(row);
        // Its state goes to the pools for the next connections.
        if self.spare_svc.len() < MAX_SPARE {
            self.spare_svc.push(c.svc);
        }
        if let Some(t) = c.tcp
            && self.spare_tcp.len() < MAX_SPARE
        {
            self.spare_tcp.push(t);
        }
        if let Some(d) = c.dns
            && self.spare_dns.len() < MAX_SPARE
        {
            self.spare_dns.push(d);
        }
    }

    fn row(&self, c: &Conn) -> ConnRow {
        let duration = c.last_ns - c.start_ns;
        let has_duration = duration > 0;
        let (transport, conn_state, ob, rb) = match (c.ip_proto, &c.tcp) {
            (6, Some(t)) => (
                Transport::Tcp,
                t.conn_state(c.history.as_str()),
                t.size(true),
                t.size(false),
            ),
            (17, _) => (Transport::Udp, udp_state(c), c.o.size, c.r.size),
            (1 | 58, _) => (Transport::Icmp, ConnState::Oth, c.o.size, c.r.size),
            _ => (Transport::Unspecified, ConnState::Oth, 0, 0),
        };
        let local = !self.cfg.local_nets.is_empty();
        ConnRow {
            ts_us: c.start_ns.div_euclid(1000),
            uid: c.uid,
            orig: c.orig,
            orig_p: c.orig_p,
            resp: c.resp,
            resp_p: c.resp_p,
            transport,
            services: c.svc.names(),
            duration_us: has_duration.then(|| duration.div_euclid(1000)),
            orig_bytes: has_duration.then_some(ob),
            resp_bytes: has_duration.then_some(rb),
            conn_state,
            local_orig: local.then(|| self.cfg.local_nets.contains(&c.orig)),
            local_resp: local.then(|| self.cfg.local_nets.contains(&c.resp)),
            missed_bytes: c.tcp.as_ref().map_or(0, |t| t.missed_bytes),
            history: c.history,
            orig_pkts: c.o.pkts,
            orig_ip_bytes: c.o.ip_bytes,
            resp_pkts: c.r.pkts,
            resp_ip_bytes: c.r.ip_bytes,
            tunnel_parents: c.parents,
            ip_proto: c.ip_proto,
            orig_l2: c.l2[0],
            resp_l2: c.l2[1],
        }
    }

    fn note_parent(c: &mut Conn, encap: &Encap) {
        if let Some(p) = encap.innermost() {
            c.parents.add(p);
        }
    }

    fn bad_checksum(c: &mut Conn, is_orig: bool) {
        let s = c.side(is_orig);
        s.chk += 1;
        if s.chk_threshold == 0 {
            s.chk_threshold = 1;
        }
        let hit = s.chk == s.chk_threshold;
        if hit {
            s.chk_threshold *= 10;
            c.history.add(is_orig, Letter::C);
        }
    }

    fn count(c: &mut Conn, is_orig: bool, ip_bytes: u32) {
        let s = c.side(is_orig);
        s.pkts += 1;
        s.ip_bytes += ip_bytes as u64;
    }

    // ------------------------------------------------------------------ TCP

    fn tcp(&mut self, p: &IpPacket<'_>, encap: Encap) {
        let b = p.payload;
        if b.len() < 20 || (p.payload_len != 0 && p.payload_len < 20) {
            self.stats.decode_errors += 1;
            return;
        }
        let sp = u16::from_be_bytes([b[0], b[1]]);
        let dp = u16::from_be_bytes([b[2], b[3]]);
        let seg_seq = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let seg_ack = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        let off = ((b[12] >> 4) as usize) * 4;
        let flags = b[13];
        let window = u16::from_be_bytes([b[14], b[15]]);
        let key = Key::new(6, p.src, sp, p.dst, dp);
        let hdr_ok = off >= 20 && off as u32 <= p.payload_len && off <= b.len();
        let len = if hdr_ok {
            p.payload_len - off as u32
        } else {
            0
        };
        let payload = if hdr_ok { &b[off..] } else { &[][..] };
        let seg = Segment {
            seq: seg_seq,
            ack: seg_ack,
            flags,
            window,
            len,
            payload,
        };

        let mut slot = self.lookup(&key);
        if let Some(s) = slot {
            let reuse = hdr_ok
                && self.slots[s as usize]
                    .as_ref()
                    .and_then(|c| c.tcp.as_ref())
                    .is_some_and(|t| t.is_reuse(&seg));
            if reuse {
                self.remove(s);
                slot = None;
            }
        }
        let slot = match slot {
            Some(s) => s,
            None => {
                let syn = flags & tcp::SYN != 0;
                let ackf = flags & tcp::ACK != 0;
                let mut flip = false;
                if (ackf || !syn) && service::likely_server_port(false, sp) {
                    flip = if service::likely_server_port(false, dp) {
                        !syn && sp < dp
                    } else {
                        true
                    };
                }
                if is_limited_broadcast(&p.dst) {
                    flip = false;
                }
                let s = self.create(key, p.src, sp, p.dst, dp, 6, flip, encap);
                if let Some(c) = self.slots[s as usize].as_mut() {
                    c.partial = !syn;
                }
                s
            }
        };
        let now = self.now;
        let verify = self.cfg.checksums == Checksums::All;
        let fx;
        let mut dns_fx = dns::Effects::default();
        let mut opened = None;
        {
            let Some(c) = self.slots[slot as usize].as_mut() else {
                return;
            };
            let generation = c.generation;
            Self::note_parent(c, &encap);
            let is_orig = p.src == c.orig && sp == c.orig_p;
            if !hdr_ok {
                return;
            }
            if verify && b.len() as u32 >= p.payload_len {
                let sum = ip::pseudo_header_sum(&p.src, &p.dst, 6, p.payload_len);
                if !l4_checksum_ok(&b[..p.payload_len as usize], sum, 16) {
                    self.stats.bad_checksums += 1;
                    Self::bad_checksum(c, is_orig);
                    return;
                }
            }
            let Some(t) = c.tcp.as_mut() else { return };
            let partial = c.partial;
            let resp_p = c.resp_p;
            let svc = &mut c.svc;
            let dns = &mut c.dns;
            let expect = &mut self.expect_scratch;
            let dns_out = &mut self.dns_scratch;
            let ctx = dns::ConnCtx {
                orig_p: c.orig_p,
                resp_p,
                resp_multicast: false,
            };
            let (opening, opening_done) = (&mut c.opening, &mut c.opening_done);
            let opened = &mut opened;
            let mut deliver = |from_orig: bool, data: &[u8]| {
                if !svc.finished() {
                    svc.tcp(from_orig, data, resp_p, partial, expect);
                }
                if let Some(d) = dns.as_mut() {
                    d.tcp_data(&ctx, from_orig, data, now, dns_out, &mut dns_fx);
                }
                if from_orig
                    && !*opening_done
                    && let observe::Opening::Done(kind) = observe::tcp_opening(opening, data)
                {
                    *opening_done = true;
                    *opened = kind;
                }
            };
            fx = t.packet(
                is_orig,
                &seg,
                now,
                &mut c.last_ns,
                &mut c.history,
                &mut deliver,
            );
            if fx.flip {
                // The state machine flipped roles; the rest of the connection follows.
                std::mem::swap(&mut c.orig, &mut c.resp);
                std::mem::swap(&mut c.orig_p, &mut c.resp_p);
                std::mem::swap(&mut c.o, &mut c.r);
                c.l2.swap(0, 1);
            }
            let sender_is_orig = if fx.flip { !is_orig } else { is_orig };
            Self::count(c, sender_is_orig, p.total_len);
            if c.svc.take_limit() && !c.x_added {
                c.x_added = true;
                c.history.add(true, Letter::X);
            }
            if dns_fx.confirmed {
                c.svc.add("dns");
            }
            if dns_fx.add_x && !c.x_added {
                c.x_added = true;
                c.history.add(true, Letter::X);
            }
            if fx.handshake_done {
                c.inactivity_ns = self.cfg.tcp_inactivity_ns;
            }
            let mut arm =
                |at: i64, kind: TimerKind| self.timers.push(timer(at, slot, generation, kind));
            if fx.attempt_timer {
                arm(now + 5 * SEC, TimerKind::TcpAttempt);
            }
            if fx.close_complete {
                arm(c.last_ns + 5 * SEC, TimerKind::TcpClose);
            }
            if fx.close_partial {
                arm(c.last_ns + 6 * SEC, TimerKind::TcpExpire);
            }
        }
        if let Some(kind) = opened
            && encap.depth == 0
        {
            self.opening_observation(slot, p.src, sp, kind);
        }
        if !self.expect_scratch.is_empty() {
            let resp = self.slots[slot as usize].as_ref().map(|c| c.resp.ip());
            for mut e in self.expect_scratch.drain(..) {
                if e.resp.is_unspecified()
                    && let Some(r) = resp
                {
                    e.resp = r;
                }
                self.expected.push((e, now + 300 * SEC));
            }
            if self.expected.len() > 1024 {
                self.expected.drain(..self.expected.len() - 1024);
            }
        }
        self.flush_dns(slot);
    }

    /// A ClientHello or HTTP request the client opened a connection with.
    /// The packet that completed it may be the server's (its ACK released
    /// buffered client bytes): then the frame's addresses are swapped so the
    /// observation is the client's.
    fn opening_observation(
        &mut self,
        slot: u32,
        pkt_src: Addr,
        pkt_sp: u16,
        kind: observation::Kind,
    ) {
        let Some(c) = self.slots[slot as usize].as_ref() else {
            return;
        };
        let (orig, resp, orig_p, resp_p, uid) = (c.orig, c.resp, c.orig_p, c.resp_p, c.uid);
        let from_server = !(pkt_src == orig && pkt_sp == orig_p);
        if from_server {
            let (src, dst, vlan) = self.l2;
            self.l2 = (dst, src, vlan);
        }
        self.observe(
            Some((&orig, &resp, orig_p, resp_p)),
            Transport::Tcp,
            Some(uid),
            kind,
        );
        if from_server {
            let (src, dst, vlan) = self.l2;
            self.l2 = (dst, src, vlan);
        }
    }

    /// DNS rows a packet completed, written with their connection's ids.
    fn flush_dns(&mut self, slot: u32) {
        if let Some(Some(c)) = self.slots.get(slot as usize) {
            emit_dns(
                c,
                &mut self.dns_scratch.done,
                &mut self.out.dns,
                &mut self.stats,
            );
        }
    }

    // ------------------------------------------------------------------ UDP

    fn udp(&mut self, p: &IpPacket<'_>, encap: Encap) {
        let b = p.payload;
        if b.len() < 8 || (p.payload_len != 0 && p.payload_len < 8) {
            self.stats.decode_errors += 1;
            return;
        }
        let sp = u16::from_be_bytes([b[0], b[1]]);
        let dp = u16::from_be_bytes([b[2], b[3]]);
        let ulen = u16::from_be_bytes([b[4], b[5]]) as u32;
        let csum = u16::from_be_bytes([b[6], b[7]]);
        let key = Key::new(17, p.src, sp, p.dst, dp);
        let slot = match self.lookup(&key) {
            Some(s) => s,
            None => {
                let flip = service::likely_server_port(true, sp)
                    && !service::likely_server_port(true, dp)
                    && !is_limited_broadcast(&p.dst);
                self.create(key, p.src, sp, p.dst, dp, 17, flip, encap)
            }
        };
        let now = self.now;
        let verify = match self.cfg.checksums {
            Checksums::All => true,
            Checksums::Auto => dp == 4789 || sp == 4789,
            Checksums::None => false,
        };
        let Some(c) = self.slots[slot as usize].as_mut() else {
            return;
        };
        Self::note_parent(c, &encap);
        let is_orig = p.src == c.orig && sp == c.orig_p;
        let full = b.len() as u32 >= p.payload_len;
        if verify && full && (csum != 0 || p.v6) {
            let vxlan_zero = csum == 0;
            if !vxlan_zero {
                let sum = ip::pseudo_header_sum(&p.src, &p.dst, 17, p.payload_len);
                let strict = self.cfg.checksums == Checksums::Auto;
                let ok = if strict {
                    ip::internet_checksum(&b[..p.payload_len as usize], sum) == 0
                } else {
                    l4_checksum_ok(&b[..p.payload_len as usize], sum, 6)
                };
                if !ok {
                    self.stats.bad_checksums += 1;
                    Self::bad_checksum(c, is_orig);
                    return;
                }
            }
        }
        c.last_ns = now;
        c.history.check(is_orig, Letter::D);
        let s = c.side(is_orig);
        s.active = true;
        s.size += ulen.saturating_sub(8) as u64;
        Self::count(c, is_orig, p.total_len);
        // The datagram is the UDP length's worth, within what was captured.
        let data = &b[8..(ulen as usize).clamp(8, b.len())];

        // DNS.
        let mut dns_fx = dns::Effects::default();
        if let Some(d) = c.dns.as_mut() {
            let ctx = dns::ConnCtx {
                orig_p: c.orig_p,
                resp_p: c.resp_p,
                resp_multicast: is_multicast(&c.resp),
            };
            dns_fx = d.message(&ctx, data, Some(is_orig), now, &mut self.dns_scratch);
        } else if !c.svc.finished() {
            c.svc.udp(is_orig, data, c.resp_p);
        }
        if dns_fx.confirmed {
            c.svc.add("dns");
        }
        // NTP: a server's answer seen first means the roles are the other way.
        let ntp_server_first = c.resp_p == 123
            && is_orig
            && c.o.pkts + c.r.pkts == 1
            && data.len() >= 48
            && data[0] & 0x07 == 4;
        if dns_fx.flip || ntp_server_first {
            c.flip_udp();
        }
        if dns_fx.add_x && !c.x_added {
            c.x_added = true;
            c.history.add(true, Letter::X);
        }
        let uid = c.uid;
        let resp_p = c.resp_p;
        let orig_p = c.orig_p;
        let violated = c.tunnel_violation;
        // The client's Initials of a QUIC connection, until its hello is
        // read (the orig side after any flip is the client).
        let mut quic = None;
        if !c.opening_done && encap.depth == 0 {
            let from_client = p.src == c.orig && sp == c.orig_p;
            if !from_client {
                // The server spoke first (or the flip made it the
                // responder): whatever this is, it is not a client Initial.
                c.opening_done = c.quic.is_none();
            } else if c.quic.is_none() && observe::quic::long_header(data).is_none() {
                c.opening_done = true;
            } else {
                let a = c.quic.get_or_insert_with(Box::default);
                match a.datagram(data) {
                    observe::quic::Step::NeedMore => {}
                    observe::quic::Step::NotQuic => {
                        c.opening_done = true;
                        c.quic = None;
                    }
                    observe::quic::Step::Done(q) => {
                        c.opening_done = true;
                        c.quic = None;
                        quic = Some(q);
                    }
                }
            }
        }
        self.flush_dns(slot);
        if let Some(q) = quic {
            self.observe(
                Some((&p.src, &p.dst, sp, dp)),
                Transport::Udp,
                Some(uid),
                observation::Kind::QuicInitial(*q),
            );
        }

        // Address assignment and discovery, on the wire the device itself
        // sent or received it.
        if self.cfg.observations
            && encap.depth == 0
            && let Some(kind) = observe::udp_discovery(sp, dp, data)
        {
            self.observe(
                Some((&p.src, &p.dst, sp, dp)),
                Transport::Udp,
                Some(uid),
                kind,
            );
        }

        // Tunnels, chosen by the responder's port or by content.
        if violated {
            return;
        }
        let kind = match resp_p {
            4789 => Some(Tunnel::Vxlan),
            6081 => Some(Tunnel::Geneve),
            2152 | 2123 => Some(Tunnel::Gtp),
            3544 => Some(Tunnel::Teredo),
            5072 => Some(Tunnel::Ayiya),
            5247 => Some(Tunnel::Capwap),
            _ if orig_p == 5247 => Some(Tunnel::Capwap),
            _ if orig_p == 3544 || teredo_like(data) => Some(Tunnel::Teredo),
            _ => None,
        };
        let Some(kind) = kind else { return };
        let inner = decapsulate(kind, data);
        let Some(c) = self.slots[slot as usize].as_mut() else {
            return;
        };
        match inner {
            Decap::Inner { confirm, frame } => {
                if confirm {
                    c.tunnel = Some(kind);
                    // Zeek has no CAPWAP analyzer, so it names no service.
                    if kind != Tunnel::Capwap {
                        c.svc.add(tunnel_name(kind));
                    }
                }
                let Some(e) = encap.push(uid) else {
                    if !c.x_added {
                        c.x_added = true;
                        c.history.add(true, Letter::X);
                    }
                    self.stats.tunnel_too_deep += 1;
                    return;
                };
                match frame {
                    Frame::Ip(d) => self.ip(d, e),
                    Frame::Ieee80211(d) => match link::ieee80211_maybe_swapped(d) {
                        Ok(l3) if matches!(l3.kind, L3Kind::Ipv4 | L3Kind::Ipv6) => {
                            self.ip(l3.data, e)
                        }
                        Ok(_) | Err(link::LinkError::NotData) => self.stats.non_ip += 1,
                        Err(_) => self.stats.decode_errors += 1,
                    },
                    Frame::Ethernet(d) => match link::ethernet(d) {
                        Ok(l3) if matches!(l3.kind, L3Kind::Ipv4 | L3Kind::Ipv6) => {
                            self.ip(l3.data, e)
                        }
                        Ok(_) => self.stats.non_ip += 1,
                        Err(_) => self.stats.decode_errors += 1,
                    },
                }
            }
            Decap::Confirmed => {
                c.tunnel = Some(kind);
                c.svc.add(tunnel_name(kind));
            }
            Decap::NotTunnel => {}
            Decap::Violation => {
                if c.tunnel.is_none() {
                    c.tunnel_violation = true;
                }
            }
        }
    }

    // ----------------------------------------------------------------- ICMP

    fn icmp(&mut self, p: &IpPacket<'_>, encap: Encap) {
        let b = p.payload;
        if b.len() < 8 || p.payload_len < 8 {
            self.stats.decode_errors += 1;
            return;
        }
        let v6 = p.proto == 58;
        let t = b[0];
        let code = b[1];
        let (sp, dp, oneway) = match icmp_counterpart(v6, t) {
            Some(cp) => (t as u16, cp as u16, false),
            None => (t as u16, code as u16, true),
        };
        let key = if oneway {
            Key {
                a: p.src,
                b: p.dst,
                pa: sp,
                pb: dp,
                proto: p.proto,
                oneway: true,
            }
        } else {
            Key::new(p.proto, p.src, sp, p.dst, dp)
        };
        let slot = match self.lookup(&key) {
            Some(s) => s,
            None => self.create(key, p.src, sp, p.dst, dp, p.proto, false, encap),
        };
        let now = self.now;
        let verify = self.cfg.checksums == Checksums::All;
        let Some(c) = self.slots[slot as usize].as_mut() else {
            return;
        };
        Self::note_parent(c, &encap);
        let is_orig = p.src == c.orig && sp == c.orig_p;
        let full = b.len() as u32 >= p.payload_len;
        if verify && full {
            let init = if v6 {
                ip::pseudo_header_sum(&p.src, &p.dst, 58, p.payload_len)
            } else {
                0
            };
            if ip::internet_checksum(&b[..p.payload_len as usize], init) != 0 {
                self.stats.bad_checksums += 1;
                return;
            }
        }
        c.last_ns = now;
        c.side(is_orig).size += (p.payload_len - 8) as u64;
        if full {
            Self::count(c, is_orig, p.total_len);
        }
        let uid = c.uid;
        if v6
            && self.cfg.observations
            && encap.depth == 0
            && (133..=137).contains(&t)
            && let Some(ndp) = observe::wire::ndp(b)
        {
            self.observe(
                Some((&p.src, &p.dst, 0, 0)),
                Transport::Icmp,
                Some(uid),
                observation::Kind::Ndp(ndp),
            );
        }
    }

    fn unknown(&mut self, p: &IpPacket<'_>, encap: Encap) {
        let key = Key::new(p.proto, p.src, 0, p.dst, 0);
        let slot = match self.lookup(&key) {
            Some(s) => s,
            None => self.create(key, p.src, 0, p.dst, 0, p.proto, false, encap),
        };
        let now = self.now;
        let Some(c) = self.slots[slot as usize].as_mut() else {
            return;
        };
        Self::note_parent(c, &encap);
        let is_orig = p.src == c.orig;
        c.last_ns = now;
        Self::count(c, is_orig, p.total_len);
    }
}

/// A TCP or UDP checksum is right, or it is what a sending host leaves when
/// its network card computes checksums (checksum offload): the field then
/// holds the folded pseudo-header sum, not the final checksum. Such packets
/// were sent fine; only the capture saw them before the card finished.
fn l4_checksum_ok(seg: &[u8], pseudo: u32, field_at: usize) -> bool {
    if ip::internet_checksum(seg, pseudo) == 0 {
        return true;
    }
    let Some(f) = seg.get(field_at..field_at + 2) else {
        return false;
    };
    let field = u16::from_be_bytes([f[0], f[1]]);
    let mut folded = pseudo;
    while folded >> 16 != 0 {
        folded = (folded & 0xffff) + (folded >> 16);
    }
    field == folded as u16 || field == !(folded as u16)
}

type TimerEntry = Reverse<(i64, u32, u32, TimerKind)>;

fn timer(at: i64, slot: u32, generation: u32, kind: TimerKind) -> TimerEntry {
    Reverse((at, slot, generation, kind))
}

fn udp_state(c: &Conn) -> ConnState {
    match (c.o.active, c.r.active) {
        (true, true) => ConnState::Sf,
        (true, false) => ConnState::S0,
        (false, true) => ConnState::Shr,
        (false, false) => ConnState::Oth,
    }
}

fn tunnel_name(k: Tunnel) -> &'static str {
    match k {
        Tunnel::Vxlan => "vxlan",
        Tunnel::Geneve => "geneve",
        Tunnel::Gtp => "gtpv1",
        Tunnel::Teredo => "teredo",
        Tunnel::Ayiya => "ayiya",
        Tunnel::Capwap => "capwap",
    }
}

enum Frame<'a> {
    Ip(&'a [u8]),
    Ethernet(&'a [u8]),
    Ieee80211(&'a [u8]),
}

enum Decap<'a> {
    Inner { confirm: bool, frame: Frame<'a> },
    Confirmed,
    NotTunnel,
    Violation,
}

fn decapsulate(kind: Tunnel, d: &[u8]) -> Decap<'_> {
    match kind {
        Tunnel::Vxlan => {
            if d.len() < 8 || d[0] & 0x08 == 0 {
                return Decap::Violation;
            }
            Decap::Inner {
                confirm: true,
                frame: Frame::Ethernet(&d[8..]),
            }
        }
        Tunnel::Geneve => {
            if d.len() < 8 || d[0] >> 6 != 0 {
                return Decap::Violation;
            }
            let hlen = 8 + ((d[0] & 0x3f) as usize) * 4;
            if d.len() < hlen {
                return Decap::Violation;
            }
            let proto = u16::from_be_bytes([d[2], d[3]]);
            let body = &d[hlen..];
            match proto {
                0x6558 => Decap::Inner {
                    confirm: true,
                    frame: Frame::Ethernet(body),
                },
                0x0800 | 0x86dd => Decap::Inner {
                    confirm: true,
                    frame: Frame::Ip(body),
                },
                _ => Decap::Confirmed,
            }
        }
        Tunnel::Gtp => {
            if d.len() < 8 || d[0] >> 5 != 1 {
                return Decap::Violation;
            }
            let mut off = 8;
            let flags = d[0];
            if flags & 0x07 != 0 {
                if d.len() < 12 {
                    return Decap::Violation;
                }
                off = 12;
                if flags & 0x04 != 0 {
                    let mut next = d[11];
                    while next != 0 {
                        let Some(&l) = d.get(off) else {
                            return Decap::Violation;
                        };
                        let l = l as usize * 4;
                        if l == 0 || d.len() < off + l {
                            return Decap::Violation;
                        }
                        next = d[off + l - 1];
                        off += l;
                    }
                }
            }
            if d[1] != 0xff {
                return Decap::NotTunnel;
            }
            let body = &d[off..];
            match body.first().map(|b| b >> 4) {
                Some(4) if body.len() >= 20 => Decap::Inner {
                    confirm: true,
                    frame: Frame::Ip(body),
                },
                Some(6) if body.len() >= 40 => Decap::Inner {
                    confirm: true,
                    frame: Frame::Ip(body),
                },
                _ => Decap::Violation,
            }
        }
        Tunnel::Teredo => match teredo_inner(d) {
            Some(body) => Decap::Inner {
                confirm: true,
                frame: Frame::Ip(body),
            },
            None => Decap::Violation,
        },
        Tunnel::Capwap => {
            // RFC 5415: preamble (version 0, type 0 = clear), then HLEN in
            // 4-byte words, WBID, and the T bit (native frame of the
            // wireless binding, 1 = IEEE 802.11; else IEEE 802.3).
            if d.len() < 8 || d[0] != 0 {
                return Decap::NotTunnel;
            }
            let w = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
            let hlen = ((w >> 19) & 0x1f) as usize * 4;
            let wbid = (w >> 9) & 0x1f;
            let native = (w >> 8) & 1 == 1;
            let fragment = (w >> 7) & 1 == 1;
            let keepalive = (w >> 3) & 1 == 1;
            if hlen < 8 || d.len() <= hlen || fragment || keepalive {
                return Decap::NotTunnel;
            }
            let body = &d[hlen..];
            if native && wbid == 1 {
                Decap::Inner {
                    confirm: true,
                    frame: Frame::Ieee80211(body),
                }
            } else if !native {
                Decap::Inner {
                    confirm: true,
                    frame: Frame::Ethernet(body),
                }
            } else {
                Decap::NotTunnel
            }
        }
        Tunnel::Ayiya => {
            if d.len() < 8 {
                return Decap::Violation;
            }
            let id_len = 1usize << (d[0] >> 4);
            let sig_len = (d[1] >> 4) as usize * 4;
            let opcode = d[2] & 0x0f;
            let next = d[3];
            let hlen = 8 + id_len + sig_len;
            if d.len() < hlen || opcode != 1 || !(next == 4 || next == 41) {
                return Decap::Violation;
            }
            Decap::Inner {
                confirm: true,
                frame: Frame::Ip(&d[hlen..]),
            }
        }
    }
}

/// The IPv6 packet inside a Teredo datagram (after optional authentication
/// and origin-indication headers), when it is one.
fn teredo_inner(d: &[u8]) -> Option<&[u8]> {
    let mut d = d;
    if d.len() >= 2 && d[0] == 0 && d[1] == 1 {
        if d.len() < 4 {
            return None;
        }
        let n = 4 + d[2] as usize + d[3] as usize + 9;
        d = d.get(n..)?;
    }
    if d.len() >= 2 && d[0] == 0 && d[1] == 0 {
        d = d.get(8..)?;
    }
    if d.len() < 40 || d[0] >> 4 != 6 {
        return None;
    }
    let plen = u16::from_be_bytes([d[4], d[5]]) as usize;
    if d.len() == 40 + plen || (plen == 0 && d[6] == 59) {
        Some(d)
    } else {
        None
    }
}

/// Teredo on a port other than 3544: an IPv6 packet with a Teredo
/// (2001:0::/32) address, or the Teredo headers.
fn teredo_like(d: &[u8]) -> bool {
    let Some(inner) = teredo_inner(d) else {
        return false;
    };
    let teredo_addr = |a: &[u8]| a[..4] == [0x20, 0x01, 0x00, 0x00];
    inner.len() >= 40
        && (teredo_addr(&inner[8..24])
            || teredo_addr(&inner[24..40])
            || inner.as_ptr() != d.as_ptr())
}
