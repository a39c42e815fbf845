//! DNS as Zeek logs it: messages over UDP and TCP (length-prefixed and
//! reassembled), parsed under strict bounds (backward-only compression
//! pointers, a depth limit, every length checked), queries and replies
//! paired by transaction id per connection, multicast DNS logged one row per
//! message, and answers in Zeek's text forms.
//!
//! A malformed message never panics: parsing stops at the damage and the
//! row keeps what came before, as Zeek's does. docs/zeek-semantics.md lists
//! the rules this module follows.

use crate::ip::Addr;

/// Ports the DNS analyzer attaches to (the responder's port).
pub fn is_dns_port(udp: bool, resp_p: u16) -> bool {
    if udp {
        matches!(resp_p, 53 | 137 | 5353 | 5355)
    } else {
        resp_p == 53
    }
}

const MAX_QUERIES: u16 = 25;
const MAX_DEPTH: u32 = 20;
const NAME_BUF: usize = 512;
/// Unmatched messages kept per connection before the oldest is written out.
const MAX_PENDING: usize = 100;
/// Bytes buffered per direction for a TCP message.
const MAX_TCP_MESSAGE: usize = 65_535 + 2;

/// One dns.log row in the making.
#[derive(Debug, Clone, Default)]
pub struct Info {
    pub ts_ns: i64,
    pub trans_id: u16,
    pub rtt_ns: Option<i64>,
    pub query: Option<String>,
    pub qclass: Option<u16>,
    pub qtype: Option<u16>,
    pub qtype_name: Option<String>,
    pub rcode: Option<u8>,
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    pub z: u8,
    pub answers: Vec<String>,
    pub ttls: Vec<u32>,
    /// Addresses from A/AAAA answers (for the bus records).
    pub answer_addrs: Vec<Addr>,
    pub rejected: bool,
    pub opcode: u8,
    pub netbios: bool,
    saw_query: bool,
    saw_reply: bool,
}

/// Facts about the connection the analyzer needs.
#[derive(Debug, Clone, Copy)]
pub struct ConnCtx {
    pub orig_p: u16,
    pub resp_p: u16,
    pub resp_multicast: bool,
}

/// What a message asked of the connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Effects {
    /// The first message was a reply from the originator: flip roles.
    pub flip: bool,
    /// An unknown opcode: add `X` to the history (once per connection).
    pub add_x: bool,
    /// A message parsed cleanly: the connection's service is dns.
    pub confirmed: bool,
}

/// Per-connection DNS state.
#[derive(Debug, Default)]
pub struct Session {
    first_message: bool,
    x_added: bool,
    pending: Vec<Info>,
    tcp: [Vec<u8>; 2],
    /// Messages seen, and messages that could not be parsed completely.
    pub messages: u64,
    pub malformed: u64,
}

impl Session {
    pub fn new() -> Self {
        Session {
            first_message: true,
            ..Default::default()
        }
    }

    /// A UDP datagram (or one TCP message) from the originator (`from_orig`).
    pub fn message(
        &mut self,
        ctx: &ConnCtx,
        data: &[u8],
        from_orig: Option<bool>,
        ts_ns: i64,
        out: &mut Vec<Info>,
    ) -> Effects {
        let mut fx = Effects::default();
        if data.len() < 12 {
            self.malformed += 1;
            return fx;
        }
        self.messages += 1;
        let flags = u16::from_be_bytes([data[2], data[3]]);
        let qr = flags & 0x8000 != 0;
        let opcode = ((flags >> 11) & 0xf) as u8;
        let netbios = ctx.orig_p == 137 || ctx.resp_p == 137;
        if !matches!(opcode, 0 | 4 | 5) && !netbios {
            if !self.x_added {
                self.x_added = true;
                fx.add_x = true;
            }
            self.malformed += 1;
            return fx;
        }
        let h = Header {
            id: u16::from_be_bytes([data[0], data[1]]),
            qr,
            opcode,
            aa: flags & 0x0400 != 0,
            tc: flags & 0x0200 != 0,
            rd: flags & 0x0100 != 0,
            ra: flags & 0x0080 != 0,
            z: ((flags >> 4) & 0x7) as u8,
            rcode: (flags & 0xf) as u8,
            qd: u16::from_be_bytes([data[4], data[5]]),
            an: u16::from_be_bytes([data[6], data[7]]),
            ns: u16::from_be_bytes([data[8], data[9]]),
            ar: u16::from_be_bytes([data[10], data[11]]),
            netbios,
        };
        if self.first_message && qr && from_orig == Some(true) && !ctx.resp_multicast {
            fx.flip = true;
        }
        self.first_message = false;

        // The row this message belongs to.
        let handled_opcode = matches!(opcode, 0 | 4 | 5);
        let idx = if handled_opcode {
            Some(self.session_for(ctx, &h, ts_ns, out))
        } else {
            None
        };
        if let Some(i) = idx {
            let info = &mut self.pending[i];
            if qr {
                info.rcode = Some(h.rcode);
                if h.rcode != 0 && h.qd == 0 {
                    info.rejected = true;
                }
            }
            info.opcode = opcode;
            info.netbios = netbios;
        }

        let mut p = Parser {
            msg: data,
            pos: 12,
            netbios_resp: ctx.resp_p == 137,
        };
        let ok = self.parse_body(ctx, &h, &mut p, idx, ts_ns);
        if ok {
            fx.confirmed = true;
        } else {
            self.malformed += 1;
        }
        if let Some(i) = idx {
            self.dns_end(i, qr, out);
        }
        fx
    }

    /// Finds the pending row a message pairs with, or starts one.
    fn session_for(&mut self, ctx: &ConnCtx, h: &Header, ts_ns: i64, out: &mut Vec<Info>) -> usize {
        let fresh = Info {
            ts_ns,
            trans_id: h.id,
            ..Default::default()
        };
        if ctx.resp_multicast {
            let mut info = fresh;
            info.saw_query = true;
            info.saw_reply = true;
            return self.push(info, out);
        }
        let want_reply = !h.qr; // a query pairs with a pending reply, and back
        let found = self.pending.iter().position(|i| {
            i.trans_id == h.id && i.saw_reply == want_reply && i.saw_query != want_reply
        });
        match found {
            Some(i) => i,
            None => self.push(fresh, out),
        }
    }

    fn push(&mut self, info: Info, out: &mut Vec<Info>) -> usize {
        if self.pending.len() >= MAX_PENDING {
            out.push(self.pending.remove(0));
        }
        self.pending.push(info);
        self.pending.len() - 1
    }

    fn dns_end(&mut self, i: usize, qr: bool, out: &mut Vec<Info>) {
        let Some(info) = self.pending.get_mut(i) else {
            return;
        };
        if qr {
            info.saw_reply = true;
        } else {
            info.saw_query = true;
        }
        if info.saw_query && info.saw_reply {
            out.push(self.pending.remove(i));
        }
    }

    /// Everything still pending, at connection removal; a TCP message left
    /// half-received is parsed first.
    pub fn finish(&mut self, ctx: &ConnCtx, ts_ns: i64, out: &mut Vec<Info>) {
        for dir in 0..2 {
            let buf = std::mem::take(&mut self.tcp[dir]);
            if buf.len() > 2 {
                self.message(ctx, &buf[2..], None, ts_ns, out);
            }
        }
        out.append(&mut self.pending);
    }

    /// TCP stream content from one side: deframes length-prefixed messages.
    pub fn tcp_data(
        &mut self,
        ctx: &ConnCtx,
        from_orig: bool,
        mut data: &[u8],
        ts_ns: i64,
        out: &mut Vec<Info>,
        fx: &mut Effects,
    ) {
        let dir = if from_orig { 0 } else { 1 };
        while !data.is_empty() {
            let buf = &mut self.tcp[dir];
            if buf.len() < 2 {
                let take = (2 - buf.len()).min(data.len());
                buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                if buf.len() < 2 {
                    return;
                }
            }
            let need = u16::from_be_bytes([buf[0], buf[1]]) as usize + 2;
            let take = (need - buf.len()).min(data.len());
            if buf.len() + take > MAX_TCP_MESSAGE {
                buf.clear();
                return;
            }
            buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if buf.len() == need {
                let msg = std::mem::take(&mut self.tcp[dir]);
                let f = self.message(ctx, &msg[2..], Some(from_orig), ts_ns, out);
                fx.flip |= f.flip;
                fx.add_x |= f.add_x;
                fx.confirmed |= f.confirmed;
                let mut msg = msg;
                msg.clear();
                self.tcp[dir] = msg;
            }
        }
    }

    fn parse_body(
        &mut self,
        ctx: &ConnCtx,
        h: &Header,
        p: &mut Parser<'_>,
        idx: Option<usize>,
        ts: i64,
    ) -> bool {
        if MAX_QUERIES > 0 && h.qd > MAX_QUERIES {
            return false;
        }
        let dynamic_update = h.opcode == 5 && !h.netbios;
        if dynamic_update {
            return self.parse_update(h, p, idx, ts);
        }
        for _ in 0..h.qd {
            let Some(name) = p.name(false) else {
                return false;
            };
            if p.remaining() < 4 {
                return false;
            }
            let qtype = p.u16();
            let qclass = p.u16();
            let Some(i) = idx else { continue };
            let info = &mut self.pending[i];
            if !h.qr {
                info.rd = h.rd;
                info.tc = h.tc;
                info.z = h.z;
                info.qclass = Some(qclass);
                info.qtype = Some(qtype);
                let mut q = name.to_ascii_lowercase();
                let mut qname = qtype_name(qtype);
                if ctx.resp_p == 137 {
                    if let Some(decoded) = decode_netbios_name(&q) {
                        q = decoded;
                    }
                    if qtype == 33 {
                        qname = "NBSTAT".into();
                    }
                }
                info.qtype_name = Some(qname);
                info.query = Some(zeek_text(&q));
            } else if h.an == 0 && h.ns == 0 && h.ar == 0 {
                info.rejected = true;
            }
        }
        for _ in 0..h.an {
            match p.record(h, Section::Answer, 0) {
                Some(Some(rr)) => self.do_reply(h, idx, rr, ts),
                Some(None) => {}
                None => return false,
            }
        }
        // Zeek skips the authority and additional sections by default.
        true
    }

    fn parse_update(
        &mut self,
        h: &Header,
        p: &mut Parser<'_>,
        idx: Option<usize>,
        ts: i64,
    ) -> bool {
        if h.qd != 1 {
            return false;
        }
        if p.name(true).is_none() || p.remaining() < 4 {
            return false;
        }
        let ztype = p.u16();
        let zclass = p.u16();
        if ztype != 6 {
            // Zeek stops here without ending the message: the row is only
            // written when the connection goes away.
            if let Some(i) = idx {
                if h.qr {
                    self.pending[i].saw_reply = false;
                } else {
                    self.pending[i].saw_query = false;
                }
            }
            return false;
        }
        for _ in 0..h.an {
            match p.record(h, Section::Prerequisite, zclass) {
                Some(Some(rr)) => self.do_reply(h, idx, rr, ts),
                Some(None) => {}
                None => return false,
            }
        }
        for _ in 0..h.ns {
            match p.record(h, Section::Update, zclass) {
                Some(Some(rr)) => self.do_reply(h, idx, rr, ts),
                Some(None) => {}
                None => return false,
            }
        }
        true
    }

    fn do_reply(&mut self, h: &Header, idx: Option<usize>, rr: Rendered, ts: i64) {
        let Some(i) = idx else { return };
        if !h.qr {
            return;
        }
        let info = &mut self.pending[i];
        if info.query.is_none() {
            info.query = Some(zeek_text(&rr.owner));
        }
        info.aa = h.aa;
        info.ra = h.ra;
        if info.rtt_ns.is_none() {
            let rtt = ts - info.ts_ns;
            info.rtt_ns = (rtt != 0).then_some(rtt);
        }
        if let Some(a) = rr.addr {
            info.answer_addrs.push(a);
        }
        if !rr.text.is_empty() {
            let text =
                if h.opcode == 5 && rr.section == Section::Update && !rr.text.starts_with("del:") {
                    format!("add: {}", rr.text)
                } else {
                    rr.text
                };
            info.answers.push(text);
            info.ttls.push(rr.ttl);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    id: u16,
    qr: bool,
    opcode: u8,
    aa: bool,
    tc: bool,
    rd: bool,
    ra: bool,
    z: u8,
    rcode: u8,
    qd: u16,
    an: u16,
    ns: u16,
    ar: u16,
    netbios: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Prerequisite,
    Update,
}

/// A record the log shows: its owner, TTL and text.
#[derive(Debug)]
struct Rendered {
    section: Section,
    owner: Vec<u8>,
    ttl: u32,
    text: String,
    addr: Option<Addr>,
}

struct Parser<'a> {
    msg: &'a [u8],
    pos: usize,
    netbios_resp: bool,
}

impl Parser<'_> {
    fn remaining(&self) -> usize {
        self.msg.len().saturating_sub(self.pos)
    }

    fn u16(&mut self) -> u16 {
        if self.remaining() < 2 {
            self.pos = self.msg.len();
            return 0;
        }
        let v = u16::from_be_bytes([self.msg[self.pos], self.msg[self.pos + 1]]);
        self.pos += 2;
        v
    }

    fn u32(&mut self) -> u32 {
        if self.remaining() < 4 {
            return 0;
        }
        let b = &self.msg[self.pos..self.pos + 4];
        self.pos += 4;
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// A name at the cursor; None when it cannot be read.
    fn name(&mut self, downcase: bool) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(32);
        let mut pos = self.pos;
        let ok = extract(
            self.msg,
            &mut pos,
            self.msg.len(),
            &mut out,
            downcase,
            0,
            self.netbios_resp,
        );
        self.pos = pos;
        if !ok {
            return None;
        }
        if out.len() >= 2 && out.last() == Some(&b'.') {
            out.pop();
        } else if out == b"." {
            out.clear();
        }
        Some(out)
    }

    /// One resource record. `None`: the message cannot be parsed further;
    /// `Some(None)`: parsed, nothing for the log.
    fn record(&mut self, h: &Header, section: Section, zclass: u16) -> Option<Option<Rendered>> {
        let owner = self.name(true)?;
        if self.remaining() < 4 {
            return None;
        }
        let rtype = self.u16();
        let class = self.u16();
        let ttl = self.u32();
        let rdlen = self.u16() as usize;
        if rdlen > self.remaining() {
            return None;
        }
        let start = self.pos;
        let end = start + rdlen;
        let render = |text: String| {
            Some(Some(Rendered {
                section,
                owner: owner.clone(),
                ttl,
                text,
                addr: None,
            }))
        };

        if section == Section::Prerequisite {
            // Never parsed as a record, and its data is not skipped (as Zeek).
            if (matches!(class, 254 | 255) && rdlen == 0) || class == zclass {
                let name = String::from_utf8_lossy(&owner).into_owned();
                let text = if class == 254 && rtype == 255 {
                    format!("NameNotInUse {name}")
                } else if class == 255 && rtype == 255 {
                    format!("NameInUse {name}")
                } else if class == 254 {
                    format!("NoRRSet {} {name}", qtype_name(rtype))
                } else {
                    format!("RRSetExists {} {name}", qtype_name(rtype))
                };
                return render(format!("pre: {text}"));
            }
            return Some(None);
        }
        if section == Section::Update {
            if class == 255 && ttl == 0 && rdlen == 0 {
                let text = if rtype == 255 {
                    format!("RRSet * {}", String::from_utf8_lossy(&owner))
                } else {
                    format!("RRSet {}", qtype_name(rtype))
                };
                return render(format!("del: {text}"));
            }
            if !((class == 254 && ttl == 0) || class == zclass) {
                return Some(None);
            }
        }
        if rdlen == 0 && self.remaining() > 0 && section == Section::Answer {
            return None;
        }
        let du = h.opcode == 5 && !h.netbios && section == Section::Update;
        let owner_text = || zeek_text(&owner);
        let rd = &self.msg[start..end];
        let result: Option<Option<(String, Option<Addr>)>> = match rtype {
            1 => {
                if rdlen != 4 {
                    return None;
                }
                self.pos = end;
                let a = dotted_quad(rd);
                let text = if du {
                    format!("A {} {a}", owner_text())
                } else {
                    a
                };
                Some(Some((text, Some(Addr::v4([rd[0], rd[1], rd[2], rd[3]])))))
            }
            28 | 38 => {
                // Reads 16 bytes whatever the length says (as Zeek).
                let mut b = [0u8; 16];
                let avail = self.remaining().min(16);
                b[..avail].copy_from_slice(&self.msg[start..start + avail]);
                self.pos = start + avail;
                let ip = std::net::Ipv6Addr::from(b);
                let a = Addr::v6(b);
                let s = ip.to_string();
                let text = if du {
                    format!(
                        "{} {} {s}",
                        if rtype == 28 { "AAAA" } else { "A6" },
                        owner_text()
                    )
                } else {
                    s
                };
                Some(Some((text, Some(a))))
            }
            2 | 5 | 12 => {
                let n = self.name(true)?;
                Some(Some((zeek_text(&n), None)))
            }
            6 => {
                let m = self.name(true)?;
                self.name(true)?;
                if self.remaining() < 20 {
                    return None;
                }
                self.pos += 20;
                Some(Some((zeek_text(&m), None)))
            }
            15 => {
                self.u16();
                let n = self.name(true)?;
                Some(Some((zeek_text(&n), None)))
            }
            33 => {
                if self.netbios_resp {
                    return Some(None); // NBSTAT: nothing, data not skipped
                }
                if rdlen < 6 {
                    return None;
                }
                self.pos += 6;
                let n = self.name(true)?;
                Some(Some((zeek_text(&n), None)))
            }
            16 | 99 => {
                let tag = if rtype == 16 { "TXT" } else { "SPF" };
                let mut parts: Vec<String> = Vec::new();
                let mut i = 0usize;
                while i < rdlen {
                    let l = rd[i] as usize;
                    if i + 1 + l > rdlen {
                        break;
                    }
                    parts.push(format!("{tag} {l} {}", zeek_text(&rd[i + 1..i + 1 + l])));
                    i += 1 + l;
                }
                if i != rdlen {
                    return None;
                }
                self.pos = end;
                Some(Some((parts.join(" "), None)))
            }
            46 => {
                if rdlen < 18 {
                    return None;
                }
                let covered = u16::from_be_bytes([rd[0], rd[1]]);
                self.pos = start + 18;
                let signer = self.name(true)?;
                self.pos = end.max(self.pos);
                let s = if signer.is_empty() {
                    "<Root>".to_string()
                } else {
                    zeek_text(&signer)
                };
                Some(Some((format!("RRSIG {covered} {s}"), None)))
            }
            48 => {
                if rdlen < 4 {
                    return None;
                }
                self.pos = end;
                Some(Some((format!("DNSKEY {}", rd[3]), None)))
            }
            43 => {
                if rdlen < 4 {
                    return None;
                }
                self.pos = end;
                Some(Some((format!("DS {} {}", rd[2], rd[3]), None)))
            }
            47 => {
                let next = self.name(true)?;
                self.pos = end.max(self.pos);
                Some(Some((
                    format!("NSEC {} {}", owner_text(), zeek_text(&next)),
                    None,
                )))
            }
            50 => {
                if rdlen < 6 {
                    return None;
                }
                self.pos = end;
                Some(Some(("NSEC3".into(), None)))
            }
            51 => {
                if rdlen < 5 {
                    return None;
                }
                self.pos = end;
                Some(Some(("NSEC3PARAM".into(), None)))
            }
            44 => {
                if rdlen < 2 {
                    return None;
                }
                self.pos = end;
                let hex: String = rd[2..].iter().map(|b| format!("{b:02x}")).collect();
                Some(Some((format!("SSHFP: {hex}"), None)))
            }
            65534 => {
                if rdlen < 5 {
                    return None;
                }
                self.pos = end;
                Some(Some(("BIND9 signing signal".into(), None)))
            }
            29 => {
                if rdlen != 16 {
                    return None;
                }
                self.pos = end;
                Some(Some((format!("LOC:  {} {} {}", rd[1], rd[2], rd[3]), None)))
            }
            11 => Some(Some((String::new(), None))), // WKS: data not skipped (as Zeek)
            13 | 257 | 64 | 65 | 249 | 250 | 41 | 32 => {
                self.pos = end;
                Some(None)
            }
            other => {
                self.pos = end;
                Some(Some((format!("<unknown type={other}>"), None)))
            }
        };
        match result {
            None => None,
            Some(None) => Some(None),
            Some(Some((text, addr))) => Some(Some(Rendered {
                section,
                owner,
                ttl,
                text,
                addr,
            })),
        }
    }
}

/// An IPv4 address as text, without going through `fmt`.
fn dotted_quad(b: &[u8]) -> String {
    let mut s = String::with_capacity(15);
    for (i, o) in b.iter().take(4).enumerate() {
        if i > 0 {
            s.push('.');
        }
        if *o >= 100 {
            s.push((b'0' + o / 100) as char);
        }
        if *o >= 10 {
            s.push((b'0' + o / 10 % 10) as char);
        }
        s.push((b'0' + o % 10) as char);
    }
    s
}

/// Zeek's name extraction: labels copied raw with a '.' after each;
/// compression pointers must point strictly backward and may read only up
/// to the pointer; deep chains stop quietly.
fn extract(
    msg: &[u8],
    pos: &mut usize,
    limit: usize,
    out: &mut Vec<u8>,
    downcase: bool,
    depth: u32,
    netbios_resp: bool,
) -> bool {
    if depth > MAX_DEPTH {
        return true;
    }
    loop {
        if *pos >= limit {
            return false;
        }
        let l = msg[*pos];
        if l == 0 {
            *pos += 1;
            return true;
        }
        if l & 0xc0 == 0xc0 {
            if *pos + 1 >= limit {
                return false;
            }
            let off = (((l & 0x3f) as usize) << 8) | msg[*pos + 1] as usize;
            if off >= *pos {
                return false;
            }
            let mut p2 = off;
            if !extract(msg, &mut p2, *pos, out, true, depth + 1, netbios_resp) {
                return false;
            }
            *pos += 2;
            return true;
        }
        let l = l as usize;
        let remaining = limit - (*pos + 1);
        if l > remaining {
            *pos = limit;
            return false;
        }
        if l > 63 && !netbios_resp {
            return false;
        }
        if l >= NAME_BUF.saturating_sub(out.len()) {
            return false;
        }
        let label = &msg[*pos + 1..*pos + 1 + l];
        if downcase {
            out.extend(label.iter().map(|b| b.to_ascii_lowercase()));
        } else {
            out.extend_from_slice(label);
        }
        out.push(b'.');
        *pos += 1 + l;
    }
}

/// Bytes as Zeek's log writer shows them: valid UTF-8 as is; control
/// characters, backslash and invalid bytes as \xNN.
pub fn zeek_text(b: &[u8]) -> String {
    use std::fmt::Write as _;
    if b.iter().all(|&c| (0x20..0x7f).contains(&c) && c != b'\\')
        && let Ok(ascii) = std::str::from_utf8(b)
    {
        return ascii.to_owned();
    }
    let mut s = String::with_capacity(b.len());
    let mut rest = b;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                push_escaped(&mut s, valid);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                push_escaped(&mut s, std::str::from_utf8(good).unwrap_or(""));
                let n = e.error_len().unwrap_or(bad.len());
                for byte in &bad[..n] {
                    let _ = write!(s, "\\x{byte:02x}");
                }
                rest = &bad[n..];
            }
        }
    }
    s
}

fn push_escaped(s: &mut String, text: &str) {
    use std::fmt::Write as _;
    for c in text.chars() {
        if (c as u32) < 0x20 || c as u32 == 0x7f || c == '\\' {
            let _ = write!(s, "\\x{:02x}", c as u32);
        } else {
            s.push(c);
        }
    }
}

/// NetBIOS first-level decoding of a 32-character name, as Zeek does it.
fn decode_netbios_name(name: &[u8]) -> Option<Vec<u8>> {
    if name.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for i in 0..16 {
        let hi = name[2 * i].to_ascii_uppercase();
        let lo = name[2 * i + 1].to_ascii_uppercase();
        if !(b'A'..=b'P').contains(&hi) || !(b'A'..=b'P').contains(&lo) {
            return None;
        }
        bytes[i] = ((hi - b'A') << 4) | (lo - b'A');
    }
    let mut n = 0;
    while n < 16 {
        let b = bytes[n];
        if b.is_ascii_alphanumeric() || b.is_ascii_punctuation() || b == b' ' || b < 3 {
            n += 1;
        } else {
            break;
        }
    }
    if n == 16 {
        n = 15;
    }
    let mut out = bytes[..n].to_vec();
    while matches!(out.last(), Some(b' ') | Some(0)) {
        out.pop();
    }
    if out.is_empty() { None } else { Some(out) }
}

pub fn qtype_name(t: u16) -> String {
    let n = match t {
        1 => "A",
        2 => "NS",
        3 => "MD",
        4 => "MF",
        5 => "CNAME",
        6 => "SOA",
        7 => "MB",
        8 => "MG",
        9 => "MR",
        10 => "NULL",
        11 => "WKS",
        12 => "PTR",
        13 => "HINFO",
        14 => "MINFO",
        15 => "MX",
        16 => "TXT",
        17 => "RP",
        18 => "AFSDB",
        19 => "X25",
        20 => "ISDN",
        21 => "RT",
        22 => "NSAP",
        23 => "NSAP-PTR",
        24 => "SIG",
        25 => "KEY",
        26 => "PX",
        27 => "GPOS",
        28 => "AAAA",
        29 => "LOC",
        30 => "NXT",
        31 => "EID",
        32 => "NIMLOC",
        33 => "SRV",
        34 => "ATMA",
        35 => "NAPTR",
        36 => "KX",
        37 => "CERT",
        38 => "A6",
        39 => "DNAME",
        40 => "SINK",
        41 => "OPT",
        42 => "APL",
        43 => "DS",
        44 => "SSHFP",
        45 => "IPSECKEY",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        49 => "DHCID",
        50 => "NSEC3",
        51 => "NSEC3PARAM",
        52 => "TLSA",
        53 => "SMIMEA",
        55 => "HIP",
        56 => "NINFO",
        57 => "RKEY",
        58 => "TALINK",
        59 => "CDS",
        60 => "CDNSKEY",
        61 => "OPENPGPKEY",
        62 => "CSYNC",
        63 => "ZONEMD",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        100 => "UINFO",
        101 => "UID",
        102 => "GID",
        103 => "UNSPEC",
        104 => "NID",
        105 => "L32",
        106 => "L64",
        107 => "LP",
        108 => "EUI48",
        109 => "EUI64",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        253 => "MAILB",
        254 => "MAILA",
        255 => "*",
        256 => "URI",
        257 => "CAA",
        32768 => "TA",
        32769 => "DLV",
        65281 => "WINS",
        65282 => "WINS-R",
        65422 => "XPF",
        65521 => "INTEGRITY",
        other => return format!("query-{other}"),
    };
    n.to_string()
}

pub fn qclass_name(c: u16) -> String {
    match c {
        1 => "C_INTERNET".into(),
        2 => "C_CSNET".into(),
        3 => "C_CHAOS".into(),
        4 => "C_HESIOD".into(),
        254 => "C_NONE".into(),
        255 => "C_ANY".into(),
        other => format!("qclass-{other}"),
    }
}

pub fn rcode_name(r: u8) -> String {
    match r {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSet".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        other => format!("unassigned-{other}"),
    }
}

pub fn opcode_name(op: u8, netbios: bool) -> String {
    if netbios {
        match op {
            0 => "netbios-query".into(),
            5 => "netbios-registration".into(),
            6 => "netbios-release".into(),
            7 => "netbios-wack".into(),
            8 => "netbios-refresh".into(),
            other => format!("netbios-opcode-{other}"),
        }
    } else {
        match op {
            0 => "query".into(),
            1 => "iquery".into(),
            2 => "server-status".into(),
            4 => "notify".into(),
            5 => "dynamic-update".into(),
            6 => "dso".into(),
            other => format!("opcode-{other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: ConnCtx = ConnCtx {
        orig_p: 40000,
        resp_p: 53,
        resp_multicast: false,
    };

    fn query(id: u16, name: &[&str], qtype: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0]);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    fn reply_a(q: &[u8], addr: [u8; 4], ttl: u32) -> Vec<u8> {
        let mut m = q.to_vec();
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 1;
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&[0, 4]);
        m.extend_from_slice(&addr);
        m
    }

    #[test]
    fn query_and_reply_pair_with_rtt() {
        let mut s = Session::new();
        let mut out = Vec::new();
        let q = query(7, &["WWW", "example", "com"], 1);
        let fx = s.message(&CTX, &q, Some(true), 1_000, &mut out);
        assert!(fx.confirmed && out.is_empty());
        s.message(
            &CTX,
            &reply_a(&q, [1, 2, 3, 4], 60),
            Some(false),
            3_000,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(r.query.as_deref(), Some("www.example.com"));
        assert_eq!(
            (r.rtt_ns, r.rcode, r.ra, r.rd),
            (Some(2_000), Some(0), true, true)
        );
        assert_eq!(r.answers, vec!["1.2.3.4".to_string()]);
        assert_eq!(r.ttls, vec![60]);
    }

    #[test]
    fn forward_pointer_stops_the_message_without_panic() {
        let mut s = Session::new();
        let mut out = Vec::new();
        let q = query(9, &["a", "b"], 1);
        let mut r = reply_a(&q, [1, 1, 1, 1], 5);
        let n = q.len();
        r[n] = 0xc0;
        r[n + 1] = n as u8; // points at itself
        s.message(&CTX, &q, Some(true), 0, &mut out);
        let fx = s.message(&CTX, &r, Some(false), 10, &mut out);
        assert!(!fx.confirmed);
        assert_eq!(out.len(), 1, "the row is still written");
        assert!(out[0].answers.is_empty());
    }

    #[test]
    fn text_forms() {
        assert_eq!(dotted_quad(&[10, 0, 100, 255]), "10.0.100.255");
        assert_eq!(zeek_text(b"plain.example"), "plain.example");
        assert_eq!(zeek_text(b"a\\b\x01\xff"), "a\\x5cb\\x01\\xff");
    }

    #[test]
    fn netbios_names_decode() {
        assert_eq!(
            decode_netbios_name(b"ecfcfhedddaedecdddidddeedbegdedcaa").as_deref(),
            None
        );
        assert_eq!(
            decode_netbios_name(b"ECFCFHEDDAEDECDDDIDDEEDBEGDEDCAA").as_deref(),
            Some(&b"BRWC0CB383D1F42"[..])
        );
        assert_eq!(
            decode_netbios_name(b"FHEPFCELEHFCEPFFFACACACACACACABN").as_deref(),
            Some(&b"WORKGROUP"[..])
        );
    }

    #[test]
    fn tcp_messages_reassemble_across_segments() {
        let mut s = Session::new();
        let mut out = Vec::new();
        let q = query(3, &["x", "org"], 16);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        let mut fx = Effects::default();
        for chunk in framed.chunks(3) {
            s.tcp_data(&CTX, true, chunk, 0, &mut out, &mut fx);
        }
        assert!(fx.confirmed);
        s.finish(&CTX, 0, &mut out);
        assert_eq!(out[0].query.as_deref(), Some("x.org"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_messages_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let mut s = Session::new();
            let mut out = Vec::new();
            s.message(&CTX, &bytes, Some(true), 0, &mut out);
            s.message(&CTX, &bytes, Some(false), 1, &mut out);
            s.finish(&CTX, 2, &mut out);
        }
    }
}
