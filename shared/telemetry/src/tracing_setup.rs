//! The tracing subscriber and the OpenTelemetry pipeline behind it.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::{Error, LogFormat, TelemetryConfig};

/// Keeps the trace pipeline alive. Dropping it flushes spans that are still
/// buffered, so hold it until `main` returns.
#[derive(Debug)]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    /// True when spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // Nothing useful to do with an error at exit; the collector may be gone.
            let _ = p.shutdown();
        }
    }
}

/// The endpoint to export to, from the config or the standard variable.
fn endpoint(cfg: &TelemetryConfig) -> Option<String> {
    cfg.otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty())
}

/// Install the process-wide subscriber for `service`. Call once, early in
/// `main`, after the configuration is loaded. Needs a Tokio runtime when an
/// OTLP endpoint is configured (the exporter speaks gRPC through tonic).
pub fn init(service: &'static str, cfg: &TelemetryConfig) -> Result<Guard, Error> {
    let provider = match endpoint(cfg) {
        Some(ep) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(ep)
                .build()
                .map_err(|e| Error::Otlp(e.to_string()))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                        cfg.trace_sample_ratio,
                    ))))
                    .with_resource(resource(service))
                    .build(),
            )
        }
        None => None,
    };
    init_with_provider(service, cfg, provider)
}

/// Like [`init`], with a tracer provider chosen by the caller (tests use an
/// in-memory exporter). `None` means logs only.
pub fn init_with_provider(
    service: &'static str,
    cfg: &TelemetryConfig,
    provider: Option<SdkTracerProvider>,
) -> Result<Guard, Error> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Each layer has its own filter: a quiet log level must not stop the
    // spans that carry trace context across the bus.
    let log_filter = EnvFilter::try_new(&cfg.log).map_err(|e| Error::Filter(e.to_string()))?;
    let trace_filter =
        EnvFilter::try_new(&cfg.trace_filter).map_err(|e| Error::Filter(e.to_string()))?;
    let fmt = match cfg.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(true)
            .boxed(),
    }
    .with_filter(log_filter);
    let otel = provider
        .as_ref()
        .map(|p| otel_layer(p, service).with_filter(trace_filter));
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    Registry::default()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| Error::AlreadyInstalled(e.to_string()))?;
    Ok(Guard { provider })
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `service`.
pub fn otel_layer<S>(provider: &SdkTracerProvider, service: &'static str) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        .with_error_records_to_exceptions(true)
}

fn resource(service: &'static str) -> Resource {
    Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}
