//! Zeek's log formats for conn.log and dns.log: tab-separated values with
//! Zeek's header lines, and Zeek's JSON lines. Field names, order, types and
//! text forms are Zeek's, so zeek-cut, RITA, zat and the SIEMs read the files
//! unchanged.
//!
//! The writers take the engine's rows (`write_conn_row`, `write_dns_row`:
//! nothing is allocated per row) and the records of `heimdall.sensor.v1`
//! (`write_conn`, `write_dns`: the bus contract), so any service holding
//! records can write Zeek logs; both give the same bytes for the same row.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use heimdall_proto::sensor::v1::{ConnRecord, ConnState, DnsRecord, Transport};

use crate::dns::{self, Info};
use crate::ids::{COMMUNITY_ID_LEN, UID_MAX, community_id_text, uid_text};
use crate::ip::Addr;
use crate::rows::{ConnRow, DnsRow};

/// TSV (Zeek's default ASCII writer) or JSON lines (`LogAscii::use_json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tsv,
    Json,
}

const CONN_FIELDS: &[(&str, &str)] = &[
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "enum"),
    ("service", "string"),
    ("duration", "interval"),
    ("orig_bytes", "count"),
    ("resp_bytes", "count"),
    ("conn_state", "string"),
    ("local_orig", "bool"),
    ("local_resp", "bool"),
    ("missed_bytes", "count"),
    ("history", "string"),
    ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"),
    ("resp_pkts", "count"),
    ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"),
    ("ip_proto", "count"),
    ("community_id", "string"),
];

const DNS_FIELDS: &[(&str, &str)] = &[
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "enum"),
    ("trans_id", "count"),
    ("rtt", "interval"),
    ("query", "string"),
    ("qclass", "count"),
    ("qclass_name", "string"),
    ("qtype", "count"),
    ("qtype_name", "string"),
    ("rcode", "count"),
    ("rcode_name", "string"),
    ("AA", "bool"),
    ("TC", "bool"),
    ("RD", "bool"),
    ("RA", "bool"),
    ("Z", "count"),
    ("answers", "vector[string]"),
    ("TTLs", "vector[interval]"),
    ("rejected", "bool"),
    ("opcode", "count"),
    ("opcode_name", "string"),
];

/// One value of a log row, before formatting.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Unset,
    Time(i64),
    Interval(i64),
    Str(&'a str),
    Name(dns::Name),
    Addr(IpAddr),
    EngineAddr(&'a Addr),
    Count(u64),
    Bool(bool),
    /// A connection uid, rendered as it is written.
    Uid(u128),
    /// A set or vector of strings (sets in Zeek's TSV are comma-joined).
    Strs(&'a [String]),
    Names(&'a [&'static str]),
    Uids(&'a [u128]),
    Intervals(&'a [i64]),
    /// TTLs in whole seconds.
    Seconds(&'a [u32]),
    Answers(&'a Info),
    Community(&'a ConnRow),
}

/// Writes one Zeek log (conn or dns) in the chosen format. Rows are
/// formatted into one buffer that goes to `out` in large writes.
#[derive(Debug)]
pub struct LogWriter<W: Write> {
    out: W,
    format: Format,
    fields: &'static [(&'static str, &'static str)],
    path: &'static str,
    buf: Vec<u8>,
    rows: u64,
}

/// Bytes gathered before they go to the writer.
const FLUSH_AT: usize = 1 << 17;

/// The address a record carries as bytes (4 or 16 of them).
pub fn addr_from_bytes(b: &[u8]) -> IpAddr {
    match b.len() {
        4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

pub fn proto_name(p: i32) -> &'static str {
    match Transport::try_from(p) {
        Ok(Transport::Tcp) => "tcp",
        Ok(Transport::Udp) => "udp",
        Ok(Transport::Icmp) => "icmp",
        _ => "unknown_transport",
    }
}

pub fn conn_state_name(s: i32) -> &'static str {
    match ConnState::try_from(s) {
        Ok(ConnState::S0) => "S0",
        Ok(ConnState::S1) => "S1",
        Ok(ConnState::Sf) => "SF",
        Ok(ConnState::Rej) => "REJ",
        Ok(ConnState::S2) => "S2",
        Ok(ConnState::S3) => "S3",
        Ok(ConnState::Rsto) => "RSTO",
        Ok(ConnState::Rstr) => "RSTR",
        Ok(ConnState::Rstos0) => "RSTOS0",
        Ok(ConnState::Rstrh) => "RSTRH",
        Ok(ConnState::Sh) => "SH",
        Ok(ConnState::Shr) => "SHR",
        _ => "OTH",
    }
}

impl<W: Write> LogWriter<W> {
    /// A conn.log writer; `open_ts_s` is the time shown in the `#open` line.
    pub fn conn(out: W, format: Format, open_ts_s: i64) -> io::Result<Self> {
        Self::new(out, format, CONN_FIELDS, "conn", open_ts_s)
    }

    /// A dns.log writer.
    pub fn dns(out: W, format: Format, open_ts_s: i64) -> io::Result<Self> {
        Self::new(out, format, DNS_FIELDS, "dns", open_ts_s)
    }

    fn new(
        mut out: W,
        format: Format,
        fields: &'static [(&'static str, &'static str)],
        path: &'static str,
        open_ts_s: i64,
    ) -> io::Result<Self> {
        if format == Format::Tsv {
            let names: Vec<&str> = fields.iter().map(|f| f.0).collect();
            let types: Vec<&str> = fields.iter().map(|f| f.1).collect();
            write!(
                out,
                "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\t{path}\n#open\t{}\n#fields\t{}\n#types\t{}\n",
                zeek_date(open_ts_s),
                names.join("\t"),
                types.join("\t")
            )?;
        }
        Ok(LogWriter {
            out,
            format,
            fields,
            path,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            rows: 0,
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// A connection record from the bus.
    pub fn write_conn(&mut self, r: &ConnRecord) -> io::Result<()> {
        debug_assert_eq!(self.path, "conn");
        let opt_count = |v: Option<u64>| v.map_or(Val::Unset, Val::Count);
        let head = record_ids(
            r.ts_us,
            &r.uid,
            &r.id_orig_h,
            r.id_orig_p,
            &r.id_resp_h,
            r.id_resp_p,
            r.proto,
        );
        let vals = [
            if r.service.is_empty() {
                Val::Unset
            } else {
                Val::Strs(&r.service)
            },
            r.duration_us.map_or(Val::Unset, Val::Interval),
            opt_count(r.orig_bytes),
            opt_count(r.resp_bytes),
            Val::Str(conn_state_name(r.conn_state)),
            r.local_orig.map_or(Val::Unset, Val::Bool),
            r.local_resp.map_or(Val::Unset, Val::Bool),
            Val::Count(r.missed_bytes),
            r.history.as_deref().map_or(Val::Unset, Val::Str),
            opt_count(r.orig_pkts),
            opt_count(r.orig_ip_bytes),
            opt_count(r.resp_pkts),
            opt_count(r.resp_ip_bytes),
            if r.tunnel_parents.is_empty() {
                Val::Unset
            } else {
                Val::Strs(&r.tunnel_parents)
            },
            r.ip_proto.map_or(Val::Unset, |p| Val::Count(p as u64)),
            if r.community_id.is_empty() {
                Val::Unset
            } else {
                Val::Str(&r.community_id)
            },
        ];
        self.row(&head, &vals)
    }

    /// A connection row from the engine.
    pub fn write_conn_row(&mut self, r: &ConnRow) -> io::Result<()> {
        debug_assert_eq!(self.path, "conn");
        let services = r.services.as_slice();
        let parents = r.tunnel_parents.as_slice();
        let head = row_ids(
            r.ts_us,
            r.uid,
            &r.orig,
            r.orig_p,
            &r.resp,
            r.resp_p,
            r.transport,
        );
        let vals = [
            if services.is_empty() {
                Val::Unset
            } else {
                Val::Names(services)
            },
            r.duration_us.map_or(Val::Unset, Val::Interval),
            r.orig_bytes.map_or(Val::Unset, Val::Count),
            r.resp_bytes.map_or(Val::Unset, Val::Count),
            Val::Str(conn_state_name(r.conn_state as i32)),
            r.local_orig.map_or(Val::Unset, Val::Bool),
            r.local_resp.map_or(Val::Unset, Val::Bool),
            Val::Count(r.missed_bytes),
            if r.history.is_empty() {
                Val::Unset
            } else {
                Val::Str(r.history.as_str())
            },
            Val::Count(r.orig_pkts),
            Val::Count(r.orig_ip_bytes),
            Val::Count(r.resp_pkts),
            Val::Count(r.resp_ip_bytes),
            if parents.is_empty() {
                Val::Unset
            } else {
                Val::Uids(parents)
            },
            Val::Count(r.ip_proto as u64),
            Val::Community(r),
        ];
        self.row(&head, &vals)
    }

    /// A DNS record from the bus.
    pub fn write_dns(&mut self, r: &DnsRecord) -> io::Result<()> {
        debug_assert_eq!(self.path, "dns");
        let opt_count = |v: Option<u32>| v.map_or(Val::Unset, |x| Val::Count(x as u64));
        let head = record_ids(
            r.ts_us,
            &r.uid,
            &r.id_orig_h,
            r.id_orig_p,
            &r.id_resp_h,
            r.id_resp_p,
            r.proto,
        );
        let vals = [
            opt_count(r.trans_id),
            r.rtt_us.map_or(Val::Unset, Val::Interval),
            opt_str(&r.query),
            opt_count(r.qclass),
            opt_str(&r.qclass_name),
            opt_count(r.qtype),
            opt_str(&r.qtype_name),
            opt_count(r.rcode),
            opt_str(&r.rcode_name),
            Val::Bool(r.aa),
            Val::Bool(r.tc),
            Val::Bool(r.rd),
            Val::Bool(r.ra),
            Val::Count(r.z as u64),
            if r.answers.is_empty() {
                Val::Unset
            } else {
                Val::Strs(&r.answers)
            },
            if r.ttls_us.is_empty() {
                Val::Unset
            } else {
                Val::Intervals(&r.ttls_us)
            },
            Val::Bool(r.rejected),
            opt_count(r.opcode),
            opt_str(&r.opcode_name),
        ];
        self.row(&head, &vals)
    }

    /// A DNS row from the engine.
    pub fn write_dns_row(&mut self, r: &DnsRow) -> io::Result<()> {
        debug_assert_eq!(self.path, "dns");
        let i = &r.info;
        let opt_count = |v: Option<u64>| v.map_or(Val::Unset, Val::Count);
        let head = row_ids(
            r.ts_us(),
            r.uid,
            &r.orig,
            r.orig_p,
            &r.resp,
            r.resp_p,
            r.transport,
        );
        let vals = [
            Val::Count(i.trans_id as u64),
            i.rtt_ns
                .map_or(Val::Unset, |n| Val::Interval(n.div_euclid(1000))),
            i.query().map_or(Val::Unset, Val::Str),
            opt_count(i.qclass.map(u64::from)),
            i.qclass
                .map_or(Val::Unset, |c| Val::Name(dns::qclass_name(c))),
            opt_count(i.qtype.map(u64::from)),
            i.qtype_name().map_or(Val::Unset, Val::Name),
            opt_count(i.rcode.map(u64::from)),
            i.rcode
                .map_or(Val::Unset, |c| Val::Name(dns::rcode_name(c))),
            Val::Bool(i.aa),
            Val::Bool(i.tc),
            Val::Bool(i.rd),
            Val::Bool(i.ra),
            Val::Count(i.z as u64),
            if i.answers().len() == 0 {
                Val::Unset
            } else {
                Val::Answers(i)
            },
            if i.ttls.is_empty() {
                Val::Unset
            } else {
                Val::Seconds(&i.ttls)
            },
            Val::Bool(i.rejected),
            Val::Count(i.opcode as u64),
            Val::Name(dns::opcode_name(i.opcode, i.netbios)),
        ];
        self.row(&head, &vals)
    }

    fn row(&mut self, head: &[Val<'_>], rest: &[Val<'_>]) -> io::Result<()> {
        let vals = head.iter().chain(rest);
        let line = &mut self.buf;
        match self.format {
            Format::Tsv => {
                for (i, v) in vals.enumerate() {
                    if i > 0 {
                        line.push(b'\t');
                    }
                    tsv_val(line, v);
                }
            }
            Format::Json => {
                line.push(b'{');
                let mut first = true;
                for (v, (name, _)) in vals.zip(self.fields) {
                    if matches!(v, Val::Unset) {
                        continue;
                    }
                    if !first {
                        line.push(b',');
                    }
                    first = false;
                    line.push(b'"');
                    line.extend_from_slice(name.as_bytes());
                    line.extend_from_slice(b"\":");
                    json_val(line, v);
                }
                line.push(b'}');
            }
        }
        line.push(b'\n');
        self.rows += 1;
        if self.buf.len() >= FLUSH_AT {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes what is buffered, the `#close` line (TSV) and flushes;
    /// returns the inner writer.
    pub fn finish(mut self, close_ts_s: i64) -> io::Result<W> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        if self.format == Format::Tsv {
            writeln!(self.out, "#close\t{}", zeek_date(close_ts_s))?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Items of a set or vector value, each handed to `item` with its index.
fn each_item(v: &Val<'_>, mut item: impl FnMut(usize, Val<'_>)) {
    match *v {
        Val::Strs(items) => items
            .iter()
            .enumerate()
            .for_each(|(j, s)| item(j, Val::Str(s))),
        Val::Names(items) => items
            .iter()
            .enumerate()
            .for_each(|(j, s)| item(j, Val::Str(s))),
        Val::Uids(items) => items
            .iter()
            .enumerate()
            .for_each(|(j, u)| item(j, Val::Uid(*u))),
        Val::Intervals(items) => items
            .iter()
            .enumerate()
            .for_each(|(j, us)| item(j, Val::Interval(*us))),
        Val::Seconds(items) => items
            .iter()
            .enumerate()
            .for_each(|(j, s)| item(j, Val::Interval(*s as i64 * 1_000_000))),
        Val::Answers(info) => info
            .answers()
            .enumerate()
            .for_each(|(j, s)| item(j, Val::Str(s))),
        _ => {}
    }
}

fn is_list(v: &Val<'_>) -> bool {
    matches!(
        v,
        Val::Strs(_)
            | Val::Names(_)
            | Val::Uids(_)
            | Val::Intervals(_)
            | Val::Seconds(_)
            | Val::Answers(_)
    )
}

/// One value in Zeek's TSV form; `in_set` for an item of a set or vector.
fn tsv_scalar(line: &mut Vec<u8>, v: &Val<'_>, in_set: bool) {
    match *v {
        Val::Unset => line.push(b'-'),
        Val::Time(us) | Val::Interval(us) => fmt_secs(line, us),
        Val::Str(s) => tsv_str(line, s, in_set),
        Val::Name(n) => push_name(line, n),
        Val::Addr(a) => push_addr(line, &a),
        Val::EngineAddr(a) => push_engine_addr(line, a),
        Val::Count(n) => push_u64(line, n),
        Val::Bool(b) => line.push(if b { b'T' } else { b'F' }),
        Val::Uid(u) => push_uid(line, u),
        Val::Community(r) => push_community_id(line, r),
        _ => {}
    }
}

fn tsv_val(line: &mut Vec<u8>, v: &Val<'_>) {
    if is_list(v) {
        each_item(v, |j, item| {
            if j > 0 {
                line.push(b',');
            }
            tsv_scalar(line, &item, true);
        });
    } else {
        tsv_scalar(line, v, false);
    }
}

fn json_scalar(line: &mut Vec<u8>, v: &Val<'_>) {
    match *v {
        Val::Unset => line.extend_from_slice(b"null"),
        Val::Time(us) | Val::Interval(us) => fmt_secs(line, us),
        Val::Str(s) => json_str(line, s),
        Val::Count(n) => push_u64(line, n),
        Val::Bool(b) => line.extend_from_slice(if b { b"true" } else { b"false" }),
        // The rest are plain ASCII without quotes or escapes.
        _ => {
            line.push(b'"');
            tsv_scalar(line, v, false);
            line.push(b'"');
        }
    }
}

fn json_val(line: &mut Vec<u8>, v: &Val<'_>) {
    if is_list(v) {
        line.push(b'[');
        each_item(v, |j, item| {
            if j > 0 {
                line.push(b',');
            }
            json_scalar(line, &item);
        });
        line.push(b']');
    } else {
        json_scalar(line, v);
    }
}

/// Seconds with six decimals, as Zeek prints times and intervals.
fn fmt_secs(out: &mut Vec<u8>, us: i64) {
    if us < 0 {
        out.push(b'-');
    }
    let a = us.unsigned_abs();
    push_u64(out, a / 1_000_000);
    let mut frac = a % 1_000_000;
    let mut digits = [b'.', b'0', b'0', b'0', b'0', b'0', b'0'];
    for d in digits[1..].iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&digits);
}

/// Decimal digits of `n` in `buf`, without going through `fmt`.
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    out.extend_from_slice(decimal(n, &mut [0u8; 20]));
}

fn push_v4(out: &mut Vec<u8>, o: &[u8]) {
    for (i, b) in o.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_u64(out, *b as u64);
    }
}

fn push_addr(out: &mut Vec<u8>, a: &IpAddr) {
    match a {
        IpAddr::V4(v4) => push_v4(out, &v4.octets()),
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn push_engine_addr(out: &mut Vec<u8>, a: &Addr) {
    if a.is_v4() {
        push_v4(out, a.octets());
    } else {
        push_addr(out, &a.ip());
    }
}

fn push_uid(out: &mut Vec<u8>, uid: u128) {
    let mut buf = [0u8; UID_MAX];
    out.extend_from_slice(uid_text(b'C', uid, &mut buf));
}

fn push_community_id(out: &mut Vec<u8>, r: &ConnRow) {
    let mut buf = [0u8; COMMUNITY_ID_LEN];
    community_id_text(r.ip_proto, &r.orig, r.orig_p, &r.resp, r.resp_p, &mut buf);
    out.extend_from_slice(&buf);
}

fn push_name(out: &mut Vec<u8>, n: dns::Name) {
    match n {
        dns::Name::Static(s) => out.extend_from_slice(s.as_bytes()),
        dns::Name::Numbered(prefix, k) => {
            out.extend_from_slice(prefix.as_bytes());
            push_u64(out, k as u64);
        }
    }
}

/// Zeek's TSV escaping: bytes outside printable ASCII, the separator, and
/// (inside sets) the set separator become \xNN; a value that would read as
/// the unset or empty marker is escaped too.
fn tsv_str(out: &mut Vec<u8>, s: &str, in_set: bool) {
    if s.is_empty() {
        if !in_set {
            out.extend_from_slice(b"(empty)");
        }
        return;
    }
    if s == "-" {
        out.extend_from_slice(b"\\x2d");
        return;
    }
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && !(in_set && b == b','))
    {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for ch in s.chars() {
        match ch {
            '\t' => out.extend_from_slice(b"\\x09"),
            ',' if in_set => out.extend_from_slice(b"\\x2c"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    for ch in s.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Zeek's `#open`/`#close` stamp: YYYY-MM-DD-HH-MM-SS in UTC.
pub fn zeek_date(ts_s: i64) -> String {
    let days = ts_s.div_euclid(86_400);
    let secs = ts_s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}-{:02}-{:02}-{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The columns every Zeek log of a connection starts with, from a record.
fn record_ids<'a>(
    ts_us: i64,
    uid: &'a str,
    oh: &[u8],
    op: u32,
    rh: &[u8],
    rp: u32,
    proto: i32,
) -> [Val<'a>; 7] {
    [
        Val::Time(ts_us),
        Val::Str(uid),
        Val::Addr(addr_from_bytes(oh)),
        Val::Count(op as u64),
        Val::Addr(addr_from_bytes(rh)),
        Val::Count(rp as u64),
        Val::Str(proto_name(proto)),
    ]
}

/// The same columns from an engine row.
fn row_ids<'a>(
    ts_us: i64,
    uid: u128,
    orig: &'a Addr,
    op: u16,
    resp: &'a Addr,
    rp: u16,
    transport: Transport,
) -> [Val<'a>; 7] {
    [
        Val::Time(ts_us),
        Val::Uid(uid),
        Val::EngineAddr(orig),
        Val::Count(op as u64),
        Val::EngineAddr(resp),
        Val::Count(rp as u64),
        Val::Str(proto_name(transport as i32)),
    ]
}

fn opt_str(v: &Option<String>) -> Val<'_> {
    v.as_deref().map_or(Val::Unset, Val::Str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnRecord {
        ConnRecord {
            ts_us: 1_258_531_221_486_539,
            uid: "CHhAvVGS1DHFjwGM9".into(),
            id_orig_h: vec![141, 142, 220, 202].into(),
            id_orig_p: 5353,
            id_resp_h: vec![224, 0, 0, 251].into(),
            id_resp_p: 5353,
            proto: Transport::Udp as i32,
            service: vec!["dns".into()],
            conn_state: ConnState::S0 as i32,
            local_orig: Some(false),
            local_resp: Some(true),
            history: Some("D".into()),
            orig_pkts: Some(1),
            orig_ip_bytes: Some(73),
            resp_pkts: Some(0),
            resp_ip_bytes: Some(0),
            ip_proto: Some(17),
            ..Default::default()
        }
    }

    #[test]
    fn tsv_row_and_header_read_like_zeek() {
        let mut w = LogWriter::conn(Vec::new(), Format::Tsv, 0).expect("header");
        w.write_conn(&conn()).expect("row");
        let text = String::from_utf8(w.finish(0).expect("close")).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#separator \\x09");
        assert_eq!(lines[5], "#open\t1970-01-01-00-00-00");
        assert!(lines[6].starts_with("#fields\tts\tuid\tid.orig_h\tid.orig_p"));
        assert_eq!(
            lines[8],
            "1258531221.486539\tCHhAvVGS1DHFjwGM9\t141.142.220.202\t5353\t224.0.0.251\t5353\tudp\tdns\t-\t-\t-\tS0\tF\tT\t0\tD\t1\t73\t0\t0\t-\t17\t-"
        );
        assert_eq!(lines[9], "#close\t1970-01-01-00-00-00");
    }

    #[test]
    fn json_row_omits_unset_fields() {
        let mut w = LogWriter::conn(Vec::new(), Format::Json, 0).expect("header");
        w.write_conn(&conn()).expect("row");
        let text = String::from_utf8(w.finish(0).expect("close")).expect("utf8");
        assert_eq!(
            text.trim_end(),
            r#"{"ts":1258531221.486539,"uid":"CHhAvVGS1DHFjwGM9","id.orig_h":"141.142.220.202","id.orig_p":5353,"id.resp_h":"224.0.0.251","id.resp_p":5353,"proto":"udp","service":["dns"],"conn_state":"S0","local_orig":false,"local_resp":true,"missed_bytes":0,"history":"D","orig_pkts":1,"orig_ip_bytes":73,"resp_pkts":0,"resp_ip_bytes":0,"ip_proto":17}"#
        );
    }

    #[test]
    fn escapes() {
        let mut s = Vec::new();
        tsv_str(&mut s, "a\tb\x01,c", true);
        assert_eq!(s, b"a\\x09b\\x01\\x2cc");
        s.clear();
        tsv_str(&mut s, "", false);
        assert_eq!(s, b"(empty)");
        s.clear();
        fmt_secs(&mut s, 120_000_000);
        assert_eq!(s, b"120.000000");
        s.clear();
        fmt_secs(&mut s, -1_500_000);
        assert_eq!(s, b"-1.500000");
        assert_eq!(zeek_date(1_700_000_000), "2023-11-14-22-13-20");
    }
}
