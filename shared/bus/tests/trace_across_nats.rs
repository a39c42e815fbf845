//! One trace crosses a NATS hop: the consumer's span is a child of the
//! publisher's span, linked only through the message headers on the real
//! NATS server.

use std::time::Duration;

use heimdall_bus::{Bus, Kind};
use heimdall_proto::sensor::v1::DnsBatch;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test]
async fn the_consumer_span_is_a_child_of_the_publisher_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(
            opentelemetry::trace::TracerProvider::tracer(&provider, "test"),
        ));
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");

    let config = heimdall_bus::testing::config("trace");
    // Two connections, as two services would have: nothing in-process links
    // the two sides.
    let publisher = Bus::connect(&config, "trace-publisher")
        .await
        .expect("NATS must be running (make setup)");
    let consumer = Bus::connect(&config, "trace-consumer").await.expect("NATS");
    publisher
        .ensure_streams(&[Kind::Dns])
        .await
        .expect("streams");

    let subject = publisher.subjects().publish(Kind::Dns, "pi-1", 0);
    let batch = DnsBatch {
        batch_id: "dns-1".into(),
        ..Default::default()
    };
    async {
        publisher
            .publish(&subject, "dns-1", &batch)
            .await
            .expect("publish");
    }
    .instrument(tracing::info_span!("capture.flush"))
    .await;

    let stop = CancellationToken::new();
    let spec = consumer.consumer_spec(Kind::Dns, "tracer", None);
    let stop2 = stop.clone();
    // A fresh task: no span of the publisher is current there.
    let run = tokio::spawn(async move {
        consumer
            .consume::<DnsBatch, _, _, String>(spec, stop2.clone(), |m| {
                let stop = stop2.clone();
                async move {
                    // Work the handler does appears inside the consumer's span.
                    tracing::info_span!("store.write", batch = %m.message.batch_id).in_scope(|| ());
                    stop.cancel();
                    Ok(())
                }
            })
            .await
    });
    run.await.expect("join").expect("consumer ran");
    tokio::time::timeout(Duration::from_secs(5), stop.cancelled())
        .await
        .expect("handled");
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("spans");
    let find = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no {name} span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let root = find("capture.flush");
    let publish = find("bus.publish");
    let consume = find("bus.consume");
    let write = find("store.write");

    let trace = root.span_context.trace_id();
    for s in [publish, consume, write] {
        assert_eq!(
            s.span_context.trace_id(),
            trace,
            "{} is in the publisher's trace",
            s.name
        );
    }
    assert_eq!(publish.parent_span_id, root.span_context.span_id());
    assert_eq!(
        consume.parent_span_id,
        publish.span_context.span_id(),
        "consumer span is the publish span's child"
    );
    assert!(
        consume.parent_span_is_remote,
        "the parent came over the wire"
    );
    assert_eq!(write.parent_span_id, consume.span_context.span_id());
    publisher
        .delete_streams(&[Kind::Dns])
        .await
        .expect("clean up");
}
