//! A phone rejoins with a second randomized MAC: the capture goes through
//! the engine and the registry as the services run them (the registry
//! decides after every packet, so held-back devices are really held back),
//! and the phone is one device with both MACs, announced once.

use std::sync::Arc;

use heimdall_engine::{CaptureReader, Engine, EngineConfig};
use heimdall_fingerprint::oui::mac_of;
use heimdall_fingerprint::{Registry, RegistryConfig, Rules};
use heimdall_proto::sensor::v1::{DeviceEvent, DeviceEventKind, DeviceType};
use heimdall_tests::phones;

fn replay() -> (Registry, Vec<DeviceEvent>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("phones.pcap");
    phones::write_pcap(&path).expect("capture written");
    let mut engine = Engine::new(EngineConfig {
        observations: true,
        ..EngineConfig::default()
    });
    let mut reg = Registry::new(
        RegistryConfig {
            sensor_id: "home-1".into(),
            ..RegistryConfig::default()
        },
        Arc::new(Rules::builtin().expect("rules")),
    );
    let mut events = Vec::new();
    let mut reader = CaptureReader::open(&path).expect("open");
    let mut drain = |engine: &mut Engine, reg: &mut Registry, now: i64| {
        for o in &engine.out.observations {
            reg.observe(o);
        }
        for c in &engine.out.conns {
            reg.conn(&c.to_proto("home-1"));
        }
        for d in &engine.out.dns {
            reg.dns(&d.to_proto("home-1"));
        }
        engine.clear_output();
        events.extend(reg.flush(now));
    };
    while let Some(p) = reader.next_packet().expect("read") {
        let now = p.ts_ns / 1000;
        engine.packet(&p);
        drain(&mut engine, &mut reg, now);
    }
    engine.finish();
    drain(&mut engine, &mut reg, i64::MAX / 2);
    (reg, events)
}

#[test]
fn two_randomized_macs_are_one_device_and_one_new_event() {
    let (reg, events) = replay();
    let devices = reg.devices();
    let phone: Vec<_> = devices
        .iter()
        .filter(|d| {
            d.macs.iter().any(|m| {
                mac_of(&m.mac) == Some(phones::PHONE_MAC_1)
                    || mac_of(&m.mac) == Some(phones::PHONE_MAC_2)
            })
        })
        .collect();
    assert_eq!(phone.len(), 1, "one phone, not two: {devices:#?}");
    let phone = phone[0];
    let macs: Vec<_> = phone.macs.iter().filter_map(|m| mac_of(&m.mac)).collect();
    assert!(
        macs.contains(&phones::PHONE_MAC_1) && macs.contains(&phones::PHONE_MAC_2),
        "{macs:?}"
    );
    assert!(phone.macs.iter().all(|m| m.locally_administered));
    assert_eq!(phone.device_type, DeviceType::Phone as i32, "{phone:#?}");
    assert_eq!(
        phone.hostnames.first().map(String::as_str),
        Some(phones::PHONE_HOSTNAME)
    );
    assert_eq!(phone.ips.len(), 2, "both leases belong to the phone");

    let new: Vec<_> = events
        .iter()
        .filter(|e| e.kind == DeviceEventKind::New as i32)
        .collect();
    let new_phone: Vec<_> = new
        .iter()
        .filter(|e| {
            e.device
                .as_ref()
                .is_some_and(|d| d.device_id == phone.device_id)
        })
        .collect();
    assert_eq!(
        new_phone.len(),
        1,
        "the phone is announced once: {events:#?}"
    );
    // Nothing was ever announced for the second MAC on its own.
    for e in &new {
        let d = e.device.as_ref().expect("snapshot");
        assert!(
            !(d.macs.len() == 1 && mac_of(&d.macs[0].mac) == Some(phones::PHONE_MAC_2)),
            "a stranger was announced for the phone's new MAC: {e:#?}"
        );
    }
    // Phone, plug and router: three devices, three NEW events, ids unique.
    assert_eq!(devices.len(), 3, "{devices:#?}");
    assert_eq!(new.len(), 3);
    let mut ids: Vec<_> = events.iter().map(|e| e.event_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "event ids are unique");

    let plug = devices
        .iter()
        .find(|d| {
            d.macs
                .iter()
                .any(|m| mac_of(&m.mac) == Some(phones::PLUG_MAC))
        })
        .expect("the plug");
    assert_eq!(plug.device_type, DeviceType::SmartPlug as i32, "{plug:#?}");
    assert_eq!(plug.vendor, "TP-Link");
    assert!(
        plug.evidence.iter().any(|e| e.detail.contains("HS110(EU)")),
        "{plug:#?}"
    );
}

#[test]
fn a_replay_of_the_same_traffic_changes_nothing() {
    let (mut reg, _) = replay();
    let before = reg.devices();
    // The same observations again (a redelivered batch): no new device, no
    // event, the same decisions.
    let path = tempfile::tempdir().expect("tempdir");
    let file = path.path().join("phones.pcap");
    phones::write_pcap(&file).expect("capture");
    let mut engine = Engine::new(EngineConfig {
        observations: true,
        ..EngineConfig::default()
    });
    let mut reader = CaptureReader::open(&file).expect("open");
    while let Some(p) = reader.next_packet().expect("read") {
        engine.packet(&p);
        for o in &engine.out.observations {
            reg.observe(o);
        }
        engine.clear_output();
    }
    let events = reg.flush(i64::MAX / 2);
    assert!(events.is_empty(), "{events:#?}");
    let after = reg.devices();
    assert_eq!(before.len(), after.len());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (a.device_id.as_str(), a.device_type, &a.vendor),
            (b.device_id.as_str(), b.device_type, &b.vendor)
        );
    }
}
