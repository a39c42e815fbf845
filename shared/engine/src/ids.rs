//! Identifiers: Zeek-style connection uids, Community ID v1 flow hashes, and
//! the local-network test behind local_orig/local_resp.

use sha1::{Digest, Sha1};

use crate::ip::Addr;

/// Zeek-style uids: a prefix letter and a base62 rendering of 96 random bits.
/// The generator is a seeded xoshiro256** so a run can be made repeatable.
#[derive(Debug, Clone)]
pub struct UidGen {
    s: [u64; 4],
}

impl UidGen {
    pub fn new(seed: u64) -> Self {
        // splitmix64 to spread the seed over the state.
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        UidGen {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A fresh 96-bit id.
    pub fn next_id(&mut self) -> u128 {
        let hi = self.next_u64() as u128 & 0xffff_ffff;
        (hi << 64) | self.next_u64() as u128
    }
}

/// Renders an id as Zeek does: the prefix, then base62 digits.
pub fn uid_string(prefix: char, id: u128) -> String {
    let mut buf = [0u8; UID_MAX];
    let text = uid_text(prefix as u8, id, &mut buf);
    String::from_utf8_lossy(text).into_owned()
}

/// Longest uid text: a prefix and 22 base62 digits (128 bits).
pub const UID_MAX: usize = 23;

/// The uid text in `buf`, without allocating; `prefix` is an ASCII letter.
pub fn uid_text(prefix: u8, id: u128, buf: &mut [u8; UID_MAX]) -> &[u8] {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // Long division by 62 in 32-bit limbs: u128 division is a slow library
    // call, and a uid is written for every row.
    let mut limbs = [
        (id >> 96) as u32,
        (id >> 64) as u32,
        (id >> 32) as u32,
        id as u32,
    ];
    // Leading zero limbs cost nothing to skip (ids are 96 bits).
    let mut first = limbs.iter().position(|&l| l != 0).unwrap_or(3);
    let mut i = buf.len();
    loop {
        let mut rem = 0u64;
        for l in limbs[first..].iter_mut() {
            let cur = (rem << 32) | *l as u64;
            *l = (cur / 62) as u32;
            rem = cur % 62;
        }
        i -= 1;
        buf[i] = DIGITS[rem as usize];
        while first < 3 && limbs[first] == 0 {
            first += 1;
        }
        if limbs[first] == 0 {
            break;
        }
    }
    i -= 1;
    buf[i] = prefix;
    &buf[i..]
}

/// ICMP types that have a reply, as (request, reply) pairs, for v4 and v6.
const ICMP4_PAIRS: &[(u8, u8)] = &[(8, 0), (13, 14), (15, 16), (10, 9), (17, 18)];
const ICMP6_PAIRS: &[(u8, u8)] = &[
    (128, 129),
    (133, 134),
    (135, 136),
    (130, 131),
    (144, 145),
    (139, 140),
];

/// The counterpart of an ICMP type (request to reply or back), if it has one.
pub fn icmp_counterpart(v6: bool, icmp_type: u8) -> Option<u8> {
    let pairs = if v6 { ICMP6_PAIRS } else { ICMP4_PAIRS };
    pairs.iter().find_map(|&(a, b)| {
        if a == icmp_type {
            Some(b)
        } else if b == icmp_type {
            Some(a)
        } else {
            None
        }
    })
}

/// Community ID v1 (seed 0) of a flow, "1:" and base64 of the SHA-1.
pub fn community_id(proto: u8, src: &Addr, sport: u16, dst: &Addr, dport: u16) -> String {
    let mut buf = [0u8; COMMUNITY_ID_LEN];
    community_id_text(proto, src, sport, dst, dport, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Length of a Community ID v1 text ("1:" and 28 base64 characters).
pub const COMMUNITY_ID_LEN: usize = 30;

/// [`community_id`] into a buffer, without allocating.
pub fn community_id_text(
    proto: u8,
    src: &Addr,
    sport: u16,
    dst: &Addr,
    dport: u16,
    out: &mut [u8; COMMUNITY_ID_LEN],
) {
    let (mut sa, mut sp, mut da, mut dp) = (src, sport, dst, dport);
    let mut one_way = false;
    if proto == 1 || proto == 58 {
        let v6 = proto == 58;
        match icmp_counterpart(v6, sport as u8) {
            Some(c) => dp = c as u16,
            None => one_way = true,
        }
    }
    let ordered = (sa.octets(), sp) <= (da.octets(), dp);
    if !one_way && !ordered {
        std::mem::swap(&mut sa, &mut da);
        std::mem::swap(&mut sp, &mut dp);
    }
    let mut h = Sha1::new();
    h.update(0u16.to_be_bytes());
    h.update(sa.octets());
    h.update(da.octets());
    h.update([proto, 0]);
    if matches!(proto, 1 | 6 | 17 | 58 | 132) {
        h.update(sp.to_be_bytes());
        h.update(dp.to_be_bytes());
    }
    let digest = h.finalize();
    out[0] = b'1';
    out[1] = b':';
    base64(&digest, &mut out[2..]);
}

/// Standard base64 with padding; `out` holds exactly the encoded length.
fn base64(data: &[u8], out: &mut [u8]) {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (chunk, o) in data.chunks(3).zip(out.chunks_mut(4)) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        let enc = [
            T[(n >> 18) as usize & 63],
            T[(n >> 12) as usize & 63],
            if chunk.len() > 1 {
                T[(n >> 6) as usize & 63]
            } else {
                b'='
            },
            if chunk.len() > 2 {
                T[n as usize & 63]
            } else {
                b'='
            },
        ];
        let k = o.len();
        o.copy_from_slice(&enc[..k]);
    }
}

/// A set of networks; an address is local when any contains it.
#[derive(Debug, Clone, Default)]
pub struct LocalNets {
    nets: Vec<(Addr, u8)>,
}

/// Why a network did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a network in CIDR form (like 192.168.0.0/16 or fd00::/8)")]
pub struct BadNet(pub String);

impl LocalNets {
    /// Zeek's private address space (Site::private_address_space), the
    /// default local networks.
    pub fn private_address_space() -> Self {
        const NETS: &[&str] = &[
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.168.0.0/16",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/24",
            "239.0.0.0/8",
            "240.0.0.0/4",
            "255.255.255.255/32",
            "::/128",
            "::1/128",
            "64:ff9b:1::/48",
            "100::/64",
            "2001::/23",
            "2001:2::/48",
            "2001:db8::/32",
            "2002::/24",
            "2002:a00::/24",
            "2002:6440::/26",
            "2002:7f00::/24",
            "2002:a9fe::/32",
            "2002:ac10::/28",
            "2002:c000::/40",
            "2002:c000:200::/40",
            "2002:c0a8::/32",
            "2002:c612::/31",
            "2002:c633:6400::/40",
            "2002:cb00:7100::/40",
            "2002:e000::/40",
            "2002:ef00::/24",
            "2002:f000::/20",
            "2002:ffff:ffff::/48",
            "fc00::/7",
            "fe80::/10",
            "fec0::/10",
        ];
        Self::parse(NETS.iter().copied()).unwrap_or_default()
    }

    pub fn parse<'a>(nets: impl IntoIterator<Item = &'a str>) -> Result<Self, BadNet> {
        let mut out = LocalNets::default();
        for n in nets {
            let n = n.trim();
            if n.is_empty() {
                continue;
            }
            let bad = || BadNet(n.to_string());
            let (addr, len) = n.split_once('/').ok_or_else(bad)?;
            let ip: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
            let len: u8 = len.parse().map_err(|_| bad())?;
            let (a, plen) = match ip {
                std::net::IpAddr::V4(_) if len <= 32 => (Addr::from(ip), len + 96),
                std::net::IpAddr::V6(_) if len <= 128 => (Addr::from(ip), len),
                _ => return Err(bad()),
            };
            out.nets.push((mask(&a, plen), plen));
        }
        Ok(out)
    }

    pub fn contains(&self, a: &Addr) -> bool {
        self.nets.iter().any(|(net, plen)| mask(a, *plen) == *net)
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Both sets together.
    pub fn union(&self, other: &LocalNets) -> LocalNets {
        let mut nets = self.nets.clone();
        nets.extend(other.nets.iter().copied());
        LocalNets { nets }
    }
}

fn mask(a: &Addr, plen: u8) -> Addr {
    let v = u128::from_be_bytes(a.0);
    let m = if plen == 0 {
        0
    } else {
        u128::MAX << (128 - plen as u32)
    };
    Addr((v & m).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Addr {
        Addr::from(s.parse::<std::net::IpAddr>().expect("address"))
    }

    #[test]
    fn community_id_matches_the_spec_examples() {
        // Examples from the Community ID specification's test vectors.
        assert_eq!(
            community_id(6, &a("66.35.250.204"), 80, &a("128.232.110.120"), 34855),
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
        );
        assert_eq!(
            community_id(17, &a("192.168.1.52"), 54585, &a("8.8.8.8"), 53),
            "1:d/FP5EW3wiY1vCndhwleRRKHowQ="
        );
        assert_eq!(
            community_id(1, &a("192.168.0.89"), 8, &a("192.168.0.1"), 0),
            "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="
        );
    }

    #[test]
    fn uid_base62() {
        assert_eq!(uid_string('C', 0), "C0");
        assert_eq!(uid_string('C', 61), "Cz");
        assert_eq!(uid_string('C', 62), "C10");
        assert_eq!(uid_string('C', u128::from(u64::MAX)), "CLygHa16AHYF");
        assert_eq!(uid_string('F', (1u128 << 96) - 1), "F1f2SI9UJPXvb7vdJ1");
    }

    #[test]
    fn uids_look_like_zeeks() {
        let mut g = UidGen::new(1);
        let u = uid_string('C', g.next_id());
        assert!(u.starts_with('C') && (10..=18).contains(&u.len()), "{u}");
        assert_ne!(g.next_id(), g.next_id());
    }

    #[test]
    fn private_space_is_local() {
        let nets = LocalNets::private_address_space();
        assert!(nets.contains(&a("192.168.1.10")));
        assert!(nets.contains(&a("224.0.0.251")));
        assert!(!nets.contains(&a("224.2.127.254")));
        assert!(nets.contains(&a("fe80::1")));
        assert!(!nets.contains(&a("8.8.8.8")));
        assert!(LocalNets::parse(["10.0.0.0/33"]).is_err());
        assert!(LocalNets::parse(["banana"]).is_err());
    }
}
