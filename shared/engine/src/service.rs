//! Service identification by content. A name enters a connection's
//! `service` only when the protocol is actually spoken (a request line, a
//! handshake, a parsed message), with the port deciding only which
//! analyzers are tried first, as in Zeek: the names are Zeek's (`ssl`,
//! `ftp-data`, `ldap_tcp`, ...), in the order the protocols were confirmed.
//!
//! Each connection keeps at most [`PREFIX`] bytes of the start of each
//! direction's stream; detection ends when every candidate has decided.

use crate::rows::Services;

/// Bytes of each direction's stream kept for detection.
pub const PREFIX: usize = 4096;

/// Zeek's likely server ports (default scripts), for direction decisions.
pub fn likely_server_port(udp: bool, port: u16) -> bool {
    if udp {
        matches!(
            port,
            53 | 67
                | 69
                | 88
                | 123
                | 137
                | 161
                | 162
                | 389
                | 443
                | 500
                | 514
                | 784
                | 853
                | 1812
                | 2123
                | 2152
                | 3389
                | 3544
                | 4789
                | 5060
                | 5072
                | 5353
                | 5355
                | 6081
                | 20000
                | 47808
        )
    } else {
        matches!(
            port,
            21 | 22
                | 23
                | 25
                | 43
                | 80
                | 81
                | 88
                | 110
                | 111
                | 135
                | 139
                | 143
                | 389
                | 443
                | 445
                | 502
                | 563
                | 585
                | 587
                | 614
                | 631
                | 636
                | 989
                | 990
                | 992
                | 993
                | 995
                | 1080
                | 1433
                | 1434
                | 1883
                | 2811
                | 3128
                | 3268
                | 3306
                | 3389
                | 5222
                | 5223
                | 5269
                | 5432
                | 6379
                | 6666
                | 6667
                | 6668
                | 6669
                | 8000
                | 8080
                | 8888
                | 20000
        )
    }
}

/// A data connection an FTP control channel announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Responder address (v4 bytes or v6), responder port.
    pub resp: std::net::IpAddr,
    pub port: u16,
    /// The originator address when known.
    pub orig: Option<std::net::IpAddr>,
}

/// Per-connection detection state.
#[derive(Debug, Default)]
pub struct Detector {
    names: Services,
    orig: Vec<u8>,
    resp: Vec<u8>,
    /// Candidates that can still confirm.
    done: bool,
    udp_seen: u8,
    ftp_checked_to: usize,
    ftp_bad: bool,
    ftp_confirmed: bool,
    /// Inside a multi-line FTP reply: its code.
    ftp_multi: Option<[u8; 3]>,
    /// Stream deliveries looked at.
    deliveries: u16,
    /// An analysis limit was hit (history `X`); taken by the caller.
    limit_hit: bool,
    limit_reported: bool,
    ssl_after_plain: bool,
    rdp_orig: bool,
    quic_orig: bool,
    ldap_extra_checked: bool,
}

fn has(v: &Services, n: &str) -> bool {
    v.contains(n)
}

const HTTP_PORTS: &[u16] = &[80, 81, 631, 1080, 3128, 8000, 8080, 8888];
const METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"TRACE",
    b"CONNECT",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"SEARCH",
    b"SUBSCRIBE",
    b"NOTIFY",
    b"M-SEARCH",
    b"REPORT",
    b"BPROPFIND",
];

impl Detector {
    /// Names confirmed so far, in order.
    pub fn names(&self) -> Services {
        self.names
    }

    pub fn add(&mut self, name: &'static str) {
        self.names.add(name);
    }

    /// Puts a name first (a scheduled ftp-data connection).
    pub fn add_first(&mut self, name: &'static str) {
        self.names.add_first(name);
    }

    pub fn remove(&mut self, name: &'static str) {
        self.names.remove(name);
    }

    /// Starts over for another connection, keeping the buffers.
    pub fn reset(&mut self) {
        let mut orig = std::mem::take(&mut self.orig);
        let mut resp = std::mem::take(&mut self.resp);
        orig.clear();
        resp.clear();
        *self = Detector {
            orig,
            resp,
            ..Default::default()
        };
    }

    pub fn finished(&self) -> bool {
        self.done
    }

    /// True once, when an analyzer hit a limit (an FTP command longer than
    /// Zeek's FTP::max_command_length of 100 bytes).
    pub fn take_limit(&mut self) -> bool {
        if self.limit_hit && !self.limit_reported {
            self.limit_reported = true;
            return true;
        }
        false
    }

    /// TCP stream content, in order, from one side. `partial` is true for a
    /// connection whose start (SYN or SYN-ACK) was not seen: most analyzers
    /// then stay silent, as Zeek's do. Announced FTP data connections are
    /// pushed to `expect`.
    pub fn tcp(
        &mut self,
        from_orig: bool,
        data: &[u8],
        resp_p: u16,
        partial: bool,
        expect: &mut Vec<Expected>,
    ) {
        if self.done || data.is_empty() {
            return;
        }
        if partial {
            // A connection whose start was not seen: no TCP analyzer speaks up.
            self.finish();
            return;
        }
        let buf = if from_orig {
            &mut self.orig
        } else {
            &mut self.resp
        };
        let room = PREFIX.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..room.min(data.len())]);
        self.deliveries = self.deliveries.saturating_add(1);
        self.detect_tcp(resp_p, expect);
        // Keep looking only while a protocol is half-way (SSH banners without
        // the key exchange yet, a plain protocol that may turn to TLS) or
        // nothing matched and the start of the streams is still short.
        let waiting = (self.orig.starts_with(b"SSH-") && !has(&self.names, "ssh"))
            || (!has(&self.names, "ssl")
                && ["ftp", "smtp", "pop3", "imap", "irc", "mysql", "ldap_tcp"]
                    .iter()
                    .any(|p| has(&self.names, p)));
        let short = self.orig.len() < 1024 || self.resp.len() < 1024;
        let searched = !self.names.is_empty() || !short || self.deliveries >= 32;
        let exhausted =
            (self.orig.len() >= PREFIX && self.resp.len() >= PREFIX) || self.deliveries >= 256;
        if (searched && !waiting) || exhausted {
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.orig = Vec::new();
        self.resp = Vec::new();
    }

    fn detect_tcp(&mut self, resp_p: u16, expect: &mut Vec<Expected>) {
        let c = &self.orig;
        let s = &self.resp;
        let mut add: Vec<&'static str> = Vec::new();
        let names = &self.names;
        // HTTP: a request line; off its ports the server must answer HTTP/.
        if !has(names, "http")
            && request_line(c)
            && (HTTP_PORTS.contains(&resp_p) || s.starts_with(b"HTTP/"))
        {
            add.push("http");
        }
        // TLS: a ClientHello from the client.
        if !has(names, "ssl") && client_hello(c) {
            add.push("ssl");
        }
        // SSH: both banners and a NEWKEYS (SSH 2), or both banners when the
        // client speaks SSH 1, which has no NEWKEYS.
        if !has(names, "ssh")
            && c.starts_with(b"SSH-")
            && ssh_banner(s)
            && (ssh_newkeys(c) || ssh_newkeys(s) || ssh1_client(c))
        {
            add.push("ssh");
        }
        // Modbus/TCP on 502: a complete MBAP frame with protocol id 0.
        if !has(names, "modbus") && resp_p == 502 && modbus(c) {
            add.push("modbus");
        }
        // DCE/RPC: a connection-oriented PDU, version 5.
        if !has(names, "dce_rpc")
            && c.len() >= 4
            && c[0] == 5
            && c[1] <= 1
            && c[2] <= 0x13
            && c[3] & 0x03 == 0x03
            && (resp_p == 135 || s.first() == Some(&5))
        {
            add.push("dce_rpc");
        }
        // MySQL: server greeting, client handshake response.
        if !has(names, "mysql") && (resp_p == 3306 || resp_p == 1434) && mysql(c, s) {
            add.push("mysql");
            if mysql_ssl(c) {
                self.ssl_after_plain = true;
            }
        }
        // LDAP: a BER LDAPMessage.
        if !has(names, "ldap_tcp")
            && (resp_p == 389 || resp_p == 3268 || s.first() == Some(&0x30))
            && ldap(c)
        {
            if find(&c[..ldap_len(c).min(c.len())], b"NTLMSSP\0").is_some() {
                add.push("ntlm");
            }
            add.push("ldap_tcp");
        }
        if has(names, "ldap_tcp") && !self.ldap_extra_checked && c.len() > ldap_len(c) {
            let rest = &c[ldap_len(c).min(c.len())..];
            if find(
                rest,
                &[
                    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02,
                ],
            )
            .is_some()
            {
                add.push("krb");
                add.push("gssapi");
                self.ldap_extra_checked = true;
            } else if find(rest, b"NTLMSSP\0").is_some() {
                add.push("ntlm");
                self.ldap_extra_checked = true;
            }
        }
        // Line protocols.
        let first = first_word(c);
        if !has(names, "ftp")
            && !self.ftp_bad
            && (resp_p == 21 || resp_p == 2811 || starts_ci(c, b"USER "))
            && let Some(w) = first
            && w.len() >= 3
            && w.iter().all(|b| b.is_ascii_graphic())
            && (resp_p == 21 || resp_p == 2811 || s.starts_with(b"220"))
        {
            add.push("ftp");
            self.ftp_confirmed = true;
        }
        if !has(names, "smtp")
            && (resp_p == 25 || resp_p == 587 || s.starts_with(b"220"))
            && (starts_ci(c, b"HELO") || starts_ci(c, b"EHLO"))
        {
            add.push("smtp");
        }
        if !has(names, "pop3")
            && (resp_p == 110
                || starts_ci(c, b"USER")
                || starts_ci(c, b"CAPA")
                || starts_ci(c, b"AUTH")
                || starts_ci(c, b"APOP"))
            && s.starts_with(b"+OK")
            && pop3_confirmed(c, s)
        {
            add.push("pop3");
        }
        if !has(names, "imap") && resp_p == 143 && (s.starts_with(b"* OK") || imap_command(c)) {
            add.push("imap");
        }
        // IRC on its ports: any client line of text.
        if !has(names, "irc") && (6666..=6669).contains(&resp_p) && text_line(c) {
            add.push("irc");
        }
        // STARTTLS: a ClientHello after the plain-text exchange.
        let plain = ["ftp", "smtp", "pop3", "imap", "irc", "mysql"]
            .iter()
            .any(|p| has(names, p) || add.contains(p));
        if plain && !has(names, "ssl") && !add.contains(&"ssl") && tls_after_text(c) {
            add.push("ssl");
        }
        for n in add {
            self.add(n);
        }
        // FTP reply-code violations, and announced data connections.
        if self.ftp_confirmed {
            self.ftp_scan(expect);
        }
    }

    fn ftp_scan(&mut self, expect: &mut Vec<Expected>) {
        if self.ftp_bad {
            return;
        }
        // Server replies must be three digits and a space or a dash; lines
        // inside a multi-line reply are free text.
        let s = &self.resp;
        let mut pos = self.ftp_checked_to;
        let mut multi = self.ftp_multi;
        while let Some(nl) = s[pos..].iter().position(|&b| b == b'\n') {
            let line = &s[pos..pos + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pos += nl + 1;
            if let Some(code) = multi {
                if line.len() >= 4 && line[..3] == code && line[3] == b' ' {
                    multi = None;
                }
                continue;
            }
            let ok = line.len() >= 4
                && line[..3].iter().all(u8::is_ascii_digit)
                && (line[3] == b' ' || line[3] == b'-');
            let ok = ok || (line.len() == 3 && line.iter().all(u8::is_ascii_digit));
            if !ok || line[0] < b'1' || line[0] > b'5' {
                self.ftp_bad = true;
                self.remove("ftp");
                return;
            }
            if line.len() >= 4 && line[3] == b'-' {
                multi = Some([line[0], line[1], line[2]]);
            }
            if line.starts_with(b"234") {
                // AUTH TLS accepted: what follows is TLS, not FTP replies.
                self.ftp_bad = true;
                break;
            }
            if line.starts_with(b"227") {
                if let Some((ip, port)) = parse_pasv(line) {
                    expect.push(Expected {
                        resp: ip,
                        port,
                        orig: None,
                    });
                }
            } else if line.starts_with(b"229")
                && let Some(port) = parse_epsv(line)
            {
                expect.push(Expected {
                    resp: std::net::IpAddr::from([0, 0, 0, 0]),
                    port,
                    orig: None,
                });
            }
        }
        self.ftp_checked_to = pos;
        self.ftp_multi = multi;
        // PORT / EPRT from the client, and over-long commands.
        let c = &self.orig;
        let complete = c.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        for line in c[..complete].split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > 100 {
                self.limit_hit = true;
            }
            let announced = if starts_ci(line, b"PORT ") {
                parse_hostport(&line[5..])
            } else if starts_ci(line, b"EPRT ") {
                parse_eprt(&line[5..])
            } else {
                None
            };
            if let Some((resp, port)) = announced {
                let e = Expected {
                    resp,
                    port,
                    orig: None,
                };
                if !expect.contains(&e) {
                    expect.push(e);
                }
            }
        }
    }

    /// A UDP datagram's payload.
    pub fn udp(&mut self, from_orig: bool, data: &[u8], resp_p: u16) {
        if self.done {
            return;
        }
        self.udp_seen = self.udp_seen.saturating_add(1);
        if self.udp_seen > 20 {
            self.done = true;
            return;
        }
        match resp_p {
            67 | 68 if data.len() >= 240 && data[236..240] == [0x63, 0x82, 0x53, 0x63] => {
                self.add("dhcp");
                self.done = true;
            }
            123 if data.len() >= 48 => {
                let v = (data[0] >> 3) & 7;
                let mode = data[0] & 7;
                if (1..=4).contains(&v) && (1..=7).contains(&mode) {
                    self.add("ntp");
                    self.done = true;
                }
            }
            3389 => {
                if from_orig && data.len() >= 4 && data[..4] == [0xff; 4] {
                    self.rdp_orig = true;
                } else if !from_orig && self.rdp_orig && data.len() >= 4 {
                    self.add("rdpeudp");
                    self.done = true;
                }
            }
            443 | 784 | 853 => {
                let initial =
                    data.len() >= 1200 && data[0] & 0xf0 == 0xc0 && data[1..5] == [0, 0, 0, 1];
                if from_orig && initial {
                    self.quic_orig = true;
                } else if !from_orig
                    && self.quic_orig
                    && data.first().is_some_and(|b| b & 0x80 != 0)
                {
                    self.add("quic");
                    self.add("ssl");
                    self.done = true;
                }
            }
            161 | 162 if data.first() == Some(&0x30) && data.len() > 8 => {
                self.add("snmp");
                self.done = true;
            }
            514 if data.first() == Some(&b'<') => {
                self.add("syslog");
                self.done = true;
            }
            5060 if (find(&data[..data.len().min(200)], b" SIP/2.0").is_some()
                || data.starts_with(b"SIP/2.0")) =>
            {
                self.add("sip");
                self.done = true;
            }
            _ => {}
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn starts_ci(b: &[u8], p: &[u8]) -> bool {
    b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p)
}

fn first_word(b: &[u8]) -> Option<&[u8]> {
    let end = b
        .iter()
        .position(|&c| c == b' ' || c == b'\r' || c == b'\n')?;
    Some(&b[..end])
}

/// A first line of printable text ending in a line feed.
fn text_line(c: &[u8]) -> bool {
    match c.iter().position(|&b| b == b'\n') {
        Some(end) if end > 0 => c[..end]
            .iter()
            .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\r'),
        _ => false,
    }
}

/// "METHOD SP URI" and a line end or " HTTP/".
fn request_line(c: &[u8]) -> bool {
    let Some(sp) = c.iter().position(|&b| b == b' ') else {
        return false;
    };
    let method = &c[..sp];
    if !METHODS.contains(&method) {
        return false;
    }
    let rest = &c[sp + 1..];
    let line_end = rest.iter().position(|&b| b == b'\n');
    match line_end {
        Some(e) => e > 0,
        None => find(rest, b" HTTP/").is_some(),
    }
}

fn client_hello(c: &[u8]) -> bool {
    c.len() >= 6 && c[0] == 0x16 && c[1] == 3 && c[2] <= 4 && c[5] == 1
}

fn tls_after_text(c: &[u8]) -> bool {
    let mut i = 0;
    while let Some(nl) = c[i..].iter().position(|&b| b == b'\n') {
        i += nl + 1;
        if client_hello(&c[i..]) {
            return true;
        }
    }
    // MySQL's SSL request is binary: the ClientHello follows a 36-byte packet.
    c.len() > 36 && client_hello(&c[36..])
}

/// The server's banner; a server may send text lines before it (a client
/// starts with its banner).
fn ssh_banner(b: &[u8]) -> bool {
    if b.starts_with(b"SSH-") {
        return true;
    }
    // Servers may send text lines before the banner.
    b.windows(5).any(|w| w[0] == b'\n' && &w[1..] == b"SSH-")
}

/// A client banner announcing protocol 1 (1.99 means "2, or 1 if you must").
fn ssh1_client(c: &[u8]) -> bool {
    c.starts_with(b"SSH-1.") && !c.starts_with(b"SSH-1.99")
}

/// Walks the unencrypted binary packets after the banner looking for
/// SSH_MSG_NEWKEYS (21).
fn ssh_newkeys(b: &[u8]) -> bool {
    let Some(start) = find(b, b"SSH-") else {
        return false;
    };
    let Some(nl) = b[start..].iter().position(|&c| c == b'\n') else {
        return false;
    };
    let mut i = start + nl + 1;
    for _ in 0..16 {
        if i + 6 > b.len() {
            return false;
        }
        let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        if !(5..=35000).contains(&len) {
            return false;
        }
        if b[i + 5] == 21 {
            return true;
        }
        i += 4 + len;
    }
    false
}

fn modbus(c: &[u8]) -> bool {
    c.len() >= 8 && c[2] == 0 && c[3] == 0 && {
        let len = u16::from_be_bytes([c[4], c[5]]) as usize;
        len >= 2 && c.len() >= 6 + len
    }
}

fn mysql(c: &[u8], s: &[u8]) -> bool {
    // server greeting: len(3) seq 0, protocol 10; client: seq 1
    s.len() > 5 && s[3] == 0 && s[4] == 10 && c.len() > 8 && c[3] == 1
}

fn mysql_ssl(c: &[u8]) -> bool {
    c.len() > 8 && (u32::from_le_bytes([c[4], c[5], c[6], c[7]]) & 0x800) != 0
}

fn ldap_len(c: &[u8]) -> usize {
    if c.len() < 2 {
        return usize::MAX;
    }
    let l = c[1] as usize;
    if l < 0x80 {
        2 + l
    } else {
        let n = l & 0x7f;
        if n == 0 || n > 4 || c.len() < 2 + n {
            return usize::MAX;
        }
        let mut v = 0usize;
        for b in &c[2..2 + n] {
            v = (v << 8) | *b as usize;
        }
        2 + n + v
    }
}

fn ldap(c: &[u8]) -> bool {
    let total = ldap_len(c);
    if total == usize::MAX || c.len() < total || c.first() != Some(&0x30) {
        return false;
    }
    let hdr = if c[1] < 0x80 {
        2
    } else {
        2 + (c[1] & 0x7f) as usize
    };
    let body = &c[hdr.min(c.len())..];
    body.len() >= 3 && body[0] == 0x02 && {
        let idlen = body[1] as usize;
        body.len() > 2 + idlen && (body[2 + idlen] & 0x60) == 0x60
    }
}

fn pop3_confirmed(c: &[u8], s: &[u8]) -> bool {
    // The server's +OK to USER/CAPA/STLS (any +OK after the greeting).
    let ok_lines = s
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"+OK"))
        .count();
    ok_lines >= 2
        || (ok_lines >= 1
            && (starts_ci(c, b"STLS") || starts_ci(c, b"CAPA") || starts_ci(c, b"USER")))
}

fn imap_command(c: &[u8]) -> bool {
    let mut it = c.splitn(3, |&b| b == b' ');
    let _tag = it.next();
    match it.next() {
        Some(cmd) => {
            let cmd = cmd.strip_suffix(b"\r\n").unwrap_or(cmd);
            starts_ci(cmd, b"CAPABILITY") || starts_ci(cmd, b"STARTTLS") || starts_ci(cmd, b"LOGIN")
        }
        None => false,
    }
}

fn parse_hostport(b: &[u8]) -> Option<(std::net::IpAddr, u16)> {
    let s = std::str::from_utf8(b).ok()?;
    let nums: Vec<u16> = s
        .trim()
        .split(',')
        .map(|x| x.trim().parse::<u16>())
        .collect::<Result<_, _>>()
        .ok()?;
    if nums.len() != 6 || nums.iter().any(|&n| n > 255) {
        return None;
    }
    let ip = std::net::IpAddr::from([nums[0] as u8, nums[1] as u8, nums[2] as u8, nums[3] as u8]);
    Some((ip, nums[4] * 256 + nums[5]))
}

fn parse_pasv(line: &[u8]) -> Option<(std::net::IpAddr, u16)> {
    let open = line.iter().position(|&b| b == b'(');
    let start = match open {
        Some(o) => o + 1,
        None => line
            .iter()
            .position(|b| b.is_ascii_digit())
            .map(|p| p + 4)?,
    };
    let rest = &line[start.min(line.len())..];
    let end = rest.iter().position(|&b| b == b')').unwrap_or(rest.len());
    parse_hostport(&rest[..end])
}

fn parse_epsv(line: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(line).ok()?;
    let open = s.find('(')?;
    let inner = &s[open + 1..s[open..].find(')')? + open];
    let d = inner.chars().next()?;
    let parts: Vec<&str> = inner.split(d).collect();
    parts.get(3)?.parse().ok()
}

fn parse_eprt(b: &[u8]) -> Option<(std::net::IpAddr, u16)> {
    let s = std::str::from_utf8(b).ok()?.trim();
    let d = s.chars().next()?;
    let parts: Vec<&str> = s.split(d).collect();
    let ip = parts.get(2)?.parse().ok()?;
    let port = parts.get(3)?.parse().ok()?;
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_line_on_its_port() {
        let mut d = Detector::default();
        let mut ex = Vec::new();
        d.tcp(
            true,
            b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n",
            80,
            false,
            &mut ex,
        );
        assert_eq!(d.names().as_slice(), ["http"]);
        let mut d = Detector::default();
        d.tcp(true, b"GET / HTTP/1.1\r\n\r\n", 502, false, &mut ex);
        assert!(
            d.names().is_empty(),
            "off its ports HTTP needs the server's answer"
        );
        d.tcp(false, b"HTTP/1.1 200 OK\r\n", 502, false, &mut ex);
        assert_eq!(d.names().as_slice(), ["http"]);
    }

    #[test]
    fn ftp_announces_data_connections_and_bad_replies_remove_it() {
        let mut d = Detector::default();
        let mut ex = Vec::new();
        d.tcp(false, b"220 hello\r\n", 21, false, &mut ex);
        d.tcp(true, b"USER anonymous\r\n", 21, false, &mut ex);
        d.tcp(
            false,
            b"227 Entering Passive Mode (199,233,217,249,221,90)\r\n",
            21,
            false,
            &mut ex,
        );
        assert_eq!(d.names().as_slice(), ["ftp"]);
        assert_eq!(ex[0].port, 221 * 256 + 90);
        d.tcp(false, b"SYST not supported\r\n", 21, false, &mut ex);
        assert!(d.names().is_empty());
    }

    #[test]
    fn dhcp_cookie() {
        let mut d = Detector::default();
        let mut p = vec![0u8; 300];
        p[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]);
        d.udp(true, &p, 67);
        assert_eq!(d.names().as_slice(), ["dhcp"]);
    }
}
