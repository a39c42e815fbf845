//! The IEEE registries (MA-L, MA-M, MA-S and the retired IAB) as a lookup
//! table built at compile time, and the address bits that say whether a MAC
//! can be looked up at all.

use std::sync::OnceLock;

/// The table `build.rs` wrote (layout documented there).
static BLOB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/oui.bin"));

struct Table {
    names: Vec<&'static str>,
    /// 24-, 28- and 36-bit prefixes, each sorted by prefix value.
    sections: [Vec<(u64, u16)>; 3],
}

const BITS: [u32; 3] = [24, 28, 36];

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        parse(BLOB).unwrap_or(Table {
            names: Vec::new(),
            sections: Default::default(),
        })
    })
}

fn parse(mut b: &'static [u8]) -> Option<Table> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    let u32_le = |b: &mut &'static [u8]| -> Option<u32> {
        take(b, 4).map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
    };
    let count = u32_le(&mut b)? as usize;
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let len = *take(&mut b, 1)?.first()? as usize;
        names.push(std::str::from_utf8(take(&mut b, len)?).ok()?);
    }
    let mut sections: [Vec<(u64, u16)>; 3] = Default::default();
    for section in &mut sections {
        let n = u32_le(&mut b)? as usize;
        section.reserve_exact(n);
        for _ in 0..n {
            let e = take(&mut b, 10)?;
            let mut p = [0u8; 8];
            p.copy_from_slice(&e[..8]);
            section.push((u64::from_le_bytes(p), u16::from_le_bytes([e[8], e[9]])));
        }
    }
    Some(Table { names, sections })
}

/// The registered organization for a MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// The organization name as the IEEE lists it ("Espressif Inc.").
    pub organization: &'static str,
    /// The prefix length of the assignment: 24 (MA-L), 28 (MA-M) or 36
    /// (MA-S and IAB).
    pub bits: u32,
}

/// The most specific assignment that covers `mac`, or `None` when the
/// address is locally administered, a group address, or unassigned.
pub fn lookup(mac: [u8; 6]) -> Option<Assignment> {
    if locally_administered(mac) || group(mac) {
        return None;
    }
    let value = mac.iter().fold(0u64, |v, &b| (v << 8) | b as u64);
    let t = table();
    for i in (0..3).rev() {
        let prefix = value >> (48 - BITS[i]);
        if let Ok(at) = t.sections[i].binary_search_by_key(&prefix, |e| e.0) {
            let idx = t.sections[i][at].1 as usize;
            let organization = t.names.get(idx)?;
            // Blocks the IEEE split further are listed under its own name
            // at the shorter length; only a real owner counts.
            if organization.starts_with("IEEE Registration Authority") {
                continue;
            }
            return Some(Assignment {
                organization,
                bits: BITS[i],
            });
        }
    }
    None
}

/// How many assignments the table holds (for the startup log and tests).
pub fn len() -> usize {
    table().sections.iter().map(Vec::len).sum()
}

/// The U/L bit: set in addresses a host made up itself, which is what
/// phones and computers do for private ("randomized") Wi-Fi addresses.
pub fn locally_administered(mac: [u8; 6]) -> bool {
    mac[0] & 0x02 != 0
}

/// The I/G bit: multicast and broadcast destinations, never a device.
pub fn group(mac: [u8; 6]) -> bool {
    mac[0] & 0x01 != 0
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    heimdall_proto::addr::mac_text(mac)
}

/// The six bytes of a MAC from a protobuf field, when it has six.
pub fn mac_of(b: &[u8]) -> Option<[u8; 6]> {
    b.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> [u8; 6] {
        let v: Vec<u8> = s
            .split(':')
            .map(|p| u8::from_str_radix(p, 16).expect("hex"))
            .collect();
        mac_of(&v).expect("six bytes")
    }

    #[test]
    fn the_table_holds_the_three_registries() {
        assert!(len() > 40_000, "{} assignments", len());
        let e = lookup(mac("5c:cf:7f:07:ae:fb")).expect("Espressif's MA-L");
        assert_eq!((e.organization, e.bits), ("Espressif Inc.", 24));
        let l = lookup(mac("00:17:88:24:76:ff")).expect("MA-L");
        assert!(l.organization.starts_with("Philips"), "{l:?}");
    }

    #[test]
    fn the_longest_prefix_wins() {
        // 70:B3:D5 is an IEEE block split into MA-S assignments.
        let s = lookup(mac("70:b3:d5:f2:f0:01")).expect("an MA-S assignment");
        assert_eq!(s.bits, 36);
        assert_eq!(s.organization, "TELEPLATFORMS");
    }

    #[test]
    fn random_and_group_addresses_have_no_vendor() {
        assert!(lookup(mac("da:a1:19:00:00:01")).is_none());
        assert!(locally_administered(mac("da:a1:19:00:00:01")));
        assert!(lookup(mac("01:00:5e:00:00:fb")).is_none());
        assert_eq!(mac_text(mac("0a:0b:0c:0d:0e:0f")), "0a:0b:0c:0d:0e:0f");
    }
}
