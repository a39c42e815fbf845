//! Settings for tests that talk to the real NATS server.

use std::time::Duration;

use heimdall_config::Url;

use crate::BusConfig;

/// The server tests use: `HEIMDALL_TEST_NATS_URL`, else the local server
/// that `make setup` starts.
pub fn nats_url() -> String {
    std::env::var("HEIMDALL_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Settings for one test: a namespace of its own (`<label><random>`), so
/// parallel tests never see each other's streams; memory storage; byte
/// bounds scaled down, because JetStream reserves a memory stream's whole
/// bound up front; and an ack wait long enough that a loaded CI machine never
/// causes a redelivery the test did not ask for.
pub fn config(label: &str) -> BusConfig {
    BusConfig {
        url: Url::new(nats_url()),
        namespace: format!("{label}{}", uuid::Uuid::new_v4().simple()),
        memory_storage: true,
        max_bytes_scale: 0.05,
        ack_wait: Duration::from_secs(30),
        ..BusConfig::default()
    }
}
