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

/// Reading the address fields of the messages: IP addresses travel as 4 or
/// 16 bytes, MACs as 6.
pub mod addr {
    use std::net::IpAddr;

    /// The address in a `bytes` field (4 bytes IPv4, 16 bytes IPv6); `None`
    /// for any other length.
    pub fn ip(b: &[u8]) -> Option<IpAddr> {
        match b.len() {
            4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
            _ => None,
        }
    }

    /// `ip` as a `bytes` field holds it: 4 bytes IPv4, 16 bytes IPv6.
    pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
        match ip {
            IpAddr::V4(v) => v.octets().to_vec(),
            IpAddr::V6(v) => v.octets().to_vec(),
        }
    }

    /// `aa:bb:cc:dd:ee:ff`.
    pub fn mac_text(mac: [u8; 6]) -> String {
        let mut s = String::with_capacity(17);
        for (i, b) in mac.iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// The Asgard OpenAPI description, for servers that serve it and tests that
/// check bodies against it.
pub const ASGARD_OPENAPI_V1: &str = include_str!("../../../proto/asgard/v1/openapi.yaml");
