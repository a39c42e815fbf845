//! The baseline for `make bench`: a bare libpcap read loop over a capture
//! file that touches every packet's bytes and does nothing else.
#![allow(clippy::print_stdout)]

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: heimdall-pcaploop FILE")?;
    let mut cap = pcap::Capture::from_file(&path).with_context(|| format!("open {path}"))?;
    let mut packets = 0u64;
    let mut bytes = 0u64;
    let mut sum = 0u64;
    while let Ok(p) = cap.next_packet() {
        packets += 1;
        bytes += p.header.len as u64;
        sum = sum.wrapping_add(p.data.first().copied().unwrap_or(0) as u64);
    }
    println!("pcaploop: {packets} packets, {bytes} bytes (checksum {sum})");
    Ok(())
}
