//! Device identification for Heimdall.
//!
//! What this crate promises:
//! - a vendor for every globally administered MAC the IEEE has assigned
//!   (MA-L, MA-M, MA-S, compiled into the binary from Debian's `ieee-data`),
//!   and locally administered (randomized) MACs recognized as such;
//! - a device type from the fixed taxonomy of `proto/sensor/v1/device.proto`,
//!   a vendor, model and OS, each decided by fusing many weak signals through
//!   rules kept as data (`data/rules.toml`, `data/vendors.toml`, every entry
//!   with its source), with a confidence from 0 to 1 and the evidence behind
//!   it in words a person can check;
//! - one device per physical device: a new randomized MAC that shows a stable
//!   identifier of a known device (DHCP client id, a personal host name,
//!   DHCPv6 DUID, mDNS host name, stable IPv6 interface id) joins that device
//!   instead of becoming a stranger;
//! - device events (new, updated, merged, type changed, gone) with
//!   deterministic ids, so a replay after a crash yields the same events and
//!   consumers de-duplicate on them;
//! - bounded memory: every map is capped and what is dropped is counted.
//!
//! The [`Registry`] is plain synchronous code: `heimdall analyze` drives it
//! from the packet engine, the fingerprint service from NATS.

pub mod oui;
pub mod registry;
pub mod rules;
pub mod signals;

pub use registry::{Registry, RegistryConfig, RegistryStats};
pub use rules::{Rules, RulesError, Signal};
