//! A generator of realistic home-network traffic, written as a pcap file:
//! a router that hands out addresses (DHCP), resolves names (DNS) and keeps
//! time (NTP), and devices that behave like their kind: a phone and a laptop
//! browsing over TLS, a TV fetching over HTTP and TLS, a smart plug keeping a
//! TLS session to its cloud, a printer and a speaker announcing themselves
//! over mDNS and SSDP, ARP everywhere. Every checksum is right. The same
//! seed gives the same bytes, so the capture `make demo` ships can be
//! regenerated and compared.

use std::io::{self, Write};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct HomeSpec {
    pub seed: u64,
    /// Length of the capture.
    pub minutes: u32,
    /// Start time, seconds since the epoch.
    pub start_s: i64,
}

impl Default for HomeSpec {
    fn default() -> Self {
        HomeSpec {
            seed: 7,
            minutes: 10,
            start_s: 1_767_225_600,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Device {
    mac: [u8; 6],
    ip: [u8; 4],
    name: &'static str,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Phone,
    Laptop,
    Tv,
    Plug,
    Printer,
    Speaker,
}

const ROUTER_MAC: [u8; 6] = [0x3c, 0x84, 0x6a, 0x10, 0x20, 0x01];
const ROUTER_IP: [u8; 4] = [192, 168, 1, 1];
const BROADCAST_MAC: [u8; 6] = [0xff; 6];

#[rustfmt::skip]
const DEVICES: &[Device] = &[
    Device { mac: [0xf0, 0x18, 0x98, 0x41, 0x0a, 0x11], ip: [192, 168, 1, 21], name: "annas-iphone", kind: Kind::Phone },
    Device { mac: [0x3c, 0x22, 0xfb, 0x77, 0x31, 0x02], ip: [192, 168, 1, 22], name: "work-laptop", kind: Kind::Laptop },
    Device { mac: [0x64, 0x1c, 0xae, 0x05, 0x6e, 0x90], ip: [192, 168, 1, 30], name: "living-room-tv", kind: Kind::Tv },
    Device { mac: [0x50, 0xc7, 0xbf, 0x3a, 0x11, 0x4d], ip: [192, 168, 1, 40], name: "hs110-plug", kind: Kind::Plug },
    Device { mac: [0x30, 0x05, 0x5c, 0x8e, 0x21, 0x77], ip: [192, 168, 1, 50], name: "brother-printer", kind: Kind::Printer },
    Device { mac: [0x48, 0xa6, 0xb8, 0x12, 0x9f, 0x33], ip: [192, 168, 1, 60], name: "kitchen-sonos", kind: Kind::Speaker },
];

/// Cloud endpoints by name: (name, address).
const CLOUD: &[(&str, [u8; 4])] = &[
    ("www.wikipedia.org", [185, 15, 59, 224]),
    ("api.weather.example", [203, 0, 113, 80]),
    ("i.ytimg.com", [142, 250, 74, 46]),
    ("news.example.org", [198, 51, 100, 17]),
    ("devs.tplinkcloud.com", [52, 28, 101, 9]),
    ("time.example.net", [192, 0, 2, 123]),
    ("updates.example.com", [203, 0, 113, 200]),
    ("mail.example.com", [198, 51, 100, 25]),
];

/// A TCP connection being generated: endpoints and each side's next
/// sequence number (client first).
struct Flow {
    client: [u8; 4],
    sp: u16,
    server: [u8; 4],
    dp: u16,
    next: [u32; 2],
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Gen {
    rng: Rng,
    block: Vec<u8>,
    pkts: Vec<(i64, Vec<u8>)>,
    ip_id: u16,
}

use heimdall_engine::ip::internet_checksum as checksum;

fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    let w = |a: [u8; 4]| {
        u16::from_be_bytes([a[0], a[1]]) as u32 + u16::from_be_bytes([a[2], a[3]]) as u32
    };
    w(src) + w(dst) + proto as u32 + len as u32
}

fn mac_of(ip: [u8; 4]) -> [u8; 6] {
    DEVICES
        .iter()
        .find(|d| d.ip == ip)
        .map_or(ROUTER_MAC, |d| d.mac)
}

impl Gen {
    fn frame(
        &mut self,
        ts_us: i64,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        ethertype: u16,
        payload: &[u8],
    ) {
        let mut f = Vec::with_capacity(14 + payload.len());
        f.extend_from_slice(&dst_mac);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        self.pkts.push((ts_us, f));
    }

    fn ip(&mut self, ts_us: i64, src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) {
        self.ip_id = self.ip_id.wrapping_add(1 + self.rng.below(3) as u16);
        let total = 20 + l4.len();
        let mut h = vec![0x45, 0, (total >> 8) as u8, total as u8];
        h.extend_from_slice(&self.ip_id.to_be_bytes());
        h.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        let c = checksum(&h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(l4);
        let multicast = dst[0] >= 224 && dst[0] <= 239;
        let dst_mac = if dst == [255; 4] || dst[3] == 255 {
            BROADCAST_MAC
        } else if multicast {
            [0x01, 0x00, 0x5e, dst[1] & 0x7f, dst[2], dst[3]]
        } else if DEVICES.iter().any(|d| d.ip == dst) {
            mac_of(dst)
        } else {
            ROUTER_MAC
        };
        let src_mac = if DEVICES.iter().any(|d| d.ip == src) {
            mac_of(src)
        } else {
            ROUTER_MAC
        };
        self.frame(ts_us, src_mac, dst_mac, 0x0800, &h);
    }

    fn udp(&mut self, ts_us: i64, src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: &[u8]) {
        let len = 8 + payload.len();
        let mut u = Vec::with_capacity(len);
        u.extend_from_slice(&sp.to_be_bytes());
        u.extend_from_slice(&dp.to_be_bytes());
        u.extend_from_slice(&(len as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        let mut c = checksum(&u, pseudo(src, dst, 17, len));
        if c == 0 {
            c = 0xffff;
        }
        u[6..8].copy_from_slice(&c.to_be_bytes());
        self.ip(ts_us, src, dst, 17, &u);
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp(
        &mut self,
        ts_us: i64,
        src: [u8; 4],
        sp: u16,
        dst: [u8; 4],
        dp: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
    ) {
        let mut t = Vec::with_capacity(20 + payload.len());
        t.extend_from_slice(&sp.to_be_bytes());
        t.extend_from_slice(&dp.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        let c = checksum(&t, pseudo(src, dst, 6, t.len()));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        self.ip(ts_us, src, dst, 6, &t);
    }

    fn arp(&mut self, ts_us: i64, who: &Device) {
        let mut req = vec![0, 1, 8, 0, 6, 4, 0, 1];
        req.extend_from_slice(&who.mac);
        req.extend_from_slice(&who.ip);
        req.extend_from_slice(&[0; 6]);
        req.extend_from_slice(&ROUTER_IP);
        self.frame(ts_us, who.mac, BROADCAST_MAC, 0x0806, &req);
        let mut rep = vec![0, 1, 8, 0, 6, 4, 0, 2];
        rep.extend_from_slice(&ROUTER_MAC);
        rep.extend_from_slice(&ROUTER_IP);
        rep.extend_from_slice(&who.mac);
        rep.extend_from_slice(&who.ip);
        self.frame(ts_us + 180, ROUTER_MAC, who.mac, 0x0806, &rep);
    }

    fn dhcp(&mut self, ts_us: i64, d: &Device) {
        let xid = self.rng.next() as u32;
        let msg = |op: u8, mtype: u8, yiaddr: [u8; 4]| {
            let mut m = vec![op, 1, 6, 0];
            m.extend_from_slice(&xid.to_be_bytes());
            m.extend_from_slice(&[0; 8]);
            m.extend_from_slice(&yiaddr);
            m.extend_from_slice(&[0; 8]);
            m.extend_from_slice(&d.mac);
            m.resize(236, 0);
            m.extend_from_slice(&[0x63, 0x82, 0x53, 0x63, 53, 1, mtype]);
            if op == 1 {
                m.extend_from_slice(&[12, d.name.len() as u8]);
                m.extend_from_slice(d.name.as_bytes());
                m.extend_from_slice(&[55, 4, 1, 3, 6, 15]);
            } else {
                m.extend_from_slice(&[
                    54, 4, 192, 168, 1, 1, 51, 4, 0, 1, 0x51, 0x80, 1, 4, 255, 255, 255, 0, 3, 4,
                ]);
                m.extend_from_slice(&ROUTER_IP);
                m.extend_from_slice(&[6, 4]);
                m.extend_from_slice(&ROUTER_IP);
            }
            m.push(255);
            m.resize(300, 0);
            m
        };
        let discover = msg(1, 1, [0; 4]);
        self.udp(ts_us, [0; 4], 68, [255; 4], 67, &discover);
        let offer = msg(2, 2, d.ip);
        self.udp(ts_us + 1_200, ROUTER_IP, 67, [255; 4], 68, &offer);
        let request = msg(1, 3, [0; 4]);
        self.udp(ts_us + 2_500, [0; 4], 68, [255; 4], 67, &request);
        let ack = msg(2, 5, d.ip);
        self.udp(ts_us + 3_700, ROUTER_IP, 67, [255; 4], 68, &ack);
    }

    fn dns(
        &mut self,
        ts_us: i64,
        d: &Device,
        name: &str,
        addr: Option<[u8; 4]>,
        qtype: u16,
    ) -> i64 {
        let id = self.rng.next() as u16;
        let sp = 30_000 + self.rng.below(30_000) as u16;
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        self.udp(ts_us, d.ip, sp, ROUTER_IP, 53, &q);
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = if addr.is_some() || qtype != 1 {
            0x80
        } else {
            0x83
        };
        if let (Some(a), 1) = (addr, qtype) {
            r[7] = 1;
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            r.extend_from_slice(&(60 + self.rng.below(3000) as u32).to_be_bytes());
            r.extend_from_slice(&[0, 4]);
            r.extend_from_slice(&a);
        } else {
            // No such name, or no such record: the zone's SOA in authority.
            r[9] = 1;
            r.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1, 0, 0, 0x0e, 0x10, 0, 26]);
            r.extend_from_slice(&[
                2, b'n', b's', 0xc0, 12, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0,
                0, 5,
            ]);
        }
        let rtt = 800 + self.rng.below(25_000) as i64;
        self.udp(ts_us + rtt, ROUTER_IP, 53, d.ip, sp, &r);
        ts_us + rtt
    }

    fn client_hello(&mut self, sni: &str) -> Vec<u8> {
        let mut ext = Vec::new();
        let name = sni.as_bytes();
        ext.extend_from_slice(&[0, 0]);
        ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
        ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        ext.extend_from_slice(name);
        ext.extend_from_slice(&[0, 0x10, 0, 5, 0, 3, 2, b'h', b'2']);
        let mut body = vec![3, 3];
        for _ in 0..32 {
            body.push(self.rng.next() as u8);
        }
        body.extend_from_slice(&[0, 0, 4, 0x13, 0x01, 0x13, 0x02, 1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
        rec.extend_from_slice(&hs);
        rec
    }

    /// Payload bytes: encrypted-looking, drawn from one random block at a
    /// random offset so the shipped capture compresses.
    fn opaque(&mut self, n: usize, tls: bool) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        if tls && n > 5 {
            v.extend_from_slice(&[0x17, 3, 3, ((n - 5) >> 8) as u8, (n - 5) as u8]);
        }
        let mut at = self.rng.below(self.block.len() as u64) as usize;
        while v.len() < n {
            v.push(self.block[at]);
            at = (at + 1) % self.block.len();
        }
        v
    }

    /// A whole TCP session: handshake, request, response in segments with
    /// ACKs, and a FIN exchange. Returns the time it ended.
    #[allow(clippy::too_many_arguments)]
    fn session(
        &mut self,
        t0: i64,
        client: [u8; 4],
        server: [u8; 4],
        dp: u16,
        request: Vec<u8>,
        resp_len: usize,
        tls: bool,
        rtt: i64,
    ) -> i64 {
        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;
        const PSH: u8 = 0x08;
        const FIN: u8 = 0x01;
        let sp = 40_000 + self.rng.below(20_000) as u16;
        let client_isn = self.rng.next() as u32;
        let server_isn = self.rng.next() as u32;
        let mut f = Flow {
            client,
            sp,
            server,
            dp,
            next: [client_isn, server_isn],
        };
        let mut t = t0;
        self.send(&mut f, true, t, SYN, &[]);
        t += rtt;
        self.send(&mut f, false, t, SYN | ACK, &[]);
        t += 60;
        self.send(&mut f, true, t, ACK, &[]);
        let mut req = request;
        if tls {
            let server_hello = self.opaque(1400, false);
            t += 200;
            self.send(&mut f, true, t, ACK | PSH, &req);
            t += rtt;
            let mut hello = vec![0x16, 3, 3, 0x05, 0x73, 2];
            hello.extend_from_slice(&server_hello[6..]);
            self.send(&mut f, false, t, ACK | PSH, &hello);
            t += 300;
            let n = 200 + self.rng.below(400) as usize;
            req = self.opaque(n, true);
        }
        t += 150;
        self.send(&mut f, true, t, ACK | PSH, &req);
        t += rtt;
        let mut left = resp_len;
        let mut first = true;
        while left > 0 {
            let n = left.min(1448);
            let body = if first && !tls {
                let mut b = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: image/jpeg\r\n\r\n",
                    resp_len
                )
                .into_bytes();
                let fill = self.opaque(n.saturating_sub(b.len()), false);
                b.extend_from_slice(&fill);
                b.truncate(n.max(1));
                b
            } else {
                self.opaque(n, tls)
            };
            first = false;
            self.send(
                &mut f,
                false,
                t,
                ACK | if left <= 1448 { PSH } else { 0 },
                &body,
            );
            left -= n.min(left);
            t += 40 + self.rng.below(300) as i64;
            if self.rng.below(2) == 0 || left == 0 {
                self.send(&mut f, true, t, ACK, &[]);
                t += 20;
            }
        }
        t += 5_000 + self.rng.below(200_000) as i64;
        self.send(&mut f, true, t, FIN | ACK, &[]);
        t += rtt;
        self.send(&mut f, false, t, FIN | ACK, &[]);
        t += 80;
        self.send(&mut f, true, t, ACK, &[]);
        t
    }

    /// One segment of a flow from the client (or the server): its sequence
    /// number is the sender's next byte, it acknowledges everything the peer
    /// sent, and SYN, FIN and payload advance the sender.
    fn send(&mut self, f: &mut Flow, from_client: bool, t: i64, flags: u8, payload: &[u8]) {
        let (me, peer) = if from_client { (0, 1) } else { (1, 0) };
        let ack = if flags & 0x10 != 0 { f.next[peer] } else { 0 };
        let (src, sp, dst, dp) = if from_client {
            (f.client, f.sp, f.server, f.dp)
        } else {
            (f.server, f.dp, f.client, f.sp)
        };
        self.tcp(t, src, sp, dst, dp, f.next[me], ack, flags, payload);
        let used = payload.len() as u32 + (flags & 0x02 != 0) as u32 + (flags & 0x01 != 0) as u32;
        f.next[me] = f.next[me].wrapping_add(used);
    }

    fn mdns(&mut self, ts_us: i64, d: &Device, service: &str) {
        let mut m = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        let inst = format!("{}.{}", d.name, service);
        for label in inst.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&[0, 16, 0x80, 1, 0, 0, 0x11, 0x94]);
        let txt = format!("md={}", d.name);
        m.extend_from_slice(&((txt.len() + 1) as u16).to_be_bytes());
        m.push(txt.len() as u8);
        m.extend_from_slice(txt.as_bytes());
        self.udp(ts_us, d.ip, 5353, [224, 0, 0, 251], 5353, &m);
    }

    fn ssdp(&mut self, ts_us: i64, d: &Device) {
        let msg = format!(
            "NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\nLOCATION: http://{}.{}.{}.{}:1400/xml/device_description.xml\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\nSERVER: Linux UPnP/1.0 Sonos/70.3\r\nUSN: uuid:RINCON_{:02X}{:02X}{:02X}::upnp:rootdevice\r\n\r\n",
            d.ip[0], d.ip[1], d.ip[2], d.ip[3], d.mac[3], d.mac[4], d.mac[5]
        );
        self.udp(
            ts_us,
            d.ip,
            1900,
            [239, 255, 255, 250],
            1900,
            msg.as_bytes(),
        );
    }

    fn ntp(&mut self, ts_us: i64, d: &Device, server: [u8; 4]) {
        let mut q = vec![0x23, 0, 6, 0xe9];
        q.resize(48, 0);
        let sp = 30_000 + self.rng.below(30_000) as u16;
        self.udp(ts_us, d.ip, sp, server, 123, &q);
        let mut r = vec![0x24, 2, 6, 0xe9];
        r.resize(48, 0);
        let at = ts_us + 18_000 + self.rng.below(20_000) as i64;
        self.udp(at, server, 123, d.ip, sp, &r);
    }
}

/// Generates the capture into `out` as a pcap (microsecond, little-endian,
/// Ethernet). Returns the number of packets.
pub fn generate(spec: &HomeSpec, out: &mut dyn Write) -> io::Result<u64> {
    let mut rng = Rng(spec.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let block = (0..4096).map(|_| rng.next() as u8).collect();
    let mut g = Gen {
        rng,
        block,
        pkts: Vec::new(),
        ip_id: 1,
    };
    let start = spec.start_s * 1_000_000;
    let end = start + spec.minutes as i64 * 60_000_000;

    for (i, d) in DEVICES.iter().enumerate() {
        let t = start + i as i64 * 2_300_000;
        g.dhcp(t, d);
        g.arp(t + 10_000, d);
        g.ntp(t + 60_000, d, CLOUD[5].1);
    }

    let mut t = start + 20_000_000;
    while t < end {
        let d = DEVICES[g.rng.below(DEVICES.len() as u64) as usize];
        let step = 200_000 + g.rng.below(4_000_000) as i64;
        match d.kind {
            Kind::Phone | Kind::Laptop => {
                let (name, addr) = CLOUD[g.rng.below(4) as usize];
                let at = g.dns(t, &d, name, Some(addr), 1);
                g.dns(t + 300, &d, name, None, 28);
                let hello = g.client_hello(name);
                let resp = 1_500 + g.rng.below(20_000) as usize;
                let rtt = 9_000 + g.rng.below(30_000) as i64;
                g.session(at + 500, d.ip, addr, 443, hello, resp, true, rtt);
                if g.rng.below(20) == 0 {
                    // a typo: NXDOMAIN
                    g.dns(t + 900, &d, "wikipedai.org", None, 1);
                }
            }
            Kind::Tv => {
                let (name, addr) = CLOUD[2];
                let at = g.dns(t, &d, name, Some(addr), 1);
                let req = format!(
                    "GET /vi/{}/hqdefault.jpg HTTP/1.1\r\nHost: {name}\r\nUser-Agent: Mozilla/5.0 (SMART-TV; Linux; Tizen 6.5)\r\nAccept: */*\r\n\r\n",
                    g.rng.next() % 100_000
                );
                let resp = 6_000 + g.rng.below(40_000) as usize;
                g.session(
                    at + 400,
                    d.ip,
                    addr,
                    80,
                    req.into_bytes(),
                    resp,
                    false,
                    14_000,
                );
            }
            Kind::Plug => {
                let (name, addr) = CLOUD[4];
                let at = g.dns(t, &d, name, Some(addr), 1);
                let hello = g.client_hello(name);
                g.session(at + 300, d.ip, addr, 443, hello, 300, true, 40_000);
            }
            Kind::Printer => {
                g.mdns(t, &d, "_ipp._tcp.local");
                if g.rng.below(3) == 0 {
                    g.arp(t + 1_000, &d);
                }
            }
            Kind::Speaker => {
                g.ssdp(t, &d);
                g.mdns(t + 2_000, &d, "_sonos._tcp.local");
            }
        }
        t += step;
    }

    g.pkts.sort_by_key(|(ts, _)| *ts);
    let mut w = heimdall_engine::reader::PcapWriter::new(io::BufWriter::new(out), 1, 65_535)?;
    for (ts, f) in &g.pkts {
        w.write(*ts, f)?;
    }
    w.finish()?.flush()?;
    Ok(g.pkts.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_and_every_packet_decodes() {
        let spec = HomeSpec {
            minutes: 2,
            ..Default::default()
        };
        let mut a = Vec::new();
        let mut b = Vec::new();
        let n = generate(&spec, &mut a).expect("generate");
        generate(&spec, &mut b).expect("generate");
        assert_eq!(a, b);
        assert!(n > 100, "{n} packets");
        let mut engine = heimdall_engine::Engine::new(heimdall_engine::EngineConfig {
            checksums: heimdall_engine::Checksums::All,
            ..Default::default()
        });
        let mut r = heimdall_engine::CaptureReader::from_reader(Box::new(std::io::Cursor::new(a)))
            .expect("pcap");
        while let Some(p) = r.next_packet().expect("reads") {
            engine.packet(&p);
        }
        engine.finish();
        let s = engine.stats();
        assert_eq!((s.decode_errors, s.bad_checksums), (0, 0), "{s:?}");
        assert!(engine.out.dns.len() > 10);
        for service in ["ssl", "http", "dhcp", "dns", "ntp"] {
            assert!(
                engine
                    .out
                    .conns
                    .iter()
                    .any(|c| c.services.contains(service)),
                "no {service} connection"
            );
        }
        // The engine's rows and the bus records made from them write the
        // same log bytes, in both formats.
        use heimdall_engine::zeeklog::{Format, LogWriter};
        for format in [Format::Tsv, Format::Json] {
            let mut rows = LogWriter::conn(Vec::new(), format, 0).expect("header");
            let mut recs = LogWriter::conn(Vec::new(), format, 0).expect("header");
            for c in &engine.out.conns {
                rows.write_conn_row(c).expect("row");
                recs.write_conn(&c.to_proto("s")).expect("record");
            }
            assert_eq!(
                rows.finish(0).expect("close"),
                recs.finish(0).expect("close")
            );
            let mut rows = LogWriter::dns(Vec::new(), format, 0).expect("header");
            let mut recs = LogWriter::dns(Vec::new(), format, 0).expect("header");
            for d in &engine.out.dns {
                rows.write_dns_row(d).expect("row");
                recs.write_dns(&d.to_proto("s")).expect("record");
            }
            assert_eq!(
                rows.finish(0).expect("close"),
                recs.finish(0).expect("close")
            );
        }
    }
}
