//! The bus contract, run against both backends: the in-memory twin and the
//! real NATS server (`HEIMDALL_TEST_NATS_URL`, default 127.0.0.1:4222).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heimdall_proto::sensor::v1::{ConnBatch, ConnRecord};
use tokio_util::sync::CancellationToken;

use super::*;

fn test_config() -> BusConfig {
    BusConfig {
        // Retries under test are driven by naks; keep them quick.
        retry_delay: Duration::from_millis(50),
        ..testing::config("t")
    }
}

async fn backends() -> Vec<(&'static str, Bus)> {
    backends_with(test_config()).await
}

async fn backends_with(config: BusConfig) -> Vec<(&'static str, Bus)> {
    let nats = Bus::connect(&config, "heimdall-bus-test")
        .await
        .expect("NATS must be running for the bus tests (make setup starts it)");
    vec![("memory", Bus::memory(&config)), ("nats", nats)]
}

fn batch(id: &str, n: usize) -> ConnBatch {
    ConnBatch {
        batch_id: id.into(),
        sensor_id: "s1".into(),
        records: (0..n)
            .map(|i| ConnRecord {
                uid: format!("{id}-{i}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Consume until `until` says stop or 10 s pass; returns the handled batch ids.
async fn drain<F>(bus: &Bus, durable: &str, mut fail: F, until: usize) -> Vec<(String, u64)>
where
    F: FnMut(&Received<ConnBatch>) -> bool + Send,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let spec = bus.consumer_spec(Kind::Flows, durable, None);
    let seen2 = seen.clone();
    let stop2 = stop.clone();
    let run = bus.consume::<ConnBatch, _, _, String>(spec, stop.clone(), move |m| {
        let verdict = if fail(&m) {
            Err("injected failure".to_string())
        } else {
            let mut s = seen2.lock().expect("lock");
            s.push((m.message.batch_id.clone(), m.delivered));
            if s.len() >= until {
                stop2.cancel();
            }
            Ok(())
        };
        async move { verdict }
    });
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("consumer finished in time")
        .expect("consumer ran");
    seen.lock().expect("lock").clone()
}

#[tokio::test]
async fn published_batches_arrive_once_and_in_order() {
    for (name, bus) in backends().await {
        bus.ensure_streams(&[Kind::Flows, Kind::Dns])
            .await
            .expect("streams");
        let subject = bus.subjects().publish(Kind::Flows, "s1", 0);
        for i in 0..5 {
            let ack = bus
                .publish(&subject, &format!("b{i}"), &batch(&format!("b{i}"), 3))
                .await
                .expect("publish");
            assert!(!ack.duplicate, "{name}");
        }
        let got = drain(&bus, "reader", |_| false, 5).await;
        let ids: Vec<_> = got.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["b0", "b1", "b2", "b3", "b4"], "{name}");
        assert!(got.iter().all(|(_, d)| *d == 1), "{name}: {got:?}");
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}

#[tokio::test]
async fn a_republished_message_id_is_stored_once() {
    for (name, bus) in backends().await {
        bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
        let subject = bus.subjects().publish(Kind::Flows, "s1", 0);
        let first = bus
            .publish(&subject, "same", &batch("same", 1))
            .await
            .expect("publish");
        let again = bus
            .publish(&subject, "same", &batch("same", 1))
            .await
            .expect("publish");
        assert!(!first.duplicate && again.duplicate, "{name}");
        assert_eq!(first.sequence, again.sequence, "{name}");
        assert_eq!(bus.stream_len(Kind::Flows).await.expect("len"), 1, "{name}");
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}

#[tokio::test]
async fn a_failed_handler_gets_the_message_again_and_nothing_is_skipped() {
    for (name, bus) in backends().await {
        bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
        let subject = bus.subjects().publish(Kind::Flows, "s1", 0);
        for i in 0..3 {
            bus.publish(&subject, &format!("m{i}"), &batch(&format!("m{i}"), 1))
                .await
                .expect("publish");
        }
        let failures = AtomicU32::new(0);
        // m1 fails twice, then succeeds.
        let got = drain(
            &bus,
            "flaky",
            |m| m.message.batch_id == "m1" && failures.fetch_add(1, Ordering::SeqCst) < 2,
            3,
        )
        .await;
        let mut ids: Vec<_> = got.iter().map(|(id, _)| id.clone()).collect();
        ids.sort();
        assert_eq!(ids, ["m0", "m1", "m2"], "{name}");
        let m1 = got.iter().find(|(id, _)| id == "m1").expect("m1 handled");
        assert_eq!(m1.1, 3, "{name}: m1 handled on its third delivery");
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}

#[tokio::test]
async fn an_in_order_consumer_tries_a_failed_message_again_before_later_ones() {
    for (name, bus) in backends().await {
        bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
        let subject = bus.subjects().publish(Kind::Flows, "s1", 0);
        for i in 0..3 {
            bus.publish(&subject, &format!("o{i}"), &batch(&format!("o{i}"), 1))
                .await
                .expect("publish");
        }
        let spec = ConsumerSpec {
            in_order: true,
            ..bus.consumer_spec(Kind::Flows, "ordered", None)
        };
        // Every attempt, in the order made; o1 fails twice.
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (seen, stop2) = (attempts.clone(), stop.clone());
        let run = bus.consume::<ConnBatch, _, _, String>(spec, stop.clone(), move |m| {
            let mut seen = seen.lock().expect("lock");
            let id = m.message.batch_id.clone();
            let fails = id == "o1" && seen.iter().filter(|(i, _)| *i == id).count() < 2;
            seen.push((id.clone(), m.delivered));
            if id == "o2" {
                stop2.cancel();
            }
            async move {
                if fails {
                    Err("injected failure".into())
                } else {
                    Ok(())
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("in time")
            .expect("ran");
        let got = attempts.lock().expect("lock").clone();
        let want: Vec<(String, u64)> = [("o0", 1), ("o1", 1), ("o1", 2), ("o1", 3), ("o2", 1)]
            .into_iter()
            .map(|(i, d)| (i.to_string(), d))
            .collect();
        assert_eq!(got, want, "{name}");
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}

#[tokio::test]
async fn a_consumer_resumes_where_it_left_off() {
    // JetStream prefetches: what the first run pulled but did not handle
    // comes back after the ack wait, so keep it short here.
    let config = BusConfig {
        ack_wait: Duration::from_secs(2),
        ..test_config()
    };
    for (name, bus) in backends_with(config).await {
        bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
        let subject = bus.subjects().publish(Kind::Flows, "s1", 0);
        for i in 0..4 {
            bus.publish(&subject, &format!("r{i}"), &batch(&format!("r{i}"), 1))
                .await
                .expect("publish");
        }
        let first = drain(&bus, "resumer", |_| false, 2).await;
        let second = drain(&bus, "resumer", |_| false, 2).await;
        let ids: Vec<_> = first
            .iter()
            .chain(&second)
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(ids, ["r0", "r1", "r2", "r3"], "{name}");
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}

#[tokio::test]
async fn a_rewound_consumer_delivers_again_from_the_stored_sequence() {
    for (name, bus) in backends().await {
        bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
        let subject = bus.subjects().publish(Kind::Flows, "s1", 0);
        let mut sequences = Vec::new();
        for i in 0..6 {
            let ack = bus
                .publish(&subject, &format!("w{i}"), &batch(&format!("w{i}"), 1))
                .await
                .expect("publish");
            sequences.push(ack.sequence);
        }
        let ids = |got: Vec<(String, u64)>| got.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        assert_eq!(
            drain(&bus, "rewinder", |_| false, 6).await.len(),
            6,
            "{name}"
        );
        // A service whose state holds w0..w2 asks for what followed.
        let spec = bus.consumer_spec(Kind::Flows, "rewinder", None);
        let from = bus.rewind(&spec, sequences[2]).await.expect("rewind");
        assert_eq!(from, sequences[3], "{name}");
        assert_eq!(
            ids(drain(&bus, "rewinder", |_| false, 3).await),
            ["w3", "w4", "w5"],
            "{name}"
        );
        // The sequence a handler sees is the one the publisher was given.
        bus.rewind(&spec, sequences[4]).await.expect("rewind");
        let mut seen = Vec::new();
        drain(
            &bus,
            "rewinder",
            |m| {
                seen.push(m.sequence);
                false
            },
            1,
        )
        .await;
        assert_eq!(seen, [sequences[5]], "{name}");
        // A position from a stream that was since deleted and made again
        // (it is younger than the position): everything it holds.
        let from = bus.rewind(&spec, sequences[5] + 100).await.expect("rewind");
        assert_eq!(from, sequences[0], "{name}");
        assert_eq!(
            drain(&bus, "rewinder", |_| false, 6).await.len(),
            6,
            "{name}"
        );
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}

#[tokio::test]
async fn a_message_of_the_wrong_type_is_terminated_not_retried() {
    for (name, bus) in backends().await {
        bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
        let subject = bus.subjects().publish(Kind::Flows, "s1", 0);
        // Field 4 (records) as a varint where ConnBatch expects a message.
        let mut bytes = Vec::new();
        prost::encoding::encode_key(4, prost::encoding::WireType::Varint, &mut bytes);
        prost::encoding::encode_varint(7, &mut bytes);
        let out = Outgoing {
            subject: subject.clone(),
            msg_id: "poison".into(),
            headers: Headers::new(),
            payload: bytes.into(),
        };
        bus.transport.publish(out).await.expect("raw publish");
        bus.publish(&subject, "good", &batch("good", 1))
            .await
            .expect("publish");
        let got = drain(&bus, "strict", |_| false, 1).await;
        assert_eq!(got, [("good".to_string(), 1)], "{name}");
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}

#[tokio::test]
async fn retention_drops_the_oldest_beyond_the_byte_bound() {
    let config = BusConfig {
        max_bytes_scale: 0.0,
        ..test_config()
    };
    let bus = Bus::memory(&config);
    let mut spec = bus.stream_spec(Kind::Flows);
    spec.max_bytes = 2_000;
    bus.transport.ensure_stream(spec).await.expect("stream");
    let subject = bus.subjects().publish(Kind::Flows, "s1", 0);
    for i in 0..20 {
        bus.publish(&subject, &format!("big{i}"), &batch(&format!("big{i}"), 20))
            .await
            .expect("publish");
    }
    let kept = bus.stream_len(Kind::Flows).await.expect("len");
    assert!((1..20).contains(&kept), "kept {kept}");
    let got = drain(&bus, "late", |_| false, kept as usize).await;
    assert_eq!(got.last().map(|(id, _)| id.as_str()), Some("big19"));
}

#[test]
fn bad_settings_are_all_reported() {
    let mut loader = heimdall_config::Loader::from_parts(
        [
            ("HEIMDALL_NATS_URL", "127.0.0.1:4222"),
            ("HEIMDALL_NATS_REPLICAS", "9"),
            ("HEIMDALL_NATS_USER", "me"),
        ],
        None,
    )
    .expect("loader");
    let _: BusConfig = loader.section(PREFIX);
    let err = loader.finish().expect_err("three problems");
    let vars: Vec<_> = err.problems().iter().map(|p| p.variable.as_str()).collect();
    assert_eq!(
        vars,
        [
            "HEIMDALL_NATS_PASSWORD",
            "HEIMDALL_NATS_REPLICAS",
            "HEIMDALL_NATS_URL"
        ],
        "{err}"
    );
}

#[tokio::test]
async fn an_oversized_batch_is_refused_with_a_clear_error() {
    let bus = Bus::memory(&test_config());
    bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
    let big = ConnBatch {
        batch_id: "big".into(),
        records: vec![ConnRecord {
            history: Some("x".repeat(MAX_MESSAGE_BYTES)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = bus
        .publish(&bus.subjects().publish(Kind::Flows, "s1", 0), "big", &big)
        .await
        .expect_err("too big");
    assert!(err.to_string().contains("over the bus limit"), "{err}");
}

#[tokio::test]
async fn a_consumer_waiting_on_an_empty_stream_gets_what_comes_later() {
    for (name, bus) in backends().await {
        bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
        let waiting = {
            let bus = bus.clone();
            tokio::spawn(async move { drain(&bus, "early", |_| false, 2).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let subject = bus.subjects().publish(Kind::Flows, "s1", 0);
        for id in ["late0", "late1"] {
            bus.publish(&subject, id, &batch(id, 1))
                .await
                .expect("publish");
        }
        let got = waiting.await.expect("join");
        let ids: Vec<_> = got.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["late0", "late1"], "{name}");
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}

#[tokio::test]
async fn partition_consumers_split_the_work_without_overlap() {
    for (name, bus) in backends().await {
        bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
        for i in 0..12u16 {
            let subject = bus.subjects().publish(Kind::Flows, "s1", i % 3);
            let id = format!("p{}-{i}", i % 3);
            bus.publish(&subject, &id, &batch(&id, 1))
                .await
                .expect("publish");
        }
        for p in 0..3u16 {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let stop = CancellationToken::new();
            let spec = bus.consumer_spec(Kind::Flows, "anomaly", Some(p));
            assert_eq!(spec.durable, format!("anomaly-p{p}"));
            let (seen2, stop2) = (seen.clone(), stop.clone());
            let run = bus.consume::<ConnBatch, _, _, String>(spec, stop.clone(), move |m| {
                let mut s = seen2.lock().expect("lock");
                s.push(m.message.batch_id.clone());
                if s.len() == 4 {
                    stop2.cancel();
                }
                async { Ok(()) }
            });
            tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .expect("in time")
                .expect("ran");
            let got = seen.lock().expect("lock").clone();
            assert!(
                got.iter().all(|id| id.starts_with(&format!("p{p}-"))),
                "{name}: {got:?}"
            );
        }
        // The same durable name with another filter is refused, not silently reused.
        let mut clash = bus.consumer_spec(Kind::Flows, "anomaly", Some(1));
        clash.durable = "anomaly-p0".into();
        let err = bus
            .consume::<ConnBatch, _, _, String>(clash, CancellationToken::new(), |_| async {
                Ok(())
            })
            .await
            .expect_err("filter clash");
        assert!(err.to_string().contains("filters"), "{name}: {err}");
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}

#[tokio::test]
async fn a_message_of_another_type_on_the_subject_is_terminated() {
    for (name, bus) in backends().await {
        bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
        let subject = bus.subjects().publish(Kind::Flows, "s1", 0);
        let dns = heimdall_proto::sensor::v1::DnsBatch {
            batch_id: "not-conn".into(),
            ..Default::default()
        };
        bus.publish(&subject, "not-conn", &dns)
            .await
            .expect("publish");
        bus.publish(&subject, "conn", &batch("conn", 1))
            .await
            .expect("publish");
        let got = drain(&bus, "typed", |_| false, 1).await;
        assert_eq!(got, [("conn".to_string(), 1)], "{name}");
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}

#[test]
fn durations_past_their_bounds_are_problems_not_panics() {
    let mut loader = heimdall_config::Loader::from_parts(
        [
            ("HEIMDALL_NATS_RETRY_DELAY", "99999999999999d"),
            ("HEIMDALL_NATS_DUPLICATE_WINDOW", "0"),
        ],
        None,
    )
    .expect("loader");
    let _: BusConfig = loader.section(PREFIX);
    let err = loader.finish().expect_err("bad");
    let vars: Vec<_> = err.problems().iter().map(|p| p.variable.as_str()).collect();
    assert_eq!(
        vars,
        [
            "HEIMDALL_NATS_DUPLICATE_WINDOW",
            "HEIMDALL_NATS_RETRY_DELAY"
        ],
        "{err}"
    );
}

#[tokio::test]
async fn a_consumer_whose_stream_vanished_binds_again_and_says_so_on_readyz() {
    for (name, bus) in backends().await {
        let health = heimdall_telemetry::Health::new();
        let bus = bus.with_health(health.clone());
        bus.ensure_streams(&[Kind::Flows]).await.expect("streams");
        let subject = bus.subjects().publish(Kind::Flows, "s1", 0);
        bus.publish(&subject, "before", &batch("before", 1))
            .await
            .expect("publish");
        let consumer = {
            let bus = bus.clone();
            tokio::spawn(async move { drain(&bus, "survivor", |_| false, 2).await })
        };
        let component = "consumer survivor".to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while health.readiness().1.get(&component).map(|r| r.ready) != Some(true) {
            assert!(std::time::Instant::now() < deadline, "{name}: never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The stream disappears under the consumer (a server restart losing
        // a memory stream, or an operator's mistake).
        tokio::time::sleep(Duration::from_millis(200)).await;
        bus.delete_streams(&[Kind::Flows]).await.expect("delete");
        // The consumer recreates the stream and binds again; what is
        // published now reaches it.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if bus.stream_len(Kind::Flows).await.is_ok()
                && health
                    .readiness()
                    .1
                    .get(&component)
                    .is_some_and(|r| r.detail.starts_with("bound again"))
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: never bound again: {:?}",
                health.readiness()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bus.publish(&subject, "after", &batch("after", 1))
            .await
            .expect("publish");
        let got = tokio::time::timeout(Duration::from_secs(15), consumer)
            .await
            .expect("in time")
            .expect("join");
        let ids: Vec<_> = got.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["before", "after"], "{name}");
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}

/// Read `kind` under `spec` until `n` messages arrived; their batch ids.
async fn read_latest(bus: &Bus, spec: ConsumerSpec, n: usize) -> Vec<String> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let (seen2, stop2) = (seen.clone(), stop.clone());
    let run = bus.consume::<ConnBatch, _, _, String>(spec, stop.clone(), move |m| {
        let mut s = seen2.lock().expect("lock");
        s.push(m.message.batch_id.clone());
        if s.len() >= n {
            stop2.cancel();
        }
        async { Ok(()) }
    });
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("consumer finished in time")
        .expect("consumer ran");
    let mut got = seen.lock().expect("lock").clone();
    got.sort();
    got
}

#[tokio::test]
async fn control_keeps_the_latest_message_per_subject_and_every_bind_reads_it_again() {
    for (name, bus) in backends().await {
        bus.ensure_streams(&[Kind::Control]).await.expect("streams");
        let (a, b) = (
            bus.subjects().publish(Kind::Control, "sa", 0),
            bus.subjects().publish(Kind::Control, "sb", 0),
        );
        for (subject, id) in [(&a, "a1"), (&b, "b1"), (&a, "a2"), (&a, "a3")] {
            bus.publish(subject, id, &batch(id, 1))
                .await
                .expect("publish");
        }
        assert_eq!(
            bus.stream_len(Kind::Control).await.expect("len"),
            2,
            "{name}"
        );
        let mut spec = bus.consumer_spec(Kind::Control, "steer", None);
        spec.latest = true;
        assert_eq!(
            read_latest(&bus, spec.clone(), 2).await,
            ["a3", "b1"],
            "{name}"
        );
        // A restarted reader (same durable name) gets the state again, and
        // then what changes after it.
        bus.publish(&b, "b2", &batch("b2", 1))
            .await
            .expect("publish");
        assert_eq!(read_latest(&bus, spec, 2).await, ["a3", "b2"], "{name}");
        bus.delete_streams(&Kind::ALL).await.expect("clean up");
    }
}
