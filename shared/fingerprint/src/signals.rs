//! What one observation says about the device that sent it: the device's
//! MAC, an address it uses, signal values for the rules, names it answers to
//! and identifiers that stay with it when its MAC changes.

use std::net::IpAddr;

use heimdall_proto::sensor::v1::{
    Dhcpv4Observation, Dhcpv6Observation, NdpMessageType, NetbiosOpcode, Observation,
    SsdpMessageKind, observation::Kind,
};

use crate::oui;
use crate::rules::Signal;

/// The facts of one observation about one device.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Facts {
    /// The device (never a group address).
    pub mac: [u8; 6],
    /// An address the device uses; the registry keeps it only inside the
    /// local networks.
    pub ip: Option<IpAddr>,
    /// Signal values for the rules.
    pub signals: Vec<(Signal, String)>,
    /// Names the device announced for itself, without ".local".
    pub hostnames: Vec<String>,
    /// Identifiers that survive a MAC change ("dhcp-client-id:…", "duid:…",
    /// "mdns-host:…", "ipv6-iid:…"). Host names are judged by the registry.
    pub idents: Vec<String>,
    /// Another device's address learned from this one (a DHCP server's ACK
    /// names the client's MAC and its new address).
    pub lease: Option<([u8; 6], IpAddr)>,
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    heimdall_proto::addr::ip(b).filter(|ip| usable(*ip))
}

/// A unicast address a device can hold (not 0.0.0.0, ::, multicast or
/// broadcast).
pub fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => !(v.is_unspecified() || v.is_multicast() || v.is_broadcast()),
        IpAddr::V6(v) => !(v.is_unspecified() || v.is_multicast()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A name as a device announces it: trailing dot and ".local" dropped.
pub fn clean_name(name: &str) -> String {
    let n = name.trim().trim_end_matches('.');
    let n = n
        .strip_suffix(".local")
        .or_else(|| n.strip_suffix(".LOCAL"))
        .unwrap_or(n);
    n.to_string()
}

/// The facts of an observation, or `None` when it says nothing about a
/// device (no usable source MAC).
pub fn facts(o: &Observation) -> Option<Facts> {
    let src_mac = oui::mac_of(&o.src_mac).filter(|m| !oui::group(*m) && *m != [0; 6]);
    let mut f = Facts {
        mac: src_mac.unwrap_or_default(),
        ip: ip_of(&o.src_ip),
        ..Default::default()
    };
    let mut push = |f: &mut Facts, s: Signal, v: &str| {
        let v = v.trim();
        if !v.is_empty() && f.signals.iter().all(|(s2, v2)| *s2 != s || v2 != v) {
            f.signals.push((s, v.to_string()));
        }
    };
    match o.kind.as_ref()? {
        Kind::Arp(a) => {
            let sender = oui::mac_of(&a.sender_mac)?;
            if src_mac.is_some_and(|m| m != sender) {
                // A proxy answering for someone else.
                return None;
            }
            f.mac = sender;
            f.ip = if a.probe { None } else { ip_of(&a.sender_ip) };
        }
        Kind::Dhcpv4(d) => dhcpv4(d, &mut f, &mut push)?,
        Kind::Dhcpv6(d) => dhcpv6(d, &mut f, &mut push),
        Kind::Ndp(n) => {
            let t = NdpMessageType::try_from(n.message_type).unwrap_or_default();
            if t == NdpMessageType::RouterAdvertisement {
                push(&mut f, Signal::Serves, "icmp6/router-advertisement");
            }
            if let Some(IpAddr::V6(v6)) = f.ip
                && v6.segments()[0] == 0xfe80
            {
                // A link-local interface id not made from this MAC (EUI-64)
                // is a stable privacy or random id: it may outlive the MAC.
                let iid = &v6.octets()[8..];
                let m = f.mac;
                let eui64 = [m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
                if iid != eui64 {
                    f.idents.push(format!("ipv6-iid:{}", hex(iid)));
                }
            }
        }
        Kind::Mdns(m) => {
            if m.is_response {
                for s in &m.service_types {
                    push(&mut f, Signal::MdnsService, &clean_name(s));
                }
                for i in &m.instance_names {
                    push(&mut f, Signal::MdnsInstance, &clean_name(i));
                }
                for h in &m.host_names {
                    let h = clean_name(h);
                    // Reverse-mapping owners are not names.
                    if !h.is_empty() && !h.ends_with(".arpa") {
                        f.idents
                            .push(format!("mdns-host:{}", h.to_ascii_lowercase()));
                        f.hostnames.push(h);
                    }
                }
                for t in &m.txt {
                    let mut entries: Vec<_> = t.entries.iter().collect();
                    entries.sort();
                    for (k, v) in entries {
                        push(&mut f, Signal::MdnsTxt, &format!("{k}={v}"));
                        if matches!(k.as_str(), "deviceid" | "id" | "pk") && v.len() >= 8 {
                            f.idents
                                .push(format!("mdns-{k}:{}", v.to_ascii_lowercase()));
                        }
                    }
                }
            }
        }
        Kind::Ssdp(s) => {
            let kind = SsdpMessageKind::try_from(s.kind).unwrap_or_default();
            if kind == SsdpMessageKind::MSearch {
                push(&mut f, Signal::SsdpUserAgent, &s.user_agent);
            } else {
                push(&mut f, Signal::SsdpServer, &s.server);
                push(&mut f, Signal::SsdpType, &s.nt);
                push(&mut f, Signal::SsdpType, &s.st);
                push(&mut f, Signal::SsdpType, &s.usn);
                push(&mut f, Signal::SsdpLocation, &s.location);
                if let Some(uuid) = s.usn.strip_prefix("uuid:") {
                    let uuid = uuid.split("::").next().unwrap_or(uuid);
                    if uuid.len() >= 16 {
                        f.idents
                            .push(format!("upnp-uuid:{}", uuid.to_ascii_lowercase()));
                    }
                }
            }
        }
        Kind::NetbiosNs(n) => {
            let op = NetbiosOpcode::try_from(n.opcode).unwrap_or_default();
            let own = matches!(
                op,
                NetbiosOpcode::Registration
                    | NetbiosOpcode::Refresh
                    | NetbiosOpcode::MultiHomedRegistration
            ) || (n.is_response && op == NetbiosOpcode::Query && !n.addresses.is_empty());
            if own {
                for name in &n.names {
                    if !name.group && matches!(name.suffix, 0x00 | 0x20) && !name.name.is_empty() {
                        f.hostnames.push(name.name.clone());
                    }
                }
            }
        }
        Kind::Llmnr(l) => {
            if l.is_response && l.rcode == 0 && !l.addresses.is_empty() {
                for q in &l.questions {
                    f.hostnames.push(clean_name(&q.name));
                }
            }
        }
        Kind::Http(h) => {
            push(&mut f, Signal::HttpUserAgent, &h.user_agent);
            push(&mut f, Signal::HttpUri, &h.uri);
            let host = h.host.rsplit_once(':').map_or(h.host.as_str(), |(a, p)| {
                if p.chars().all(|c| c.is_ascii_digit()) && !a.ends_with(']') && !a.contains(':') {
                    a
                } else {
                    h.host.as_str()
                }
            });
            if host.parse::<IpAddr>().is_err() && host.contains('.') {
                push(&mut f, Signal::Domain, host);
            }
        }
        Kind::TlsClientHello(t) => {
            push(&mut f, Signal::Domain, &t.sni);
            push(&mut f, Signal::Ja4, &t.ja4);
        }
        Kind::QuicInitial(q) => {
            if let Some(t) = &q.client_hello {
                push(&mut f, Signal::Domain, &t.sni);
                push(&mut f, Signal::Ja4, &t.ja4);
            }
        }
    }
    (f.mac != [0; 6] && !oui::group(f.mac)).then_some(f)
}

fn dhcpv4(
    d: &Dhcpv4Observation,
    f: &mut Facts,
    push: &mut impl FnMut(&mut Facts, Signal, &str),
) -> Option<()> {
    match d.message_type {
        // Offer and ACK: the server speaks, and an ACK names the client's
        // new address.
        2 | 5 => {
            push(f, Signal::Serves, "udp/67");
            if d.message_type == 5
                && let (Some(mac), Some(ip)) = (oui::mac_of(&d.chaddr), ip_of(&d.yiaddr))
            {
                f.lease = Some((mac, ip));
            }
            return Some(());
        }
        1 | 3 | 4 | 7 | 8 => {}
        _ => return Some(()),
    }
    let chaddr = oui::mac_of(&d.chaddr)?;
    if oui::group(chaddr) || chaddr == [0; 6] {
        return None;
    }
    // Relayed requests come from the relay; the client is chaddr.
    f.mac = chaddr;
    f.ip = ip_of(&d.ciaddr).or(f.ip.filter(|_| d.giaddr.iter().all(|&b| b == 0)));
    push(f, Signal::Hostname, &d.host_name);
    push(f, Signal::DhcpVendorClass, &d.vendor_class);
    if !d.parameter_request_list.is_empty() {
        let list: Vec<String> = d.parameter_request_list.iter().map(u8::to_string).collect();
        push(f, Signal::DhcpParams, &list.join(","));
    }
    for name in [
        &d.host_name,
        &d.client_fqdn
            .as_ref()
            .map(|q| q.name.clone())
            .unwrap_or_default(),
    ] {
        let n = clean_name(name);
        if !n.is_empty() && !f.hostnames.contains(&n) {
            f.hostnames.push(n);
        }
    }
    if let Some(fq) = &d.client_fqdn {
        push(f, Signal::Hostname, &fq.name);
    }
    // A client id that is just "hardware type 1 + this MAC" says nothing a
    // MAC does not; any other (DUID-based, vendor-chosen) is an identity.
    let cid = &d.client_id[..];
    let mac_derived = cid.len() == 7 && cid[0] == 1 && cid[1..] == chaddr;
    if cid.len() >= 2 && !mac_derived {
        f.idents.push(format!("dhcp-client-id:{}", hex(cid)));
    }
    Some(())
}

fn dhcpv6(d: &Dhcpv6Observation, f: &mut Facts, push: &mut impl FnMut(&mut Facts, Signal, &str)) {
    match d.message_type {
        // Advertise, Reply, Reconfigure: a server.
        2 | 7 | 10 => push(f, Signal::Serves, "udp/547"),
        1 | 3 | 4 | 5 | 6 | 8 | 9 | 11 => {
            if d.client_duid.len() >= 4 {
                f.idents.push(format!("duid:{}", hex(&d.client_duid)));
            }
            for v in &d.vendor_class {
                let data: Vec<String> = v
                    .data
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect();
                push(
                    f,
                    Signal::Dhcpv6Vendor,
                    &format!("{}:{}", v.enterprise_number, data.join(",")),
                );
            }
            if let Some(fq) = &d.client_fqdn {
                push(f, Signal::Hostname, &fq.name);
                let n = clean_name(&fq.name);
                if !n.is_empty() {
                    f.hostnames.push(n);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heimdall_proto::sensor::v1::{ArpObservation, ClientFqdn, HttpObservation};

    fn obs(mac: [u8; 6], ip: [u8; 4], kind: Kind) -> Observation {
        Observation {
            src_mac: mac.to_vec().into(),
            src_ip: ip.to_vec().into(),
            kind: Some(kind),
            ..Default::default()
        }
    }

    #[test]
    fn a_dhcp_request_gives_names_signals_and_a_client_id() {
        let mac = [0xda, 1, 2, 3, 4, 5];
        let d = Dhcpv4Observation {
            message_type: 3,
            chaddr: mac.to_vec().into(),
            host_name: "Annas-Phone".into(),
            vendor_class: "android-dhcp-14".into(),
            parameter_request_list: vec![1, 3, 6, 15, 26, 28, 51, 58, 59, 43].into(),
            client_id: vec![255, 1, 2, 3, 4, 5, 6, 7, 8].into(),
            client_fqdn: Some(ClientFqdn {
                flags: 0,
                name: "annas-phone.lan".into(),
            }),
            ..Default::default()
        };
        let f = facts(&obs(mac, [0, 0, 0, 0], Kind::Dhcpv4(d))).expect("facts");
        assert_eq!(f.mac, mac);
        assert_eq!(f.ip, None);
        assert!(
            f.signals
                .contains(&(Signal::DhcpParams, "1,3,6,15,26,28,51,58,59,43".into()))
        );
        assert!(
            f.signals
                .contains(&(Signal::DhcpVendorClass, "android-dhcp-14".into()))
        );
        assert_eq!(f.hostnames, vec!["Annas-Phone", "annas-phone.lan"]);
        assert_eq!(f.idents, vec!["dhcp-client-id:ff0102030405060708"]);
    }

    #[test]
    fn a_mac_derived_client_id_is_not_an_identity_and_acks_name_the_lease() {
        let mac = [0x00, 0x17, 0x88, 1, 2, 3];
        let mut cid = vec![1];
        cid.extend_from_slice(&mac);
        let d = Dhcpv4Observation {
            message_type: 1,
            chaddr: mac.to_vec().into(),
            client_id: cid.into(),
            ..Default::default()
        };
        assert!(
            facts(&obs(mac, [0; 4], Kind::Dhcpv4(d)))
                .expect("facts")
                .idents
                .is_empty()
        );
        let ack = Dhcpv4Observation {
            message_type: 5,
            chaddr: mac.to_vec().into(),
            yiaddr: vec![192, 168, 1, 20].into(),
            ..Default::default()
        };
        let server = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
        let f = facts(&obs(server, [192, 168, 1, 1], Kind::Dhcpv4(ack))).expect("facts");
        assert_eq!(f.mac, server);
        assert_eq!(f.lease, Some((mac, "192.168.1.20".parse().expect("ip"))));
        assert_eq!(f.signals, vec![(Signal::Serves, "udp/67".into())]);
    }

    #[test]
    fn http_hosts_lose_their_port_and_literal_addresses_are_not_domains() {
        let mac = [0x20, 0xf8, 0x5e, 1, 2, 3];
        let h = |host: &str| {
            facts(&obs(
                mac,
                [10, 0, 0, 5],
                Kind::Http(HttpObservation {
                    host: host.into(),
                    uri: "/scale/upload".into(),
                    ..Default::default()
                }),
            ))
            .expect("facts")
        };
        assert!(
            h("www.fitbit.com:80")
                .signals
                .contains(&(Signal::Domain, "www.fitbit.com".into()))
        );
        assert!(
            !h("10.0.0.1:8080")
                .signals
                .iter()
                .any(|(s, _)| *s == Signal::Domain)
        );
        assert!(
            !h("[fe80::1]:80")
                .signals
                .iter()
                .any(|(s, _)| *s == Signal::Domain)
        );
    }

    #[test]
    fn group_sources_and_proxied_arp_are_not_devices() {
        let arp = ArpObservation {
            sender_mac: vec![0, 1, 2, 3, 4, 5].into(),
            sender_ip: vec![10, 0, 0, 9].into(),
            ..Default::default()
        };
        assert!(facts(&obs([0, 9, 9, 9, 9, 9], [0; 4], Kind::Arp(arp.clone()))).is_none());
        let f = facts(&obs([0, 1, 2, 3, 4, 5], [0; 4], Kind::Arp(arp))).expect("facts");
        assert_eq!(f.ip, Some("10.0.0.9".parse().expect("ip")));
        let mut o = obs(
            [0, 1, 2, 3, 4, 5],
            [0; 4],
            Kind::Http(HttpObservation::default()),
        );
        o.src_mac = vec![1, 0, 0x5e, 0, 0, 0xfb].into();
        assert!(facts(&o).is_none());
    }
}
