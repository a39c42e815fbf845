//! TLS ClientHello observations: the server name, ALPN, offered versions,
//! cipher suites and extensions of a client's first handshake message, with
//! its JA3 and JA4 fingerprints (`heimdall.sensor.v1.TlsClientHelloObservation`).
//!
//! [`client_hello_from_stream`] reads the first bytes of a TCP stream (TLS
//! records, the hello possibly spread over several) and says whether they
//! hold a hello, may still become one, or cannot; [`client_hello`] parses one
//! reassembled handshake message, as QUIC CRYPTO frames carry it. Both check
//! every length before reading and never panic; a malformed hello gives no
//! observation rather than a partial one. Code lists keep GREASE values as
//! sent; JA3 and JA4 drop them.

use heimdall_proto::sensor::v1::TlsClientHelloObservation;
use md5::Md5;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// TLS record content type of handshake records.
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// RFC 8446 §5.1: a record fragment is at most 2^14 bytes.
const MAX_RECORD: usize = 1 << 14;

const EXT_SERVER_NAME: u16 = 0;
const EXT_SUPPORTED_GROUPS: u16 = 10;
const EXT_EC_POINT_FORMATS: u16 = 11;
const EXT_SIGNATURE_ALGORITHMS: u16 = 13;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;

/// What the start of a TCP stream from the client holds.
#[derive(Debug, Clone, PartialEq)]
// One value per connection, moved straight to the caller: boxing the hello
// would cost an allocation to save nothing.
#[expect(clippy::large_enum_variant)]
pub enum Hello {
    /// Not a TLS handshake record carrying a ClientHello, or malformed.
    NotTls,
    /// A valid prefix of a ClientHello; call again with more of the stream.
    NeedMore,
    /// The complete ClientHello.
    Hello(TlsClientHelloObservation),
}

/// `stream`: the first bytes the client sent on a TCP connection (may be a
/// prefix; the hello may span several TLS records of type 22). Returns
/// `NeedMore` when the bytes so far are a valid prefix of a ClientHello but
/// incomplete (the caller buffers up to 16 KiB and calls again); `NotTls`
/// when it is not a TLS handshake record carrying a ClientHello, or is
/// malformed.
pub fn client_hello_from_stream(stream: &[u8]) -> Hello {
    // The handshake message reassembled from the record fragments so far.
    let mut msg = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        // Each header byte is judged as soon as it arrives, so that other
        // protocols are turned away at once, not after 16 KiB of buffering.
        let header_ok = rest.first() == Some(&HANDSHAKE)
            && rest.get(1).is_none_or(|&major| major == 3)
            && rest.get(2).is_none_or(|&minor| minor <= 4);
        if !header_ok {
            return Hello::NotTls;
        }
        let (Some(&[hi, lo]), Some(body)) = (rest.get(3..5), rest.get(5..)) else {
            return Hello::NeedMore;
        };
        let len = u16::from_be_bytes([hi, lo]) as usize;
        // RFC 8446 §5.1 forbids empty handshake fragments.
        if len == 0 || len > MAX_RECORD {
            return Hello::NotTls;
        }
        // The last record may be cut short; its bytes so far still count.
        let (fragment, next) = body.split_at(len.min(body.len()));
        msg.extend_from_slice(fragment);
        rest = next;
        if msg.first().is_some_and(|&t| t != CLIENT_HELLO) {
            return Hello::NotTls;
        }
        if let Some(&[a, b, c]) = msg.get(1..4) {
            let need = 4 + u32::from_be_bytes([0, a, b, c]) as usize;
            if let Some(hello) = msg.get(..need) {
                return client_hello(hello, false).map_or(Hello::NotTls, Hello::Hello);
            }
        }
    }
    Hello::NeedMore
}

/// A ClientHello handshake message (starting at the handshake type byte 1),
/// as carried in QUIC CRYPTO frames (`quic = true` gives JA4's "q" prefix)
/// or reassembled from TLS records. `None` when malformed. Bytes after the
/// message (the next handshake message) are ignored.
pub fn client_hello(msg: &[u8], quic: bool) -> Option<TlsClientHelloObservation> {
    let mut m = Reader(msg);
    if m.u8()? != CLIENT_HELLO {
        return None;
    }
    let len = m.u24()?;
    let mut b = Reader(m.take(len)?);
    let legacy_version = b.u16()?;
    b.take(32)?; // random
    b.vec8()?; // legacy_session_id
    let mut o = TlsClientHelloObservation {
        legacy_version: legacy_version.into(),
        cipher_suites: u16s(b.vec16()?)?,
        ..Default::default()
    };
    b.vec8()?; // compression methods
    // Kept as bytes: JA4 reads the first ALPN value's bytes, which a lossy
    // conversion to text could change.
    let mut first_alpn = None;
    // Before TLS 1.3 a hello may end here, without an extensions block.
    if !b.0.is_empty() {
        let mut exts = Reader(b.vec16()?);
        if !b.0.is_empty() {
            return None; // bytes after the extensions
        }
        while !exts.0.is_empty() {
            let typ = exts.u16()?;
            let data = exts.vec16()?;
            o.extensions.push(typ.into());
            // A bad body inside a well-framed extension leaves that field
            // empty: the framing, and so JA3/JA4, is still sound.
            let mut d = Reader(data);
            let list = |v: Option<&[u8]>| v.and_then(u16s).unwrap_or_default();
            match typ {
                EXT_SERVER_NAME if o.sni.is_empty() => {
                    o.sni = server_name(data).unwrap_or_default()
                }
                // TLS forbids repeating an extension; the first one counts.
                EXT_ALPN if o.alpn.is_empty() => {
                    let mut list = Reader(d.vec16().unwrap_or_default());
                    while let Some(id) = list.vec8() {
                        first_alpn = first_alpn.or(Some(id));
                        o.alpn.push(String::from_utf8_lossy(id).into_owned());
                    }
                }
                EXT_SUPPORTED_VERSIONS => o.supported_versions = list(d.vec8()),
                EXT_SUPPORTED_GROUPS => o.supported_groups = list(d.vec16()),
                EXT_SIGNATURE_ALGORITHMS => o.signature_algorithms = list(d.vec16()),
                EXT_EC_POINT_FORMATS => {
                    o.ec_point_formats = d.vec8().unwrap_or_default().to_vec().into()
                }
                _ => {}
            }
        }
    }
    o.max_version = no_grease(&o.supported_versions)
        .max()
        .unwrap_or(o.legacy_version);
    o.ja3 = ja3(&o);
    o.ja4 = ja4(&o, quic, first_alpn);
    Some(o)
}

/// The first host_name entry of a server_name extension (RFC 6066 §3).
fn server_name(data: &[u8]) -> Option<String> {
    let mut list = Reader(Reader(data).vec16()?);
    loop {
        let typ = list.u8()?;
        let name = list.vec16()?;
        if typ == 0 {
            return Some(String::from_utf8_lossy(name).into_owned());
        }
    }
}

/// GREASE values (RFC 8701): 0x?a?a with both bytes equal.
fn is_grease(v: u32) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn no_grease(v: &[u32]) -> impl Iterator<Item = u32> + '_ {
    v.iter().copied().filter(|&x| !is_grease(x))
}

/// JA3: `SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats`
/// in decimal, dash-joined within a field, GREASE dropped; lower-case hex MD5.
fn ja3(o: &TlsClientHelloObservation) -> String {
    let dec = |v: &[u32]| join(no_grease(v).map(|x| x.to_string()), "-");
    let s = format!(
        "{},{},{},{},{}",
        o.legacy_version,
        dec(&o.cipher_suites),
        dec(&o.extensions),
        dec(&o.supported_groups),
        join(o.ec_point_formats.iter().map(u8::to_string), "-"),
    );
    hex(&Md5::digest(s.as_bytes()))
}

/// JA4 (FoxIO, technical_details/JA4.md), `a_b_c`:
/// a = protocol, version, SNI, cipher and extension counts, ALPN;
/// b = hash of the sorted cipher suites;
/// c = hash of the sorted extensions without SNI and ALPN, then `_` and the
/// signature algorithms in wire order.
fn ja4(o: &TlsClientHelloObservation, quic: bool, first_alpn: Option<&[u8]>) -> String {
    let mut ciphers: Vec<u32> = no_grease(&o.cipher_suites).collect();
    let exts: Vec<u32> = no_grease(&o.extensions).collect();
    let version = match o.max_version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    };
    // The spec keys "d" on the extension being there, not on its content.
    let sni = if exts.contains(&EXT_SERVER_NAME.into()) {
        'd'
    } else {
        'i'
    };
    let a = format!(
        "{}{version}{sni}{:02}{:02}{}",
        if quic { 'q' } else { 't' },
        ciphers.len().min(99),
        exts.len().min(99),
        alpn_chars(first_alpn),
    );
    // The spec writes twelve zeros for an empty list rather than hashing "".
    const NONE: &str = "000000000000";
    ciphers.sort_unstable();
    let b = if ciphers.is_empty() {
        NONE.to_owned()
    } else {
        hash12(&hex_list(&ciphers))
    };
    let mut sorted: Vec<u32> = exts
        .into_iter()
        .filter(|&e| e != u32::from(EXT_SERVER_NAME) && e != u32::from(EXT_ALPN))
        .collect();
    sorted.sort_unstable();
    let c = if sorted.is_empty() {
        NONE.to_owned()
    } else {
        let mut s = hex_list(&sorted);
        let sigs: Vec<u32> = no_grease(&o.signature_algorithms).collect();
        if !sigs.is_empty() {
            s.push('_');
            s.push_str(&hex_list(&sigs));
        }
        hash12(&s)
    };
    format!("{a}_{b}_{c}")
}

/// JA4's ALPN characters: the first and last characters of the first ALPN
/// value when both are ASCII alphanumeric, else the first and last hex digits
/// of the value; "00" when there is none or it is empty.
fn alpn_chars(first: Option<&[u8]>) -> String {
    let Some((&f, rest)) = first.and_then(<[u8]>::split_first) else {
        return "00".to_owned();
    };
    let l = rest.last().copied().unwrap_or(f);
    if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() {
        format!("{}{}", f as char, l as char)
    } else {
        format!("{:x}{:x}", f >> 4, l & 0x0f)
    }
}

fn join(items: impl Iterator<Item = String>, sep: &str) -> String {
    items.collect::<Vec<_>>().join(sep)
}

/// Codes as 4-digit lower-case hex, comma-joined (JA4's list form).
fn hex_list(v: &[u32]) -> String {
    join(v.iter().map(|x| format!("{x:04x}")), ",")
}

/// The first 12 hex characters of the SHA-256 of `s`.
fn hash12(s: &str) -> String {
    hex(Sha256::digest(s.as_bytes()).get(..6).unwrap_or_default())
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// Big-endian 16-bit codes; `None` for an odd length.
fn u16s(b: &[u8]) -> Option<Vec<u32>> {
    let codes = b.chunks_exact(2);
    codes.remainder().is_empty().then(|| {
        codes
            .map(|c| c.iter().fold(0, |v, &x| (v << 8) | u32::from(x)))
            .collect()
    })
}

/// A cursor that hands out bytes only once it has checked they are there.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.0.get(..n)?;
        self.0 = self.0.get(n..)?;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        match *self.take(2)? {
            [a, b] => Some(u16::from_be_bytes([a, b])),
            _ => None,
        }
    }

    fn u24(&mut self) -> Option<usize> {
        match *self.take(3)? {
            [a, b, c] => Some(u32::from_be_bytes([0, a, b, c]) as usize),
            _ => None,
        }
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n.into())
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2).expect("even"), 16).expect("hex"))
            .collect()
    }

    /// Android 8 (OkHttp, TLS 1.2) to play.googleapis.com: one record, as
    /// the first TCP segment of stream 6 in ndpi_devices/android.pcap.
    fn android_tls12() -> Vec<u8> {
        unhex(concat!(
            "16030100b4010000b00303213d3d8a1f31d6d0b1cb19ee93d82c321c106fa6ba54d9083054f1e4ac72c1fc00",
            "001cc02bc02ccca9c02fc030cca8c009c00ac013c014009c009d002f00350100006bff010001000000001800",
            "16000013706c61792e676f6f676c65617069732e636f6d0017000000230000000d0014001204030804040105",
            "03080505010806060102010005000501000000000010000b000908687474702f312e31000b00020100000a00",
            "080006001d00170018",
        ))
    }

    /// Chrome on Android (BoringSSL, TLS 1.3, GREASE) to accounts.google.com,
    /// stream 17 of the same capture; it ends in 197 bytes of padding (ext 21).
    fn android_chrome() -> Vec<u8> {
        let mut b = unhex(concat!(
            "1603010200010001fc0303361d0aaa3648988b13e7f41c18fba68f31304f1d46156a2e75b0ffedd64ac3f220",
            "8f790bf6f33eff18bb1a19f421f7c06958415a2733ef273dd98a024bdc1abb8f0022aaaa130113021303c02b",
            "c02fc02cc030cca9cca8c013c014009c009d002f0035000a01000191baba0000000000180016000013616363",
            "6f756e74732e676f6f676c652e636f6d00170000ff01000100000a000a0008dada001d00170018000b000201",
            "00002300000010000e000c02683208687474702f312e31000500050100000000000d00140012040308040401",
            "050308050501080606010201001200000033002b0029dada000100001d0020da22f8e54de58ffc47cdcd080a",
            "b591f281ef99205339c22969fe5b08471f1951002d00020101002b000b0a8a8a0304030303020301001b0003",
            "0200020a0a000100001500c5",
        ));
        b.extend([0u8; 197]);
        b
    }

    fn hello(stream: &[u8]) -> TlsClientHelloObservation {
        match client_hello_from_stream(stream) {
            Hello::Hello(o) => o,
            other => panic!("not a hello: {other:?}"),
        }
    }

    fn push16(v: &mut Vec<u8>, data: &[u8]) {
        v.extend((data.len() as u16).to_be_bytes());
        v.extend(data);
    }

    /// A ClientHello handshake message with these suites and extensions.
    fn build(ciphers: &[u16], exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([0x11; 32]); // random
        body.push(0); // no session id
        push16(&mut body, &codes(ciphers));
        body.extend([1, 0]); // null compression only
        let mut e = Vec::new();
        for (typ, data) in exts {
            e.extend(typ.to_be_bytes());
            push16(&mut e, data);
        }
        push16(&mut body, &e);
        let mut m = vec![CLIENT_HELLO];
        m.extend(&(body.len() as u32).to_be_bytes()[1..]);
        m.extend(body);
        m
    }

    /// Sets the handshake length to what follows the header.
    fn fix_len(msg: &mut [u8]) {
        let body = (msg.len() - 4) as u32;
        msg[1..4].copy_from_slice(&body.to_be_bytes()[1..]);
    }

    fn record(fragment: &[u8]) -> Vec<u8> {
        let mut r = vec![HANDSHAKE, 3, 1];
        push16(&mut r, fragment);
        r
    }

    fn codes(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|c| c.to_be_bytes()).collect()
    }

    /// The JA4 spec's worked example: its raw cipher, extension and
    /// signature-algorithm lists, with SNI, ALPN "h2" and TLS 1.3 offered.
    fn spec_example(grease: bool) -> Vec<u8> {
        let mut ciphers = vec![
            0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
            0x009c, 0x009d, 0x002f, 0x0035,
        ];
        let mut sni = Vec::new();
        push16(&mut sni, &[&[0u8, 0, 11][..], b"example.com"].concat());
        let mut sigs = vec![
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ];
        let mut versions = vec![0x0304, 0x0303];
        if grease {
            ciphers.insert(0, 0x4a4a);
            sigs.insert(3, 0x5a5a);
            versions.insert(0, 0x6a6a);
        }
        let mut exts: Vec<(u16, Vec<u8>)> = [
            0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012,
            0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
        ]
        .into_iter()
        .map(|t| (t, Vec::new()))
        .collect();
        for (t, d) in &mut exts {
            match *t {
                0x0000 => *d = sni.clone(),
                0x0010 => *d = vec![0, 3, 2, b'h', b'2'],
                0x000d => push16(d, &codes(&sigs)),
                0x002b => *d = [&[2 * versions.len() as u8][..], &codes(&versions)].concat(),
                _ => {}
            }
        }
        if grease {
            exts.insert(0, (0x1a1a, Vec::new()));
            exts.push((0xfafa, vec![0]));
        }
        build(&ciphers, &exts)
    }

    #[test]
    fn ja4_matches_the_spec_example_with_or_without_grease() {
        let o = client_hello(&spec_example(false), false).expect("a hello");
        assert_eq!(o.ja4, "t13d1516h2_8daaf6152771_e5627efa2ab1");
        assert_eq!(o.sni, "example.com");
        assert_eq!(o.alpn, ["h2"]);
        assert_eq!(o.max_version, 0x0304);
        let g = client_hello(&spec_example(true), false).expect("a hello");
        assert_eq!(g.ja4, o.ja4, "GREASE is ignored");
        assert_eq!(g.ja3, o.ja3, "GREASE is ignored");
        // ...but kept in the lists, as sent.
        assert_eq!(g.cipher_suites.first(), Some(&0x4a4a));
        assert_eq!(g.extensions.len(), 18);
        assert_eq!(g.supported_versions, [0x6a6a, 0x0304, 0x0303]);
        assert_eq!(g.signature_algorithms.get(3), Some(&0x5a5a));
        let q = client_hello(&spec_example(false), true).expect("a hello");
        assert_eq!(q.ja4, "q13d1516h2_8daaf6152771_e5627efa2ab1");
    }

    #[test]
    fn a_tls12_hello_matches_tshark() {
        let o = hello(&android_tls12());
        // tshark 4.0: tls.handshake.ja3 and the fields it shows.
        assert_eq!(o.ja3, "d8c87b9bfde38897979e41242626c2f3");
        assert_eq!(o.sni, "play.googleapis.com");
        assert_eq!(o.alpn, ["http/1.1"]);
        assert_eq!((o.legacy_version, o.max_version), (0x0303, 0x0303));
        assert_eq!(o.extensions, [65281, 0, 23, 35, 13, 5, 16, 11, 10]);
        assert_eq!(o.cipher_suites.len(), 14);
        assert_eq!(o.supported_groups, [29, 23, 24]);
        assert_eq!(o.signature_algorithms.last(), Some(&0x0201));
        assert_eq!(&o.ec_point_formats[..], &[0]);
        assert!(o.supported_versions.is_empty());
        // By hand from the spec: 14 suites, 9 extensions, "http/1.1" gives
        // h1; c hashes 0005,000a,000b,000d,0017,0023,ff01_0403,...,0201.
        assert_eq!(o.ja4, "t12d1409h1_c866b44c5a26_b39be8c56a14");
    }

    #[test]
    fn a_tls13_hello_with_grease_matches_tshark() {
        let o = hello(&android_chrome());
        assert_eq!(o.ja3, "66918128f1b9b03303d77c6f2eefd128");
        assert_eq!(o.sni, "accounts.google.com");
        assert_eq!(o.alpn, ["h2", "http/1.1"]);
        assert_eq!((o.legacy_version, o.max_version), (0x0303, 0x0304));
        assert_eq!(
            o.supported_versions,
            [0x8a8a, 0x0304, 0x0303, 0x0302, 0x0301]
        );
        assert_eq!(o.supported_groups, [0xdada, 29, 23, 24]);
        assert_eq!(o.cipher_suites.first(), Some(&0xaaaa));
        assert_eq!(
            (o.extensions.first(), o.extensions.last()),
            (Some(&0xbaba), Some(&21))
        );
        // By hand: 16 suites and 15 extensions without GREASE; b hashes
        // 000a,002f,...,cca9; c hashes 0005,...,ff01_0403,...,0201.
        assert_eq!(o.ja4, "t13d1615h2_46e7e9700bed_45f260be83e2");
    }

    #[test]
    fn every_prefix_needs_more_and_a_split_hello_is_reassembled() {
        for stream in [android_tls12(), android_chrome()] {
            for cut in 0..stream.len() {
                assert_eq!(
                    client_hello_from_stream(&stream[..cut]),
                    Hello::NeedMore,
                    "cut {cut}"
                );
                assert_eq!(client_hello(&stream[5..cut.max(5)], false), None);
            }
            let whole = hello(&stream);
            // The same message in two records, cut inside the extensions.
            let msg = &stream[5..];
            let mut split = record(&msg[..100]);
            split.extend(record(&msg[100..]));
            for cut in 0..split.len() {
                assert_eq!(client_hello_from_stream(&split[..cut]), Hello::NeedMore);
            }
            assert_eq!(hello(&split), whole);
            // What follows the hello (the next record) does not matter.
            split.extend([23, 3, 3, 0, 1, 0]);
            assert_eq!(hello(&split), whole);
        }
    }

    #[test]
    fn other_streams_are_not_tls() {
        let not = |s: &[u8]| client_hello_from_stream(s) == Hello::NotTls;
        assert!(not(b"GET / HTTP/1.1\r\n"));
        assert!(not(b"SSH-2.0-OpenSSH_9.6\r\n"));
        assert!(not(&[23, 3, 3, 0, 4, 1, 2, 3, 4]), "application data");
        assert!(not(&[21, 3, 3, 0, 2, 2, 40]), "alert");
        assert!(not(&[22, 3, 9]), "unknown record version");
        assert!(not(&[22, 3, 1, 0, 0]), "empty handshake fragment");
        assert!(not(&[22, 3, 1, 0x40, 1]), "record longer than 2^14");
        assert!(not(&[22, 3, 3, 0, 4, 2, 0, 0, 70]), "a ServerHello");
        let msg = &android_tls12()[5..];
        let mut mixed = record(&msg[..50]);
        mixed.extend([20, 3, 3, 0, 1, 1]); // ChangeCipherSpec mid-hello
        assert!(not(&mixed));
        assert_eq!(client_hello_from_stream(&[]), Hello::NeedMore);
        assert_eq!(client_hello_from_stream(&[22, 3]), Hello::NeedMore);
    }

    #[test]
    fn a_truncated_extension_list_is_malformed() {
        // Drop the last 3 bytes and fix the handshake length: the message is
        // complete but its extensions block now runs past its end.
        let mut msg = android_tls12()[5..].to_vec();
        msg.truncate(msg.len() - 3);
        fix_len(&mut msg);
        assert_eq!(client_hello(&msg, false), None);
        assert_eq!(client_hello_from_stream(&record(&msg)), Hello::NotTls);
        // An extension whose length overruns the block is malformed too.
        let mut bad = spec_example(false);
        let last = bad.len() - 1; // the length of the empty ext 0x0015
        bad[last] = 9;
        assert_eq!(client_hello(&bad, false), None);
        // Bytes after the extensions block.
        let mut extra = spec_example(false);
        extra.push(0);
        fix_len(&mut extra);
        assert_eq!(client_hello(&extra, false), None);
    }

    #[test]
    fn empty_lists_and_odd_alpn_values_follow_the_spec() {
        // A TLS 1.2 hello may omit the extensions block altogether.
        let mut msg = build(&[0x002f], &[]);
        msg.truncate(msg.len() - 2);
        fix_len(&mut msg);
        let o = client_hello(&msg, false).expect("a hello");
        assert_eq!(o.ja4, "t12i010000_ba72b8082249_000000000000");
        assert_eq!(o.ja3, hex(&Md5::digest(b"771,47,,,")));
        let o = client_hello(&build(&[], &[(0x0000, vec![])]), false).expect("a hello");
        assert_eq!(o.ja4, "t12d000100_000000000000_000000000000");
        assert_eq!(alpn_chars(Some(b"http/1.1")), "h1");
        assert_eq!(alpn_chars(Some(b"x")), "xx");
        assert_eq!(alpn_chars(Some(b"")), "00");
        assert_eq!(alpn_chars(Some(&[0xab])), "ab");
        assert_eq!(alpn_chars(Some(&[0xab, 0xcd])), "ad");
        assert_eq!(alpn_chars(Some(&[0x30, 0xab])), "3b");
        assert_eq!(alpn_chars(Some(&[0x30, 0xab, 0xcd, 0x31])), "01");
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a1a) && !is_grease(0x1a0a));
    }
}
