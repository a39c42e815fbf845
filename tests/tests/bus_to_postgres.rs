//! 100,000 records through real JetStream into real PostgreSQL, with the
//! consumer process killed hard (SIGKILL) twice along the way: at the end
//! every record is in the table exactly once.

use std::path::Path;
use std::time::{Duration, Instant};

use heimdall_bus::{Bus, BusConfig, Kind};
use heimdall_proto::sensor::v1::{ConnBatch, ConnRecord};
use heimdall_store::testing::TestDb;
use heimdall_tests::process;

const RECORDS: usize = 100_000;
const PER_BATCH: usize = 500;

fn batch(n: usize) -> ConnBatch {
    let id = format!("batch-{n:05}");
    ConnBatch {
        records: (0..PER_BATCH)
            .map(|i| {
                let k = n * PER_BATCH + i;
                ConnRecord {
                    uid: format!("C{k:07}"),
                    ts_us: 1_700_000_000_000_000 + k as i64,
                    sensor_id: "pi-1".into(),
                    orig_bytes: Some(k as u64),
                    resp_bytes: Some(2 * k as u64),
                    ..Default::default()
                }
            })
            .collect(),
        batch_id: id,
        sensor_id: "pi-1".into(),
        created_us: 1_700_000_000_000_000,
    }
}

async fn count(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sink.conn_records")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_lands_exactly_once_through_consumer_crashes() {
    let db = TestDb::new()
        .await
        .expect("PostgreSQL must be running (make setup)");
    let namespace = format!("e2e{}", uuid::Uuid::new_v4().simple());
    let log = std::env::temp_dir().join(format!("{namespace}-sink.log"));
    let sink = process::ServiceProcess::new(
        Path::new(env!("CARGO_BIN_EXE_heimdall-sink")),
        &namespace,
        &log,
    )
    .expect("port")
    .with("HEIMDALL_NATS_MAX_ACK_PENDING", "16")
    .with("HEIMDALL_DATABASE_URL", db.url());

    let bus_config = BusConfig {
        namespace: namespace.clone(),
        ..heimdall_bus::testing::config("")
    };
    let bus = Bus::connect(&bus_config, "e2e-publisher")
        .await
        .expect("NATS must be running (make setup)");
    bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
    let mut child = sink.start().await;
    let pool = heimdall_store::connect(db.config(), "sink")
        .await
        .expect("pool");

    // Publish everything from a task of its own while the test kills and
    // restarts the consumer. A few batches are published twice with the
    // same id, as a capture service retrying after a lost PubAck would.
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let subject = bus.subjects().publish(Kind::Flows, "pi-1", 0);
            let mut duplicates = 0;
            for n in 0..RECORDS / PER_BATCH {
                let b = batch(n);
                // Retry like a real publisher would: the id makes it safe.
                let mut tries = 0;
                while let Err(e) = bus.publish(&subject, &b.batch_id, &b).await {
                    tries += 1;
                    assert!(tries < 5, "publish kept failing: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                if n % 40 == 7 {
                    let again = bus
                        .publish(&subject, &b.batch_id, &b)
                        .await
                        .expect("republish");
                    assert!(again.duplicate, "the bus de-duplicates a republished batch");
                    duplicates += 1;
                }
                // Spread publishing over a few seconds so kills land mid-stream.
                if n % 10 == 9 {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            }
            duplicates
        })
    };

    for threshold in [RECORDS as i64 * 3 / 10, RECORDS as i64 * 6 / 10] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while count(&pool).await < threshold {
            assert!(
                Instant::now() < deadline,
                "sink stalled before {threshold} records"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.start_kill().expect("SIGKILL");
        let status = child.wait().await.expect("reaped");
        assert!(
            !status.success(),
            "the sink was killed, not stopped: {status}"
        );
        eprintln!("killed the sink at {} records", count(&pool).await);
        child = sink.start().await;
    }
    let duplicates = publisher.await.expect("publisher finished");

    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pool).await < RECORDS as i64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {RECORDS} records arrived\n{}",
            count(&pool).await,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let any late redelivery land before judging "exactly once".
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (rows, distinct, first, last, bytes): (i64, i64, String, String, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT uid), min(uid), max(uid), sum(orig_bytes)::bigint FROM sink.conn_records",
    )
    .fetch_one(&pool)
    .await
    .expect("summary");
    assert_eq!(rows, RECORDS as i64, "every record exactly once");
    assert_eq!(distinct, RECORDS as i64);
    assert_eq!((first.as_str(), last.as_str()), ("C0000000", "C0099999"));
    let expected_bytes: i64 = (0..RECORDS as i64).sum();
    assert_eq!(bytes, expected_bytes, "every record's content intact");

    let (deliveries, batches, redelivered): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT batch_id), count(*) FILTER (WHERE delivered > 1) FROM sink.deliveries",
    )
    .fetch_one(&pool)
    .await
    .expect("deliveries");
    assert_eq!(batches, (RECORDS / PER_BATCH) as i64, "every batch handled");
    eprintln!(
        "{RECORDS} records in {batches} batches: {deliveries} deliveries handled, {redelivered} redelivered after a crash, \
         {duplicates} duplicate publishes dropped by the bus"
    );

    child.start_kill().expect("stop");
    let _ = child.wait().await;
    bus.delete_streams(&[Kind::Flows]).await.expect("clean up");
    let _ = std::fs::remove_file(&log);
}
