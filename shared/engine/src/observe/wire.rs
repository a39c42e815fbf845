//! Observations from SSDP, clear-text HTTP requests, DHCPv6 and IPv6
//! Neighbor Discovery: the headers, options and flags in which a device
//! names its software, vendor and addresses.
//!
//! What this module promises, like the rest of `observe`: each parser takes
//! the bytes of one message (an HTTP request: the first bytes of a stream),
//! checks every length before it reads, never panics and returns `None` for
//! anything that is not a well-formed message of its kind. Text is decoded as
//! lossy UTF-8 with surrounding whitespace trimmed. Every list kept from the
//! wire holds at most [`MAX_LIST`] entries, so a hostile packet costs no more
//! memory than an ordinary one.

use std::net::Ipv6Addr;

use heimdall_proto::sensor::v1::{
    ClientFqdn, Dhcpv6Observation, Dhcpv6VendorClass, HttpObservation, KeyValue, NdpMessageType,
    NdpObservation, NdpPrefix, SsdpMessageKind, SsdpObservation,
};

/// The most entries kept in any one list (headers, options, addresses, ...).
/// Real devices stay far below it; beyond it only an attacker gains.
pub const MAX_LIST: usize = 64;

/// How far into a stream an HTTP header block may end. Real request heads
/// are a few hundred bytes; looking further only costs time on non-HTTP data.
const MAX_HTTP_HEAD: usize = 16 * 1024;

/// How many RELAY-FORW/RELAY-REPL layers are unwrapped. Relays drop messages
/// after HOP_COUNT_LIMIT (8) hops (RFC 8415 §7.6); 32 leaves room for odd
/// deployments and still bounds the work.
const MAX_RELAYS: usize = 32;

/// Appends unless the list is full.
fn keep<T>(list: &mut Vec<T>, item: T) {
    if list.len() < MAX_LIST {
        list.push(item);
    }
}

// Offsets are small constants, so `at + n` cannot overflow.
fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Wire text: lossy UTF-8 (protobuf strings must be valid), trimmed.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b.trim_ascii()).into_owned()
}

// ---------------------------------------------------------------- HTTP-style heads

/// The lines of a header block without their line ends, up to the blank line
/// that closes it. Bare LF is accepted: embedded stacks send it.
fn lines(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    b.split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
}

/// One `Name: value` line as (lower-cased name, trimmed value). Lines
/// without a colon or with an empty name are not headers.
fn header(line: &[u8]) -> Option<(String, String)> {
    let colon = line.iter().position(|&c| c == b':')?;
    let name = line[..colon].trim_ascii();
    if name.is_empty() {
        return None;
    }
    Some((text(name).to_ascii_lowercase(), text(&line[colon + 1..])))
}

/// Where the header block ends (just past its blank line), or `None` while
/// the blank line has not arrived yet.
fn head_end(b: &[u8]) -> Option<usize> {
    b.iter().enumerate().find_map(|(i, &c)| {
        if c != b'\n' {
            return None;
        }
        match b.get(i + 1..) {
            Some([b'\n', ..]) => Some(i + 2),
            Some([b'\r', b'\n', ..]) => Some(i + 3),
            _ => None,
        }
    })
}

/// "HTTP/1.x" in any case: SSDP stacks are not consistent about it.
fn http1(v: &[u8]) -> bool {
    v.len() >= 7 && v[..7].eq_ignore_ascii_case(b"HTTP/1.")
}

/// An SSDP message (UDP 1900 multicast or the unicast answer to an M-SEARCH):
/// request line kind and headers.
pub fn ssdp(msg: &[u8]) -> Option<SsdpObservation> {
    let mut lines = lines(msg);
    let line = lines.next()?;
    let mut words = line.split(|&c| c == b' ').filter(|w| !w.is_empty());
    let (first, second, third) = (words.next()?, words.next()?, words.next());
    let kind = if http1(first) && second == b"200" {
        SsdpMessageKind::Response
    } else if !third.is_some_and(http1) {
        return None;
    } else if first.eq_ignore_ascii_case(b"M-SEARCH") {
        SsdpMessageKind::MSearch
    } else if first.eq_ignore_ascii_case(b"NOTIFY") {
        SsdpMessageKind::Notify
    } else {
        return None;
    };
    let mut o = SsdpObservation {
        kind: kind as i32,
        ..Default::default()
    };
    // The datagram bounds the work; only what is kept needs a bound.
    for (name, value) in lines.filter_map(header) {
        let field = match name.as_str() {
            "server" => &mut o.server,
            "user-agent" => &mut o.user_agent,
            "nt" => &mut o.nt,
            "st" => &mut o.st,
            "nts" => &mut o.nts,
            "usn" => &mut o.usn,
            "location" => &mut o.location,
            _ => {
                keep(&mut o.other_headers, KeyValue { key: name, value });
                continue;
            }
        };
        // The first occurrence wins, as for HTTP: a repeat is not trusted
        // more than the original.
        if field.is_empty() {
            *field = value;
        }
    }
    Some(o)
}

/// Methods that start an HTTP request: RFC 9110, WebDAV and UPnP (GENA,
/// SSDP over TCP). Case-sensitive, as HTTP methods are.
const METHODS: &str = "GET POST HEAD PUT DELETE OPTIONS PATCH CONNECT TRACE PROPFIND PROPPATCH \
    MKCOL COPY MOVE LOCK UNLOCK REPORT SEARCH SUBSCRIBE UNSUBSCRIBE NOTIFY M-SEARCH";

/// `data` starts with an HTTP method and a space: the start of a request
/// whose header may still be incomplete.
pub fn http_method_prefix(data: &[u8]) -> bool {
    data.iter()
        .take(12)
        .position(|&c| c == b' ')
        .is_some_and(|sp| METHODS.split(' ').any(|m| m.as_bytes() == &data[..sp]))
}

/// The request line and identifying headers of a clear-text HTTP request at
/// the start of `data` (the client's first bytes on a TCP connection,
/// possibly only a prefix). Returns None when it is not an HTTP request or
/// the header block is not complete within `data`.
pub fn http_request(data: &[u8]) -> Option<HttpObservation> {
    // Reject non-HTTP streams on their first word before any scanning.
    let sp = data.iter().take(12).position(|&c| c == b' ')?;
    let method = &data[..sp];
    if !METHODS.split(' ').any(|m| m.as_bytes() == method) {
        return None;
    }
    let head = &data[..head_end(&data[..data.len().min(MAX_HTTP_HEAD)])?];
    let mut lines = lines(head);
    let line = lines.next()?;
    // Method SP target SP version; the target is taken between the first
    // and the last space so a client that leaves spaces in it still parses.
    let last = line.iter().rposition(|&c| c == b' ')?;
    let uri = line.get(sp + 1..last)?.trim_ascii();
    let version = match line[last + 1..].strip_prefix(b"HTTP/")? {
        v @ [major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => v,
        _ => return None,
    };
    if uri.is_empty() {
        return None;
    }
    let mut o = HttpObservation {
        method: text(method),
        uri: text(uri),
        version: text(version),
        ..Default::default()
    };
    for (name, value) in lines.filter_map(header) {
        let field = match name.as_str() {
            "host" => &mut o.host,
            "user-agent" => &mut o.user_agent,
            _ => continue,
        };
        if field.is_empty() {
            *field = value;
        }
    }
    Some(o)
}

// ---------------------------------------------------------------- DHCPv6

/// Calls `f` on each (code, value) of a DHCPv6 options area. `None` when an
/// option runs past the area or when `f` finds its option malformed.
fn each_option<'a>(mut b: &'a [u8], mut f: impl FnMut(u16, &'a [u8]) -> Option<()>) -> Option<()> {
    while !b.is_empty() {
        let code = be16(b, 0)?;
        let end = 4 + usize::from(be16(b, 2)?);
        f(code, b.get(4..end)?)?;
        b = &b[end..];
    }
    Some(())
}

/// Length-prefixed items (user class, vendor class data): a u16 length and
/// the bytes, repeated to the end of the option. Generic so the generated
/// `Bytes` type needs no direct dependency here.
fn items<T: From<Vec<u8>>>(mut b: &[u8], out: &mut Vec<T>) -> Option<()> {
    while !b.is_empty() {
        let end = 2 + usize::from(be16(b, 0)?);
        keep(out, b.get(2..end)?.to_vec().into());
        b = &b[end..];
    }
    Some(())
}

/// A name in DNS wire format without compression (RFC 4704 allows none):
/// labels joined by dots. A partial name simply lacks the root label; a bad
/// label length ends the name.
fn wire_name(mut b: &[u8]) -> String {
    let mut out = String::new();
    while let Some((&len, rest)) = b.split_first() {
        if len == 0 || len > 63 {
            break;
        }
        let Some(label) = rest.get(..usize::from(len)) else {
            break;
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&String::from_utf8_lossy(label));
        b = &rest[usize::from(len)..];
    }
    out
}

/// A DHCPv6 message (UDP 546/547), unwrapping RELAY-FORW/RELAY-REPL (option
/// 9, relay message) to the innermost message.
pub fn dhcpv6(msg: &[u8]) -> Option<Dhcpv6Observation> {
    let mut m = msg;
    for depth in 0..=MAX_RELAYS {
        let (&kind, rest) = m.split_first()?;
        match kind {
            1..=11 => return dhcpv6_message(kind, rest, depth > 0),
            12 | 13 if depth < MAX_RELAYS => {
                // Hop count, link address and peer address, then options;
                // the relay's own options say nothing about the device.
                let mut inner = None;
                each_option(rest.get(33..)?, |code, v| {
                    if code == 9 && inner.is_none() {
                        inner = Some(v);
                    }
                    Some(())
                })?;
                m = inner?;
            }
            _ => return None,
        }
    }
    None
}

/// A client or server message: `rest` starts at the transaction id.
fn dhcpv6_message(kind: u8, rest: &[u8], relayed: bool) -> Option<Dhcpv6Observation> {
    let xid = rest.get(..3)?;
    let mut o = Dhcpv6Observation {
        // The enum's values are the codes on the wire.
        message_type: i32::from(kind),
        transaction_id: u32::from_be_bytes([0, xid[0], xid[1], xid[2]]),
        relayed,
        ..Default::default()
    };
    each_option(&rest[3..], |code, v| {
        keep(&mut o.option_order, u32::from(code));
        match code {
            1 => o.client_duid = v.to_vec().into(),
            2 => o.server_duid = v.to_vec().into(),
            // IA_NA and IA_PD: IAID, T1, T2; IA_TA: IAID only.
            3 => ia(v.get(12..)?, &mut o)?,
            4 => ia(v.get(4..)?, &mut o)?,
            25 => ia(v.get(12..)?, &mut o)?,
            6 if v.len() % 2 == 0 => {
                for c in v.chunks_exact(2) {
                    keep(&mut o.option_request, be16(c, 0)?.into());
                }
            }
            15 => items(v, &mut o.user_class)?,
            16 => {
                let mut vc = Dhcpv6VendorClass {
                    enterprise_number: be32(v, 0)?,
                    data: Vec::new(),
                };
                items(&v[4..], &mut vc.data)?;
                keep(&mut o.vendor_class, vc);
            }
            // Flags, then the name, always in wire format in DHCPv6 (no E
            // flag and no RCODE bytes as in DHCPv4 option 81).
            39 => {
                let (&flags, name) = v.split_first()?;
                o.client_fqdn = Some(ClientFqdn {
                    flags: u32::from(flags),
                    name: wire_name(name),
                });
            }
            _ => {}
        }
        Some(())
    })?;
    Some(o)
}

/// The options inside an IA_NA / IA_TA / IA_PD: addresses (IAADDR, 5) and
/// delegated prefixes (IAPREFIX, 26). Status codes and the rest are skipped.
fn ia(opts: &[u8], o: &mut Dhcpv6Observation) -> Option<()> {
    each_option(opts, |code, v| {
        match code {
            // Address, preferred and valid lifetimes, options.
            5 => keep(&mut o.addresses, v.get(..24)?[..16].to_vec().into()),
            // Preferred and valid lifetimes, prefix length, prefix, options.
            26 => {
                let len = *v.get(8)?;
                let addr: [u8; 16] = v.get(9..25)?.try_into().ok()?;
                let text = format!("{}/{len}", Ipv6Addr::from(addr));
                keep(&mut o.delegated_prefixes, text);
            }
            _ => {}
        }
        Some(())
    })
}

// ---------------------------------------------------------------- NDP

/// An ICMPv6 Neighbor Discovery message (types 133-137), `icmp` starting at
/// the ICMPv6 type byte.
pub fn ndp(icmp: &[u8]) -> Option<NdpObservation> {
    use NdpMessageType as T;
    // The fixed part of each message before its options (RFC 4861 §4).
    let (kind, fixed) = match icmp.first()? {
        133 => (T::RouterSolicitation, 8),
        134 => (T::RouterAdvertisement, 16),
        135 => (T::NeighborSolicitation, 24),
        136 => (T::NeighborAdvertisement, 24),
        137 => (T::Redirect, 40),
        _ => return None,
    };
    // RFC 4861 has receivers discard any code but 0.
    if icmp.len() < fixed || icmp[1] != 0 {
        return None;
    }
    let mut o = NdpObservation {
        message_type: kind as i32,
        ..Default::default()
    };
    let ra = kind == T::RouterAdvertisement;
    match kind {
        T::RouterAdvertisement => {
            let flags = icmp[5];
            o.cur_hop_limit = Some(u32::from(icmp[4]));
            o.managed_flag = flags & 0x80 != 0;
            o.other_config_flag = flags & 0x40 != 0;
            o.router_preference = u32::from((flags & 0x18) >> 3);
            o.router_lifetime_s = be16(icmp, 6).map(u32::from);
            o.reachable_time_ms = be32(icmp, 8);
            o.retrans_timer_ms = be32(icmp, 12);
        }
        T::NeighborSolicitation => o.target_address = icmp[8..24].to_vec().into(),
        T::NeighborAdvertisement => {
            o.router_flag = icmp[4] & 0x80 != 0;
            o.solicited_flag = icmp[4] & 0x40 != 0;
            o.override_flag = icmp[4] & 0x20 != 0;
            o.target_address = icmp[8..24].to_vec().into();
        }
        T::Redirect => {
            o.target_address = icmp[8..24].to_vec().into();
            o.destination_address = icmp[24..40].to_vec().into();
        }
        _ => {}
    }
    let mut b = &icmp[fixed..];
    loop {
        let (kind, len) = match b {
            [] => break,
            [kind, len, ..] => (*kind, usize::from(*len) * 8),
            [_] => return None,
        };
        // Length is in units of 8 bytes; 0 would loop forever and RFC 4861
        // has the whole packet dropped for it.
        let opt = b.get(..len).filter(|_| len > 0)?;
        b = &b[len..];
        let body = &opt[2..];
        match kind {
            // The address fills the option up to its padding; on Ethernet
            // (length 1) that is exactly the 6-byte MAC.
            1 => o.source_link_layer = body.to_vec().into(),
            2 => o.target_link_layer = body.to_vec().into(),
            3 if ra && len == 32 => {
                if let Some(p) = ndp_prefix(body) {
                    keep(&mut o.prefixes, p);
                }
            }
            5 if ra && len == 8 => o.mtu = be32(body, 2),
            // Reserved, lifetime, then one or more addresses.
            25 if ra && len >= 24 => {
                for a in body[6..].chunks_exact(16) {
                    keep(&mut o.rdnss, a.to_vec().into());
                }
            }
            _ => {}
        }
    }
    Some(o)
}

/// A prefix information option's body (after type and length): `None` for
/// a prefix length over 128, which no address can have.
fn ndp_prefix(body: &[u8]) -> Option<NdpPrefix> {
    let len = *body.first()?;
    let flags = *body.get(1)?;
    let raw: [u8; 16] = body.get(14..30)?.try_into().ok()?;
    if len > 128 {
        return None;
    }
    // Routers may leave junk past the prefix length (RFC 4861 has hosts
    // ignore it); cleared so equal prefixes compare equal.
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    let prefix = (u128::from_be_bytes(raw) & mask).to_be_bytes();
    Some(NdpPrefix {
        prefix: prefix.to_vec().into(),
        prefix_length: u32::from(len),
        on_link: flags & 0x80 != 0,
        autonomous: flags & 0x40 != 0,
        valid_lifetime_s: be32(body, 2)?,
        preferred_lifetime_s: be32(body, 6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use heimdall_proto::sensor::v1::Dhcpv6MessageType;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
            .collect()
    }

    fn v6(s: &str) -> Vec<u8> {
        s.parse::<Ipv6Addr>().expect("address").octets().to_vec()
    }

    // Payloads below are copied from captures under shared/testdata; the
    // expected values are what tshark 4.0 shows for the same frames.

    /// D-LinkCam Setup-A-1 frame 80: a NOTIFY ssdp:alive.
    const DLINK_NOTIFY: &[u8] = b"NOTIFY * HTTP/1.1\r\nLOCATION: http://10.10.10.37:50510/\r\n\
        HOST: 239.255.255.250:1900\r\nSERVER: Linux,    UPnP/1.0 DCS-935L/1.0\r\n\
        NTS: ssdp:alive\r\nUSN: uuid:b0c554255b0e-0::upnp:rootdevice\r\n\
        CACHE-CONTROL: max-age=1800\r\nNT: upnp:rootdevice\r\n\r\n";

    /// HueBridge Setup-C-1 frame 182: the unicast answer to an M-SEARCH.
    const HUE_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nHOST: 239.255.255.250:1900\r\nEXT:\r\n\
        CACHE-CONTROL: max-age=100\r\nLOCATION: http://10.10.10.6:80/description.xml\r\n\
        SERVER: Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0\r\nhue-bridgeid: 001788FFFE2476FF\r\n\
        ST: upnp:rootdevice\r\n\
        USN: uuid:2f402f80-da50-11e1-9b23-0017882476ff::upnp:rootdevice\r\n\r\n";

    /// ndpi gnutella.pcap frame 125: an M-SEARCH from Microsoft Edge.
    const EDGE_MSEARCH: &[u8] = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\
        MAN: \"ssdp:discover\"\r\nMX: 1\r\nST: urn:dial-multiscreen-org:service:dial:1\r\n\
        USER-AGENT: Microsoft Edge/99.0.1150.30 Windows\r\n\r\n";

    /// Aria Setup-A-1 frames 15 and 16: one GET split over two segments.
    const ARIA_GET_1: &[u8] =
        b"GET /scale/register?serialNumber=20F85ECA9152&token=DPcheC1cFX7slXmno84l\
        &ssid=IoTSoft HTTP/1.1\r\n";
    const ARIA_GET_2: &[u8] = b"Host: www.fitbit.com\r\n\r\n";

    /// D-LinkCam Setup-A-1 frame 134: a HNAP POST, cut 5 bytes into the body.
    const DLINK_POST: &[u8] = b"POST /HNAP1/ HTTP/1.1\r\nUser-Agent: ksoap2-android/2.6.0+\r\n\
        Content-Type: text/xml;charset=utf-8\r\nAccept-Encoding: gzip\r\n\
        SOAPACTION: \"http://purenetworks.com/HNAP1/Login\"\r\nContent-Length: 457\r\n\
        Host: 10.10.10.37\r\nConnection: Keep-Alive\r\n\r\n<?xml";

    /// ndpi gnutella.pcap frame 9: a Windows 10 SOLICIT.
    const WIN_SOLICIT: &str = concat!(
        "0113d1ed0008000200000001000e000100012422f1b3080027e6e5590003000c0508002700000000000000000027",
        "000d000b4d534544474557494e31300010000e0000013700084d53465420352e30000600080011001700180027",
    );

    /// zeek core.pppoe/pppoe.pcap frame 39: a REPLY delegating a /56.
    const PD_REPLY: &str = concat!(
        "07fcf7760002000a00030001ca010e8800080001000a00030001cc050e8800000018000f04697076360474657374",
        "03636f6d0000190029000900010000003e0000007a001a00190000007d0000007d38fc0000000002010000000000",
        "00000000",
    );

    /// pppoe.pcap frame 35: a router advertisement with an MTU option.
    const PPPOE_RA: &str = "860079ae40000708000000000000000005010000000005d4";
    /// pppoe.pcap frame 26: a neighbor advertisement from a router.
    const PPPOE_NA: &str = "8800508380000000fe80000000000000c8010efffe880008";
    /// ndpi teredo.pcap frame 2: a router advertisement with a /64 prefix
    /// whose bits past 64 are not zero.
    const TEREDO_RA: &str = concat!(
        "8600649d0000000000003a98000007d003044040ffffffffffffffff0000000020010000c2881c4cff00000000",
        "200100",
    );
    /// gnutella.pcap frame 6: a neighbor advertisement with a target LL option.
    const WIN_NA: &str = "880027a920000000fe80000000000000c50d519f96a4e1080201080027e6e559";
    /// gnutella.pcap frame 2: a neighbor solicitation (duplicate address detection).
    const WIN_NS: &str = "87000c2000000000fe80000000000000c50d519f96a4e108";
    /// android.pcap frame 74: a router solicitation with a source LL option.
    const ANDROID_RS: &str = "850008ca0000000001014c6af69ff627";

    /// The other headers as "key=value", joined by " | ".
    fn others(o: &SsdpObservation) -> String {
        let kv: Vec<_> = o
            .other_headers
            .iter()
            .map(|h| format!("{}={}", h.key, h.value))
            .collect();
        kv.join(" | ")
    }

    #[test]
    fn ssdp_notify_response_and_search_as_tshark_shows_them() {
        let n = ssdp(DLINK_NOTIFY).expect("notify");
        assert_eq!(n.kind, SsdpMessageKind::Notify as i32);
        assert_eq!(n.server, "Linux,    UPnP/1.0 DCS-935L/1.0");
        assert_eq!(n.location, "http://10.10.10.37:50510/");
        assert_eq!(n.nts, "ssdp:alive");
        assert_eq!(n.nt, "upnp:rootdevice");
        assert_eq!(n.usn, "uuid:b0c554255b0e-0::upnp:rootdevice");
        let want = "host=239.255.255.250:1900 | cache-control=max-age=1800";
        assert_eq!(others(&n), want);

        let r = ssdp(HUE_RESPONSE).expect("response");
        assert_eq!(r.kind, SsdpMessageKind::Response as i32);
        assert_eq!(r.server, "Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0");
        assert_eq!(r.location, "http://10.10.10.6:80/description.xml");
        assert_eq!(r.st, "upnp:rootdevice");
        assert_eq!(
            r.usn,
            "uuid:2f402f80-da50-11e1-9b23-0017882476ff::upnp:rootdevice"
        );
        let hue = "host=239.255.255.250:1900 | ext= | cache-control=max-age=100 | hue-bridgeid=";
        assert_eq!(others(&r), format!("{hue}001788FFFE2476FF"));

        let s = ssdp(EDGE_MSEARCH).expect("m-search");
        assert_eq!(s.kind, SsdpMessageKind::MSearch as i32);
        assert_eq!(s.st, "urn:dial-multiscreen-org:service:dial:1");
        assert_eq!(s.user_agent, "Microsoft Edge/99.0.1150.30 Windows");
        let want = "host=239.255.255.250:1900 | man=\"ssdp:discover\" | mx=1";
        assert_eq!(others(&s), want);
    }

    #[test]
    fn ssdp_rejects_other_messages_and_bounds_headers() {
        assert!(ssdp(b"GET / HTTP/1.1\r\n\r\n").is_none());
        assert!(ssdp(b"HTTP/1.1 404 Not Found\r\n\r\n").is_none());
        assert!(ssdp(b"NOTIFY * SIP/2.0\r\n\r\n").is_none());
        assert!(ssdp(b"").is_none());
        // Bare LF, lower case, odd spacing, bad UTF-8, a line with no colon.
        let o = ssdp(b"notify * http/1.1\nNT:  a \nnonsense\nX-\xff: v\n").expect("lenient");
        assert_eq!(o.nt, "a");
        assert_eq!(others(&o), "x-\u{fffd}=v");
        let mut many = b"NOTIFY * HTTP/1.1\r\n".to_vec();
        for i in 0..1000 {
            many.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"SERVER: late\r\n\r\n");
        let o = ssdp(&many).expect("notify");
        assert_eq!(o.other_headers.len(), MAX_LIST);
        assert_eq!(o.server, "late", "known headers past the bound still count");
    }

    #[test]
    fn http_requests_from_the_first_bytes_of_a_stream() {
        assert!(http_request(ARIA_GET_1).is_none()); // the header block is not complete
        let both = [ARIA_GET_1, ARIA_GET_2].concat();
        let o = http_request(&both).expect("complete");
        assert_eq!(o.method, "GET");
        assert_eq!(o.host, "www.fitbit.com");
        assert_eq!(
            o.uri,
            "/scale/register?serialNumber=20F85ECA9152&token=DPcheC1cFX7slXmno84l&ssid=IoTSoft"
        );
        assert_eq!(o.version, "1.1");
        assert_eq!(o.user_agent, "");

        let o = http_request(DLINK_POST).expect("post");
        assert_eq!(o.method, "POST");
        assert_eq!(o.uri, "/HNAP1/");
        assert_eq!(o.host, "10.10.10.37");
        assert_eq!(o.user_agent, "ksoap2-android/2.6.0+");

        let o = http_request(b"SUBSCRIBE /evt HTTP/1.0\nhost: a\nHOST: b\n\n").expect("gena");
        assert_eq!([o.method, o.host, o.version], ["SUBSCRIBE", "a", "1.0"]);
    }

    #[test]
    fn http_rejects_what_is_not_a_request() {
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/11\r\n\r\n",
            b"GET HTTP/1.1\r\n\r\n",
            b"GET  HTTP/1.1\r\n\r\n",
            b"GET /",
        ] {
            assert!(http_request(bad).is_none(), "{bad:?}");
        }
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HTTP_HEAD + 10, b'a');
        huge.extend_from_slice(b"\r\n\r\n");
        assert!(http_request(&huge).is_none(), "a head past the bound");
    }

    #[test]
    fn dhcpv6_solicit_and_reply_as_tshark_shows_them() {
        let o = dhcpv6(&hex(WIN_SOLICIT)).expect("solicit");
        assert_eq!(o.message_type, Dhcpv6MessageType::Solicit as i32);
        assert_eq!(o.transaction_id, 0x13d1ed);
        assert_eq!(&o.client_duid[..], &hex("000100012422f1b3080027e6e559")[..]);
        assert_eq!(o.option_order, [8, 1, 3, 39, 16, 6]);
        let fqdn = o.client_fqdn.as_ref().expect("option 39");
        assert_eq!((fqdn.flags, fqdn.name.as_str()), (0, "MSEDGEWIN10"));
        assert_eq!(o.vendor_class.len(), 1);
        assert_eq!(o.vendor_class[0].enterprise_number, 311);
        assert_eq!(o.vendor_class[0].data, [b"MSFT 5.0".to_vec()]);
        assert_eq!(o.option_request, [17, 23, 24, 39]);
        assert!(o.addresses.is_empty() && !o.relayed);

        let o = dhcpv6(&hex(PD_REPLY)).expect("reply");
        assert_eq!(o.message_type, Dhcpv6MessageType::Reply as i32);
        assert_eq!(o.transaction_id, 0xfcf776);
        assert_eq!(&o.server_duid[..], &hex("00030001ca010e880008")[..]);
        assert_eq!(&o.client_duid[..], &hex("00030001cc050e880000")[..]);
        assert_eq!(o.option_order, [2, 1, 24, 25], "26 is nested in 25");
        assert_eq!(o.delegated_prefixes, ["fc00:0:2:100::/56"]);
    }

    /// An option: code, length, value.
    fn opt(code: u16, v: &[u8]) -> Vec<u8> {
        [&code.to_be_bytes()[..], &(v.len() as u16).to_be_bytes(), v].concat()
    }

    #[test]
    fn dhcpv6_addresses_classes_and_relays() {
        let iaaddr = |a: &str| opt(5, &[v6(a), vec![0; 8], opt(13, &[0, 0])].concat());
        let msg = [
            vec![2, 1, 2, 3],
            opt(3, &[vec![0; 12], iaaddr("2001:db8::5")].concat()),
            opt(4, &[vec![0; 4], iaaddr("2001:db8::7")].concat()),
            opt(15, &[0, 2, b'a', b'b', 0, 0, 0, 1, b'c']),
        ]
        .concat();
        let o = dhcpv6(&msg).expect("advertise");
        assert_eq!(o.message_type, Dhcpv6MessageType::Advertise as i32);
        assert_eq!(o.transaction_id, 0x010203);
        assert_eq!(o.addresses, [v6("2001:db8::5"), v6("2001:db8::7")]);
        assert_eq!(o.user_class, [b"ab".to_vec(), vec![], b"c".to_vec()]);
        assert_eq!(o.option_order, [3, 4, 15]);

        // RELAY-FORW around RELAY-FORW around the Windows SOLICIT.
        let relay =
            |inner: &[u8]| [vec![12, 0], vec![0; 32], opt(18, b"eth0"), opt(9, inner)].concat();
        let o = dhcpv6(&relay(&relay(&hex(WIN_SOLICIT)))).expect("relayed");
        assert!(o.relayed);
        assert_eq!(o.message_type, Dhcpv6MessageType::Solicit as i32);
        assert_eq!(o.transaction_id, 0x13d1ed);
        assert_eq!(o.option_order, [8, 1, 3, 39, 16, 6]);

        let mut deep = hex(WIN_SOLICIT);
        for _ in 0..=MAX_RELAYS {
            deep = relay(&deep);
        }
        assert!(dhcpv6(&deep).is_none(), "too many relay layers");
        let no_inner = [vec![13, 0], vec![0; 32], opt(18, b"eth0")].concat();
        assert!(dhcpv6(&no_inner).is_none(), "a relay without a message");

        let many: Vec<u8> = [vec![1, 0, 0, 0], opt(6, &[0; 400]).repeat(100)].concat();
        let o = dhcpv6(&many).expect("solicit");
        assert_eq!(o.option_order.len(), MAX_LIST);
        assert_eq!(o.option_request.len(), MAX_LIST);
    }

    #[test]
    fn dhcpv6_malformed_lengths_and_other_kinds() {
        let mut overrun = hex(WIN_SOLICIT);
        overrun[6..8].copy_from_slice(&[0xff, 0xff]); // option 8 runs past the end
        assert!(dhcpv6(&overrun).is_none());
        let bad_ia = [vec![1, 0, 0, 0], opt(3, &[0; 8])].concat();
        assert!(dhcpv6(&bad_ia).is_none(), "IA_NA shorter than its header");
        let bad_class = [vec![1, 0, 0, 0], opt(16, &[0, 0, 1, 55, 0, 9, b'x'])].concat();
        assert!(dhcpv6(&bad_class).is_none(), "vendor class item overruns");
        assert!(dhcpv6(&[14, 0, 0, 0]).is_none()); // LEASEQUERY is not in the enum
        assert!(dhcpv6(&[0, 0, 0, 0]).is_none());
        assert!(dhcpv6(&[12; 30]).is_none(), "relay header cut short");
    }

    #[test]
    fn ndp_messages_as_tshark_shows_them() {
        use NdpMessageType as T;
        let ra = ndp(&hex(PPPOE_RA)).expect("ra");
        assert_eq!(ra.message_type, T::RouterAdvertisement as i32);
        assert_eq!(ra.cur_hop_limit, Some(64));
        assert_eq!(ra.router_lifetime_s, Some(1800));
        assert_eq!([ra.reachable_time_ms, ra.retrans_timer_ms], [Some(0); 2]);
        assert_eq!(ra.mtu, Some(1492));
        assert!(!ra.managed_flag && !ra.other_config_flag && ra.router_preference == 0);

        let ra = ndp(&hex(TEREDO_RA)).expect("ra");
        assert_eq!([ra.cur_hop_limit, ra.router_lifetime_s], [Some(0); 2]);
        assert_eq!(ra.reachable_time_ms, Some(15000));
        assert_eq!(ra.retrans_timer_ms, Some(2000));
        assert_eq!(ra.prefixes.len(), 1);
        let p = &ra.prefixes[0];
        // tshark shows the raw 2001:0:c288:1c4c:ff00:0:20:100; the bits past
        // /64 are cleared here.
        assert_eq!(&p.prefix[..], &v6("2001:0:c288:1c4c::")[..]);
        assert!(p.prefix_length == 64 && !p.on_link && p.autonomous);
        assert_eq!([p.valid_lifetime_s, p.preferred_lifetime_s], [u32::MAX; 2]);

        let na = ndp(&hex(PPPOE_NA)).expect("na");
        assert_eq!(na.message_type, T::NeighborAdvertisement as i32);
        assert!(na.router_flag && !na.solicited_flag && !na.override_flag);
        assert_eq!(&na.target_address[..], &v6("fe80::c801:eff:fe88:8")[..]);

        let na = ndp(&hex(WIN_NA)).expect("na");
        assert!(!na.router_flag && !na.solicited_flag && na.override_flag);
        assert_eq!(&na.target_address[..], &v6("fe80::c50d:519f:96a4:e108")[..]);
        assert_eq!(&na.target_link_layer[..], &hex("080027e6e559")[..]);

        let ns = ndp(&hex(WIN_NS)).expect("ns");
        assert_eq!(ns.message_type, T::NeighborSolicitation as i32);
        assert_eq!(&ns.target_address[..], &v6("fe80::c50d:519f:96a4:e108")[..]);
        assert!(ns.source_link_layer.is_empty());

        let rs = ndp(&hex(ANDROID_RS)).expect("rs");
        assert_eq!(rs.message_type, T::RouterSolicitation as i32);
        assert_eq!(&rs.source_link_layer[..], &hex("4c6af69ff627")[..]);
        assert_eq!(rs.cur_hop_limit, None, "RA fields stay unset");
    }

    #[test]
    fn ndp_flags_rdnss_redirect_and_malformed_options() {
        use NdpMessageType as T;
        // M, O and preference high (01); RDNSS with two servers; SLL.
        let mut ra = hex("8600000040c80000000000000000000019050000000000ff");
        ra.extend_from_slice(&[v6("2001:db8::53"), v6("2001:db8::54")].concat());
        ra.extend_from_slice(&hex("0101020000000001"));
        let o = ndp(&ra).expect("ra");
        assert!(o.managed_flag && o.other_config_flag);
        assert_eq!(o.router_preference, 1);
        assert_eq!(o.rdnss, [v6("2001:db8::53"), v6("2001:db8::54")]);
        assert_eq!(&o.source_link_layer[..], &hex("020000000001")[..]);

        let redirect = [hex("8900000000000000"), v6("fe80::1"), v6("2001:db8::9")].concat();
        let o = ndp(&[redirect.clone(), hex("0401000000000000")].concat()).expect("redirect");
        assert_eq!(o.message_type, T::Redirect as i32);
        assert_eq!(&o.target_address[..], &v6("fe80::1")[..]);
        assert_eq!(&o.destination_address[..], &v6("2001:db8::9")[..]);

        let rs = hex("8500000000000000");
        assert!(ndp(&[rs.clone(), hex("0100aabbccddeeff")].concat()).is_none()); // length 0
        assert!(ndp(&[rs.clone(), hex("0102aabbccddeeff")].concat()).is_none()); // overrun
        assert!(ndp(&[rs, vec![1]].concat()).is_none()); // a stray byte
        assert!(ndp(&hex("8501000000000000")).is_none(), "code 1");
        assert!(ndp(&hex("8000000000000000")).is_none(), "echo request");
        let mut bad_len = hex(TEREDO_RA);
        bad_len[18] = 129;
        assert!(ndp(&bad_len).expect("ra").prefixes.is_empty()); // a /129 prefix
        let mut spam = hex("86000000400000000000000000000000");
        spam.extend_from_slice(&[hex("0304"), vec![0; 30]].concat().repeat(200));
        assert_eq!(ndp(&spam).expect("ra").prefixes.len(), MAX_LIST);
    }

    #[test]
    fn every_truncation_returns_without_panic() {
        let binary = [
            [WIN_SOLICIT, PD_REPLY, PPPOE_RA, PPPOE_NA],
            [TEREDO_RA, WIN_NA, WIN_NS, ANDROID_RS],
        ];
        let text = [DLINK_NOTIFY, HUE_RESPONSE, EDGE_MSEARCH, DLINK_POST].map(<[u8]>::to_vec);
        for b in binary.concat().into_iter().map(hex).chain(text) {
            for cut in 0..=b.len() {
                let p = &b[..cut];
                let _ = (ssdp(p), http_request(p), dhcpv6(p), ndp(p));
            }
        }
        // Cuts inside the fixed part or an option are malformed; only those
        // between options leave a (shorter) message.
        let whole = |b: &[u8], f: fn(&[u8]) -> bool| {
            (0..b.len()).filter(|&c| f(&b[..c])).collect::<Vec<_>>()
        };
        assert_eq!(whole(&hex(TEREDO_RA), |b| ndp(b).is_some()), [16]);
        let reply = whole(&hex(PD_REPLY), |b| dhcpv6(b).is_some());
        assert_eq!(reply, [4, 18, 32, 51]);
        let head = DLINK_POST.len() - 5;
        assert!((0..head).all(|cut| http_request(&DLINK_POST[..cut]).is_none()));
        assert!((head..=DLINK_POST.len()).all(|cut| http_request(&DLINK_POST[..cut]).is_some()));
    }
}
