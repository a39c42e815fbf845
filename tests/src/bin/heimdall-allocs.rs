//! Counts heap allocations while the engine reads a capture (no log
//! writing), to check that the packet path allocates nothing in the steady
//! state: allocations come with new connections and finished records, not
//! with packets. Prints allocations per packet and per record.
// A counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to
// the system allocator and counts.
#![allow(unsafe_code)]
#![allow(clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use heimdall_engine::{CaptureReader, Engine, EngineConfig};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One long TCP connection and one long UDP flow, built in memory: the
/// steady state of the packet path, which must not allocate per packet.
fn steady_state() {
    fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
        let total = 20 + l4.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            proto,
            0,
            0,
        ];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let c = heimdall_engine::ip::internet_checksum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(l4);
        f
    }
    fn tcp(sp: u16, dp: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sp.to_be_bytes());
        t.extend_from_slice(&dp.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        t
    }
    let (a, b) = ([10, 0, 0, 2], [10, 0, 0, 9]);
    let payload = [0x42u8; 512];
    let mut frames = vec![
        frame(a, b, 6, &tcp(40000, 8443, 100, 0, 0x02, &[])),
        frame(b, a, 6, &tcp(8443, 40000, 900, 101, 0x12, &[])),
    ];
    let n = 200_000u32;
    for i in 0..n {
        frames.push(frame(
            a,
            b,
            6,
            &tcp(40000, 8443, 101 + i * 512, 901, 0x18, &payload),
        ));
        frames.push(frame(
            b,
            a,
            6,
            &tcp(8443, 40000, 901, 101 + (i + 1) * 512, 0x10, &[]),
        ));
        let mut udp = vec![0x9c, 0x40, 0x1f, 0x90, 0, 24, 0, 0];
        udp.extend_from_slice(&[7u8; 16]);
        frames.push(frame(a, b, 17, &udp));
    }
    let mut engine = Engine::new(EngineConfig::default());
    let warmup = 3_000;
    let mut counted_from = 0;
    for (i, f) in frames.iter().enumerate() {
        if i == warmup {
            counted_from = ALLOCS.load(Ordering::Relaxed);
        }
        let p = heimdall_engine::Packet {
            ts_ns: 1_000_000_000 + i as i64 * 1_000,
            wire_len: f.len() as u32,
            linktype: 1,
            data: f,
        };
        engine.packet(&p);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - counted_from;
    println!(
        "allocs (steady state: one TCP and one UDP flow, {} packets after {warmup} of warm-up): {allocs} allocations",
        frames.len() - warmup
    );
}

fn main() -> Result<()> {
    steady_state();
    let path = std::env::args()
        .nth(1)
        .context("usage: heimdall-allocs FILE")?;
    let mut reader = CaptureReader::open(std::path::Path::new(&path)).context("open capture")?;
    let mut engine = Engine::new(EngineConfig::default());
    let mut packets = 0u64;
    let mut records = 0u64;
    let start = ALLOCS.load(Ordering::Relaxed);
    while let Some(p) = reader.next_packet().context("read")? {
        engine.packet(&p);
        packets += 1;
        records += (engine.out.conns.len() + engine.out.dns.len()) as u64;
        engine.clear_output();
    }
    engine.finish();
    records += (engine.out.conns.len() + engine.out.dns.len()) as u64;
    let allocs = ALLOCS.load(Ordering::Relaxed) - start;
    let s = engine.stats();
    println!(
        "allocs: {allocs} allocations for {packets} packets ({:.3} per packet), {} connections, {records} records ({:.1} per record)",
        allocs as f64 / packets.max(1) as f64,
        s.connections,
        allocs as f64 / records.max(1) as f64
    );
    Ok(())
}
