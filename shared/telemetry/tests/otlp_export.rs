//! Spans leave the process over OTLP/gRPC when an endpoint is configured:
//! `heimdall_telemetry::init` against a real OTLP trace receiver (a tonic
//! server speaking the collector's TraceService), with a log filter quieter
//! than the spans, which must not stop them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use heimdall_telemetry::{LogFormat, TelemetryConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio_stream::wrappers::TcpListenerStream;

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.got.lock().expect("lock").push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_with_the_service_name() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let receiver = Receiver::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let config = TelemetryConfig {
        log_format: LogFormat::Json,
        log: "warn".into(),
        otlp_endpoint: Some(format!("http://{addr}")),
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
        let names: Vec<(String, String)> = receiver
            .got
            .lock()
            .expect("lock")
            .iter()
            .flat_map(|req| &req.resource_spans)
            .flat_map(|rs| {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default();
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| &ss.spans)
                    .map(move |s| (s.name.clone(), service.clone()))
            })
            .collect();
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
    server.abort();
}
