//! What may leave the sensor, and in what form.
//!
//! Asgard correlates behaviour across households without learning who they
//! are. This crate turns what identifies a household into values that are
//! stable under one key and meaningless without it. What it promises:
//! - IP addresses are anonymized with Crypto-PAn (Xu, Fan, Ammar and Moon,
//!   2002): a bijection that preserves prefixes, so two addresses sharing
//!   their first n bits still share their first n bits afterwards, and
//!   nothing else about them is revealed. IPv4 and IPv6; the output equals
//!   the reference implementation's on its published sample (see the tests).
//! - MAC addresses, host names, device and incident ids become pseudonyms:
//!   HMAC-SHA-256 under a key of their own, labelled by kind (a MAC and a
//!   host name with the same text differ), hex, first 32 characters, as
//!   `proto/asgard/v1/openapi.yaml` states.
//! - One secret (a file of at least 32 random bytes, or 64 hex digits)
//!   yields both keys; it is never printed (`Debug` is redacted) and errors
//!   never show it.
//! - Public names are reduced to their registered domain with the public
//!   suffix list; names under local suffixes (`.local`, `.lan`, `.home.arpa`,
//!   reverse zones, single labels) are never returned.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The secret file cannot be read (the message names the file only).
    #[error("cannot read the anonymization key file {path}: {reason}")]
    Read { path: String, reason: String },
    /// The secret is too short to key anything.
    #[error(
        "the anonymization key holds {0} bytes; it needs at least 32 random bytes (for example `head -c 32 /dev/urandom > FILE`) or 64 hex digits"
    )]
    TooShort(usize),
}

/// Crypto-PAn with one 32-byte key: AES-128 under the first half, and a pad
/// made by encrypting the second half.
#[derive(Clone)]
pub struct CryptoPan {
    cipher: Aes128,
    pad: u128,
}

impl std::fmt::Debug for CryptoPan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CryptoPan([redacted])")
    }
}

impl CryptoPan {
    /// The scheme keyed by `key`, exactly as the reference implementation
    /// keys it.
    pub fn new(key: &[u8; 32]) -> Self {
        let cipher = Aes128::new_from_slice(&key[..16]).expect("16 bytes are an AES-128 key");
        let mut half = [0u8; 16];
        half.copy_from_slice(&key[16..]);
        let mut pad = aes::Block::from(half);
        cipher.encrypt_block(&mut pad);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&pad);
        CryptoPan {
            cipher,
            pad: u128::from_be_bytes(bytes),
        }
    }

    /// The first `bits` bits of `orig` (left-aligned in 128), anonymized:
    /// bit i is flipped by the first output bit of AES over orig's first i
    /// bits followed by the pad's remaining bits.
    fn bits(&self, orig: u128, bits: u32) -> u128 {
        let mut flips: u128 = 0;
        for i in 0..bits {
            let keep = if i == 0 { 0 } else { u128::MAX << (128 - i) };
            let input = (orig & keep) | (self.pad & !keep);
            let mut block = aes::Block::from(input.to_be_bytes());
            self.cipher.encrypt_block(&mut block);
            flips |= u128::from(block[0] >> 7) << (127 - i);
        }
        orig ^ flips
    }

    /// An IPv4 address, anonymized.
    pub fn v4(&self, ip: Ipv4Addr) -> Ipv4Addr {
        let out = self.bits(u128::from(u32::from(ip)) << 96, 32);
        Ipv4Addr::from((out >> 96) as u32)
    }

    /// An IPv6 address, anonymized.
    pub fn v6(&self, ip: Ipv6Addr) -> Ipv6Addr {
        Ipv6Addr::from(self.bits(u128::from(ip), 128))
    }

    /// Either family.
    pub fn ip(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => IpAddr::V4(self.v4(v4)),
            IpAddr::V6(v6) => IpAddr::V6(self.v6(v6)),
        }
    }
}

/// Everything a sensor anonymizes, under one secret.
#[derive(Clone)]
pub struct Anonymizer {
    pan: CryptoPan,
    pseudonyms: Hmac<Sha256>,
}

impl std::fmt::Debug for Anonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Anonymizer([redacted])")
    }
}

/// A subkey of `secret` for one purpose.
fn derive(secret: &[u8], purpose: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

impl Anonymizer {
    /// Keys from `secret` (at least 32 bytes).
    pub fn new(secret: &[u8]) -> Result<Self, Error> {
        if secret.len() < 32 {
            return Err(Error::TooShort(secret.len()));
        }
        let pan = CryptoPan::new(&derive(secret, "heimdall crypto-pan v1"));
        let pseudonyms =
            <Hmac<Sha256> as Mac>::new_from_slice(&derive(secret, "heimdall pseudonyms v1"))
                .expect("HMAC takes any key length");
        Ok(Anonymizer { pan, pseudonyms })
    }

    /// Keys from a file: 64 hex digits (surrounding white space ignored), or
    /// at least 32 raw bytes.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let raw = std::fs::read(path).map_err(|e| Error::Read {
            path: path.display().to_string(),
            reason: e.kind().to_string(),
        })?;
        let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
        match decode_hex(text) {
            Some(bytes) if bytes.len() >= 32 => Self::new(&bytes),
            _ => Self::new(&raw),
        }
    }

    /// An IP address, prefix-preserving.
    pub fn ip(&self, ip: IpAddr) -> IpAddr {
        self.pan.ip(ip)
    }

    /// The pseudonym of `value` as a `kind` (`mac`, `host`, `device`,
    /// `incident`): 32 hex digits.
    pub fn pseudonym(&self, kind: &str, value: &[u8]) -> String {
        let mut mac = self.pseudonyms.clone();
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A MAC address's pseudonym.
    pub fn mac(&self, mac: &[u8]) -> String {
        self.pseudonym("mac", mac)
    }

    /// A host or device name's pseudonym (case and a trailing dot ignored).
    pub fn host(&self, name: &str) -> String {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.pseudonym("host", name.as_bytes())
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Suffixes that only mean something inside a home; a name under them is
/// never sent.
const LOCAL_SUFFIXES: [&str; 9] = [
    "local",
    "lan",
    "home",
    "home.arpa",
    "internal",
    "localdomain",
    "in-addr.arpa",
    "ip6.arpa",
    "localhost",
];

/// True when `name` only makes sense inside the home (mDNS, the router's
/// zone, reverse lookups, single labels).
pub fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    !name.contains('.')
        || LOCAL_SUFFIXES
            .iter()
            .any(|s| name == *s || name.ends_with(&format!(".{s}")))
}

/// The registered domain of a public name (`cdn.example.co.uk` →
/// `example.co.uk`); `None` for local names and for names that are a
/// public suffix themselves.
pub fn registered_domain(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if is_local_name(&name) || name.parse::<IpAddr>().is_ok() {
        return None;
    }
    psl::domain_str(&name).map(str::to_string)
}

/// The domain a service is operated under, for grouping destinations:
/// the registered domain, or, for a name under a private suffix (a CDN's or
/// a cloud's shared domain such as `akamaized.net` or `cloudfront.net`),
/// that suffix, so one CDN is one site however its customers' names vary.
/// `None` where [`registered_domain`] has none.
pub fn site(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if is_local_name(&name) || name.parse::<IpAddr>().is_ok() {
        return None;
    }
    if let Some(s) = psl::suffix(name.as_bytes())
        && s.typ() == Some(psl::Type::Private)
        && let Ok(text) = std::str::from_utf8(s.as_bytes())
        && text.contains('.')
    {
        return Some(text.to_string());
    }
    psl::domain_str(&name).map(str::to_string)
}

#[cfg(test)]
mod site_tests {
    use super::*;

    #[test]
    fn cdn_customers_are_one_site_and_others_their_registered_domain() {
        assert_eq!(
            site("gs2.ww.prod.dl.playstation.net.akamaized.net").as_deref(),
            Some("akamaized.net")
        );
        assert_eq!(site("www.akamaized.net").as_deref(), Some("akamaized.net"));
        assert_eq!(site("cdn.example.co.uk").as_deref(), Some("example.co.uk"));
        assert_eq!(site("printer.local"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The sample key of the Crypto-PAn reference distribution.
    const REFERENCE_KEY: [u8; 32] = [
        21, 34, 23, 141, 51, 164, 207, 128, 19, 10, 91, 22, 73, 144, 125, 16, 216, 152, 143, 131,
        121, 121, 101, 39, 98, 87, 76, 45, 42, 132, 34, 2,
    ];

    #[test]
    fn ipv4_matches_the_reference_sample() {
        // Pairs from the reference distribution's sample trace.
        let pan = CryptoPan::new(&REFERENCE_KEY);
        for (orig, anon) in [
            ("128.11.68.132", "135.242.180.132"),
            ("129.118.74.4", "134.136.186.123"),
            ("130.132.252.244", "133.68.164.234"),
            ("141.223.7.43", "141.167.8.160"),
            ("141.233.145.108", "141.129.237.235"),
            ("152.163.225.39", "151.140.114.167"),
            ("156.29.3.236", "147.225.12.42"),
            ("165.247.96.84", "162.9.99.234"),
            ("166.107.77.190", "160.132.178.185"),
            ("192.102.249.13", "252.138.62.131"),
            ("24.0.250.221", "100.15.198.226"),
            ("4.3.88.225", "124.60.155.63"),
            ("64.14.118.196", "0.255.183.58"),
            ("10.185.25.118", "117.161.29.118"),
        ] {
            let got = pan.v4(orig.parse().expect("v4"));
            assert_eq!(got.to_string(), anon, "{orig}");
        }
    }

    #[test]
    fn ipv6_matches_other_implementations() {
        let pan = CryptoPan::new(&REFERENCE_KEY);
        for (orig, anon) in [
            ("::1", "78ff:f001:9fc0:20df:8380:b1f1:704:ed"),
            ("::2", "78ff:f001:9fc0:20df:8380:b1f1:704:ef"),
            ("2001:db8::1", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1e"),
            ("2001:db8::2", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1c"),
        ] {
            let got = pan.v6(orig.parse().expect("v6"));
            assert_eq!(got, anon.parse::<Ipv6Addr>().expect("v6"), "{orig}");
        }
    }

    fn common_prefix(a: u32, b: u32) -> u32 {
        (a ^ b).leading_zeros()
    }

    proptest! {
        #[test]
        fn prefixes_are_preserved_exactly(a: u32, b: u32) {
            let anon = Anonymizer::new(&[7u8; 40]).expect("key");
            let (x, y) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
            let (IpAddr::V4(ax), IpAddr::V4(ay)) = (anon.ip(x.into()), anon.ip(y.into())) else {
                panic!("family changed");
            };
            prop_assert_eq!(
                common_prefix(u32::from(ax), u32::from(ay)),
                common_prefix(a, b)
            );
        }
    }

    #[test]
    fn one_subnet_keeps_one_anonymized_prefix_and_keys_differ() {
        let a = Anonymizer::new(b"0123456789abcdef0123456789abcdef").expect("key");
        let b = Anonymizer::new(b"fedcba9876543210fedcba9876543210").expect("key");
        let x: IpAddr = "192.168.1.20".parse().expect("ip");
        let y: IpAddr = "192.168.1.77".parse().expect("ip");
        let (ax, ay) = (a.ip(x), a.ip(y));
        let prefix = |ip: IpAddr| match ip {
            IpAddr::V4(v) => u32::from(v) >> 8,
            IpAddr::V6(_) => unreachable!(),
        };
        assert_eq!(prefix(ax), prefix(ay), "a /24 stays a /24");
        assert_ne!(ax, x);
        assert_ne!(a.ip(x), b.ip(x), "another key, another mapping");
        assert_eq!(a.ip(x), a.ip(x), "stable under one key");
    }

    #[test]
    fn pseudonyms_are_keyed_labelled_and_32_hex_digits() {
        let a = Anonymizer::new(&[1u8; 32]).expect("key");
        let b = Anonymizer::new(&[2u8; 32]).expect("key");
        let mac = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
        let p = a.mac(&mac);
        assert_eq!(p.len(), 32);
        assert!(p.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(p, a.mac(&mac));
        assert_ne!(p, b.mac(&mac));
        assert_ne!(a.pseudonym("device", b"x"), a.pseudonym("incident", b"x"));
        assert_eq!(
            a.host("Living-Room-TV.local."),
            a.host("living-room-tv.local")
        );
    }

    #[test]
    fn keys_come_from_files_and_are_never_shown() {
        let dir = std::env::temp_dir().join(format!("heimdall-anon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let hex = dir.join("hex");
        std::fs::write(&hex, format!("{}\n", "ab".repeat(32))).expect("write");
        let raw = dir.join("raw");
        std::fs::write(&raw, [0xabu8; 32]).expect("write");
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        let from_hex = Anonymizer::from_file(&hex).expect("hex key");
        let from_raw = Anonymizer::from_file(&raw).expect("raw key");
        assert_eq!(from_hex.ip(ip), from_raw.ip(ip), "the same 32 bytes");
        assert_eq!(format!("{from_hex:?}"), "Anonymizer([redacted])");
        let short = dir.join("short");
        std::fs::write(&short, "s3cr3t-value").expect("write");
        let err = Anonymizer::from_file(&short)
            .expect_err("too short")
            .to_string();
        assert!(
            err.contains("at least 32") && !err.contains("s3cr3t"),
            "{err}"
        );
        let err = Anonymizer::from_file(&dir.join("missing"))
            .expect_err("missing")
            .to_string();
        assert!(err.contains("missing"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_public_names_have_a_registered_domain() {
        assert_eq!(
            registered_domain("cdn.example.co.uk").as_deref(),
            Some("example.co.uk")
        );
        assert_eq!(
            registered_domain("a.b.netflix.com.").as_deref(),
            Some("netflix.com")
        );
        for local in [
            "printer.local",
            "nas.lan",
            "tv.home.arpa",
            "router",
            "4.3.2.1.in-addr.arpa",
            "192.168.1.1",
            "co.uk",
        ] {
            assert_eq!(registered_domain(local), None, "{local}");
        }
    }
}
