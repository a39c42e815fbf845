//! Name-announcing protocols: multicast DNS / DNS-SD (UDP 5353), LLMNR
//! (UDP 5355) and the NetBIOS name service (UDP 137), as the observations
//! `heimdall.sensor.v1.{Mdns,Llmnr,NetbiosNs}Observation`.
//!
//! Each parser takes one UDP payload, checks every length before it reads,
//! never panics, and returns `None` for anything that is not a well-framed
//! message of its kind: a name, record or count running past the end makes
//! the whole message malformed. Inside a well-framed record, rdata that does
//! not fit its type (an A record of 5 bytes) is skipped, not fatal.
//!
//! Compressed names follow only pointers to bytes before the name being read
//! (so positions strictly fall and no loop can form), at most 32 of them, to
//! at most 255 bytes in wire form; labels are decoded lossily as UTF-8 and
//! joined with '.', dots inside a label kept. Every list in an observation
//! holds at most 64 entries (as does each TXT map), de-duplicated in
//! first-seen order, so a hostile packet costs bounded memory and time.

use heimdall_proto::sensor::v1::{
    DnsQuestion, DnsSdService, DnsSdTxt, LlmnrObservation, MdnsObservation, NetbiosName,
    NetbiosNsObservation, NetbiosOpcode,
};
use std::collections::HashMap;

/// Most entries kept in any one list (and in one TXT record's map).
const MAX_LIST: usize = 64;
/// Most compression pointers followed while reading one name.
const MAX_JUMPS: usize = 32;
/// Longest name in wire form, root byte included (RFC 1035 §3.1).
const MAX_NAME: usize = 255;

const T_A: u16 = 1;
const T_PTR: u16 = 12;
const T_TXT: u16 = 16;
const T_AAAA: u16 = 28;
const T_SRV: u16 = 33;
const T_NB: u16 = 0x20;
const T_NBSTAT: u16 = 0x21;

const QR: u16 = 0x8000;
const OPCODE: u16 = 0x7800;
const RCODE: u16 = 0x000f;

/// The 12-byte header shared by DNS, mDNS, LLMNR and NetBIOS-NS.
struct Header {
    id: u16,
    flags: u16,
    qd: u16,
    /// Answer, authority and additional counts together.
    records: u32,
}

fn header(msg: &[u8]) -> Option<Header> {
    let h = msg.get(..12)?;
    let w = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    Some(Header {
        id: w(0),
        flags: w(2),
        qd: w(4),
        records: u32::from(w(6)) + u32::from(w(8)) + u32::from(w(10)),
    })
}

/// A name as its labels, each a slice of the message (bytes as sent).
type Labels<'a> = Vec<&'a [u8]>;

/// Reads the name at `start`; returns its labels and the offset just past
/// its in-place part. `None` for a bad label type, a pointer that does not
/// point backward, too many jumps, or a name longer than 255 bytes.
fn read_name(msg: &[u8], start: usize) -> Option<(Labels<'_>, usize)> {
    let mut labels = Vec::new();
    let (mut pos, mut segment, mut end) = (start, start, None);
    let (mut wire_len, mut jumps) = (1, 0);
    loop {
        let len = *msg.get(pos)? as usize;
        match len >> 6 {
            0 if len == 0 => return Some((labels, end.unwrap_or(pos + 1))),
            0 => {
                wire_len += 1 + len;
                if wire_len > MAX_NAME {
                    return None;
                }
                labels.push(msg.get(pos + 1..pos + 1 + len)?);
                pos += 1 + len;
            }
            3 => {
                let target = (len & 0x3f) << 8 | *msg.get(pos + 1)? as usize;
                // Only earlier bytes than the labels being read: the
                // position falls with every jump, so no loop can form.
                if target >= segment || jumps == MAX_JUMPS {
                    return None;
                }
                jumps += 1;
                end.get_or_insert(pos + 2);
                (pos, segment) = (target, target);
            }
            // 0x40 and 0x80 (extended label types) are not in use.
            _ => return None,
        }
    }
}

/// Labels as dotted text: each label decoded lossily as UTF-8, dots inside a
/// label kept as they are. The root name is "".
fn text(labels: &[&[u8]]) -> String {
    let labels: Vec<_> = labels.iter().map(|l| String::from_utf8_lossy(l)).collect();
    labels.join(".")
}

/// One resource record, its rdata left in place for names that point back.
struct Record<'a> {
    owner: Labels<'a>,
    rtype: u16,
    rdata: &'a [u8],
    /// Offset of `rdata` in the message.
    at: usize,
}

impl<'a> Record<'a> {
    /// The name at `off` in the rdata (so the rdata is longer than `off`);
    /// its in-place part must stay inside.
    fn name_in(&self, msg: &'a [u8], off: usize) -> Option<Labels<'a>> {
        if off >= self.rdata.len() {
            return None;
        }
        let (labels, end) = read_name(msg, self.at + off)?;
        (end <= self.at + self.rdata.len()).then_some(labels)
    }

    /// The address of an A or AAAA record of the right length.
    fn address(&self) -> Option<&'a [u8]> {
        match (self.rtype, self.rdata.len()) {
            (T_A, 4) | (T_AAAA, 16) => Some(self.rdata),
            _ => None,
        }
    }
}

struct Cursor<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.msg.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn name(&mut self) -> Option<Labels<'a>> {
        let (labels, end) = read_name(self.msg, self.pos)?;
        self.pos = end;
        Some(labels)
    }

    /// A question: name, type, class.
    fn question(&mut self) -> Option<(Labels<'a>, u16, u16)> {
        Some((self.name()?, self.u16()?, self.u16()?))
    }

    fn record(&mut self) -> Option<Record<'a>> {
        let owner = self.name()?;
        let rtype = self.u16()?;
        self.take(6)?; // class, TTL
        let len = self.u16()? as usize;
        let at = self.pos;
        Some(Record {
            owner,
            rtype,
            rdata: self.take(len)?,
            at,
        })
    }
}

/// Adds a name unless it is empty, already there (names are
/// case-insensitive) or the list is full.
fn push_name(list: &mut Vec<String>, name: String) {
    if !name.is_empty()
        && list.len() < MAX_LIST
        && !list.iter().any(|n| n.eq_ignore_ascii_case(&name))
    {
        list.push(name);
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if list.len() < MAX_LIST && !list.contains(&item) {
        list.push(item);
    }
}

// ---------------------------------------------------------------- mDNS

fn is_label(l: &[u8], want: &str) -> bool {
    l.eq_ignore_ascii_case(want.as_bytes())
}

/// The service type a type-form name names: `_x._tcp|_udp.<domain>`, or a
/// subtype `_y._sub._x._tcp.<domain>` of it. DNS-SD's own meta names
/// (`_services._dns-sd._udp`, `b._dns-sd._udp`, ...) are not service types.
fn service_type<'n, 'a>(labels: &'n [&'a [u8]]) -> Option<&'n [&'a [u8]]> {
    let l = match labels.get(1) {
        Some(sub) if is_label(sub, "_sub") => &labels[2..],
        _ => labels,
    };
    let (svc, proto) = (l.first()?, l.get(1)?);
    let ok = l.len() >= 3
        && svc.len() > 1
        && svc.starts_with(b"_")
        && !is_label(svc, "_dns-sd")
        && (is_label(proto, "_tcp") || is_label(proto, "_udp"));
    ok.then_some(l)
}

/// `_services._dns-sd._udp.<domain>`, whose PTR targets are service types.
fn is_enumeration(labels: &[&[u8]]) -> bool {
    let meta = ["_services", "_dns-sd", "_udp"];
    labels.len() > 3 && labels.iter().zip(meta).all(|(l, m)| is_label(l, m))
}

/// A reverse-mapping name, whose PTR target is a host name.
fn is_reverse(labels: &[&[u8]]) -> bool {
    let [.., zone, arpa] = labels else {
        return false;
    };
    is_label(arpa, "arpa") && (is_label(zone, "in-addr") || is_label(zone, "ip6"))
}

/// Notes the service type a name mentions: the name itself in type form,
/// or the type of an instance name (`<instance>._x._tcp.<domain>`).
fn note_type(o: &mut MdnsObservation, labels: &[&[u8]]) {
    if let Some(t) = service_type(labels).or_else(|| labels.get(1..).and_then(service_type)) {
        push_name(&mut o.service_types, text(t));
    }
}

fn note_instance(o: &mut MdnsObservation, labels: &[&[u8]]) {
    note_type(o, labels);
    push_name(&mut o.instance_names, text(labels));
}

/// A multicast DNS message (UDP 5353): questions and the DNS-SD facts from
/// all sections.
pub fn mdns(msg: &[u8]) -> Option<MdnsObservation> {
    let h = header(msg)?;
    // RFC 6762 §18.3, §18.11: a nonzero opcode or rcode is to be ignored.
    if h.flags & (OPCODE | RCODE) != 0 || u32::from(h.qd) + h.records == 0 {
        return None;
    }
    let mut o = MdnsObservation {
        is_response: h.flags & QR != 0,
        ..Default::default()
    };
    let mut c = Cursor { msg, pos: 12 };
    for _ in 0..h.qd {
        let (name, qtype, qclass) = c.question()?;
        note_type(&mut o, &name);
        let q = DnsQuestion {
            name: text(&name),
            qtype: qtype.into(),
            qclass: (qclass & 0x7fff).into(),
            unicast_response: qclass & 0x8000 != 0,
        };
        push_unique(&mut o.questions, q);
    }
    for _ in 0..h.records {
        let r = c.record()?;
        mdns_record(&mut o, msg, &r);
    }
    Some(o)
}

/// The DNS-SD facts of one record. The class (its top bit is cache-flush)
/// does not matter here.
fn mdns_record<'a>(o: &mut MdnsObservation, msg: &'a [u8], r: &Record<'a>) {
    if let Some(a) = r.address() {
        push_name(&mut o.host_names, text(&r.owner));
        push_unique(&mut o.addresses, a.to_vec().into());
        return;
    }
    match r.rtype {
        T_PTR => {
            let Some(target) = r.name_in(msg, 0) else {
                return;
            };
            if is_enumeration(&r.owner) {
                note_type(o, &target);
            } else if service_type(&r.owner).is_some() {
                note_type(o, &r.owner);
                note_instance(o, &target);
            } else if is_reverse(&r.owner) {
                push_name(&mut o.host_names, text(&target));
            }
        }
        T_SRV => {
            // Priority, weight, port, then the target: at least 7 bytes.
            let Some(target) = r.name_in(msg, 6) else {
                return;
            };
            note_instance(o, &r.owner);
            let host_name = text(&target);
            push_name(&mut o.host_names, host_name.clone());
            let s = DnsSdService {
                instance_name: text(&r.owner),
                host_name,
                port: u16::from_be_bytes([r.rdata[4], r.rdata[5]]).into(),
            };
            push_unique(&mut o.services, s);
        }
        T_TXT => {
            note_instance(o, &r.owner);
            txt(o, text(&r.owner), r.rdata);
        }
        _ => {}
    }
}

/// Merges a TXT record's strings into the instance's entry: keys
/// lower-cased, first wins, a key without "=" maps to "".
fn txt(o: &mut MdnsObservation, instance_name: String, mut rdata: &[u8]) {
    let i = match o
        .txt
        .iter()
        .position(|t| t.instance_name.eq_ignore_ascii_case(&instance_name))
    {
        Some(i) => i,
        None if o.txt.len() < MAX_LIST => {
            o.txt.push(DnsSdTxt {
                instance_name,
                entries: HashMap::new(),
            });
            o.txt.len() - 1
        }
        None => return,
    };
    let entries = &mut o.txt[i].entries;
    while let Some((&len, rest)) = rdata.split_first() {
        // A string running past the record: keep the ones before it.
        let Some((s, tail)) = rest.split_at_checked(len as usize) else {
            break;
        };
        rdata = tail;
        let (key, value) = match s.iter().position(|&b| b == b'=') {
            Some(p) => (&s[..p], &s[p + 1..]),
            None => (s, &[][..]),
        };
        // RFC 6763 §6.4: a string with no key (empty, or starting with
        // "=") is ignored.
        if key.is_empty() || entries.len() >= MAX_LIST {
            continue;
        }
        let key = String::from_utf8_lossy(key).to_lowercase();
        entries
            .entry(key)
            .or_insert_with(|| String::from_utf8_lossy(value).into_owned());
    }
}

// ---------------------------------------------------------------- LLMNR

/// An LLMNR message (UDP 5355).
pub fn llmnr(msg: &[u8]) -> Option<LlmnrObservation> {
    let h = header(msg)?;
    // RFC 4795 §2.1.1: opcode 0 and exactly one question; senders set
    // them so and responders discard anything else.
    if h.flags & OPCODE != 0 || h.qd != 1 {
        return None;
    }
    let mut c = Cursor { msg, pos: 12 };
    let (name, qtype, qclass) = c.question()?;
    let mut o = LlmnrObservation {
        is_response: h.flags & QR != 0,
        transaction_id: h.id.into(),
        // LLMNR gives the class's top bit no meaning: kept as sent.
        questions: vec![DnsQuestion {
            name: text(&name),
            qtype: qtype.into(),
            qclass: qclass.into(),
            unicast_response: false,
        }],
        conflict: h.flags & 0x0400 != 0,
        tentative: h.flags & 0x0100 != 0,
        rcode: (h.flags & RCODE).into(),
        ..Default::default()
    };
    // Every record must be well framed; only the answer section carries
    // the addresses asked for.
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    for i in 0..h.records {
        let r = c.record()?;
        match r.address() {
            Some(a) if i < answers.into() => push_unique(&mut o.addresses, a.to_vec().into()),
            _ => {}
        }
    }
    Some(o)
}

// ---------------------------------------------------------------- NetBIOS

/// A first-level encoded NetBIOS name (RFC 1001 §14.1): the first label is
/// 32 letters 'A'..'P', two per byte; scope labels after it are ignored.
/// Returns the name (first 15 bytes, padding trimmed) and its suffix.
fn nb_name(labels: &[&[u8]]) -> Option<(String, u32)> {
    let first = labels.first()?;
    if first.len() != 32 {
        return None;
    }
    let mut raw = [0u8; 16];
    for (b, pair) in raw.iter_mut().zip(first.chunks_exact(2)) {
        let nibble = |c: u8| c.to_ascii_uppercase().checked_sub(b'A').filter(|&n| n < 16);
        *b = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some((nb_text(&raw[..15]), raw[15].into()))
}

/// A raw 15-byte name as text. Names are padded with spaces; the node
/// status wildcard "*" is padded with NULs, so both are trimmed.
fn nb_text(b: &[u8]) -> String {
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .map_or(0, |i| i + 1);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Adds a name; a name already there becomes a group name when this
/// occurrence says so (a question carries no group bit, its record does).
fn push_nb(list: &mut Vec<NetbiosName>, (name, suffix): (String, u32), group: bool) {
    if let Some(n) = list
        .iter_mut()
        .find(|n| n.suffix == suffix && n.name == name)
    {
        n.group |= group;
    } else if list.len() < MAX_LIST {
        list.push(NetbiosName {
            name,
            suffix,
            group,
        });
    }
}

/// A NetBIOS name service message (UDP 137), including node status
/// responses (NBSTAT name tables).
pub fn netbios_ns(msg: &[u8]) -> Option<NetbiosNsObservation> {
    let h = header(msg)?;
    let opcode = match (h.flags & OPCODE) >> 11 {
        0 => NetbiosOpcode::Query,
        5 => NetbiosOpcode::Registration,
        6 => NetbiosOpcode::Release,
        7 => NetbiosOpcode::Wack,
        8 | 9 => NetbiosOpcode::Refresh,
        15 => NetbiosOpcode::MultiHomedRegistration,
        _ => return None,
    };
    let mut o = NetbiosNsObservation {
        opcode: opcode as i32,
        is_response: h.flags & QR != 0,
        transaction_id: h.id.into(),
        broadcast: h.flags & 0x0010 != 0,
        rcode: (h.flags & RCODE).into(),
        ..Default::default()
    };
    let mut c = Cursor { msg, pos: 12 };
    for _ in 0..h.qd {
        let (name, _, _) = c.question()?;
        push_nb(&mut o.names, nb_name(&name)?, false);
    }
    for _ in 0..h.records {
        let r = c.record()?;
        let owner = nb_name(&r.owner);
        match r.rtype {
            T_NB => {
                // Entries of 6 bytes: NB_FLAGS (G is the top bit), IPv4
                // address. A WACK's 2-byte rdata holds no entry.
                let group = r.rdata.len() >= 6 && r.rdata[0] & 0x80 != 0;
                push_nb(&mut o.names, owner?, group);
                if r.rdata.len() % 6 == 0 {
                    for e in r.rdata.chunks_exact(6) {
                        push_unique(&mut o.addresses, e[2..].to_vec().into());
                    }
                }
            }
            T_NBSTAT => {
                push_nb(&mut o.names, owner?, false);
                // NUM_NAMES, then 18-byte entries: 15-byte name, suffix,
                // NAME_FLAGS (G is the top bit); statistics follow.
                if let Some((&count, table)) = r.rdata.split_first() {
                    for e in table.chunks_exact(18).take(count.into()) {
                        push_nb(
                            &mut o.names,
                            (nb_text(&e[..15]), e[15].into()),
                            e[16] & 0x80 != 0,
                        );
                    }
                }
            }
            // Other records (NULL, and the NS/A of a redirect whose owners
            // are domain names) add their owner only when it is a NetBIOS name.
            _ => {
                if let Some(n) = owner {
                    push_nb(&mut o.names, n, false);
                }
            }
        }
    }
    (!o.names.is_empty()).then_some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        s.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
            .collect()
    }

    // Payloads below are real captures; the assertions are what tshark 4.0
    // shows for them.

    /// D-Link DCS-935L camera, iot_sentinel D-LinkCam/Setup-C-9 frame 4: A,
    /// reverse PTR, SRV, TXT, the service enumeration PTR and the type PTR.
    const DLINK_CAM: &str = "000084000000000600000000154443532d3933354c2d42304335353432353542304\
        5056c6f63616c0000018001000000780004c0a800140232300130033136380331393207696e2d6164647204617270610\
        0000c8001000000780002c00c13442d4c696e6b20484e41502053657276696365065f64686e6170045f746370c022002\
        18001000000780008000000000050c00cc05e001080010000119400a4156d61633d42303a43353a35343a32353a35423\
        a304518776c616e305f737369643d4443532d3933354c2d35423045156d6f64656c5f6e756d6265723d4443532d39333\
        54c0f68617264776172655f7665723d41310d6463733d4d6564656c65696e650c76657273696f6e3d303130360c6d796\
        46c696e6b3d7472756509686e663d66616c73650e6d79646c696e6b723d66616c73650d64747970653d3130303b31303\
        1095f7365727669636573075f646e732d7364045f756470c022000c0001000011940002c072c072000c0001000011940\
        002c05e";

    /// iMac answer, nDPI telegram.pcap frame 11: a UTF-8 instance name, SRV,
    /// two TXT records (two instances) and an A record, with compression.
    const IMAC: &str = "0000840000000001000000040f5f636f6d70616e696f6e2d6c696e6b045f746370056c6f63616c00000c\
        00010000119400100d4c756361e280997320694d6163c00cc0320021800100000078001300000000c0050a4c75636173\
        2d694d6163c021c0320010800100001194005816727042413d33393a32413a38383a41433a34313a41420a727056723d\
        3135322e3111727048493d663963343663366464303764117270484e3d33633564633563653935373811727048413d38\
        63613863623733316331630d4c756361e280997320694d61630c5f6465766963652d696e666fc01c0010000100001194\
        001a0e6d6f64656c3d694d616331312c330a6f7378766572733d3137c05400018001000000780004c0a8014d";

    /// iPad probe, telegram.pcap frame 14: an ANY "QU" question, AAAA and A
    /// in the authority section, an OPT record.
    const IPAD_PROBE: &str = "0000000000010000000200010e4761627269656c65732d69506164056c6f63616c0000ff8001c00c\
        001c0001000000780010fe8000000000000004ba091a7817e318c00c00010001000000780004c0a8014b00002905a000\
        00119400120004000e00daaefe572337e48cfe572337e4";

    /// telegram.pcap frame 102: a known answer whose instance label holds a dot.
    const SLEEPPROXY: &str = "0000000000010001000000010c5f736c6565702d70726f7879045f756470056c6f63616c00000c00\
        01c00c000c00010000119100120f35302d33352d31302d37302e312031c00c00002905a00000119400120004000e0031\
        e29ad02d6274c09ad02d6274";

    /// telegram.pcap frame 1196: a type and a subtype question.
    const GOOGLECAST: &str = "0001000000020000000000000b5f676f6f676c6563617374045f746370056c6f63616c00000c0001\
        095f4343333245373533045f737562c00c000c0001";

    /// Node status response, nDPI netbios.pcap frame 55.
    const NBSTAT: &str = "20a88400000000010000000020434b4141414141414141414141414141414141414141\
        4141414141414141414100002100010000000000770447554e4e4152202020202020202020000400564947494c414e54\
        5f47524f55502000840047554e4e4152202020202020202020200400564947494c414e545f47524f5550201e8400001c\
        c410790f00000000000000000000000000000000000000000000000000000000000000000000000000000000";

    /// Name query response, netbios.pcap frame 69.
    const NB_ANSWER: &str = "8486850000000001000000002045484646454f454f4542464343414341434143414341434143414341\
        434141410000200001000493e0000600000a000418";

    /// Group name registration, nDPI gnutella.pcap frame 34.
    const NB_REG: &str = "9c2a2910000100000000000120464845504643454c4548464345504646464143414341434143414341\
        434141410000200001c00c00200001000493e0000680000a00020f";

    /// A name query, nDPI 1kxun.pcap frame 985.
    const NB_DOTS: &str = "f0f9011000010000000000002046444544434f4542464346434542454f45444542464343\
        4f45504643454841410000200001";

    /// Name refresh (wire opcode 8), nDPI zoom.pcap frame 21.
    const NB_REFRESH: &str = "45984010000100000000000120454d4646454445424644434e454a454e454245444341434143414341\
        434141410000200001c00c002000010000038400066000c0a80175";

    /// LLMNR queries: 1kxun.pcap frame 43 (UTF-8 name), gnutella.pcap frame 134.
    const LLMNR_UTF8: &str = "f604000000010000000000000ce5b08fe4bd9be5b088e6a99f0000ff0001";
    const LLMNR_A: &str = "fd5000000001000000000000067075707065740000010001";

    fn samples() -> Vec<Vec<u8>> {
        [
            DLINK_CAM, IMAC, IPAD_PROBE, SLEEPPROXY, GOOGLECAST, NBSTAT, NB_ANSWER, NB_REG,
            NB_REFRESH, NB_DOTS, LLMNR_UTF8, LLMNR_A,
        ]
        .iter()
        .map(|s| hex(s))
        .chain([llmnr_response()])
        .collect()
    }

    /// The "puppet" query answered with A and AAAA, conflict and tentative set.
    fn llmnr_response() -> Vec<u8> {
        let mut b = hex(LLMNR_A);
        b[2..4].copy_from_slice(&[0x85, 0x00]);
        b[6..8].copy_from_slice(&[0, 2]);
        b.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 2, 15]);
        b.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 30, 0, 16, 0xfe, 0x80]);
        b.extend_from_slice(&[0; 13]);
        b.push(1);
        b
    }

    fn mdns_of(s: &str) -> MdnsObservation {
        mdns(&hex(s)).expect("an mDNS message")
    }

    /// The observation and its names written as tshark shows them.
    fn nb_names(s: &str) -> (NetbiosNsObservation, Vec<String>) {
        let o = netbios_ns(&hex(s)).expect("NBNS");
        let group = |g| if g { " group" } else { "" };
        let names = o.names.iter();
        let names = names.map(|n| format!("{}<{:02x}>{}", n.name, n.suffix, group(n.group)));
        let names = names.collect();
        (o, names)
    }

    #[test]
    fn dns_sd_response_gives_instance_host_txt_and_address() {
        let o = mdns_of(DLINK_CAM);
        assert!(o.is_response && o.questions.is_empty());
        let inst = "D-Link HNAP Service._dhnap._tcp.local";
        assert_eq!(o.addresses, vec![vec![192u8, 168, 0, 20]]);
        assert_eq!(o.host_names, ["DCS-935L-B0C554255B0E.local"]);
        assert_eq!(o.service_types, ["_dhnap._tcp.local"]);
        assert_eq!(o.instance_names, [inst]);
        let srv = &o.services[..];
        assert_eq!(srv.len(), 1);
        assert_eq!((srv[0].instance_name.as_str(), srv[0].port), (inst, 80));
        assert_eq!(srv[0].host_name, "DCS-935L-B0C554255B0E.local");
        assert_eq!(o.txt.len(), 1);
        let e = &o.txt[0].entries;
        assert_eq!(e.len(), 10);
        assert_eq!(e["mac"], "B0:C5:54:25:5B:0E");
        assert_eq!(e["model_number"], "DCS-935L");
        assert_eq!(e["wlan0_ssid"], "DCS-935L-5B0E");
        assert_eq!(e["dtype"], "100;101");
    }

    #[test]
    fn utf8_instances_and_txt_keys_are_lower_cased() {
        let o = mdns_of(IMAC);
        let inst = "Luca\u{2019}s iMac._companion-link._tcp.local";
        let info = "Luca\u{2019}s iMac._device-info._tcp.local";
        assert_eq!(o.instance_names, [inst, info]);
        assert_eq!(
            o.service_types,
            ["_companion-link._tcp.local", "_device-info._tcp.local"]
        );
        assert_eq!(o.host_names, ["Lucas-iMac.local"]);
        assert_eq!(o.services[0].port, 49157);
        assert_eq!(o.services[0].host_name, "Lucas-iMac.local");
        assert_eq!(o.addresses, vec![vec![192u8, 168, 1, 77]]);
        assert_eq!(o.txt[0].instance_name, inst);
        assert_eq!(o.txt[0].entries["rpvr"], "152.1");
        assert_eq!(o.txt[0].entries["rpba"], "39:2A:88:AC:41:AB");
        assert_eq!(o.txt[1].entries["model"], "iMac11,3");
        assert_eq!(o.txt[1].entries["osxvers"], "17");
    }

    #[test]
    fn questions_keep_the_unicast_bit_apart_from_the_class() {
        let o = mdns_of(IPAD_PROBE);
        assert!(!o.is_response);
        let q = &o.questions[0];
        assert_eq!(
            (q.name.as_str(), q.qtype, q.qclass),
            ("Gabrieles-iPad.local", 255, 1)
        );
        assert!(q.unicast_response);
        assert_eq!(o.host_names, ["Gabrieles-iPad.local"]);
        let v6 = hex("fe8000000000000004ba091a7817e318");
        assert_eq!(o.addresses, vec![v6, vec![192, 168, 1, 75]]);

        let o = mdns_of(GOOGLECAST);
        assert_eq!(o.questions[1].name, "_CC32E753._sub._googlecast._tcp.local");
        assert!(!o.questions[1].unicast_response);
        assert_eq!(o.service_types, ["_googlecast._tcp.local"]);

        // Dots inside a label are kept.
        let o = mdns_of(SLEEPPROXY);
        assert_eq!(
            o.instance_names,
            ["50-35-10-70.1 1._sleep-proxy._udp.local"]
        );
        assert_eq!(o.service_types, ["_sleep-proxy._udp.local"]);
    }

    #[test]
    fn node_status_response_gives_the_name_table() {
        let (o, names) = nb_names(NBSTAT);
        assert_eq!(o.opcode, NetbiosOpcode::Query as i32);
        assert!(o.is_response && !o.broadcast && o.addresses.is_empty());
        assert_eq!((o.transaction_id, o.rcode), (0x20a8, 0));
        let table = [
            "*<00>",
            "GUNNAR<00>",
            "VIGILANT_GROUP<00> group",
            "GUNNAR<20>",
            "VIGILANT_GROUP<1e> group",
        ];
        assert_eq!(names, table);
    }

    #[test]
    fn nb_answers_registrations_and_refreshes() {
        let (o, names) = nb_names(NB_ANSWER);
        assert_eq!(names, ["GUNNAR<00>"]);
        assert_eq!(o.addresses, vec![vec![10u8, 0, 4, 24]]);

        // The question and its additional record are one group name.
        let (o, names) = nb_names(NB_REG);
        assert_eq!(o.opcode, NetbiosOpcode::Registration as i32);
        assert!(o.broadcast && !o.is_response && o.transaction_id == 0x9c2a);
        assert_eq!(names, ["WORKGROUP<00> group"]);
        assert_eq!(o.addresses, vec![vec![10u8, 0, 2, 15]]);

        let (o, names) = nb_names(NB_REFRESH);
        assert_eq!(o.opcode, NetbiosOpcode::Refresh as i32);
        assert_eq!(names, ["LUCAS-IMAC<00>"]);
        assert_eq!(o.addresses, vec![vec![192u8, 168, 1, 117]]);

        // 1kxun.pcap frame 985: dots inside a NetBIOS name.
        let (_, names) = nb_names(NB_DOTS);
        assert_eq!(names, ["SC.ARRANCAR.ORG<00>"]);
    }

    #[test]
    fn llmnr_queries_and_responses() {
        let o = llmnr(&hex(LLMNR_UTF8)).expect("LLMNR");
        assert!(!o.is_response);
        assert_eq!(o.transaction_id, 0xf604);
        assert_eq!(o.questions[0].name, "小佛專機");
        assert_eq!((o.questions[0].qtype, o.questions[0].qclass), (255, 1));

        let o = llmnr(&llmnr_response()).expect("LLMNR");
        assert!(o.is_response && o.conflict && o.tentative);
        assert_eq!((o.transaction_id, o.rcode), (0xfd50, 0));
        assert_eq!(o.questions[0].name, "puppet");
        assert_eq!(o.addresses.len(), 2);
        assert_eq!(o.addresses[0], vec![10u8, 0, 2, 15]);
    }

    #[test]
    fn every_truncation_is_rejected_without_panic() {
        for (i, msg) in samples().iter().enumerate() {
            for cut in 0..msg.len() {
                let b = &msg[..cut];
                let r = (
                    mdns(b).is_some(),
                    llmnr(b).is_some(),
                    netbios_ns(b).is_some(),
                );
                assert_eq!(r, (false, false, false), "{i} cut {cut} of {}", msg.len());
            }
        }
    }

    #[test]
    fn compression_loops_and_long_names_are_refused() {
        let head = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let ask = |name: &[u8]| [&head[..], name, &[0, 1, 0, 1]].concat();
        assert!(mdns(&ask(&[0xc0, 12])).is_none(), "a pointer to itself");
        assert!(
            mdns(&ask(&[1, b'a', 0xc0, 12])).is_none(),
            "a loop through a label"
        );
        assert!(mdns(&ask(&[0xc0, 14, 0])).is_none(), "a forward pointer");
        let long: Vec<u8> = (0..5)
            .flat_map(|_| [&[63][..], &[b'x'; 63]].concat())
            .collect();
        assert!(
            mdns(&ask(&[&long[..], &[0]].concat())).is_none(),
            "over 255 bytes"
        );
        // A record's rdata holds a chain of backward pointers ending at the
        // root; a second record's owner points at the chain's last link.
        let chain = |links: usize| {
            let mut b = vec![0, 0, 0x84, 0, 0, 0, 0, 2, 0, 0, 0, 0];
            b.extend_from_slice(&[0, 0, 99, 0, 1, 0, 0, 0, 0, 0, 1 + 2 * links as u8, 0]);
            let root = b.len() - 1;
            for k in 0..links {
                b.extend_from_slice(&[0xc0, (root + 2 * k) as u8 - u8::from(k > 0)]);
            }
            let last = (b.len() - 2) as u8;
            b.extend_from_slice(&[0xc0, last, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
            b
        };
        assert!(
            mdns(&chain(MAX_JUMPS - 1)).is_some(),
            "MAX_JUMPS jumps in all"
        );
        assert!(mdns(&chain(MAX_JUMPS)).is_none(), "one jump too many");
    }

    #[test]
    fn a_hostile_message_stays_bounded() {
        // 2000 A records under distinct names, one TXT with 1000 keys.
        let mut b = vec![0, 0, 0x84, 0, 0, 0, 0x07, 0xd1, 0, 0, 0, 0];
        for i in 0..2000u16 {
            let [hi, lo] = i.to_be_bytes();
            b.push(5);
            b.extend_from_slice(format!("h{i:04}").as_bytes());
            b.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 9, 0, 4, 10, 0, hi, lo]);
        }
        let keys: Vec<u8> = (0..1000)
            .flat_map(|i| [&[5][..], format!("k{i:04}").as_bytes()].concat())
            .collect();
        b.extend_from_slice(&[0, 0, 16, 0, 1, 0, 0, 0, 9]);
        b.extend_from_slice(&(keys.len() as u16).to_be_bytes());
        b.extend_from_slice(&keys);
        let o = mdns(&b).expect("well framed");
        assert_eq!(
            (o.addresses.len(), o.host_names.len()),
            (MAX_LIST, MAX_LIST)
        );
        assert_eq!(o.txt[0].entries.len(), MAX_LIST);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = (mdns(&b), llmnr(&b), netbios_ns(&b));
        }
    }
}
