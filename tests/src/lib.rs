//! End-to-end tests across processes, with the real NATS server and the real
//! PostgreSQL server, and the small pieces they need.
//!
//! What this crate promises:
//! - [`sink`] is a complete consumer service in the shape every Heimdall
//!   service takes (settings, telemetry, bus, store, `run(config, shutdown)`):
//!   it writes connection batches from the bus into its own schema,
//!   idempotently. The `heimdall-sink` binary wraps it so tests can kill it.
//! - [`bench`] starts a service pinned to one core and measures its CPU
//!   time, for `make bench`.
//! - [`process`] starts binaries, waits for `/readyz`, and kills them hard;
//!   [`process::NatsServer`] is a NATS server a test may stop and restart.
//! - [`veth`] makes a veth pair for live-capture tests (needs root).
//! - [`tls`] makes a test CA and a server certificate for TLS servers on
//!   127.0.0.1.
//! - [`phones`] writes a capture of a phone that rejoins the network with a
//!   new randomized MAC, for the re-identification tests.
//! - [`secrets`] makes test secrets with one marker and keeps what services
//!   wrote for the suite-wide secret scan; [`otlp`] is a real OTLP trace
//!   receiver, so exported spans can be read back and scanned.
//! - The tests in `tests/` use only these and the shared crates; nothing is
//!   mocked.

pub mod bench;
pub mod otlp;
pub mod phones;
pub mod process;
pub mod secrets;
pub mod sink;
pub mod tls;
pub mod veth;
