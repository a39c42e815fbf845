//! Device observations: the facts about a device that discovery,
//! address-assignment and handshake traffic carries
//! (`heimdall.sensor.v1.Observation`): ARP and DHCPv4 here; mDNS/DNS-SD,
//! LLMNR and NetBIOS names in [`names`]; SSDP, DHCPv6, neighbour discovery
//! and HTTP requests in [`wire`]; TLS ClientHellos (SNI, ALPN, JA3, JA4) in
//! [`tls`], also inside QUIC client Initials ([`quic`]).
//!
//! Parsers take the bytes of one message, check every length before they
//! read, and return `None` for anything that is not a well-formed message of
//! their kind. Observations are rare next to packets (a device sends a few
//! per minute), so they are built as protobuf messages directly.

pub mod names;
pub mod quic;
pub mod tls;
pub mod wire;

use heimdall_proto::sensor::v1::{
    ArpObservation, ArpOp, ClientFqdn, Dhcpv4Observation, observation::Kind,
};

/// The most a connection's opening bytes are buffered while a ClientHello or
/// an HTTP request header is incomplete.
pub const MAX_OPENING: usize = 16 * 1024;

/// What the client's first bytes on a TCP connection showed so far.
#[derive(Debug, PartialEq)]
// Returned once per connection and moved straight into an observation:
// boxing would cost an allocation to save nothing.
#[expect(clippy::large_enum_variant)]
pub enum Opening {
    /// A valid start of a ClientHello or HTTP request: call again with the
    /// next bytes (they were kept in the buffer).
    NeedMore,
    /// Decided: the observation, if the opening was one; the buffer is freed.
    Done(Option<Kind>),
}

/// Feeds the next in-order bytes the client sent on a TCP connection.
/// `buf` holds what earlier calls kept (empty at first; it stays empty, and
/// allocates nothing, when one segment decides). Gives up once
/// [`MAX_OPENING`] bytes did not complete a hello or header.
pub fn tcp_opening(buf: &mut Vec<u8>, data: &[u8]) -> Opening {
    let first_call = buf.is_empty();
    if !first_call {
        let room = MAX_OPENING.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
    }
    let joined: &[u8] = if first_call { data } else { buf };
    let step = match joined.first() {
        None => Opening::NeedMore,
        Some(&0x16) => match tls::client_hello_from_stream(joined) {
            tls::Hello::Hello(h) => Opening::Done(Some(Kind::TlsClientHello(h))),
            tls::Hello::NotTls => Opening::Done(None),
            tls::Hello::NeedMore => Opening::NeedMore,
        },
        Some(c) if c.is_ascii_uppercase() => match wire::http_request(joined) {
            Some(h) => Opening::Done(Some(Kind::Http(h))),
            None if wire::http_method_prefix(joined) => Opening::NeedMore,
            None => Opening::Done(None),
        },
        Some(_) => Opening::Done(None),
    };
    match step {
        Opening::NeedMore if joined.len() < MAX_OPENING => {
            if first_call {
                buf.extend_from_slice(data);
            }
            Opening::NeedMore
        }
        Opening::NeedMore => {
            *buf = Vec::new();
            Opening::Done(None)
        }
        done => {
            *buf = Vec::new();
            done
        }
    }
}

/// A discovery or address-assignment message on one of the well-known UDP
/// ports: DHCPv4 67/68, mDNS 5353, LLMNR 5355, NetBIOS name service 137,
/// SSDP 1900 (either side), DHCPv6 546/547.
pub fn udp_discovery(sp: u16, dp: u16, data: &[u8]) -> Option<Kind> {
    let either = |p: u16| sp == p || dp == p;
    if matches!((sp, dp), (68, 67) | (67, 68) | (67, 67)) {
        dhcpv4(data).map(Kind::Dhcpv4)
    } else if either(5353) {
        names::mdns(data).map(Kind::Mdns)
    } else if either(5355) {
        names::llmnr(data).map(Kind::Llmnr)
    } else if either(137) {
        names::netbios_ns(data).map(Kind::NetbiosNs)
    } else if either(1900) {
        wire::ssdp(data).map(Kind::Ssdp)
    } else if matches!((sp, dp), (546 | 547, 546 | 547)) {
        wire::dhcpv6(data).map(Kind::Dhcpv6)
    } else {
        None
    }
}

/// An ARP packet for IPv4 over Ethernet (hardware type 1, protocol 0x0800,
/// lengths 6 and 4); other ARP packets are not observations.
pub fn arp(b: &[u8]) -> Option<ArpObservation> {
    if b.len() < 28 || b[0..2] != [0, 1] || b[2..4] != [0x08, 0x00] || b[4] != 6 || b[5] != 4 {
        return None;
    }
    let op = match u16::from_be_bytes([b[6], b[7]]) {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        3 => ArpOp::RarpRequest,
        4 => ArpOp::RarpReply,
        _ => return None,
    };
    let (smac, sip, tmac, tip) = (&b[8..14], &b[14..18], &b[18..24], &b[24..28]);
    Some(ArpObservation {
        op: op as i32,
        sender_mac: smac.to_vec().into(),
        sender_ip: sip.to_vec().into(),
        target_mac: tmac.to_vec().into(),
        target_ip: tip.to_vec().into(),
        gratuitous: sip == tip && sip != [0, 0, 0, 0],
        probe: sip == [0, 0, 0, 0],
    })
}

/// The DHCP magic cookie after the fixed BOOTP header.
const COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Text from the wire: UTF-8 with invalid sequences replaced, trailing NULs
/// (some clients count them in the length) dropped.
fn text(b: &[u8]) -> String {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A DHCPv4 (BOOTP) message: the fixed header and the options a device's
/// identity shows in. Options that overflow into `file`/`sname` (option 52)
/// are read there too. `None` for anything that is not BOOTP with the DHCP
/// cookie.
pub fn dhcpv4(b: &[u8]) -> Option<Dhcpv4Observation> {
    if b.len() < 240 || !matches!(b[0], 1 | 2) || b[1] != 1 || b[2] != 6 || b[236..240] != COOKIE {
        return None;
    }
    let mut o = Dhcpv4Observation {
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        flags: u16::from_be_bytes([b[10], b[11]]) as u32,
        ciaddr: b[12..16].to_vec().into(),
        yiaddr: b[16..20].to_vec().into(),
        siaddr: b[20..24].to_vec().into(),
        giaddr: b[24..28].to_vec().into(),
        chaddr: b[28..34].to_vec().into(),
        ..Default::default()
    };
    let mut order = Vec::new();
    let overload = options(&b[240..], &mut o, &mut order)?;
    if overload & 1 != 0 {
        options(&b[108..236], &mut o, &mut order)?;
    }
    if overload & 2 != 0 {
        options(&b[44..108], &mut o, &mut order)?;
    }
    o.option_order = order.into();
    if o.message_type == 0 {
        // BOOTP without option 53 is not a DHCP message.
        return None;
    }
    Some(o)
}

/// Reads one options area into `o`; returns the option-overload value (52).
/// A length running past the end makes the message malformed.
fn options(mut b: &[u8], o: &mut Dhcpv4Observation, order: &mut Vec<u8>) -> Option<u8> {
    let mut overload = 0;
    while let Some((&code, rest)) = b.split_first() {
        match code {
            0 => {
                b = rest;
                continue;
            }
            255 => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let v = rest.get(..len as usize)?;
        b = &rest[len as usize..];
        order.push(code);
        let u32_of =
            |v: &[u8]| (v.len() == 4).then(|| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        match code {
            // The enum's values are the codes on the wire; unknown codes
            // are kept as numbers.
            53 if len == 1 => o.message_type = v[0] as i32,
            12 => o.host_name = text(v),
            55 => o.parameter_request_list = v.to_vec().into(),
            60 => o.vendor_class = text(v),
            61 => o.client_id = v.to_vec().into(),
            50 if len == 4 => o.requested_address = v.to_vec().into(),
            54 if len == 4 => o.server_identifier = v.to_vec().into(),
            51 => o.lease_time_s = u32_of(v),
            57 if len == 2 => o.max_message_size = Some(u16::from_be_bytes([v[0], v[1]]) as u32),
            77 => o.user_class = v.to_vec().into(),
            15 => o.domain_name = text(v),
            81 if len >= 3 => {
                // Flags, two deprecated RCODE bytes, then the name: in DNS
                // wire format when the E flag is set, else ASCII.
                let name = if v[0] & 0x04 != 0 {
                    wire_name(&v[3..])
                } else {
                    text(&v[3..])
                };
                o.client_fqdn = Some(ClientFqdn {
                    flags: v[0] as u32,
                    name,
                });
            }
            52 if len == 1 => overload = v[0],
            _ => {}
        }
    }
    Some(overload)
}

/// A name in DNS wire format without compression (RFC 4702 allows none):
/// labels joined by dots; stops at the root label or at a bad length.
fn wire_name(mut b: &[u8]) -> String {
    let mut out = String::new();
    while let Some((&len, rest)) = b.split_first() {
        if len == 0 || len > 63 {
            break;
        }
        let Some(label) = rest.get(..len as usize) else {
            break;
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&String::from_utf8_lossy(label));
        b = &rest[len as usize..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use heimdall_proto::sensor::v1::DhcpMessageType;

    /// A DHCPDISCOVER as a Linux dhclient sends it (bytes as on the wire).
    fn discover() -> Vec<u8> {
        let mut b = vec![0u8; 240];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        b[10] = 0x80;
        b[28..34].copy_from_slice(&[0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        b[236..240].copy_from_slice(&COOKIE);
        b.extend_from_slice(&[53, 1, 1]);
        b.extend_from_slice(&[12, 6]);
        b.extend_from_slice(b"kettle");
        b.extend_from_slice(&[55, 4, 1, 3, 6, 15]);
        b.extend_from_slice(&[60, 4]);
        b.extend_from_slice(b"udhc");
        b.extend_from_slice(&[50, 4, 192, 168, 1, 50]);
        b.extend_from_slice(&[81, 11, 0x04, 0, 0, 3, b'p', b'i', b'1', 3, b'l', b'a', b'n']);
        b.push(0); // pad
        b.push(255);
        b
    }

    #[test]
    fn a_discover_gives_the_identity_options_in_order() {
        let o = dhcpv4(&discover()).expect("a DHCP message");
        assert_eq!(o.message_type, DhcpMessageType::Discover as i32);
        assert_eq!(o.xid, 0xdead_beef);
        assert_eq!(o.flags, 0x8000);
        assert_eq!(&o.chaddr[..], &[0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(o.host_name, "kettle");
        assert_eq!(&o.parameter_request_list[..], &[1, 3, 6, 15]);
        assert_eq!(o.vendor_class, "udhc");
        assert_eq!(&o.requested_address[..], &[192, 168, 1, 50]);
        assert_eq!(
            o.client_fqdn.as_ref().map(|f| f.name.as_str()),
            Some("pi1.lan")
        );
        assert_eq!(&o.option_order[..], &[53, 12, 55, 60, 50, 81]);
    }

    #[test]
    fn malformed_messages_are_not_observations_and_never_panic() {
        let good = discover();
        for cut in 0..good.len() {
            // A cut inside the options is malformed; at the end, fine.
            let _ = dhcpv4(&good[..cut]);
        }
        let mut bad = good.clone();
        bad[236] = 0; // no cookie
        assert!(dhcpv4(&bad).is_none());
        let mut overrun = good[..240].to_vec();
        overrun.extend_from_slice(&[53, 1, 1, 12, 200, b'x']);
        assert!(
            dhcpv4(&overrun).is_none(),
            "an option longer than the message"
        );
        assert!(arp(&[0u8; 27]).is_none());
    }

    #[test]
    fn an_opening_split_across_segments_is_buffered_then_freed() {
        let req = b"GET /scale/upload HTTP/1.1\r\nHost: www.fitbit.com\r\nUser-Agent: x/1\r\n\r\n";
        let mut buf = Vec::new();
        assert_eq!(tcp_opening(&mut buf, &req[..20]), Opening::NeedMore);
        assert_eq!(buf.len(), 20);
        let Opening::Done(Some(Kind::Http(h))) = tcp_opening(&mut buf, &req[20..]) else {
            panic!("an HTTP request");
        };
        assert_eq!(
            (h.host.as_str(), h.uri.as_str()),
            ("www.fitbit.com", "/scale/upload")
        );
        assert_eq!(buf.capacity(), 0);
        // Not a protocol we read: decided at once, nothing kept.
        assert_eq!(
            tcp_opening(&mut buf, b"\x00\x01binary"),
            Opening::Done(None)
        );
        assert!(buf.is_empty());
        // A header that never ends stops at the bound.
        let mut buf = Vec::new();
        let mut step = tcp_opening(&mut buf, b"GET / HTTP/1.1\r\nX: ");
        while step == Opening::NeedMore {
            step = tcp_opening(&mut buf, &[b'a'; 1000]);
        }
        assert_eq!(step, Opening::Done(None));
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn arp_requests_probes_and_announcements() {
        let mut b = vec![0, 1, 8, 0, 6, 4, 0, 1];
        b.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 192, 168, 1, 9]);
        let probe = arp(&b).expect("arp");
        assert_eq!(probe.op, ArpOp::Request as i32);
        assert!(probe.probe && !probe.gratuitous);
        b[14..18].copy_from_slice(&[192, 168, 1, 9]);
        let announce = arp(&b).expect("arp");
        assert!(announce.gratuitous && !announce.probe);
    }
}
