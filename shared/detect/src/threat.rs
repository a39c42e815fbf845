//! Threat signatures from intelligence (Asgard): domains, addresses and
//! networks that, when a device looks them up or talks to them, raise a
//! `threat_match` alert with the signature's severity.

use std::collections::HashMap;
use std::net::IpAddr;

use heimdall_proto::sensor::v1::{Alert, SignatureKind, ThreatSignature};

use crate::{Flow, kv};

/// A network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: u128,
    len: u8,
    v4: bool,
}

impl Net {
    fn parse(s: &str) -> Option<Net> {
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        let ip: IpAddr = a.trim().parse().ok()?;
        let (addr, max, v4) = match ip {
            IpAddr::V4(v) => (u128::from(u32::from(v)), 32, true),
            IpAddr::V6(v) => (u128::from(v), 128, false),
        };
        let len = if l.is_empty() { max } else { l.parse().ok()? };
        (len <= max).then_some(Net { addr, len, v4 })
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        let (a, max, v4) = match ip {
            IpAddr::V4(v) => (u128::from(u32::from(*v)), 32u8, true),
            IpAddr::V6(v) => (u128::from(*v), 128u8, false),
        };
        if v4 != self.v4 {
            return false;
        }
        let shift = u32::from(max - self.len);
        shift >= 128 || (a >> shift) == (self.addr >> shift)
    }
}

/// The signatures in force, indexed for the hot path: domains by name,
/// exact addresses by address, networks in a short list.
#[derive(Debug, Default)]
pub struct Threats {
    domains: HashMap<String, ThreatSignature>,
    addrs: HashMap<IpAddr, ThreatSignature>,
    nets: Vec<(Net, ThreatSignature)>,
    ids: HashMap<String, (SignatureKind, String)>,
}

impl Threats {
    /// Signatures in force.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Adds or replaces a signature; returns false for one that cannot
    /// match (unknown kind, unparsable value), which is ignored.
    pub fn add(&mut self, s: &ThreatSignature) -> bool {
        self.remove(&s.id);
        let value = s.value.trim().trim_end_matches('.').to_ascii_lowercase();
        let kind = s.kind();
        let ok = match kind {
            SignatureKind::Domain if !value.is_empty() => {
                self.domains.insert(value.clone(), s.clone());
                true
            }
            SignatureKind::Ip => match value.parse::<IpAddr>() {
                Ok(ip) => {
                    self.addrs.insert(ip, s.clone());
                    true
                }
                Err(_) => false,
            },
            SignatureKind::Cidr => match Net::parse(&value) {
                Some(n) => {
                    self.nets.push((n, s.clone()));
                    true
                }
                None => false,
            },
            _ => false,
        };
        if ok {
            self.ids.insert(s.id.clone(), (kind, value));
        }
        ok
    }

    /// Withdraws a signature.
    pub fn remove(&mut self, id: &str) {
        let Some((kind, value)) = self.ids.remove(id) else {
            return;
        };
        match kind {
            SignatureKind::Domain => {
                self.domains.remove(&value);
            }
            SignatureKind::Ip => {
                if let Ok(ip) = value.parse::<IpAddr>() {
                    self.addrs.remove(&ip);
                }
            }
            _ => self.nets.retain(|(_, s)| s.id != id),
        }
    }

    /// Drops every signature (a full snapshot follows).
    pub fn clear(&mut self) {
        *self = Threats::default();
    }

    fn live(s: &ThreatSignature, ts_us: i64) -> bool {
        s.expires_us.is_none_or(|e| ts_us < e)
    }

    /// The signature a domain (or one of its parents) matches.
    pub fn domain(&self, name: &str, ts_us: i64) -> Option<&ThreatSignature> {
        if self.domains.is_empty() {
            return None;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = name.as_str();
        loop {
            if let Some(s) = self.domains.get(rest).filter(|s| Self::live(s, ts_us)) {
                return Some(s);
            }
            rest = rest.split_once('.')?.1;
        }
    }

    /// The signature an address matches.
    pub fn addr(&self, ip: &IpAddr, ts_us: i64) -> Option<&ThreatSignature> {
        self.addrs
            .get(ip)
            .or_else(|| {
                self.nets
                    .iter()
                    .find(|(n, _)| n.contains(ip))
                    .map(|(_, s)| s)
            })
            .filter(|s| Self::live(s, ts_us))
    }

    /// A `threat_match` alert when the connection's destination matches.
    pub fn flow(&self, f: &Flow) -> Option<Alert> {
        let s = self.addr(&f.dst, f.ts_us)?;
        Some(self.alert(
            s,
            f.ts_us,
            f.src,
            format!("connected to {}:{}", f.dst, f.dst_port),
            Some(f),
            None,
        ))
    }

    /// A `threat_match` alert when a looked-up name matches.
    pub fn lookup(&self, ts_us: i64, src: IpAddr, name: &str) -> Option<Alert> {
        let s = self.domain(name, ts_us)?;
        Some(self.alert(
            s,
            ts_us,
            src,
            format!("looked up {}", name.trim_end_matches('.')),
            None,
            Some(name.trim_end_matches('.').to_ascii_lowercase()),
        ))
    }

    fn alert(
        &self,
        s: &ThreatSignature,
        ts_us: i64,
        src: IpAddr,
        what: String,
        f: Option<&Flow>,
        domain: Option<String>,
    ) -> Alert {
        let feed = if s.source.is_empty() {
            "threat intelligence".to_string()
        } else {
            s.source.clone()
        };
        Alert {
            ts_us,
            alert_type: "threat_match".into(),
            severity: s.severity,
            score: 1.0,
            dst_ip: f
                .map(|f| heimdall_proto::addr::ip_bytes(f.dst))
                .unwrap_or_default()
                .into(),
            dst_port: f.map(|f| u32::from(f.dst_port)),
            transport: f.map_or(0, |f| f.transport as i32),
            dst_domain: domain,
            description: format!(
                "{src} {what}, which {feed} lists as {} (signature {}: {})",
                if s.description.is_empty() {
                    "malicious"
                } else {
                    s.description.as_str()
                },
                s.id,
                s.value
            ),
            expected: "no contact with listed threats".into(),
            observed: what,
            evidence: vec![
                kv("signature", s.id.clone()),
                kv("indicator", s.value.clone()),
                kv("feed", feed),
            ],
            suppression_key: format!("threat_match|{src}|{}", s.id),
            signature_id: s.id.clone(),
            first_ts_us: ts_us,
            last_ts_us: ts_us,
            count: 1,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heimdall_proto::sensor::v1::Severity;

    fn sig(id: &str, kind: SignatureKind, value: &str) -> ThreatSignature {
        ThreatSignature {
            id: id.into(),
            kind: kind as i32,
            value: value.into(),
            severity: Severity::Critical as i32,
            source: "test feed".into(),
            description: "Mirai C2".into(),
            ..Default::default()
        }
    }

    #[test]
    fn domains_match_subdomains_and_networks_match_members() {
        let mut t = Threats::default();
        assert!(t.add(&sig("d1", SignatureKind::Domain, "Evil.Example.")));
        assert!(t.add(&sig("n1", SignatureKind::Cidr, "198.51.100.0/24")));
        assert!(t.add(&sig("i1", SignatureKind::Ip, "2001:db8::7")));
        assert!(!t.add(&sig("bad", SignatureKind::Cidr, "198.51.100.0/40")));
        assert_eq!(t.len(), 3);
        let src: IpAddr = "192.168.1.9".parse().expect("ip");
        let a = t.lookup(5, src, "cdn.evil.example.").expect("match");
        assert_eq!(a.signature_id, "d1");
        assert_eq!(a.severity, Severity::Critical as i32);
        assert!(a.description.contains("Mirai C2"), "{}", a.description);
        assert!(t.lookup(5, src, "notevil.example").is_none());
        assert!(t.domain("example", 5).is_none());
        assert_eq!(
            t.addr(&"198.51.100.77".parse().expect("ip"), 5)
                .map(|s| s.id.as_str()),
            Some("n1")
        );
        assert!(t.addr(&"198.51.101.1".parse().expect("ip"), 5).is_none());
        assert!(t.addr(&"2001:db8::7".parse().expect("ip"), 5).is_some());
        t.remove("n1");
        assert!(t.addr(&"198.51.100.77".parse().expect("ip"), 5).is_none());
        let mut expired = sig("d2", SignatureKind::Domain, "old.example");
        expired.expires_us = Some(10);
        t.add(&expired);
        assert!(t.domain("old.example", 5).is_some());
        assert!(t.domain("old.example", 11).is_none());
    }
}
