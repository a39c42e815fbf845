//! Link layers down to the network layer: Ethernet (with VLAN, Q-in-Q,
//! MPLS, PPPoE, VN-Tag, 802.1ah PBB, Cisco FabricPath, LLC/SNAP), Linux
//! cooked capture v1 and v2, raw IP, BSD loopback/NULL, PPP, and 802.11
//! with or without radiotap.
//!
//! Decoding borrows the packet: the result points into the captured bytes.

/// libpcap link types this module understands.
pub mod linktype {
    pub const NULL: u16 = 0;
    pub const ETHERNET: u16 = 1;
    pub const PPP: u16 = 9;
    pub const RAW_OPENBSD: u16 = 12;
    pub const RAW_BSDOS: u16 = 14;
    pub const PPP_SERIAL: u16 = 50;
    pub const RAW: u16 = 101;
    pub const IEEE802_11: u16 = 105;
    pub const LOOP: u16 = 108;
    pub const LINUX_SLL: u16 = 113;
    pub const IEEE802_11_RADIOTAP: u16 = 127;
    pub const IPV4: u16 = 228;
    pub const IPV6: u16 = 229;
    pub const LINUX_SLL2: u16 = 276;
}

/// What sits on top of the link layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3Kind {
    Ipv4,
    Ipv6,
    Arp,
    /// Something that is neither IP nor ARP (LLDP, STP, EAPOL, ...).
    Other(u16),
}

/// The network-layer payload of a frame and what the link layer told us.
#[derive(Debug, Clone, Copy)]
pub struct L3<'a> {
    pub kind: L3Kind,
    pub data: &'a [u8],
    /// Outer and inner 802.1Q tags (VLAN ids), when present.
    pub vlan: Option<u16>,
    pub inner_vlan: Option<u16>,
    /// Link-layer source and destination, when the link layer has them.
    pub src_mac: Option<[u8; 6]>,
    pub dst_mac: Option<[u8; 6]>,
}

impl<'a> L3<'a> {
    fn new(kind: L3Kind, data: &'a [u8]) -> Self {
        L3 {
            kind,
            data,
            vlan: None,
            inner_vlan: None,
            src_mac: None,
            dst_mac: None,
        }
    }
}

/// Why a frame gave no network layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The frame ends before its headers do.
    Truncated(&'static str),
    /// A link type this decoder does not know.
    UnknownLinkType(u16),
    /// A frame the decoder understands but that carries no packet for us
    /// (802.11 management/control, encrypted 802.11 data, PPP control).
    NotData,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Truncated(what) => write!(f, "truncated {what} header"),
            LinkError::UnknownLinkType(t) => write!(f, "unknown link type {t}"),
            LinkError::NotData => write!(f, "no network-layer payload"),
        }
    }
}

pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn mac(b: &[u8]) -> [u8; 6] {
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// Decodes one frame of the given link type.
pub fn decode(linktype: u16, data: &[u8]) -> Result<L3<'_>, LinkError> {
    use linktype::*;
    match linktype {
        ETHERNET => ethernet(data),
        RAW | RAW_OPENBSD | RAW_BSDOS | IPV4 | IPV6 => raw_ip(data),
        NULL | LOOP => {
            if data.len() < 4 {
                return Err(LinkError::Truncated("loopback"));
            }
            // The family is in the writer's byte order: look at both.
            let le = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            let be = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let family = if le < 256 { le } else { be };
            match family {
                2 => Ok(L3::new(L3Kind::Ipv4, &data[4..])),
                10 | 24 | 28 | 30 => Ok(L3::new(L3Kind::Ipv6, &data[4..])),
                other => Ok(L3::new(L3Kind::Other(other as u16), &data[4..])),
            }
        }
        PPP | PPP_SERIAL => ppp(data),
        LINUX_SLL => {
            if data.len() < 16 {
                return Err(LinkError::Truncated("Linux cooked"));
            }
            let arphrd = be16(data, 2);
            let mut l3 = sll_payload(arphrd, be16(data, 14), &data[16..])?;
            if be16(data, 4) == 6 {
                l3.src_mac = Some(mac(&data[6..12]));
            }
            Ok(l3)
        }
        LINUX_SLL2 => {
            if data.len() < 20 {
                return Err(LinkError::Truncated("Linux cooked v2"));
            }
            let arphrd = be16(data, 8);
            let mut l3 = sll_payload(arphrd, be16(data, 0), &data[20..])?;
            if data[11] == 6 {
                l3.src_mac = Some(mac(&data[12..18]));
            }
            Ok(l3)
        }
        IEEE802_11_RADIOTAP => {
            if data.len() < 8 {
                return Err(LinkError::Truncated("radiotap"));
            }
            let len = u16::from_le_bytes([data[2], data[3]]) as usize;
            if len < 8 || data.len() < len {
                return Err(LinkError::Truncated("radiotap"));
            }
            ieee80211(&data[len..])
        }
        IEEE802_11 => ieee80211(data),
        other => Err(LinkError::UnknownLinkType(other)),
    }
}

/// Raw IP: the version nibble says which.
pub fn raw_ip(data: &[u8]) -> Result<L3<'_>, LinkError> {
    match data.first().map(|b| b >> 4) {
        Some(4) => Ok(L3::new(L3Kind::Ipv4, data)),
        Some(6) => Ok(L3::new(L3Kind::Ipv6, data)),
        Some(_) => Ok(L3::new(L3Kind::Other(0), data)),
        None => Err(LinkError::Truncated("IP")),
    }
}

fn sll_payload(arphrd: u16, proto: u16, payload: &[u8]) -> Result<L3<'_>, LinkError> {
    // ARPHRD_IEEE80211_RADIOTAP / ARPHRD_IEEE80211 carry 802.11 frames; the
    // protocol field is meaningless there. Everything else carries an
    // Ethernet type (or a Linux pseudo-type for non-Ethernet payloads).
    match arphrd {
        803 => decode(linktype::IEEE802_11_RADIOTAP, payload),
        801 => ieee80211(payload),
        _ => ethertype(proto, payload, None, None),
    }
}

/// PPP with or without the HDLC address and control bytes.
pub fn ppp(data: &[u8]) -> Result<L3<'_>, LinkError> {
    let data = if data.len() >= 2 && data[0] == 0xff && data[1] == 0x03 {
        &data[2..]
    } else {
        data
    };
    if data.is_empty() {
        return Err(LinkError::Truncated("PPP"));
    }
    // Protocol-field compression: a one-byte protocol has its low bit set.
    let (proto, rest) = if data[0] & 1 == 1 {
        (data[0] as u16, &data[1..])
    } else if data.len() >= 2 {
        (be16(data, 0), &data[2..])
    } else {
        return Err(LinkError::Truncated("PPP"));
    };
    match proto {
        0x0021 => Ok(L3::new(L3Kind::Ipv4, rest)),
        0x0057 => Ok(L3::new(L3Kind::Ipv6, rest)),
        _ => Err(LinkError::NotData),
    }
}

/// Ethernet II and 802.3 frames.
pub fn ethernet(data: &[u8]) -> Result<L3<'_>, LinkError> {
    if data.len() < 14 {
        return Err(LinkError::Truncated("Ethernet"));
    }
    let dst = mac(&data[0..6]);
    let src = mac(&data[6..12]);
    ethertype(be16(data, 12), &data[14..], Some(src), Some(dst))
}

/// Follows an Ethernet type through tags and shims to the network layer.
fn ethertype<'a>(
    mut etype: u16,
    mut rest: &'a [u8],
    mut src: Option<[u8; 6]>,
    mut dst: Option<[u8; 6]>,
) -> Result<L3<'a>, LinkError> {
    let mut vlans: [Option<u16>; 2] = [None, None];
    let mut tags = 0usize;
    // Bounded: every step consumes bytes, and a frame nests a few layers at most.
    for _ in 0..32 {
        match etype {
            0x0800 => return Ok(finish(L3Kind::Ipv4, rest, vlans, src, dst)),
            0x86dd => return Ok(finish(L3Kind::Ipv6, rest, vlans, src, dst)),
            0x0806 | 0x8035 => return Ok(finish(L3Kind::Arp, rest, vlans, src, dst)),
            0x8100 | 0x88a8 | 0x9100 | 0x9200 => {
                if rest.len() < 4 {
                    return Err(LinkError::Truncated("VLAN"));
                }
                if tags < 2 {
                    vlans[tags] = Some(be16(rest, 0) & 0x0fff);
                }
                tags += 1;
                etype = be16(rest, 2);
                rest = &rest[4..];
            }
            0x8847 | 0x8848 => {
                // MPLS: labels until bottom of stack, then IP by version.
                loop {
                    if rest.len() < 4 {
                        return Err(LinkError::Truncated("MPLS"));
                    }
                    let bottom = rest[2] & 1 == 1;
                    rest = &rest[4..];
                    if bottom {
                        break;
                    }
                }
                let l3 = raw_ip(rest)?;
                return Ok(finish(l3.kind, rest, vlans, src, dst));
            }
            0x8864 => {
                // PPPoE session: 6-byte header, then a PPP protocol number.
                if rest.len() < 8 {
                    return Err(LinkError::Truncated("PPPoE"));
                }
                let len = be16(rest, 4) as usize;
                let payload = &rest[6..];
                let payload = &payload[..len.min(payload.len())];
                let l3 = ppp(payload)?;
                return Ok(finish(l3.kind, l3.data, vlans, src, dst));
            }
            0x8926 => {
                // VN-Tag: 4 bytes of tag, then the real type.
                if rest.len() < 6 {
                    return Err(LinkError::Truncated("VN-Tag"));
                }
                etype = be16(rest, 4);
                rest = &rest[6..];
            }
            0x88e7 => {
                // 802.1ah: I-TAG, then the customer's Ethernet header.
                if rest.len() < 18 {
                    return Err(LinkError::Truncated("802.1ah"));
                }
                dst = Some(mac(&rest[4..10]));
                src = Some(mac(&rest[10..16]));
                etype = be16(rest, 16);
                rest = &rest[18..];
            }
            0x8903 => {
                // Cisco FabricPath: FTag/TTL, then the inner Ethernet header.
                if rest.len() < 16 {
                    return Err(LinkError::Truncated("FabricPath"));
                }
                dst = Some(mac(&rest[2..8]));
                src = Some(mac(&rest[8..14]));
                etype = be16(rest, 14);
                rest = &rest[16..];
            }
            t if t <= 1500 => {
                // 802.3 length field: LLC, possibly with SNAP.
                let len = (t as usize).min(rest.len());
                let llc = &rest[..len];
                if llc.len() >= 8 && llc[0] == 0xaa && llc[1] == 0xaa && llc[2] == 0x03 {
                    etype = be16(llc, 6);
                    rest = &llc[8..];
                } else {
                    return Ok(finish(L3Kind::Other(t), llc, vlans, src, dst));
                }
            }
            other => return Ok(finish(L3Kind::Other(other), rest, vlans, src, dst)),
        }
    }
    Err(LinkError::NotData)
}

fn finish<'a>(
    kind: L3Kind,
    data: &'a [u8],
    vlans: [Option<u16>; 2],
    src: Option<[u8; 6]>,
    dst: Option<[u8; 6]>,
) -> L3<'a> {
    L3 {
        kind,
        data,
        vlan: vlans[0],
        inner_vlan: vlans[1],
        src_mac: src,
        dst_mac: dst,
    }
}

/// An 802.11 frame: data frames only, unprotected, with LLC/SNAP.
pub fn ieee80211(data: &[u8]) -> Result<L3<'_>, LinkError> {
    ieee80211_fc(data, false)
}

/// An 802.11 frame whose frame-control bytes may come swapped (Cisco's
/// CAPWAP access points send them so): a protocol version other than 0 in
/// the first byte, with 0 in the second, means swapped.
pub fn ieee80211_maybe_swapped(data: &[u8]) -> Result<L3<'_>, LinkError> {
    let swapped = data.len() >= 2 && data[0] & 0x03 != 0 && data[1] & 0x03 == 0;
    ieee80211_fc(data, swapped)
}

fn ieee80211_fc(data: &[u8], swapped: bool) -> Result<L3<'_>, LinkError> {
    if data.len() < 24 {
        return Err(LinkError::Truncated("802.11"));
    }
    let (fc0, fc1) = if swapped {
        (data[1], data[0])
    } else {
        (data[0], data[1])
    };
    let ftype = (fc0 >> 2) & 0x3;
    let subtype = fc0 >> 4;
    if ftype != 2 || subtype & 0x4 != 0 {
        // Not data, or a null-function frame without a body.
        return Err(LinkError::NotData);
    }
    if fc1 & 0x40 != 0 {
        return Err(LinkError::NotData); // protected
    }
    let to_ds = fc1 & 0x1 != 0;
    let from_ds = fc1 & 0x2 != 0;
    let mut len = 24;
    if to_ds && from_ds {
        len += 6;
    }
    let qos = subtype & 0x8 != 0;
    if qos {
        len += 2;
        if fc1 & 0x80 != 0 {
            len += 4; // HT control
        }
    }
    if data.len() < len + 8 {
        return Err(LinkError::Truncated("802.11"));
    }
    let a1 = mac(&data[4..10]);
    let a2 = mac(&data[10..16]);
    let a3 = mac(&data[16..22]);
    let (dst, src) = match (to_ds, from_ds) {
        (false, false) => (a1, a2),
        (true, false) => (a3, a2),
        (false, true) => (a1, a3),
        (true, true) => (a3, mac(&data[24..30])),
    };
    let body = &data[len..];
    if qos && data[24 + if to_ds && from_ds { 6 } else { 0 }] & 0x80 != 0 {
        // A-MSDU: the first subframe (DA, SA, length, then LLC).
        if body.len() < 14 + 8 {
            return Err(LinkError::Truncated("802.11 A-MSDU"));
        }
        let sub_len = (be16(body, 12) as usize).min(body.len() - 14);
        return llc_snap(
            &body[14..14 + sub_len],
            Some(mac(&body[6..12])),
            Some(mac(&body[0..6])),
        );
    }
    llc_snap(body, Some(src), Some(dst))
}

fn llc_snap<'a>(
    body: &'a [u8],
    src: Option<[u8; 6]>,
    dst: Option<[u8; 6]>,
) -> Result<L3<'a>, LinkError> {
    if body.len() < 8 {
        return Err(LinkError::Truncated("LLC"));
    }
    if body[0] == 0xaa && body[1] == 0xaa && body[2] == 0x03 {
        ethertype(be16(body, 6), &body[8..], src, dst)
    } else {
        Err(LinkError::NotData)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: [u8; 4] = [0x45, 0, 0, 20];

    fn eth(etype: u16, rest: &[u8]) -> Vec<u8> {
        let mut f = vec![1, 2, 3, 4, 5, 6, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf];
        f.extend_from_slice(&etype.to_be_bytes());
        f.extend_from_slice(rest);
        f
    }

    #[test]
    fn ethernet_q_in_q_keeps_both_tags() {
        let mut rest = vec![0x00, 0x64, 0x81, 0x00, 0x00, 0xc8, 0x08, 0x00];
        rest.extend_from_slice(&IP);
        let f = eth(0x88a8, &rest);
        let l3 = decode(linktype::ETHERNET, &f).expect("decodes");
        assert_eq!(
            (l3.kind, l3.vlan, l3.inner_vlan),
            (L3Kind::Ipv4, Some(100), Some(200))
        );
        assert_eq!(l3.data, IP);
        assert_eq!(l3.src_mac, Some([0xa, 0xb, 0xc, 0xd, 0xe, 0xf]));
    }

    #[test]
    fn mpls_stack_then_ip() {
        let mut rest = vec![0, 0, 0x10, 64, 0, 0, 0x21, 64];
        rest.extend_from_slice(&IP);
        let frame = eth(0x8847, &rest);
        let l3 = decode(linktype::ETHERNET, &frame).expect("decodes");
        assert_eq!((l3.kind, l3.data), (L3Kind::Ipv4, &IP[..]));
    }

    #[test]
    fn pppoe_session_to_ipv6() {
        let mut rest = vec![0x11, 0, 0, 1, 0, 6, 0, 0x57];
        rest.extend_from_slice(&[0x60, 0, 0, 0]);
        let frame = eth(0x8864, &rest);
        let l3 = decode(linktype::ETHERNET, &frame).expect("decodes");
        assert_eq!(l3.kind, L3Kind::Ipv6);
        assert_eq!(l3.data.len(), 4);
    }

    #[test]
    fn loopback_in_either_byte_order() {
        for fam in [[2u8, 0, 0, 0], [0, 0, 0, 2], [30, 0, 0, 0], [0, 0, 0, 24]] {
            let mut f = fam.to_vec();
            f.extend_from_slice(&IP);
            let l3 = decode(linktype::NULL, &f).expect("decodes");
            assert!(matches!(l3.kind, L3Kind::Ipv4 | L3Kind::Ipv6));
        }
    }

    #[test]
    fn truncated_headers_are_errors_not_panics() {
        for lt in [0u16, 1, 9, 101, 105, 113, 127, 276] {
            for n in 0..40 {
                let f = vec![0xaa; n];
                let _ = decode(lt, &f);
            }
        }
        assert_eq!(
            decode(1, &[0; 10]).err(),
            Some(LinkError::Truncated("Ethernet"))
        );
        assert_eq!(
            decode(147, &[0; 10]).err(),
            Some(LinkError::UnknownLinkType(147))
        );
    }

    #[test]
    fn cisco_swapped_frame_control() {
        // A data frame to the DS (FC 08 01), sent with its FC bytes swapped.
        let mut f = vec![0x01, 0x08, 0, 0];
        f.extend_from_slice(&[0; 20]);
        f.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
        f.extend_from_slice(&IP);
        assert_eq!(ieee80211(&f).err(), Some(LinkError::NotData));
        let l3 = ieee80211_maybe_swapped(&f).expect("decodes");
        assert_eq!((l3.kind, l3.data), (L3Kind::Ipv4, &IP[..]));
    }

    #[test]
    fn sll_and_sll2() {
        let mut f = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        f.extend_from_slice(&IP);
        let l3 = decode(linktype::LINUX_SLL, &f).expect("decodes");
        assert_eq!(
            (l3.kind, l3.src_mac),
            (L3Kind::Ipv4, Some([1, 2, 3, 4, 5, 6]))
        );
        let mut f = vec![
            0x86, 0xdd, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        let l3 = decode(linktype::LINUX_SLL2, &f).expect("decodes");
        assert_eq!(l3.kind, L3Kind::Ipv6);
    }
}
