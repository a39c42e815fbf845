//! IPv4 and IPv6 headers (with IPv6 extension headers), and addresses kept
//! the way Zeek keeps them: 16 bytes, IPv4 as IPv4-mapped IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::link::be16;

/// An IP address in 16 bytes; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    pub fn v4(b: [u8; 4]) -> Self {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&b);
        Addr(a)
    }

    pub fn v6(b: [u8; 16]) -> Self {
        Addr(b)
    }

    pub fn is_v4(&self) -> bool {
        self.0[..10] == [0; 10] && self.0[10] == 0xff && self.0[11] == 0xff
    }

    /// The address as it goes on the wire: 4 bytes for IPv4, 16 for IPv6.
    pub fn octets(&self) -> &[u8] {
        if self.is_v4() {
            &self.0[12..]
        } else {
            &self.0[..]
        }
    }

    pub fn ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::new(
                self.0[12], self.0[13], self.0[14], self.0[15],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Addr::v4(v4.octets()),
            IpAddr::V6(v6) => Addr::v6(v6.octets()),
        }
    }
}

impl std::fmt::Debug for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.ip())
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.ip())
    }
}

/// Where a fragment sits in its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub id: u32,
    /// Offset of this fragment's payload in bytes.
    pub offset: u32,
    pub more: bool,
    /// IPv6: offset of the fragment header, and of the next-header byte that
    /// points at it (so the datagram can be rebuilt without it).
    pub v6_frag_off: usize,
    pub v6_nh_ptr: usize,
}

/// A parsed IP header and the transport payload it carries.
#[derive(Debug, Clone, Copy)]
pub struct IpPacket<'a> {
    pub v6: bool,
    pub src: Addr,
    pub dst: Addr,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// The datagram length the header declares (IPv4 total length; IPv6 40 +
    /// payload length). This is what Zeek sums into *_ip_bytes.
    pub total_len: u32,
    /// Bytes of IP header, extension headers included.
    pub hdr_len: usize,
    /// The whole packet as captured, cut at the declared length.
    pub raw: &'a [u8],
    /// Transport payload, cut at the declared length; may be shorter than
    /// declared when the snap length cut the packet.
    pub payload: &'a [u8],
    /// Transport payload length per the header.
    pub payload_len: u32,
    pub frag: Option<Fragment>,
    pub ttl: u8,
}

impl IpPacket<'_> {
    /// True when the capture holds fewer bytes than the header declares.
    pub fn truncated(&self) -> bool {
        (self.payload.len() as u32) < self.payload_len
    }
}

/// Why an IP header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpError {
    Truncated,
    BadVersion,
    BadHeaderLength,
    /// IPv4 header checksum wrong (only when checksums are verified).
    BadChecksum,
    /// Extension header chain longer than the packet or than we follow.
    BadExtensionHeaders,
}

impl IpError {
    pub fn name(&self) -> &'static str {
        match self {
            IpError::Truncated => "truncated_IP",
            IpError::BadVersion => "bad_IP_version",
            IpError::BadHeaderLength => "bogus_IP_header_lengths",
            IpError::BadChecksum => "bad_IP_checksum",
            IpError::BadExtensionHeaders => "bad_IPv6_extension_headers",
        }
    }
}

/// Parses an IPv4 or IPv6 packet (the version nibble decides).
pub fn parse(data: &[u8], verify_checksum: bool) -> Result<IpPacket<'_>, IpError> {
    parse_with(data, verify_checksum, false)
}

/// Like [`parse`]; with `offloaded` an IPv4 total length of 0 (left for the
/// network card to fill in by segmentation offload) means the captured length.
pub fn parse_with(
    data: &[u8],
    verify_checksum: bool,
    offloaded: bool,
) -> Result<IpPacket<'_>, IpError> {
    match data.first().map(|b| b >> 4) {
        Some(4) => parse_v4(data, verify_checksum, offloaded),
        Some(6) => parse_v6(data),
        Some(_) => Err(IpError::BadVersion),
        None => Err(IpError::Truncated),
    }
}

fn parse_v4(data: &[u8], verify_checksum: bool, offloaded: bool) -> Result<IpPacket<'_>, IpError> {
    if data.len() < 20 {
        return Err(IpError::Truncated);
    }
    let hdr_len = ((data[0] & 0x0f) as usize) * 4;
    let declared = be16(data, 2) as usize;
    let mut total_len = declared;
    if total_len == 0 && offloaded {
        total_len = data.len();
    }
    if hdr_len < 20 || total_len < hdr_len {
        return Err(IpError::BadHeaderLength);
    }
    if data.len() < hdr_len {
        return Err(IpError::Truncated);
    }
    if verify_checksum && internet_checksum(&data[..hdr_len], 0) != 0 {
        return Err(IpError::BadChecksum);
    }
    let flags_off = be16(data, 6);
    let more = flags_off & 0x2000 != 0;
    let offset = ((flags_off & 0x1fff) as u32) * 8;
    let frag = if more || offset != 0 {
        Some(Fragment {
            id: be16(data, 4) as u32,
            offset,
            more,
            v6_frag_off: 0,
            v6_nh_ptr: 0,
        })
    } else {
        None
    };
    let end = total_len.min(data.len());
    Ok(IpPacket {
        v6: false,
        src: Addr::v4([data[12], data[13], data[14], data[15]]),
        dst: Addr::v4([data[16], data[17], data[18], data[19]]),
        proto: data[9],
        // What the header says (0 when offloaded), as Zeek counts it.
        total_len: declared as u32,
        hdr_len,
        raw: &data[..end],
        payload: &data[hdr_len..end],
        payload_len: (total_len - hdr_len) as u32,
        frag,
        ttl: data[8],
    })
}

fn parse_v6(data: &[u8]) -> Result<IpPacket<'_>, IpError> {
    if data.len() < 40 {
        return Err(IpError::Truncated);
    }
    let plen = be16(data, 4) as usize;
    let total_len = 40 + plen;
    let end = total_len.min(data.len());
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&data[8..24]);
    dst.copy_from_slice(&data[24..40]);
    let mut nh = data[6];
    let mut nh_ptr = 6usize;
    let mut off = 40usize;
    let mut frag = None;
    // Follow the extension header chain (bounded).
    for _ in 0..16 {
        match nh {
            0 | 43 | 60 | 135 | 139 | 140 => {
                if end < off + 8 {
                    return Err(IpError::BadExtensionHeaders);
                }
                let len = (data[off + 1] as usize + 1) * 8;
                if end < off + len {
                    return Err(IpError::BadExtensionHeaders);
                }
                if nh == 43 {
                    // Routing type 0 (and 2) with segments left: the final
                    // destination is the last address listed.
                    let rtype = data[off + 2];
                    let left = data[off + 3];
                    let addrs = (len - 8) / 16;
                    if (rtype == 0 || rtype == 2) && left > 0 && addrs > 0 {
                        let last = off + 8 + (addrs - 1) * 16;
                        dst.copy_from_slice(&data[last..last + 16]);
                    }
                }
                nh_ptr = off;
                nh = data[off];
                off += len;
            }
            51 => {
                // Authentication header: length in 4-byte units, minus 2.
                if end < off + 8 {
                    return Err(IpError::BadExtensionHeaders);
                }
                let len = (data[off + 1] as usize + 2) * 4;
                if end < off + len {
                    return Err(IpError::BadExtensionHeaders);
                }
                nh_ptr = off;
                nh = data[off];
                off += len;
            }
            44 => {
                if end < off + 8 {
                    return Err(IpError::BadExtensionHeaders);
                }
                let fo = be16(data, off + 2);
                frag = Some(Fragment {
                    id: u32::from_be_bytes([
                        data[off + 4],
                        data[off + 5],
                        data[off + 6],
                        data[off + 7],
                    ]),
                    offset: ((fo >> 3) as u32) * 8,
                    more: fo & 1 != 0,
                    v6_frag_off: off,
                    v6_nh_ptr: nh_ptr,
                });
                nh_ptr = off;
                nh = data[off];
                off += 8;
                // A fragment that is not the first has no further headers
                // of its own: the rest is payload.
                if frag.is_some_and(|f| f.offset != 0) {
                    break;
                }
            }
            _ => break,
        }
    }
    if off > total_len {
        return Err(IpError::BadExtensionHeaders);
    }
    Ok(IpPacket {
        v6: true,
        src: Addr::v6(src),
        dst: Addr::v6(dst),
        proto: nh,
        total_len: total_len as u32,
        hdr_len: off,
        raw: &data[..end],
        payload: data.get(off..end).unwrap_or(&[]),
        payload_len: (total_len - off) as u32,
        frag,
        ttl: data[7],
    })
}

/// One's-complement sum over `data` plus `initial`, folded and inverted:
/// zero when a checksum embedded in `data` is right.
pub fn internet_checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header sum for TCP/UDP/ICMPv6 checksums.
pub fn pseudo_header_sum(src: &Addr, dst: &Addr, proto: u8, len: u32) -> u32 {
    let mut sum = 0u32;
    for a in [src.octets(), dst.octets()] {
        for c in a.chunks_exact(2) {
            sum += u16::from_be_bytes([c[0], c[1]]) as u32;
        }
    }
    sum + proto as u32 + (len >> 16) + (len & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn v4_header(proto: u8, payload: &[u8], frag: u16) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut h = vec![0x45, 0, (total >> 8) as u8, total as u8, 0x12, 0x34];
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 192, 168, 1, 2]);
        let c = internet_checksum(&h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    #[test]
    fn v4_trims_ethernet_padding_and_checks_sum() {
        let mut p = v4_header(17, &[1, 2, 3, 4, 5, 6, 7, 8], 0);
        p.extend_from_slice(&[0; 10]); // padding
        let ip = parse(&p, true).expect("parses");
        assert_eq!((ip.total_len, ip.payload.len(), ip.proto), (28, 8, 17));
        assert_eq!(ip.src.to_string(), "10.0.0.1");
        assert!(!ip.truncated());
        p[8] = 1; // ttl changed: checksum now wrong
        assert_eq!(parse(&p, true).err(), Some(IpError::BadChecksum));
        assert!(parse(&p, false).is_ok());
    }

    #[test]
    fn v4_snapped_payload_is_marked_truncated() {
        let p = v4_header(6, &[0; 100], 0);
        let ip = parse(&p[..60], false).expect("parses");
        assert!(ip.truncated());
        assert_eq!(ip.payload_len, 100);
    }

    #[test]
    fn v4_fragment_fields() {
        let p = v4_header(17, &[0; 8], 0x2000 | 3);
        let f = parse(&p, false).expect("parses").frag.expect("fragment");
        assert_eq!((f.offset, f.more, f.id), (24, true, 0x1234));
    }

    #[test]
    fn v6_extension_chain_and_fragment() {
        let mut p = vec![0x60, 0, 0, 0, 0, 24, 0, 64];
        p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfb]);
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop -> fragment
        p.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 7]); // fragment -> UDP, offset 0, more
        p.extend_from_slice(&[0; 8]);
        let ip = parse(&p, false).expect("parses");
        assert_eq!((ip.proto, ip.hdr_len, ip.payload.len()), (17, 56, 8));
        let f = ip.frag.expect("fragment");
        assert_eq!(
            (f.id, f.more, f.offset, f.v6_frag_off, f.v6_nh_ptr),
            (7, true, 0, 48, 40)
        );
        assert_eq!(ip.dst.to_string(), "ff02::fb");
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..80 {
            for b in [0x45u8, 0x4f, 0x60, 0x00] {
                let mut v = vec![0xffu8; n];
                if let Some(x) = v.first_mut() {
                    *x = b;
                }
                let _ = parse(&v, true);
            }
        }
    }
}
