//! heimdall-engine: packets in, Zeek-grade connection and DNS records out.
//!
//! What this crate promises:
//! - [`reader::CaptureReader`] reads pcap and pcapng (also gzip-compressed)
//!   through one reused buffer; a damaged file yields every packet before
//!   the damage and then an error that says where and why.
//! - [`engine::Engine`] turns packets into rows ([`rows::ConnRow`],
//!   [`rows::DnsRow`], and `heimdall.sensor.v1` records from them) that
//!   mean what Zeek's conn.log and dns.log rows mean, field by field: Zeek's
//!   connection keys, direction and flip rules, TCP states and history
//!   letters, sequence-space byte counts, missed bytes, timeouts driven by
//!   packet time, tunnels with `tunnel_parents`, fragments, local networks,
//!   service names by content, and DNS pairing with Zeek's text forms.
//! - It is bounded: the flow table, fragment buffers and per-connection
//!   content buffers all have limits, and whatever is evicted is logged and
//!   counted, never silently dropped.
//! - Malformed input (truncated frames, bad lengths, DNS compression loops)
//!   is counted, never a panic.
//! - It is a plain library: no async runtime, no network, no database; the
//!   capture service, `heimdall analyze`, benchmarks and tests all run it
//!   the same way.
//! - No allocation per packet, and none per record in the steady state:
//!   rows hold no heap data of their own and their buffers are recycled.
//! - [`zeeklog`] writes rows and records in Zeek's TSV or JSON-lines formats.
//! - On request ([`EngineConfig::observations`]), [`observe`] lifts device
//!   observations out of the traffic as `heimdall.sensor.v1.Observation`s
//!   (ARP, DHCPv4, DHCPv6, neighbour discovery, mDNS/DNS-SD, LLMNR, NetBIOS
//!   names, SSDP, the first HTTP request and the TLS ClientHello of a TCP
//!   connection, the ClientHello inside a QUIC client's Initials), agreeing
//!   with tshark's decoding, and connection records
//!   carry both ends' MAC addresses. A connection buffers at most 16 KiB of
//!   its opening, and only while a hello or request header is incomplete.

pub mod dns;
pub mod engine;
pub mod frag;
pub mod history;
pub mod ids;
pub mod ip;
pub mod link;
pub mod observe;
pub mod reader;
pub mod rows;
pub mod service;
pub mod tcp;
pub mod zeeklog;

pub use engine::{Checksums, Engine, EngineConfig, Output, Stats};
pub use reader::{CaptureReader, Packet, ReadError};
pub use rows::{ConnRow, DnsRow};
