//! The client's Initial packets of a QUIC connection: their protection is
//! keyed by the connection id the client chose (RFC 9001 §5.2), so anyone on
//! the path can remove it and read the ClientHello inside, with its SNI,
//! ALPN and JA4 ("q" form). QUIC v1 (RFC 9000), v2 (RFC 9369) and drafts 23
//! to 32 are read; other versions give an observation without a hello.
//!
//! A ClientHello may span several Initial packets and several datagrams,
//! and its CRYPTO frames may come in any order (browsers shuffle them on
//! purpose): [`Assembly`] collects them by offset, bounded.

use heimdall_proto::sensor::v1::QuicInitialObservation;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, quic::HeaderProtectionKey};
use ring::hkdf;

use super::tls;

/// Most CRYPTO bytes kept per connection.
const MAX_CRYPTO: usize = 16 * 1024;
/// Most fragments kept per connection.
const MAX_FRAGMENTS: usize = 64;
/// Client datagrams looked at before giving up on a hello.
pub const MAX_DATAGRAMS: u8 = 8;

const V1: u32 = 0x0000_0001;
const V2: u32 = 0x6b33_43cf;

/// The initial salt and HKDF labels of a version.
struct Keys {
    salt: &'static [u8; 20],
    key: &'static [u8],
    iv: &'static [u8],
    hp: &'static [u8],
    /// The long-header packet type that means Initial.
    initial_type: u8,
}

fn keys_of(version: u32) -> Option<Keys> {
    const SALT_V1: [u8; 20] = [
        0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c,
        0xad, 0xcc, 0xbb, 0x7f, 0x0a,
    ];
    const SALT_V2: [u8; 20] = [
        0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d,
        0xcb, 0xf9, 0xbd, 0x2e, 0xd9,
    ];
    // draft-ietf-quic-tls-29 to -32.
    const SALT_D29: [u8; 20] = [
        0xaf, 0xbf, 0xec, 0x28, 0x99, 0x93, 0xd2, 0x4c, 0x9e, 0x97, 0x86, 0xf1, 0x9c, 0x61, 0x11,
        0xe0, 0x43, 0x90, 0xa8, 0x99,
    ];
    // draft-ietf-quic-tls-23 to -28.
    const SALT_D23: [u8; 20] = [
        0xc3, 0xee, 0xf7, 0x12, 0xc7, 0x2e, 0xbb, 0x5a, 0x11, 0xa7, 0xd2, 0x43, 0x2b, 0xb4, 0x63,
        0x65, 0xbe, 0xf9, 0xf5, 0x02,
    ];
    let v1_labels = |salt| Keys {
        salt,
        key: b"quic key",
        iv: b"quic iv",
        hp: b"quic hp",
        initial_type: 0,
    };
    match version {
        V1 => Some(v1_labels(&SALT_V1)),
        V2 => Some(Keys {
            salt: &SALT_V2,
            key: b"quicv2 key",
            iv: b"quicv2 iv",
            hp: b"quicv2 hp",
            initial_type: 1,
        }),
        0xff00_001d..=0xff00_0020 => Some(v1_labels(&SALT_D29)),
        0xff00_0017..=0xff00_001c => Some(v1_labels(&SALT_D23)),
        _ => None,
    }
}

/// An HKDF output length for ring.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(prk: &hkdf::Prk, label: &[u8], out: &mut [u8]) -> Option<()> {
    let len = (out.len() as u16).to_be_bytes();
    let full_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&len, &full_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len())).ok()?.fill(out).ok()
}

/// The client's Initial keys for `dcid`.
struct ClientKeys {
    aead: LessSafeKey,
    iv: [u8; 12],
    hp: HeaderProtectionKey,
    initial_type: u8,
}

fn client_keys(version: u32, dcid: &[u8]) -> Option<ClientKeys> {
    let k = keys_of(version)?;
    let initial = hkdf::Salt::new(hkdf::HKDF_SHA256, k.salt).extract(dcid);
    let mut secret = [0u8; 32];
    expand_label(&initial, b"client in", &mut secret)?;
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &secret);
    let (mut key, mut iv, mut hp) = ([0u8; 16], [0u8; 12], [0u8; 16]);
    expand_label(&prk, k.key, &mut key)?;
    expand_label(&prk, k.iv, &mut iv)?;
    expand_label(&prk, k.hp, &mut hp)?;
    Some(ClientKeys {
        aead: LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &key).ok()?),
        iv,
        hp: HeaderProtectionKey::new(&aead::quic::AES_128, &hp).ok()?,
        initial_type: k.initial_type,
    })
}

/// A QUIC variable-length integer (RFC 9000 §16).
fn varint(b: &mut &[u8]) -> Option<u64> {
    let first = *b.first()?;
    let n = 1usize << (first >> 6);
    let bytes = b.get(..n)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &bytes[1..] {
        v = (v << 8) | u64::from(x);
    }
    *b = &b[n..];
    Some(v)
}

/// A long-header packet's version and connection ids, when `d` starts with
/// one.
pub fn long_header(d: &[u8]) -> Option<(u32, &[u8], &[u8])> {
    if d.len() < 7 || d[0] & 0xc0 != 0xc0 {
        return None;
    }
    let version = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
    let dl = usize::from(d[5]);
    let dcid = d.get(6..6 + dl)?;
    let sl = usize::from(*d.get(6 + dl)?);
    let scid = d.get(7 + dl..7 + dl + sl)?;
    (dl <= 20 && sl <= 20).then_some((version, dcid, scid))
}

/// CRYPTO data of one connection's client Initials, collected by offset.
#[derive(Debug, Default)]
pub struct Assembly {
    version: u32,
    dcid: Vec<u8>,
    scid: Vec<u8>,
    fragments: Vec<(u64, Vec<u8>)>,
    bytes: usize,
    /// Client datagrams seen.
    pub datagrams: u8,
}

/// What a client datagram added.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Not a QUIC client Initial: nothing to observe on this connection.
    NotQuic,
    /// Part of a hello; more datagrams may complete it.
    NeedMore,
    /// Decided: the observation (with the hello when it could be read).
    Done(Box<QuicInitialObservation>),
}

impl Assembly {
    /// Feeds one datagram the client sent (all its coalesced packets).
    pub fn datagram(&mut self, d: &[u8]) -> Step {
        let Some((version, dcid, scid)) = long_header(d) else {
            return if self.datagrams == 0 {
                Step::NotQuic
            } else {
                self.give_up_after_more()
            };
        };
        if self.datagrams == 0 {
            self.version = version;
            self.dcid = dcid.to_vec();
            self.scid = scid.to_vec();
        }
        self.datagrams = self.datagrams.saturating_add(1);
        if version == 0 {
            // Version negotiation is the server's; a client never sends it.
            return Step::NotQuic;
        }
        let Some(keys) = client_keys(self.version, &self.dcid) else {
            return Step::Done(Box::new(self.observation(None)));
        };
        let mut rest = d;
        while !rest.is_empty() {
            match self.packet(&keys, rest) {
                Some(next) => rest = next,
                None => break,
            }
        }
        if let Some(hello) = self.hello() {
            return Step::Done(Box::new(self.observation(Some(hello))));
        }
        self.give_up_after_more()
    }

    fn give_up_after_more(&mut self) -> Step {
        if self.datagrams >= MAX_DATAGRAMS || self.bytes >= MAX_CRYPTO {
            Step::Done(Box::new(self.observation(None)))
        } else {
            Step::NeedMore
        }
    }

    fn observation(
        &mut self,
        hello: Option<heimdall_proto::sensor::v1::TlsClientHelloObservation>,
    ) -> QuicInitialObservation {
        self.fragments = Vec::new();
        QuicInitialObservation {
            version: self.version,
            dcid: std::mem::take(&mut self.dcid).into(),
            scid: std::mem::take(&mut self.scid).into(),
            client_hello: hello,
        }
    }

    /// One long-header packet at the start of `p`; returns what follows it
    /// (the next coalesced packet), or `None` when the rest cannot be read.
    fn packet<'a>(&mut self, keys: &ClientKeys, p: &'a [u8]) -> Option<&'a [u8]> {
        let (version, dcid, scid) = long_header(p)?;
        if version != self.version {
            return None;
        }
        let mut r = &p[7 + dcid.len() + scid.len()..];
        let is_initial = (p[0] >> 4) & 0x03 == keys.initial_type;
        if is_initial {
            let token = varint(&mut r)? as usize;
            r = r.get(token..)?;
        }
        let length = varint(&mut r)? as usize;
        let pn_at = p.len() - r.len();
        let end = pn_at.checked_add(length)?;
        let packet = p.get(..end)?;
        let next = &p[end..];
        if !is_initial {
            // 0-RTT or Handshake: keys we do not have; skip it.
            return Some(next);
        }
        let sample = packet.get(pn_at + 4..pn_at + 20)?;
        let mask = keys.hp.new_mask(sample).ok()?;
        let mut header = packet[..pn_at + 4].to_vec();
        header[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(header[0] & 0x03) + 1;
        header.truncate(pn_at + pn_len);
        let mut pn = 0u64;
        for i in 0..pn_len {
            header[pn_at + i] ^= mask[1 + i];
            pn = (pn << 8) | u64::from(header[pn_at + i]);
        }
        let mut nonce = keys.iv;
        for (i, b) in pn.to_be_bytes().iter().enumerate() {
            nonce[4 + i] ^= b;
        }
        let mut payload = packet.get(pn_at + pn_len..)?.to_vec();
        let plain = keys
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&header),
                &mut payload,
            )
            .ok()?;
        self.frames(plain);
        Some(next)
    }

    /// Collects the CRYPTO frames of a decrypted Initial payload.
    fn frames(&mut self, mut f: &[u8]) {
        while let Some(t) = varint(&mut f) {
            match t {
                0x00 | 0x01 => {} // PADDING, PING
                0x02 | 0x03 => {
                    // ACK: largest, delay, range count, first range, ranges.
                    let ok = (|| {
                        varint(&mut f)?;
                        varint(&mut f)?;
                        let ranges = varint(&mut f)?;
                        varint(&mut f)?;
                        for _ in 0..ranges.min(1024) {
                            varint(&mut f)?;
                            varint(&mut f)?;
                        }
                        if t == 0x03 {
                            for _ in 0..3 {
                                varint(&mut f)?;
                            }
                        }
                        Some(())
                    })();
                    if ok.is_none() {
                        return;
                    }
                }
                0x06 => {
                    let (Some(offset), Some(len)) = (varint(&mut f), varint(&mut f)) else {
                        return;
                    };
                    let Some(data) = f.get(..len as usize) else {
                        return;
                    };
                    f = &f[len as usize..];
                    if self.fragments.len() < MAX_FRAGMENTS
                        && self.bytes + data.len() <= MAX_CRYPTO
                        && offset < MAX_CRYPTO as u64
                    {
                        self.bytes += data.len();
                        self.fragments.push((offset, data.to_vec()));
                    }
                }
                // CONNECTION_CLOSE or anything not allowed in an Initial.
                _ => return,
            }
        }
    }

    /// The ClientHello, once the fragments cover it from offset 0.
    fn hello(&mut self) -> Option<heimdall_proto::sensor::v1::TlsClientHelloObservation> {
        self.fragments.sort_by_key(|(o, _)| *o);
        let mut stream: Vec<u8> = Vec::new();
        for (offset, data) in &self.fragments {
            let at = *offset as usize;
            if at > stream.len() {
                break; // a gap
            }
            let skip = stream.len() - at;
            if skip < data.len() {
                stream.extend_from_slice(&data[skip..]);
            }
        }
        let need = 4 + stream
            .get(1..4)
            .map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize)?;
        let msg = stream.get(..need)?;
        tls::client_hello(msg, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CaptureReader, Engine, EngineConfig};
    use heimdall_proto::sensor::v1::observation::Kind;

    /// RFC 9001 Appendix A.1: the client's Initial keys for DCID
    /// 0x8394c8f03e515708.
    #[test]
    fn initial_keys_match_rfc_9001() {
        let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
        let k = keys_of(V1).expect("v1");
        let initial = hkdf::Salt::new(hkdf::HKDF_SHA256, k.salt).extract(&dcid);
        let mut secret = [0u8; 32];
        expand_label(&initial, b"client in", &mut secret).expect("expand");
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &secret);
        let (mut key, mut iv, mut hp) = ([0u8; 16], [0u8; 12], [0u8; 16]);
        expand_label(&prk, k.key, &mut key).expect("key");
        expand_label(&prk, k.iv, &mut iv).expect("iv");
        expand_label(&prk, k.hp, &mut hp).expect("hp");
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(&secret),
            "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea"
        );
        assert_eq!(hex(&key), "1f369613dd76d5467730efcbe3b1a22d");
        assert_eq!(hex(&iv), "fa044b2f42a3fd3b46fb255c");
        assert_eq!(hex(&hp), "9f50449e04a0e810283a1e9933adedd2");
    }

    #[test]
    fn varints_read_all_four_lengths() {
        for (bytes, want) in [
            (&[0x25][..], 37u64),
            (&[0x7b, 0xbd][..], 15_293),
            (&[0x9d, 0x7f, 0x3e, 0x7d][..], 494_878_333),
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c][..],
                151_288_809_941_952_652,
            ),
        ] {
            let mut b = bytes;
            assert_eq!(varint(&mut b), Some(want));
            assert!(b.is_empty());
        }
        assert_eq!(varint(&mut &[0x40][..]), None);
    }

    /// The QUIC observations of a capture from nDPI's test set.
    fn quic_hellos(file: &str) -> Vec<(u32, String, String, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testdata/ndpi/pcap")
            .join(file);
        let mut reader = CaptureReader::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (the shared testdata)", path.display()));
        let mut engine = Engine::new(EngineConfig {
            observations: true,
            ..EngineConfig::default()
        });
        let mut out = Vec::new();
        while let Some(p) = reader.next_packet().expect("read") {
            engine.packet(&p);
            for o in engine.out.observations.drain(..) {
                if let Some(Kind::QuicInitial(q)) = o.kind {
                    let h = q.client_hello.unwrap_or_default();
                    out.push((q.version, h.sni, h.ja3, h.ja4));
                }
            }
            engine.clear_output();
        }
        out
    }

    /// tshark 4.0 decrypts the same Initials: SNI and JA3 per connection
    /// (`tshark -Y 'quic.long.packet_type == 0 && tls.handshake.type == 1'
    /// -T fields -e quic.version -e tls.handshake.extensions_server_name -e
    /// tls.handshake.ja3`).
    #[test]
    fn client_hellos_in_quic_initials_agree_with_tshark() {
        let v1 = quic_hellos("quic_0RTT.pcap");
        assert!(
            v1.iter().any(|(v, sni, ja3, ja4)| *v == V1
                && sni == "ssl.gstatic.com"
                && ja3 == "06b6b2a2cba0b7deeaaa6a3d8374d627"
                && ja4.starts_with('q')),
            "{v1:?}"
        );
        assert!(
            v1.iter().any(|(v, sni, ja3, _)| *v == 0xff00_001c
                && sni == "abcd"
                && ja3 == "a7b629a5bd67bfc25e2c78b3daa4c12f"),
            "{v1:?}"
        );
        let d29 = quic_hellos("quic-29.pcap");
        assert!(!d29.is_empty());
        assert!(
            d29.iter().all(|(v, sni, ja3, _)| *v == 0xff00_001d
                && sni == "localhost"
                && ja3 == "b3e43d74f4b790abca2f5fe7dd06e7cf"),
            "{d29:?}"
        );
    }

    #[test]
    fn damaged_initials_never_panic() {
        let mut a = Assembly::default();
        let mut d = vec![
            0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x44, 0xd0,
        ];
        d.extend_from_slice(&[0u8; 1200]);
        for cut in 0..d.len() {
            let _ = Assembly::default().datagram(&d[..cut]);
        }
        assert!(matches!(a.datagram(&d), Step::NeedMore | Step::Done(_)));
        assert_eq!(Assembly::default().datagram(b"\x17\x03\x03"), Step::NotQuic);
    }
}
