//! Rust types for every message and RPC defined in the repository's `proto/`
//! folder, generated at build time and never edited by hand.
//!
//! What this crate promises:
//! - `proto/` is the only definition; this crate is its mechanical image.
//!   Change a message there, rebuild, and every service sees the change.
//! - One module per protobuf package and version: [`sensor::v1`] (records,
//!   batches, devices, alerts, intelligence), [`enigma::v1`] (the Ingest gRPC
//!   service, client and server). The Asgard API is JSON over HTTPS, described
//!   by `proto/asgard/v1/openapi.yaml`, and has no generated code here.
//! - Every message implements `prost::Name`, so its fully-qualified name is
//!   known at run time; `bytes` fields are `bytes::Bytes` (zero-copy slices).

#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]

/// `heimdall.sensor.*`: what the sensor produces and consumes on the bus.
pub mod sensor {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/heimdall.sensor.v1.rs"));
    }
}

/// `heimdall.enigma.*`: the Enigma cloud's Ingest API.
pub mod enigma {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/heimdall.enigma.v1.rs"));
    }
}

/// The Asgard OpenAPI description, for servers that serve it and tests that
/// check bodies against it.
pub const ASGARD_OPENAPI_V1: &str = include_str!("../../../proto/asgard/v1/openapi.yaml");
