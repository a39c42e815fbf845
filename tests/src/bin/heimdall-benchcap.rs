//! Builds the benchmark capture from the captures in ../shared/testdata:
//! every Ethernet capture, concatenated in time, repeated in rounds whose
//! IP addresses are rewritten (one octet XORed with the round number, IPv4
//! header checksum fixed) so each round adds new connections. Rounds repeat
//! until the capture holds at least --min-packets packets and (as counted by
//! the engine on one round) --min-connections connections.
#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use heimdall_engine::{CaptureReader, Engine, EngineConfig, Packet};

#[derive(Debug, Parser)]
struct Args {
    /// Output pcap
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 2_000_000)]
    min_packets: u64,
    #[arg(long, default_value_t = 200_000)]
    min_connections: u64,
    /// Input captures or folders searched for .pcap/.pcapng
    inputs: Vec<PathBuf>,
}

fn collect(p: &PathBuf, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            v.sort();
            for x in v {
                collect(&x, out);
            }
        }
    } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
        out.push(p.clone());
    }
}

/// Where the IP header starts in an Ethernet frame, if it carries IP.
fn ip_offset(frame: &[u8]) -> Option<usize> {
    let l3 = heimdall_engine::link::decode(1, frame).ok()?;
    match l3.kind {
        heimdall_engine::link::L3Kind::Ipv4 | heimdall_engine::link::L3Kind::Ipv6 => {
            Some(l3.data.as_ptr() as usize - frame.as_ptr() as usize)
        }
        _ => None,
    }
}

fn rewrite(frame: &mut [u8], round: u8) {
    let Some(off) = ip_offset(frame) else { return };
    let ip = &mut frame[off..];
    match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 20 => {
            ip[13] ^= round;
            ip[17] ^= round;
            let hl = ((ip[0] & 0x0f) as usize * 4).clamp(20, ip.len());
            ip[10] = 0;
            ip[11] = 0;
            let c = heimdall_engine::ip::internet_checksum(&ip[..hl], 0);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        Some(6) if ip.len() >= 40 => {
            ip[8 + 13] ^= round;
            ip[24 + 13] ^= round;
        }
        _ => {}
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut files = Vec::new();
    for i in &args.inputs {
        collect(i, &mut files);
    }
    // One round: every Ethernet packet, each capture after the previous one.
    let mut round: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut t = 0i64;
    for f in &files {
        let Ok(mut r) = CaptureReader::open(f) else {
            continue;
        };
        let mut first = None;
        let mut last = t;
        while let Ok(Some(p)) = r.next_packet() {
            if p.linktype != 1 {
                break;
            }
            let f0 = *first.get_or_insert(p.ts_ns);
            let at = t + (p.ts_ns - f0).clamp(0, 3_600_000_000_000);
            last = last.max(at);
            round.push((at, p.data.to_vec()));
        }
        t = last + 1_000_000_000;
    }
    round.sort_by_key(|(ts, _)| *ts);
    let span = t;
    let mut engine = Engine::new(EngineConfig::default());
    for (ts, d) in &round {
        engine.packet(&Packet {
            ts_ns: *ts,
            wire_len: d.len() as u32,
            linktype: 1,
            data: d,
        });
    }
    engine.finish();
    let conns = engine.stats().connections.max(1);
    let pkts = round.len().max(1) as u64;
    let rounds = args
        .min_packets
        .div_ceil(pkts)
        .max(args.min_connections.div_ceil(conns))
        .clamp(1, 255);
    println!(
        "benchcap: {} captures, {pkts} Ethernet packets and {conns} connections a round, {rounds} rounds",
        files.len()
    );
    let file = std::fs::File::create(&args.out).context("create output")?;
    let mut w = heimdall_engine::reader::PcapWriter::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        1,
        262_144,
    )?;
    let base = 1_767_225_600_000_000_000i64;
    let mut buf = Vec::new();
    for r in 0..rounds {
        for (ts, d) in &round {
            buf.clear();
            buf.extend_from_slice(d);
            rewrite(&mut buf, r as u8);
            let at = base + r as i64 * (span + 1_000_000_000) + ts;
            w.write(at / 1000, &buf)?;
        }
    }
    w.finish()?.flush()?;
    println!(
        "benchcap: wrote {} packets to {}",
        pkts * rounds,
        args.out.display()
    );
    Ok(())
}
