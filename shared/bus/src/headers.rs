//! Message headers, and the W3C trace context carried in them.

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Header with JetStream's de-duplication id.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// Header naming the protobuf type of the payload.
pub const CONTENT_TYPE: &str = "Content-Type";

/// Transport-neutral message headers (one value per name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// Empty headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `name` to `value`, replacing any earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    /// The value of `name`, if present. Names compare case-sensitively, as
    /// NATS does.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Write the OpenTelemetry context of `span` (`traceparent`,
    /// `tracestate`) into these headers, using the globally installed
    /// propagator. Without a tracing pipeline this writes nothing.
    pub fn inject_span(&mut self, span: &tracing::Span) {
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, self));
    }

    /// Make `span` a child of the context carried in these headers, if any.
    pub fn set_parent_of(&self, span: &tracing::Span) {
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(self));
        use opentelemetry::trace::TraceContextExt;
        if cx.span().span_context().is_valid() {
            // Fails only when no OpenTelemetry layer is installed, in which
            // case there is nothing to link.
            let _ = span.set_parent(cx);
        }
    }
}

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key, value);
    }
}

impl Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        Headers::get(self, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
