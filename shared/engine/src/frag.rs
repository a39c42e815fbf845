//! IP fragment reassembly, bounded in datagrams, bytes and time.
//!
//! Fragments are rare on home networks, so a reassembled datagram is a fresh
//! buffer; the hot path (unfragmented packets) never comes here.

use std::collections::HashMap;

use crate::ip::{Addr, IpPacket};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: Addr,
    dst: Addr,
    id: u32,
    proto: u8,
    v6: bool,
}

#[derive(Debug)]
struct Datagram {
    first_ns: i64,
    /// The header bytes to rebuild the datagram with (from the first fragment).
    header: Vec<u8>,
    /// IPv6: where the next-header byte pointing at the fragment header sits
    /// in `header`, and the protocol after the fragment header.
    v6_nh_ptr: usize,
    next_proto: u8,
    data: Vec<u8>,
    /// Byte ranges received, sorted, merged.
    have: Vec<(u32, u32)>,
    /// Payload length, known once the last fragment arrived.
    total: Option<u32>,
}

/// Limits for [`Reassembler`].
#[derive(Debug, Clone, Copy)]
pub struct FragLimits {
    pub max_datagrams: usize,
    pub max_bytes: usize,
    pub timeout_ns: i64,
}

impl Default for FragLimits {
    fn default() -> Self {
        FragLimits {
            max_datagrams: 4096,
            max_bytes: 32 << 20,
            timeout_ns: 60_000_000_000,
        }
    }
}

/// Counters a caller reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct FragStats {
    pub fragments: u64,
    pub reassembled: u64,
    /// Datagrams dropped unfinished: timed out or evicted for space.
    pub dropped: u64,
    /// Fragments that made no sense (overlapping past the end, too large).
    pub invalid: u64,
}

#[derive(Debug, Default)]
pub struct Reassembler {
    limits: FragLimits,
    table: HashMap<Key, Datagram>,
    bytes: usize,
    pub stats: FragStats,
}

const MAX_DATAGRAM: u32 = 65_535;

impl Reassembler {
    pub fn new(limits: FragLimits) -> Self {
        Reassembler {
            limits,
            ..Default::default()
        }
    }

    /// In-progress datagrams.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Adds a fragment; returns the complete datagram (header and payload,
    /// unfragmented) once every piece is there.
    pub fn add(&mut self, ts_ns: i64, ip: &IpPacket<'_>) -> Option<Vec<u8>> {
        let frag = ip.frag?;
        self.stats.fragments += 1;
        let key = Key {
            src: ip.src,
            dst: ip.dst,
            id: frag.id,
            proto: if ip.v6 { 0 } else { ip.proto },
            v6: ip.v6,
        };
        let start = frag.offset;
        let end = start + ip.payload.len() as u32;
        if end > MAX_DATAGRAM || (ip.payload.len() as u32) < ip.payload_len {
            // Too large, or cut by the snap length: cannot be completed.
            self.stats.invalid += 1;
            return None;
        }
        self.expire(ts_ns);
        if !self.table.contains_key(&key) {
            while self.table.len() >= self.limits.max_datagrams
                || self.bytes >= self.limits.max_bytes
            {
                if !self.evict_oldest() {
                    break;
                }
            }
            self.table.insert(
                key,
                Datagram {
                    first_ns: ts_ns,
                    header: Vec::new(),
                    v6_nh_ptr: 0,
                    next_proto: 0,
                    data: Vec::new(),
                    have: Vec::new(),
                    total: None,
                },
            );
        }
        let d = self.table.get_mut(&key)?;
        if start == 0 {
            if ip.v6 {
                d.header = ip.raw[..frag.v6_frag_off].to_vec();
                d.v6_nh_ptr = frag.v6_nh_ptr;
                d.next_proto = ip.proto;
            } else {
                d.header = ip.raw[..ip.hdr_len].to_vec();
            }
        }
        if !frag.more {
            if d.total.is_some_and(|t| t != end) {
                self.stats.invalid += 1;
            }
            d.total = Some(end);
        }
        if d.data.len() < end as usize {
            let grow = end as usize - d.data.len();
            self.bytes += grow;
            d.data.resize(end as usize, 0);
        }
        d.data[start as usize..end as usize].copy_from_slice(ip.payload);
        insert_range(&mut d.have, start, end);
        let complete = match d.total {
            Some(t) => d.have.len() == 1 && d.have[0] == (0, t) && !d.header.is_empty(),
            None => false,
        };
        if !complete {
            return None;
        }
        let d = self.table.remove(&key)?;
        self.bytes = self.bytes.saturating_sub(d.data.len());
        self.stats.reassembled += 1;
        Some(rebuild(d, ip.v6))
    }

    fn expire(&mut self, now_ns: i64) {
        let timeout = self.limits.timeout_ns;
        if self.table.is_empty() {
            return;
        }
        let before = self.table.len();
        let mut freed = 0;
        self.table.retain(|_, d| {
            let keep = now_ns - d.first_ns <= timeout;
            if !keep {
                freed += d.data.len();
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        self.stats.dropped += (before - self.table.len()) as u64;
    }

    fn evict_oldest(&mut self) -> bool {
        let Some(key) = self
            .table
            .iter()
            .min_by_key(|(_, d)| d.first_ns)
            .map(|(k, _)| *k)
        else {
            return false;
        };
        if let Some(d) = self.table.remove(&key) {
            self.bytes = self.bytes.saturating_sub(d.data.len());
        }
        self.stats.dropped += 1;
        true
    }
}

fn insert_range(have: &mut Vec<(u32, u32)>, start: u32, end: u32) {
    if start >= end {
        return;
    }
    have.push((start, end));
    have.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(have.len());
    for &(s, e) in have.iter() {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *have = merged;
}

fn rebuild(d: Datagram, v6: bool) -> Vec<u8> {
    let mut out = d.header;
    if v6 {
        out[d.v6_nh_ptr] = d.next_proto;
        let plen = (out.len() - 40 + d.data.len()).min(0xffff) as u16;
        out[4..6].copy_from_slice(&plen.to_be_bytes());
    } else {
        let total = (out.len() + d.data.len()).min(0xffff) as u16;
        out[2..4].copy_from_slice(&total.to_be_bytes());
        out[6] = 0;
        out[7] = 0;
        // Header checksum: recompute so a verifying parser accepts it.
        out[10] = 0;
        out[11] = 0;
        let c = crate::ip::internet_checksum(&out, 0);
        out[10..12].copy_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(&d.data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip;

    fn v4(payload: &[u8], frag: u16) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut h = vec![0x45, 0, (total >> 8) as u8, total as u8, 0x12, 0x34];
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, 17, 0, 0, 10, 0, 0, 1, 192, 168, 1, 2]);
        h.extend_from_slice(payload);
        h
    }

    #[test]
    fn out_of_order_fragments_reassemble() {
        let mut r = Reassembler::new(FragLimits::default());
        let a = v4(&[1; 16], 0x2000);
        let b = v4(&[2; 16], 0x2000 | 2);
        let c = v4(&[3; 4], 4);
        for (i, p) in [&c, &a].iter().enumerate() {
            let pkt = ip::parse(p, false).expect("parse");
            assert!(r.add(i as i64, &pkt).is_none());
        }
        let pkt = ip::parse(&b, false).expect("parse");
        let full = r.add(3, &pkt).expect("complete");
        let parsed = ip::parse(&full, true).expect("valid datagram");
        assert_eq!(parsed.total_len, 20 + 36);
        assert!(parsed.frag.is_none());
        assert_eq!(&parsed.payload[..16], &[1; 16]);
        assert_eq!(&parsed.payload[32..], &[3; 4]);
        assert!(r.is_empty());
        assert_eq!(r.stats.reassembled, 1);
    }

    #[test]
    fn bounded_and_timed_out() {
        let limits = FragLimits {
            max_datagrams: 2,
            max_bytes: 1 << 20,
            timeout_ns: 10,
        };
        let mut r = Reassembler::new(limits);
        for id in 0..5u8 {
            let mut p = v4(&[0; 8], 0x2000);
            p[5] = id;
            let pkt = ip::parse(&p, false).expect("parse");
            r.add(id as i64, &pkt);
        }
        assert_eq!(r.len(), 2);
        assert_eq!(r.stats.dropped, 3);
        let mut p = v4(&[0; 8], 0x2000);
        p[5] = 99;
        let pkt = ip::parse(&p, false).expect("parse");
        r.add(100, &pkt);
        assert_eq!(r.len(), 1, "the two old ones timed out");
    }
}
