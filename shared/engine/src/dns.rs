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

/// One dns.log row in the making. Its text (the query and the answers)
/// lives in one buffer that is reused when the row is recycled, so a
/// steady stream of DNS allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Info {
    pub ts_ns: i64,
    pub trans_id: u16,
    pub rtt_ns: Option<i64>,
    pub qclass: Option<u16>,
    pub qtype: Option<u16>,
    /// A NetBIOS node-status query: the query type reads NBSTAT.
    nbstat: bool,
    pub rcode: Option<u8>,
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    pub z: u8,
    pub ttls: Vec<u32>,
    /// Addresses from A/AAAA answers (for the bus records).
    pub answer_addrs: Vec<Addr>,
    pub rejected: bool,
    pub opcode: u8,
    pub netbios: bool,
    saw_query: bool,
    saw_reply: bool,
    /// The query and the answers as text; the spans below index into it.
    text: String,
    query: Option<(u32, u32)>,
    answers: Vec<(u32, u32)>,
}

impl Info {
    /// Clears the row for reuse, keeping its buffers.
    fn reset(&mut self, ts_ns: i64, trans_id: u16) {
        let mut text = std::mem::take(&mut self.text);
        let mut answers = std::mem::take(&mut self.answers);
        let mut ttls = std::mem::take(&mut self.ttls);
        let mut answer_addrs = std::mem::take(&mut self.answer_addrs);
        text.clear();
        answers.clear();
        ttls.clear();
        answer_addrs.clear();
        *self = Info {
            ts_ns,
            trans_id,
            text,
            answers,
            ttls,
            answer_addrs,
            ..Default::default()
        };
    }

    /// The query name as Zeek shows it (lower case, escaped).
    pub fn query(&self) -> Option<&str> {
        self.query.map(|(a, b)| &self.text[a as usize..b as usize])
    }

    /// The answers in wire order, in Zeek's text forms; `ttls` runs beside them.
    pub fn answers(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        self.answers
            .iter()
            .map(|&(a, b)| &self.text[a as usize..b as usize])
    }

    /// The query type's name (NBSTAT for a NetBIOS node-status query).
    pub fn qtype_name(&self) -> Option<Name> {
        self.qtype.map(|t| {
            if self.nbstat {
                Name::Static("NBSTAT")
            } else {
                qtype_name(t)
            }
        })
    }

    fn set_query(&mut self, raw: &[u8]) {
        let start = self.text.len() as u32;
        push_zeek_text(&mut self.text, raw);
        self.query = Some((start, self.text.len() as u32));
    }

    fn push_answer(&mut self, prefix: &str, text: &str, ttl: u32) {
        let start = self.text.len() as u32;
        self.text.push_str(prefix);
        self.text.push_str(text);
        self.answers.push((start, self.text.len() as u32));
        self.ttls.push(ttl);
    }
}

/// What the DNS analyzer hands back (rows it finished), and the buffers it
/// reuses: recycled rows and scratch space for names and answer text.
#[derive(Debug, Default)]
pub struct Out {
    /// Rows finished since the caller last took them.
    pub done: Vec<Info>,
    spare: Vec<Info>,
    owner: Vec<u8>,
    target: Vec<u8>,
    skip: Vec<u8>,
    text: String,
}

/// Recycled rows kept for reuse, at most.
const MAX_SPARE: usize = 4096;

impl Out {
    fn fresh(&mut self, ts_ns: i64, trans_id: u16) -> Info {
        let mut info = self.spare.pop().unwrap_or_default();
        info.reset(ts_ns, trans_id);
        info
    }

    /// Gives a written row back for reuse.
    pub fn recycle(&mut self, info: Info) {
        if self.spare.len() < MAX_SPARE {
            self.spare.push(info);
        }
    }
}

/// A name for a number: a fixed word, or a prefix and the number for values
/// with no word (`query-999`, `qclass-7`), as Zeek writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Static(&'static str),
    Numbered(&'static str, u16),
}

impl Name {
    /// Appends the text.
    pub fn push_to(&self, out: &mut String) {
        match *self {
            Name::Static(s) => out.push_str(s),
            Name::Numbered(prefix, n) => {
                out.push_str(prefix);
                push_decimal(out, n as u32);
            }
        }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Name::Static(s) => f.write_str(s),
            Name::Numbered(prefix, n) => write!(f, "{prefix}{n}"),
        }
    }
}

fn push_decimal(out: &mut String, n: u32) {
    let mut buf = [0u8; 20];
    let digits = crate::zeeklog::decimal(n as u64, &mut buf);
    out.push_str(std::str::from_utf8(digits).unwrap_or("0"));
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

    /// Makes the session new again for another connection, keeping its
    /// buffers; unfinished rows go back to `out` for reuse.
    pub fn reset(&mut self, out: &mut Out) {
        for info in self.pending.drain(..) {
            out.recycle(info);
        }
        for buf in &mut self.tcp {
            buf.clear();
        }
        self.first_message = true;
        self.x_added = false;
        self.messages = 0;
        self.malformed = 0;
    }

    /// A UDP datagram (or one TCP message) from the originator (`from_orig`).
    pub fn message(
        &mut self,
        ctx: &ConnCtx,
        data: &[u8],
        from_orig: Option<bool>,
        ts_ns: i64,
        out: &mut Out,
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
        let ok = self.parse_body(ctx, &h, &mut p, idx, ts_ns, out);
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
    fn session_for(&mut self, ctx: &ConnCtx, h: &Header, ts_ns: i64, out: &mut Out) -> usize {
        if ctx.resp_multicast {
            let mut info = out.fresh(ts_ns, h.id);
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
            None => {
                let fresh = out.fresh(ts_ns, h.id);
                self.push(fresh, out)
            }
        }
    }

    fn push(&mut self, info: Info, out: &mut Out) -> usize {
        if self.pending.len() >= MAX_PENDING {
            out.done.push(self.pending.remove(0));
        }
        self.pending.push(info);
        self.pending.len() - 1
    }

    fn dns_end(&mut self, i: usize, qr: bool, out: &mut Out) {
        let Some(info) = self.pending.get_mut(i) else {
            return;
        };
        if qr {
            info.saw_reply = true;
        } else {
            info.saw_query = true;
        }
        if info.saw_query && info.saw_reply {
            out.done.push(self.pending.remove(i));
        }
    }

    /// Everything still pending, at connection removal; a TCP message left
    /// half-received is parsed first.
    pub fn finish(&mut self, ctx: &ConnCtx, ts_ns: i64, out: &mut Out) {
        for dir in 0..2 {
            let buf = std::mem::take(&mut self.tcp[dir]);
            if buf.len() > 2 {
                self.message(ctx, &buf[2..], None, ts_ns, out);
            }
        }
        out.done.append(&mut self.pending);
    }

    /// TCP stream content from one side: deframes length-prefixed messages.
    pub fn tcp_data(
        &mut self,
        ctx: &ConnCtx,
        from_orig: bool,
        mut data: &[u8],
        ts_ns: i64,
        out: &mut Out,
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
        out: &mut Out,
    ) -> bool {
        if MAX_QUERIES > 0 && h.qd > MAX_QUERIES {
            return false;
        }
        let dynamic_update = h.opcode == 5 && !h.netbios;
        if dynamic_update {
            return self.parse_update(h, p, idx, ts, out);
        }
        for _ in 0..h.qd {
            if !p.name(false, &mut out.owner) {
                return false;
            }
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
                out.owner.make_ascii_lowercase();
                info.nbstat = false;
                if ctx.resp_p == 137 {
                    if let Some(decoded) = decode_netbios_name(&out.owner) {
                        out.owner = decoded;
                    }
                    info.nbstat = qtype == 33;
                }
                info.set_query(&out.owner);
            } else if h.an == 0 && h.ns == 0 && h.ar == 0 {
                info.rejected = true;
            }
        }
        for _ in 0..h.an {
            match p.record(h, Section::Answer, 0, out) {
                Some(Some(rr)) => self.do_reply(h, idx, rr, ts, out),
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
        out: &mut Out,
    ) -> bool {
        if h.qd != 1 {
            return false;
        }
        if !p.name(true, &mut out.owner) || p.remaining() < 4 {
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
            match p.record(h, Section::Prerequisite, zclass, out) {
                Some(Some(rr)) => self.do_reply(h, idx, rr, ts, out),
                Some(None) => {}
                None => return false,
            }
        }
        for _ in 0..h.ns {
            match p.record(h, Section::Update, zclass, out) {
                Some(Some(rr)) => self.do_reply(h, idx, rr, ts, out),
                Some(None) => {}
                None => return false,
            }
        }
        true
    }

    /// A record parsed into `out.owner` and `out.text` joins the row.
    fn do_reply(&mut self, h: &Header, idx: Option<usize>, rr: Rendered, ts: i64, out: &Out) {
        let Some(i) = idx else { return };
        if !h.qr {
            return;
        }
        let info = &mut self.pending[i];
        if info.query.is_none() {
            info.set_query(&out.owner);
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
        if !out.text.is_empty() {
            let prefix = if h.opcode == 5
                && rr.section == Section::Update
                && !out.text.starts_with("del:")
            {
                "add: "
            } else {
                ""
            };
            info.push_answer(prefix, &out.text, rr.ttl);
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

/// A record the log shows: its owner and text are in the analyzer's
/// scratch buffers (`Out::owner`, `Out::text`); this is the rest.
#[derive(Debug, Clone, Copy)]
struct Rendered {
    section: Section,
    ttl: u32,
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

    /// The name at the cursor into `out` (cleared first); false when it
    /// cannot be read.
    fn name(&mut self, downcase: bool, out: &mut Vec<u8>) -> bool {
        out.clear();
        let mut pos = self.pos;
        let ok = extract(
            self.msg,
            &mut pos,
            self.msg.len(),
            out,
            downcase,
            0,
            self.netbios_resp,
        );
        self.pos = pos;
        if !ok {
            return false;
        }
        if out.len() >= 2 && out.last() == Some(&b'.') {
            out.pop();
        } else if out == b"." {
            out.clear();
        }
        true
    }

    /// One resource record: its owner into `out.owner`, its text into
    /// `out.text` (empty when the log shows none). `None`: the message
    /// cannot be parsed further; `Some(None)`: parsed, nothing for the log.
    fn record(
        &mut self,
        h: &Header,
        section: Section,
        zclass: u16,
        out: &mut Out,
    ) -> Option<Option<Rendered>> {
        if !self.name(true, &mut out.owner) {
            return None;
        }
        let text = &mut out.text;
        text.clear();
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
        let rendered = |addr: Option<Addr>| Some(Some(Rendered { section, ttl, addr }));
        let owner = &out.owner;

        if section == Section::Prerequisite {
            // Never parsed as a record, and its data is not skipped (as Zeek).
            if (matches!(class, 254 | 255) && rdlen == 0) || class == zclass {
                text.push_str("pre: ");
                if class == 254 && rtype == 255 {
                    text.push_str("NameNotInUse ");
                } else if class == 255 && rtype == 255 {
                    text.push_str("NameInUse ");
                } else {
                    text.push_str(if class == 254 {
                        "NoRRSet "
                    } else {
                        "RRSetExists "
                    });
                    qtype_name(rtype).push_to(text);
                    text.push(' ');
                }
                text.push_str(&String::from_utf8_lossy(owner));
                return rendered(None);
            }
            return Some(None);
        }
        if section == Section::Update {
            if class == 255 && ttl == 0 && rdlen == 0 {
                text.push_str("del: RRSet ");
                if rtype == 255 {
                    text.push_str("* ");
                    text.push_str(&String::from_utf8_lossy(owner));
                } else {
                    qtype_name(rtype).push_to(text);
                }
                return rendered(None);
            }
            if !((class == 254 && ttl == 0) || class == zclass) {
                return Some(None);
            }
        }
        if rdlen == 0 && self.remaining() > 0 && section == Section::Answer {
            return None;
        }
        let du = h.opcode == 5 && !h.netbios && section == Section::Update;
        let rd = &self.msg[start..end];
        let target = &mut out.target;
        match rtype {
            1 => {
                if rdlen != 4 {
                    return None;
                }
                self.pos = end;
                if du {
                    text.push_str("A ");
                    push_zeek_text(text, owner);
                    text.push(' ');
                }
                push_dotted_quad(text, rd);
                rendered(Some(Addr::v4([rd[0], rd[1], rd[2], rd[3]])))
            }
            28 | 38 => {
                // Reads 16 bytes whatever the length says (as Zeek).
                let mut b = [0u8; 16];
                let avail = self.remaining().min(16);
                b[..avail].copy_from_slice(&self.msg[start..start + avail]);
                self.pos = start + avail;
                if du {
                    text.push_str(if rtype == 28 { "AAAA " } else { "A6 " });
                    push_zeek_text(text, owner);
                    text.push(' ');
                }
                push_ipv6(text, b);
                rendered(Some(Addr::v6(b)))
            }
            2 | 5 | 12 => {
                if !self.name(true, target) {
                    return None;
                }
                push_zeek_text(text, target);
                rendered(None)
            }
            6 => {
                if !self.name(true, target) {
                    return None;
                }
                if !self.name(true, &mut out.skip) || self.remaining() < 20 {
                    return None;
                }
                self.pos += 20;
                push_zeek_text(text, target);
                rendered(None)
            }
            15 => {
                self.u16();
                if !self.name(true, target) {
                    return None;
                }
                push_zeek_text(text, target);
                rendered(None)
            }
            33 => {
                if self.netbios_resp {
                    return Some(None); // NBSTAT: nothing, data not skipped
                }
                if rdlen < 6 {
                    return None;
                }
                self.pos += 6;
                if !self.name(true, target) {
                    return None;
                }
                push_zeek_text(text, target);
                rendered(None)
            }
            16 | 99 => {
                let tag = if rtype == 16 { "TXT " } else { "SPF " };
                let mut i = 0usize;
                while i < rdlen {
                    let l = rd[i] as usize;
                    if i + 1 + l > rdlen {
                        break;
                    }
                    if i > 0 {
                        text.push(' ');
                    }
                    text.push_str(tag);
                    push_decimal(text, l as u32);
                    text.push(' ');
                    push_zeek_text(text, &rd[i + 1..i + 1 + l]);
                    i += 1 + l;
                }
                if i != rdlen {
                    return None;
                }
                self.pos = end;
                rendered(None)
            }
            46 => {
                if rdlen < 18 {
                    return None;
                }
                let covered = u16::from_be_bytes([rd[0], rd[1]]);
                self.pos = start + 18;
                if !self.name(true, target) {
                    return None;
                }
                self.pos = end.max(self.pos);
                text.push_str("RRSIG ");
                push_decimal(text, covered as u32);
                text.push(' ');
                if target.is_empty() {
                    text.push_str("<Root>");
                } else {
                    push_zeek_text(text, target);
                }
                rendered(None)
            }
            48 => {
                if rdlen < 4 {
                    return None;
                }
                self.pos = end;
                text.push_str("DNSKEY ");
                push_decimal(text, rd[3] as u32);
                rendered(None)
            }
            43 => {
                if rdlen < 4 {
                    return None;
                }
                self.pos = end;
                text.push_str("DS ");
                push_decimal(text, rd[2] as u32);
                text.push(' ');
                push_decimal(text, rd[3] as u32);
                rendered(None)
            }
            47 => {
                if !self.name(true, target) {
                    return None;
                }
                self.pos = end.max(self.pos);
                text.push_str("NSEC ");
                push_zeek_text(text, owner);
                text.push(' ');
                push_zeek_text(text, target);
                rendered(None)
            }
            50 => {
                if rdlen < 6 {
                    return None;
                }
                self.pos = end;
                text.push_str("NSEC3");
                rendered(None)
            }
            51 => {
                if rdlen < 5 {
                    return None;
                }
                self.pos = end;
                text.push_str("NSEC3PARAM");
                rendered(None)
            }
            44 => {
                if rdlen < 2 {
                    return None;
                }
                self.pos = end;
                const HEX: &[u8; 16] = b"0123456789abcdef";
                text.push_str("SSHFP: ");
                for b in &rd[2..] {
                    text.push(HEX[(b >> 4) as usize] as char);
                    text.push(HEX[(b & 0xf) as usize] as char);
                }
                rendered(None)
            }
            65534 => {
                if rdlen < 5 {
                    return None;
                }
                self.pos = end;
                text.push_str("BIND9 signing signal");
                rendered(None)
            }
            29 => {
                if rdlen != 16 {
                    return None;
                }
                self.pos = end;
                text.push_str("LOC:  ");
                for (i, b) in rd[1..4].iter().enumerate() {
                    if i > 0 {
                        text.push(' ');
                    }
                    push_decimal(text, *b as u32);
                }
                rendered(None)
            }
            11 => rendered(None), // WKS: no text, data not skipped (as Zeek)
            13 | 257 | 64 | 65 | 249 | 250 | 41 | 32 => {
                self.pos = end;
                Some(None)
            }
            other => {
                self.pos = end;
                text.push_str("<unknown type=");
                push_decimal(text, other as u32);
                text.push('>');
                rendered(None)
            }
        }
    }
}

/// An IPv4 address as text, without going through `fmt`.
fn push_dotted_quad(s: &mut String, b: &[u8]) {
    for (i, o) in b.iter().take(4).enumerate() {
        if i > 0 {
            s.push('.');
        }
        push_decimal(s, *o as u32);
    }
}

/// An IPv6 address in RFC 5952 form (as Zeek and the standard library
/// write it), into `s` without allocating.
fn push_ipv6(s: &mut String, b: [u8; 16]) {
    use std::fmt::Write as _;
    let _ = write!(s, "{}", std::net::Ipv6Addr::from(b));
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
        let at = out.len();
        out.extend_from_slice(label);
        if downcase {
            out[at..].make_ascii_lowercase();
        }
        out.push(b'.');
        *pos += 1 + l;
    }
}

/// Bytes as Zeek's log writer shows them: valid UTF-8 as is; control
/// characters, backslash and invalid bytes as \xNN.
pub fn zeek_text(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    push_zeek_text(&mut s, b);
    s
}

/// [`zeek_text`], appended to `s`.
pub fn push_zeek_text(s: &mut String, b: &[u8]) {
    if b.iter().all(|&c| (0x20..0x7f).contains(&c) && c != b'\\')
        && let Ok(ascii) = std::str::from_utf8(b)
    {
        s.push_str(ascii);
        return;
    }
    let mut rest = b;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                push_escaped(s, valid);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                push_escaped(s, std::str::from_utf8(good).unwrap_or(""));
                let n = e.error_len().unwrap_or(bad.len());
                for byte in &bad[..n] {
                    push_hex_escape(s, *byte);
                }
                rest = &bad[n..];
            }
        }
    }
}

fn push_hex_escape(s: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    s.push_str("\\x");
    s.push(HEX[(b >> 4) as usize] as char);
    s.push(HEX[(b & 0xf) as usize] as char);
}

fn push_escaped(s: &mut String, text: &str) {
    for c in text.chars() {
        if (c as u32) < 0x20 || c as u32 == 0x7f || c == '\\' {
            push_hex_escape(s, c as u8);
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

pub fn qtype_name(t: u16) -> Name {
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
        other => return Name::Numbered("query-", other),
    };
    Name::Static(n)
}

pub fn qclass_name(c: u16) -> Name {
    Name::Static(match c {
        1 => "C_INTERNET",
        2 => "C_CSNET",
        3 => "C_CHAOS",
        4 => "C_HESIOD",
        254 => "C_NONE",
        255 => "C_ANY",
        other => return Name::Numbered("qclass-", other),
    })
}

pub fn rcode_name(r: u8) -> Name {
    Name::Static(match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSet",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        other => return Name::Numbered("unassigned-", other as u16),
    })
}

pub fn opcode_name(op: u8, netbios: bool) -> Name {
    Name::Static(if netbios {
        match op {
            0 => "netbios-query",
            5 => "netbios-registration",
            6 => "netbios-release",
            7 => "netbios-wack",
            8 => "netbios-refresh",
            other => return Name::Numbered("netbios-opcode-", other as u16),
        }
    } else {
        match op {
            0 => "query",
            1 => "iquery",
            2 => "server-status",
            4 => "notify",
            5 => "dynamic-update",
            6 => "dso",
            other => return Name::Numbered("opcode-", other as u16),
        }
    })
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
        let mut out = Out::default();
        let q = query(7, &["WWW", "example", "com"], 1);
        let fx = s.message(&CTX, &q, Some(true), 1_000, &mut out);
        assert!(fx.confirmed && out.done.is_empty());
        s.message(
            &CTX,
            &reply_a(&q, [1, 2, 3, 4], 60),
            Some(false),
            3_000,
            &mut out,
        );
        assert_eq!(out.done.len(), 1);
        let r = &out.done[0];
        assert_eq!(r.query(), Some("www.example.com"));
        assert_eq!(
            (r.rtt_ns, r.rcode, r.ra, r.rd),
            (Some(2_000), Some(0), true, true)
        );
        assert_eq!(r.answers().collect::<Vec<_>>(), ["1.2.3.4"]);
        assert_eq!(r.ttls, vec![60]);
    }

    #[test]
    fn forward_pointer_stops_the_message_without_panic() {
        let mut s = Session::new();
        let mut out = Out::default();
        let q = query(9, &["a", "b"], 1);
        let mut r = reply_a(&q, [1, 1, 1, 1], 5);
        let n = q.len();
        r[n] = 0xc0;
        r[n + 1] = n as u8; // points at itself
        s.message(&CTX, &q, Some(true), 0, &mut out);
        let fx = s.message(&CTX, &r, Some(false), 10, &mut out);
        assert!(!fx.confirmed);
        assert_eq!(out.done.len(), 1, "the row is still written");
        assert_eq!(out.done[0].answers().len(), 0);
    }

    #[test]
    fn text_forms() {
        let mut s = String::new();
        push_dotted_quad(&mut s, &[10, 0, 100, 255]);
        assert_eq!(s, "10.0.100.255");
        assert_eq!(qtype_name(999).to_string(), "query-999");
        assert_eq!(rcode_name(3).to_string(), "NXDOMAIN");
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
        let mut out = Out::default();
        let q = query(3, &["x", "org"], 16);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        let mut fx = Effects::default();
        for chunk in framed.chunks(3) {
            s.tcp_data(&CTX, true, chunk, 0, &mut out, &mut fx);
        }
        assert!(fx.confirmed);
        s.finish(&CTX, 0, &mut out);
        assert_eq!(out.done[0].query(), Some("x.org"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_messages_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let mut s = Session::new();
            let mut out = Out::default();
            s.message(&CTX, &bytes, Some(true), 0, &mut out);
            s.message(&CTX, &bytes, Some(false), 1, &mut out);
            s.finish(&CTX, 2, &mut out);
        }
    }
}
