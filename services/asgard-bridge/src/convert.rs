//! Records from the bus into what Asgard may see. Only these functions
//! build outgoing items, and they take nothing identifying in clear:
//! device ids, alert and incident ids become keyed pseudonyms, addresses
//! are anonymized prefix-preserving, names are reduced to registered
//! domains (local names dropped), and host names, labels, MACs and
//! evidence texts are never copied.

use heimdall_anonymize::{Anonymizer, registered_domain};
use heimdall_asgard_api::{
    AnonymizedAlert, BehaviourSignature, DestinationCount, FeatureSummary, PortCount, Quantiles,
    device_type_name, severity_name, transport_name,
};
use heimdall_proto::sensor::v1::{Alert, BaselineSummary, DeviceEvent, DeviceEventKind};

/// The signature for a device event; `None` for a device that is gone or
/// an event without a device.
pub fn signature(anon: &Anonymizer, ev: &DeviceEvent) -> Option<BehaviourSignature> {
    if ev.kind() == DeviceEventKind::Gone {
        return None;
    }
    let d = ev.device.as_ref()?;
    // The vendor part of a globally administered MAC names a maker, not a
    // household; a randomized one says nothing and is left out.
    let oui = d
        .macs
        .iter()
        .find(|m| !m.locally_administered && m.mac.len() == 6)
        .map(|m| m.mac[..3].iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_default();
    Some(BehaviourSignature {
        anon_device_id: anon.pseudonym("device", d.device_id.as_bytes()),
        device_type: device_type_name(d.device_type),
        type_confidence: (d.confidence > 0.0).then_some(d.confidence.min(1.0)),
        vendor: d.vendor.clone(),
        model: d.model.clone(),
        os: d.os.clone(),
        oui,
        window_start_us: d.first_seen_us,
        window_end_us: d.last_seen_us.max(d.first_seen_us),
        baseline_version: None,
        // Behaviour summaries come from baselines (the anomaly service).
        features: FeatureSummary::default(),
        fingerprints: None,
    })
}

/// The behaviour part of a device's signature, from its baseline summary:
/// the device by the pseudonym its device events and alerts have (its MAC's
/// while it has no device id), sites reduced to public registered domains
/// (local names dropped), no addresses (the summary has none). The
/// bridge fills vendor, model, OS and OUI from the device's last signature
/// ([`merge`]).
pub fn summary(anon: &Anonymizer, s: &BaselineSummary) -> BehaviourSignature {
    let mac_keyed = <[u8; 6]>::try_from(s.mac.as_ref())
        .is_ok_and(|m| heimdall_proto::addr::mac_text(m) == s.device_key);
    let anon_device_id = if mac_keyed {
        anon.mac(&s.mac)
    } else {
        anon.pseudonym("device", s.device_key.as_bytes())
    };
    let q = |q: &Option<heimdall_proto::sensor::v1::Quantiles>| {
        q.as_ref().map(|q| Quantiles {
            p50: q.p50,
            p90: q.p90,
            p99: q.p99,
            max: q.max,
        })
    };
    let mut top_destinations: Vec<DestinationCount> = Vec::new();
    for site in &s.top_sites {
        let Some(domain) = registered_domain(&site.site) else {
            continue;
        };
        // Two sites of one registered domain (CDN private suffixes) are one.
        match top_destinations
            .iter_mut()
            .find(|d| d.registered_domain == domain)
        {
            Some(d) => d.hours = d.hours.max(u64::from(site.hours)),
            None => top_destinations.push(DestinationCount {
                registered_domain: domain,
                hours: u64::from(site.hours),
                ..DestinationCount::default()
            }),
        }
    }
    BehaviourSignature {
        anon_device_id,
        device_type: device_type_name(s.device_type),
        window_start_us: s.window_start_us,
        window_end_us: s.window_end_us.max(s.window_start_us),
        baseline_version: Some(s.version),
        features: FeatureSummary {
            top_destinations,
            top_ports: s
                .ports
                .iter()
                .map(|p| PortCount {
                    transport: transport_name(p.transport),
                    port: p.port,
                    connections: 0,
                })
                .collect(),
            daily_bytes_up: q(&s.daily_bytes_up),
            daily_bytes_down: q(&s.daily_bytes_down),
            active_hours: if s.active_hours.len() == 24 {
                s.active_hours.clone()
            } else {
                Vec::new()
            },
            connections_per_hour: q(&s.connections_per_hour),
            destinations: Some(s.destinations),
            new_destinations_per_day: Some(s.destination_churn_per_day),
            baseline_confidence: Some(s.confidence.clamp(0.0, 1.0)),
            ..FeatureSummary::default()
        },
        ..BehaviourSignature::default()
    }
}

/// `behaviour` (from a baseline summary) completed with what the device's
/// last signature from a device event says about what it is.
pub fn merge(mut behaviour: BehaviourSignature, known: &BehaviourSignature) -> BehaviourSignature {
    if behaviour.device_type.is_empty() || behaviour.device_type == "unspecified" {
        behaviour.device_type.clone_from(&known.device_type);
        behaviour.type_confidence = known.type_confidence;
    } else if behaviour.device_type == known.device_type {
        behaviour.type_confidence = known.type_confidence;
    }
    behaviour.vendor.clone_from(&known.vendor);
    behaviour.model.clone_from(&known.model);
    behaviour.os.clone_from(&known.os);
    behaviour.oui.clone_from(&known.oui);
    behaviour.fingerprints.clone_from(&known.fingerprints);
    behaviour
}

/// An alert's metadata; incidents are not sent on their own.
pub fn alert(anon: &Anonymizer, a: &Alert) -> AnonymizedAlert {
    let device = if a.device_id.is_empty() {
        anon.mac(&a.src_mac)
    } else {
        anon.pseudonym("device", a.device_id.as_bytes())
    };
    AnonymizedAlert {
        alert_id: anon.pseudonym("alert", a.alert_id.as_bytes()),
        alert_type: a.alert_type.clone(),
        severity: severity_name(a.severity),
        score: Some(a.score.clamp(0.0, 1.0)),
        ts_us: a.ts_us,
        first_ts_us: a.first_ts_us,
        last_ts_us: a.last_ts_us,
        count: (a.count > 0).then_some(a.count),
        anon_device_id: device,
        device_type: String::new(),
        anon_dst_ip: heimdall_proto::addr::ip(&a.dst_ip)
            .map(|i| anon.ip(i).to_string())
            .unwrap_or_default(),
        dst_port: a.dst_port,
        transport: if a.transport == 0 {
            String::new()
        } else {
            transport_name(a.transport)
        },
        dst_domain: a
            .dst_domain
            .as_deref()
            .and_then(registered_domain)
            .unwrap_or_default(),
        signature_id: a.signature_id.clone(),
        anon_incident_id: if a.incident_id.is_empty() {
            String::new()
        } else {
            anon.pseudonym("incident", a.incident_id.as_bytes())
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heimdall_proto::sensor::v1::{Device, DeviceMac, DeviceType};

    #[test]
    fn nothing_identifying_is_copied() {
        let anon = Anonymizer::new(&[9u8; 32]).expect("key");
        let ev = DeviceEvent {
            kind: DeviceEventKind::New as i32,
            device: Some(Device {
                device_id: "dev-42".into(),
                macs: vec![
                    DeviceMac {
                        mac: vec![0xda, 0xa1, 0x19, 1, 2, 3].into(),
                        locally_administered: true,
                        ..Default::default()
                    },
                    DeviceMac {
                        mac: vec![0x00, 0x17, 0x88, 4, 5, 6].into(),
                        ..Default::default()
                    },
                ],
                hostnames: vec!["Johns-iPhone".into()],
                label: "John's phone".into(),
                device_type: DeviceType::Phone as i32,
                vendor: "Apple".into(),
                confidence: 0.9,
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = signature(&anon, &ev).expect("signature");
        let text = serde_json::to_string(&s).expect("json");
        assert!(!text.contains("dev-42") && !text.contains("John"), "{text}");
        assert_eq!(s.oui, "001788");
        assert_eq!(s.device_type, "phone");
        let a = alert(
            &anon,
            &Alert {
                alert_id: "a-1".into(),
                device_id: "dev-42".into(),
                dst_ip: vec![203, 0, 113, 7].into(),
                dst_domain: Some("c2.evil.example.co.uk".into()),
                incident_id: "inc-1".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            a.anon_device_id, s.anon_device_id,
            "one device, one pseudonym"
        );
        assert_eq!(a.dst_domain, "example.co.uk");
        assert_ne!(a.anon_dst_ip, "203.0.113.7");
        let local = alert(
            &anon,
            &Alert {
                dst_domain: Some("nas.local".into()),
                ..Default::default()
            },
        );
        assert_eq!(local.dst_domain, "");
    }
}
