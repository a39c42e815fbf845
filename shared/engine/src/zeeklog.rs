//! Zeek's log formats for conn.log and dns.log: tab-separated values with
//! Zeek's header lines, and Zeek's JSON lines. Field names, order, types and
//! text forms are Zeek's, so zeek-cut, RITA, zat and the SIEMs read the files
//! unchanged.
//!
//! The writers take the records of `heimdall.sensor.v1` (the bus contract),
//! so any service holding records can write Zeek logs.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use heimdall_proto::sensor::v1::{ConnRecord, ConnState, DnsRecord, Transport};

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
#[derive(Debug)]
enum Val<'a> {
    Unset,
    Time(i64),
    Interval(i64),
    Str(&'a str),
    Addr(IpAddr),
    Count(u64),
    Bool(bool),
    /// A set or vector of strings (sets in Zeek's TSV are comma-joined).
    Strs(&'a [String]),
    Intervals(&'a [i64]),
}

/// Writes one Zeek log (conn or dns) in the chosen format.
#[derive(Debug)]
pub struct LogWriter<W: Write> {
    out: W,
    format: Format,
    fields: &'static [(&'static str, &'static str)],
    path: &'static str,
    line: String,
    rows: u64,
}

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
            line: String::with_capacity(512),
            rows: 0,
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn write_conn(&mut self, r: &ConnRecord) -> io::Result<()> {
        debug_assert_eq!(self.path, "conn");
        let opt_count = |v: Option<u64>| v.map_or(Val::Unset, Val::Count);
        let head = id_vals(
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

    pub fn write_dns(&mut self, r: &DnsRecord) -> io::Result<()> {
        debug_assert_eq!(self.path, "dns");
        let opt_count = |v: Option<u32>| v.map_or(Val::Unset, |x| Val::Count(x as u64));
        let head = id_vals(
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

    fn row(&mut self, head: &[Val<'_>], rest: &[Val<'_>]) -> io::Result<()> {
        let vals = head.iter().chain(rest.iter());
        let line = &mut self.line;
        line.clear();
        match self.format {
            Format::Tsv => {
                for (i, v) in vals.enumerate() {
                    if i > 0 {
                        line.push('\t');
                    }
                    match v {
                        Val::Unset => line.push('-'),
                        Val::Time(us) | Val::Interval(us) => fmt_secs(line, *us),
                        Val::Str(s) => tsv_str(line, s, false),
                        Val::Addr(a) => push_addr(line, a),
                        Val::Count(n) => push_u64(line, *n),
                        Val::Bool(b) => line.push(if *b { 'T' } else { 'F' }),
                        Val::Strs(items) => {
                            for (j, s) in items.iter().enumerate() {
                                if j > 0 {
                                    line.push(',');
                                }
                                tsv_str(line, s, true);
                            }
                        }
                        Val::Intervals(items) => {
                            for (j, us) in items.iter().enumerate() {
                                if j > 0 {
                                    line.push(',');
                                }
                                fmt_secs(line, *us);
                            }
                        }
                    }
                }
            }
            Format::Json => {
                line.push('{');
                let mut first = true;
                for (v, (name, _)) in vals.zip(self.fields) {
                    if matches!(v, Val::Unset) {
                        continue;
                    }
                    if !first {
                        line.push(',');
                    }
                    first = false;
                    line.push('"');
                    line.push_str(name);
                    line.push_str("\":");
                    match v {
                        Val::Unset => {}
                        Val::Time(us) | Val::Interval(us) => fmt_secs(line, *us),
                        Val::Str(s) => json_str(line, s),
                        Val::Addr(a) => {
                            line.push('"');
                            push_addr(line, a);
                            line.push('"');
                        }
                        Val::Count(n) => push_u64(line, *n),
                        Val::Bool(b) => line.push_str(if *b { "true" } else { "false" }),
                        Val::Strs(items) => {
                            line.push('[');
                            for (j, s) in items.iter().enumerate() {
                                if j > 0 {
                                    line.push(',');
                                }
                                json_str(line, s);
                            }
                            line.push(']');
                        }
                        Val::Intervals(items) => {
                            line.push('[');
                            for (j, us) in items.iter().enumerate() {
                                if j > 0 {
                                    line.push(',');
                                }
                                fmt_secs(line, *us);
                            }
                            line.push(']');
                        }
                    }
                }
                line.push('}');
            }
        }
        line.push('\n');
        self.rows += 1;
        self.out.write_all(line.as_bytes())
    }

    /// Writes the `#close` line (TSV) and flushes; returns the inner writer.
    pub fn finish(mut self, close_ts_s: i64) -> io::Result<W> {
        if self.format == Format::Tsv {
            writeln!(self.out, "#close\t{}", zeek_date(close_ts_s))?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Seconds with six decimals, as Zeek prints times and intervals.
fn fmt_secs(out: &mut String, us: i64) {
    if us < 0 {
        out.push('-');
    }
    let a = us.unsigned_abs();
    push_u64(out, a / 1_000_000);
    out.push('.');
    let frac = a % 1_000_000;
    let mut digits = [b'0'; 6];
    let mut f = frac;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    out.extend(digits.iter().map(|&d| d as char));
}

/// Decimal digits without going through `fmt`.
fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(buf[i..].iter().map(|&d| d as char));
}

fn push_addr(out: &mut String, a: &IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u64(out, *o as u64);
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Zeek's TSV escaping: bytes outside printable ASCII, the separator, and
/// (inside sets) the set separator become \xNN; a value that would read as
/// the unset or empty marker is escaped too.
fn tsv_str(out: &mut String, s: &str, in_set: bool) {
    use std::fmt::Write as _;
    if s.is_empty() {
        if !in_set {
            out.push_str("(empty)");
        }
        return;
    }
    if s == "-" {
        out.push_str("\\x2d");
        return;
    }
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && !(in_set && b == b','))
    {
        out.push_str(s);
        return;
    }
    for ch in s.chars() {
        match ch {
            '\t' => out.push_str("\\x09"),
            ',' if in_set => out.push_str("\\x2c"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn json_str(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
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

fn opt_str(v: &Option<String>) -> Val<'_> {
    v.as_deref().map_or(Val::Unset, Val::Str)
}

/// The columns every Zeek log of a connection starts with.
fn id_vals<'a>(
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
        let mut s = String::new();
        tsv_str(&mut s, "a\tb\x01,c", true);
        assert_eq!(s, "a\\x09b\\x01\\x2cc");
        s.clear();
        tsv_str(&mut s, "", false);
        assert_eq!(s, "(empty)");
        s.clear();
        fmt_secs(&mut s, 120_000_000);
        assert_eq!(s, "120.000000");
        assert_eq!(zeek_date(1_700_000_000), "2023-11-14-22-13-20");
    }
}
