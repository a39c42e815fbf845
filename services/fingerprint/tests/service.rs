//! The fingerprint service as a process, over the real NATS and PostgreSQL:
//! observations, connections and DNS in; device rows and device events out.
//! It is killed with SIGKILL and started again, and the same batches are
//! delivered again: no device is lost, none is made twice, no event is
//! announced twice.

use std::path::Path;
use std::time::{Duration, Instant};

use heimdall_bus::{Bus, Kind, Received};
use heimdall_engine::{CaptureReader, Engine, EngineConfig};
use heimdall_proto::sensor::v1::{
    ConnBatch, DeviceEventBatch, DeviceEventKind, DnsBatch, Observation, ObservationBatch,
};
use heimdall_store::testing::TestDb;
use heimdall_tests::{phones, process};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SENSOR: &str = "home-1";

/// The scenario's records as the capture service would publish them.
fn records() -> (Vec<Observation>, ConnBatch, DnsBatch) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("phones.pcap");
    phones::write_pcap(&path).expect("capture");
    let mut engine = Engine::new(EngineConfig {
        observations: true,
        ..EngineConfig::default()
    });
    let mut reader = CaptureReader::open(&path).expect("open");
    let (mut obs, mut conns, mut dns) = (Vec::new(), Vec::new(), Vec::new());
    let mut take = |e: &mut Engine| {
        obs.extend(e.out.observations.drain(..).map(|mut o| {
            o.sensor_id = SENSOR.into();
            o
        }));
        conns.extend(e.out.conns.iter().map(|c| c.to_proto(SENSOR)));
        dns.extend(e.out.dns.iter().map(|d| d.to_proto(SENSOR)));
        e.clear_output();
    };
    while let Some(p) = reader.next_packet().expect("read") {
        engine.packet(&p);
        take(&mut engine);
    }
    engine.finish();
    take(&mut engine);
    (
        obs,
        ConnBatch {
            batch_id: "conns-1".into(),
            sensor_id: SENSOR.into(),
            created_us: 0,
            records: conns,
        },
        DnsBatch {
            batch_id: "dns-1".into(),
            sensor_id: SENSOR.into(),
            created_us: 0,
            records: dns,
        },
    )
}

fn obs_batch(id: &str, records: &[Observation]) -> ObservationBatch {
    ObservationBatch {
        batch_id: id.into(),
        sensor_id: SENSOR.into(),
        created_us: 0,
        records: records.to_vec(),
    }
}

async fn wait_for(pool: &sqlx::PgPool, sql: &str, want: i64, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or(-1);
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {n}, want {want}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `devices` device rows, one NEW event each, every event published.
async fn settled(pool: &sqlx::PgPool, devices: i64, log: &std::path::Path) {
    wait_for(pool, "SELECT count(*) FROM devices", devices, log).await;
    let new = "SELECT count(*) FROM device_events WHERE kind = 'new'";
    wait_for(pool, new, devices, log).await;
    let unpublished = "SELECT count(*) FROM device_events WHERE NOT published";
    wait_for(pool, unpublished, 0, log).await;
}

/// A fresh database and NATS namespace, and the service process set up
/// for them (not started), logging to the returned path.
async fn rig(
    name: &str,
) -> (
    TestDb,
    heimdall_bus::BusConfig,
    std::path::PathBuf,
    process::ServiceProcess,
) {
    let db = TestDb::new()
        .await
        .expect("PostgreSQL must be running (make setup)");
    let bus_config = heimdall_bus::testing::config(name);
    let log = std::env::temp_dir().join(format!("{}-fingerprint.log", bus_config.namespace));
    let svc = process::ServiceProcess::new(
        Path::new(env!("CARGO_BIN_EXE_heimdall-fingerprint")),
        &bus_config.namespace,
        &log,
    )
    .expect("port")
    .with("HEIMDALL_DATABASE_URL", db.url())
    .with("HEIMDALL_FINGERPRINT_GRACE", "1s")
    .with("HEIMDALL_FINGERPRINT_FLUSH_INTERVAL", "500ms");
    (db, bus_config, log, svc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_events_survive_a_crash_without_loss_or_duplicates() {
    let (db, bus_config, log, svc) = rig("fp").await;
    let svc = svc.with("HEIMDALL_FINGERPRINT_SENSORS", SENSOR);
    let bus = Bus::connect(&bus_config, "fp-test")
        .await
        .expect("NATS must be running (make setup)");
    bus.ensure_streams(&[Kind::Observations, Kind::Flows, Kind::Dns, Kind::Devices])
        .await
        .expect("streams");

    // Everything published on the devices subject, as a consumer sees it.
    let (tx, mut events_rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let watcher = {
        let (bus, stop) = (bus.clone(), stop.clone());
        let spec = bus.consumer_spec(Kind::Devices, "test-watcher", None);
        tokio::spawn(async move {
            bus.consume::<DeviceEventBatch, _, _, String>(
                spec,
                stop,
                |m: Received<DeviceEventBatch>| {
                    let tx = tx.clone();
                    async move {
                        for e in m.message.records {
                            let _ = tx.send(e);
                        }
                        Ok(())
                    }
                },
            )
            .await
        })
    };

    let mut child = svc.start().await;
    let pool = heimdall_store::connect(db.config(), "fingerprint")
        .await
        .expect("pool");
    let (obs, conns, dns) = records();
    let half = obs.len() / 2;
    let obs_subject = bus.subjects().publish(Kind::Observations, SENSOR, 0);
    bus.publish(&obs_subject, "obs-1", &obs_batch("obs-1", &obs[..half]))
        .await
        .expect("publish");
    bus.publish(&obs_subject, "obs-2", &obs_batch("obs-2", &obs[half..]))
        .await
        .expect("publish");
    bus.publish(&bus.subjects().publish(Kind::Dns, SENSOR, 0), "dns-1", &dns)
        .await
        .expect("publish");
    bus.publish(
        &bus.subjects().publish(Kind::Flows, SENSOR, 0),
        "conns-1",
        &conns,
    )
    .await
    .expect("publish");

    // Phone, plug, router: three devices, three NEW events, all published.
    settled(&pool, 3, &log).await;
    let phone_macs: Vec<String> =
        sqlx::query_scalar("SELECT unnest(macs) FROM devices WHERE $1 = ANY(macs) ORDER BY 1")
            .bind("da:a1:19:4e:21:07")
            .fetch_all(&pool)
            .await
            .expect("phone");
    assert_eq!(
        phone_macs,
        vec!["3e:52:8c:90:11:a4", "da:a1:19:4e:21:07"],
        "one phone with both MACs"
    );
    let (vendor, kind): (String, String) =
        sqlx::query_as("SELECT vendor, device_type FROM devices WHERE 'hs110(eu)' = ANY(SELECT lower(jsonb_array_elements_text(state->'hostnames')))")
            .fetch_one(&pool)
            .await
            .expect("the plug");
    assert_eq!((vendor.as_str(), kind.as_str()), ("TP-Link", "smart_plug"));

    // Killed hard; the same batches come again under new ids (as after a
    // lost acknowledgement), with one new device; then it starts again.
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    for (i, b) in [&obs[..half], &obs[half..]].iter().enumerate() {
        let id = format!("obs-again-{i}");
        bus.publish(&obs_subject, &id, &obs_batch(&id, b))
            .await
            .expect("publish");
    }
    let mut stranger = obs
        .iter()
        .find(|o| {
            matches!(
                o.kind,
                Some(heimdall_proto::sensor::v1::observation::Kind::Arp(_))
            )
        })
        .cloned()
        .expect("an ARP observation");
    let speaker = vec![0x34, 0x7e, 0x5c, 0x01, 0x02, 0x03]; // a Sonos OUI
    stranger.src_mac = speaker.clone().into();
    if let Some(heimdall_proto::sensor::v1::observation::Kind::Arp(a)) = stranger.kind.as_mut() {
        a.sender_mac = speaker.into();
        a.sender_ip = vec![192, 168, 1, 77].into();
        a.target_ip = vec![192, 168, 1, 77].into();
    }
    bus.publish(&obs_subject, "obs-3", &obs_batch("obs-3", &[stranger]))
        .await
        .expect("publish");
    let mut child = svc.start().await;

    settled(&pool, 4, &log).await;
    // Let any late redelivery land before judging.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mac_rows, distinct_macs): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT m) FROM devices, unnest(macs) m")
            .fetch_one(&pool)
            .await
            .expect("devices");
    assert_eq!(distinct_macs, 5, "phone (2 MACs), plug, router, speaker");
    assert_eq!(mac_rows, 5, "each MAC in one device row only");
    let new_devices: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT device_id) FROM device_events WHERE kind = 'new'",
    )
    .fetch_one(&pool)
    .await
    .expect("events");
    assert_eq!(new_devices, 4, "one NEW event per device, never two");

    // What went out on NATS: every stored event, once.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 4 && Instant::now() < deadline {
        if let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(200), events_rx.recv()).await
        {
            seen.push(e);
        }
    }
    while let Ok(e) = events_rx.try_recv() {
        seen.push(e);
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM device_events")
        .fetch_one(&pool)
        .await
        .expect("n");
    let new_on_bus = seen
        .iter()
        .filter(|e| e.kind == DeviceEventKind::New as i32)
        .count();
    assert_eq!(new_on_bus, 4, "{seen:#?}");
    let mut ids: Vec<_> = seen.iter().map(|e| e.event_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len() as i64,
        stored,
        "every stored event on the bus, once"
    );

    child.start_kill().expect("stop");
    stop.cancel();
    let _ = watcher.await;
    let _ = bus.delete_streams(&Kind::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_golden_profile_from_intel_names_a_device_that_uses_its_makers_cloud() {
    use heimdall_proto::sensor::v1::{
        ArpObservation, DestinationExpectation, DeviceType, DnsRecord, GoldenProfile, IntelUpdate,
        observation,
    };
    let (db, bus_config, log, svc) = rig("fphint").await;
    let bus = Bus::connect(&bus_config, "fphint-test")
        .await
        .expect("NATS must be running (make setup)");
    bus.ensure_streams(&[Kind::Observations, Kind::Dns, Kind::Intel])
        .await
        .expect("streams");
    let mut child = svc.start().await;
    let pool = heimdall_store::connect(db.config(), "fingerprint")
        .await
        .expect("pool");

    // Asgard's profile of the Acme camera: 95% of them use acmecam-cloud.com.
    let intel = IntelUpdate {
        cursor: "c1".into(),
        etag: "e1".into(),
        golden_profiles: vec![GoldenProfile {
            profile_id: "gp-acme-cam".into(),
            device_type: DeviceType::Camera as i32,
            vendor: "Acme".into(),
            version: 1,
            typical_destinations: vec![DestinationExpectation {
                registered_domain: "acmecam-cloud.com".into(),
                share: 0.95,
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    bus.publish(
        &bus.subjects().publish(Kind::Intel, "", 0),
        "intel-1",
        &intel,
    )
    .await
    .expect("intel");
    wait_for(&pool, "SELECT count(*) FROM intel_profiles", 1, &log).await;

    // A camera with a randomized MAC (no maker in it) asks for its cloud.
    let (mac, ip) = ([0x02u8, 0x11, 0x22, 1, 2, 3], [192u8, 168, 1, 30]);
    let arp = Observation {
        ts_us: 1_760_000_000_000_000,
        sensor_id: SENSOR.into(),
        src_mac: mac.to_vec().into(),
        kind: Some(observation::Kind::Arp(ArpObservation {
            op: 1,
            sender_mac: mac.to_vec().into(),
            sender_ip: ip.to_vec().into(),
            target_ip: vec![192, 168, 1, 1].into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    bus.publish(
        &bus.subjects().publish(Kind::Observations, SENSOR, 0),
        "arp-1",
        &obs_batch("arp-1", &[arp]),
    )
    .await
    .expect("arp");
    let dns = DnsBatch {
        batch_id: "dns-hint".into(),
        sensor_id: SENSOR.into(),
        created_us: 0,
        records: vec![DnsRecord {
            ts_us: 1_760_000_001_000_000,
            uid: "Dcam".into(),
            id_orig_h: ip.to_vec().into(),
            id_resp_h: vec![192, 168, 1, 1].into(),
            id_resp_p: 53,
            query: Some("eu.acmecam-cloud.com".into()),
            sensor_id: SENSOR.into(),
            ..Default::default()
        }],
    };
    bus.publish(
        &bus.subjects().publish(Kind::Dns, SENSOR, 0),
        "dns-hint",
        &dns,
    )
    .await
    .expect("dns");
    wait_for(
        &pool,
        "SELECT count(*) FROM devices WHERE vendor = 'Acme' AND device_type = 'camera'",
        1,
        &log,
    )
    .await;
    let evidence: String = sqlx::query_scalar("SELECT state::text FROM devices LIMIT 1")
        .fetch_one(&pool)
        .await
        .expect("device");
    assert!(evidence.contains("gp-acme-cam"), "{evidence}");

    // Restarted, it has the hint again before it takes a message.
    process::terminate(&child);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let child = svc.start().await;
    let hints = process::metric(svc.addr, "heimdall_fingerprint_intel_hints")
        .await
        .unwrap_or(-1.0);
    assert_eq!(
        hints,
        1.0,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    process::terminate(&child);
    let _ = bus.delete_streams(&Kind::ALL).await;
}
