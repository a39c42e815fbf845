//! Spans leave the process over OTLP/gRPC when an endpoint is configured:
//! `heimdall_telemetry::init` against a real OTLP trace receiver (a tonic
//! server speaking the collector's TraceService), with a log filter quieter
//! than the spans, which must not stop them.

use std::time::Duration;

use heimdall_telemetry::{LogFormat, TelemetryConfig};
use heimdall_tests::otlp::Receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_with_the_service_name() {
    let receiver = Receiver::start().await.expect("OTLP receiver");
    let config = TelemetryConfig {
        log_format: LogFormat::Json,
        log: "warn".into(),
        otlp_endpoint: Some(receiver.endpoint()),
        ..TelemetryConfig::default()
    };
    let guard = heimdall_telemetry::init("heimdall-otlp-test", &config).expect("telemetry");
    assert!(guard.exporting());
    {
        let span = tracing::info_span!("capture.flush", batch = "b-1");
        let _entered = span.enter();
        tracing::info_span!("bus.publish").in_scope(|| ());
    }
    // Dropping the guard flushes the batch exporter.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .expect("flush");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let names = loop {
        let names = receiver.spans();
        if names.len() >= 2 || tokio::time::Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let span_names: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    assert!(span_names.contains(&"capture.flush"), "{names:?}");
    assert!(span_names.contains(&"bus.publish"), "{names:?}");
    assert!(
        names
            .iter()
            .all(|(_, svc)| svc.contains("heimdall-otlp-test")),
        "{names:?}"
    );
}
