//! Records from the bus into what Asgard may see. Only these functions
//! build outgoing items, and they take nothing identifying in clear:
//! device ids, alert and incident ids become keyed pseudonyms, addresses
//! are anonymized prefix-preserving, names are reduced to registered
//! domains (local names dropped), and host names, labels, MACs and
//! evidence texts are never copied.

use heimdall_anonymize::{Anonymizer, registered_domain};
use heimdall_asgard_api::{
    AnonymizedAlert, BehaviourSignature, FeatureSummary, device_type_name, severity_name,
    transport_name,
};
use heimdall_proto::sensor::v1::{Alert, DeviceEvent, DeviceEventKind};

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
