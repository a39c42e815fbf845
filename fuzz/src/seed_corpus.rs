//! Builds fuzz corpora from the captures in ../shared/testdata (they stay
//! there; the corpora are written under target/). For each target:
//! decode: [link-type index][frame]; flow_table: one capture's frames as
//! [step][len][frame] records; dns: UDP payloads to or from port 53/5353/137;
//! reader: the first 64 KiB of each capture.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};

use heimdall_engine::CaptureReader;

const LINKTYPES: [u16; 10] = [1, 0, 9, 101, 105, 108, 113, 127, 228, 276];

fn captures(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            captures(&p, out);
        } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
            out.push(p);
        }
    }
}

fn dns_payload(frame: &[u8]) -> Option<&[u8]> {
    let l3 = heimdall_engine::link::decode(1, frame).ok()?;
    let ip = heimdall_engine::ip::parse(l3.data, false).ok()?;
    if ip.proto != 17 || ip.payload.len() < 8 {
        return None;
    }
    let sp = u16::from_be_bytes([ip.payload[0], ip.payload[1]]);
    let dp = u16::from_be_bytes([ip.payload[2], ip.payload[3]]);
    [53, 137, 5353, 5355].iter().any(|p| *p == sp || *p == dp).then(|| &ip.payload[8..])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let testdata = PathBuf::from(args.next().unwrap_or_else(|| "../shared/testdata".into()));
    let out = PathBuf::from(args.next().unwrap_or_else(|| "target/fuzz-corpus".into()));
    let mut files = Vec::new();
    captures(&testdata, &mut files);
    files.sort();
    for t in ["decode", "dns", "flow_table", "reader"] {
        let _ = std::fs::create_dir_all(out.join(t));
    }
    let mut n = [0usize; 4];
    for (fi, f) in files.iter().enumerate() {
        if let Ok(bytes) = std::fs::read(f) {
            let _ = std::fs::write(out.join("reader").join(format!("{fi}")), &bytes[..bytes.len().min(65_536)]);
            n[3] += 1;
        }
        let Ok(mut r) = CaptureReader::open(f) else { continue };
        let mut flow = Vec::new();
        let mut last = None;
        let mut i = 0;
        while let Ok(Some(p)) = r.next_packet() {
            i += 1;
            let idx = LINKTYPES.iter().position(|l| *l == p.linktype).unwrap_or(0) as u8;
            if i <= 200 {
                let mut seed = vec![idx];
                seed.extend_from_slice(p.data);
                let _ = std::fs::write(out.join("decode").join(format!("{fi}-{i}")), seed);
                n[0] += 1;
            }
            if p.linktype == 1 {
                if let Some(d) = dns_payload(p.data) {
                    let _ = std::fs::write(out.join("dns").join(format!("{fi}-{i}")), d);
                    n[1] += 1;
                }
                if flow.len() < 60_000 {
                    let step = last.map_or(0, |l: i64| ((p.ts_ns - l) / 1_000_000_000).clamp(0, 65_535)) as u16;
                    flow.extend_from_slice(&step.to_le_bytes());
                    flow.extend_from_slice(&(p.data.len() as u16).to_le_bytes());
                    flow.extend_from_slice(p.data);
                }
            }
            last = Some(p.ts_ns);
        }
        if !flow.is_empty() {
            let _ = std::fs::write(out.join("flow_table").join(format!("{fi}")), flow);
            n[2] += 1;
        }
    }
    println!("seeds: decode {} dns {} flow_table {} reader {} (from {} captures)", n[0], n[1], n[2], n[3], files.len());
}
