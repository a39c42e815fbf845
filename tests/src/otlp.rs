//! A real OTLP/gRPC trace receiver (the collector's TraceService on
//! 127.0.0.1), so a test can export a service's spans and read them back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio_stream::wrappers::TcpListenerStream;

/// What the receiver got, shared with the server task.
#[derive(Clone, Default)]
pub struct Receiver {
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .finish()
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.lock().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serve on a free loopback port until the runtime ends.
    pub async fn start() -> std::io::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let receiver = Receiver {
            addr: Some(listener.local_addr()?),
            ..Receiver::default()
        };
        let server = receiver.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(server))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Ok(receiver)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ExportTraceServiceRequest>> {
        self.got.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint to give a service (`HEIMDALL_TELEMETRY_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        self.addr.map(|a| format!("http://{a}")).unwrap_or_default()
    }

    /// Every export request so far.
    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.lock().clone()
    }

    /// (span name, service.name) of every span so far.
    pub fn spans(&self) -> Vec<(String, String)> {
        self.lock()
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
            .collect()
    }

    /// Everything received, attributes and events included, as text: what
    /// a secret scan reads. Also kept in the suite's log folder (see
    /// [`crate::secrets`]) under `name`.
    pub fn dump(&self, name: &str) -> String {
        let text = format!("{:#?}", self.lock());
        crate::secrets::keep(name, &text);
        text
    }
}
