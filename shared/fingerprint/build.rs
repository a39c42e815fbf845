//! Turns the IEEE registries (data/ieee-oui.tsv.gz, made by
//! scripts/update-oui.py) into the compact lookup table `oui.bin` that
//! `src/oui.rs` embeds.
//!
//! Layout (all integers little-endian):
//! - u32 organization count, then each organization as u8 length + UTF-8
//!   bytes (names longer than 255 bytes are cut at a character boundary);
//! - three sections, for 24-, 28- and 36-bit prefixes in that order: u32
//!   entry count, then entries sorted by prefix, each a u64 prefix value
//!   (the prefix bits, right-aligned) and a u16 organization index.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

fn main() {
    let src = PathBuf::from("data/ieee-oui.tsv.gz");
    println!("cargo::rerun-if-changed={}", src.display());
    let file = std::fs::File::open(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));

    let mut names: Vec<String> = Vec::new();
    let mut index: BTreeMap<String, u16> = BTreeMap::new();
    // digits (6, 7, 9) -> prefix -> organization index
    let mut sections: [BTreeMap<u64, u16>; 3] = Default::default();
    for (n, line) in reader.lines().enumerate() {
        let line = line.unwrap_or_else(|e| panic!("{} line {}: {e}", src.display(), n + 1));
        let Some((prefix, org)) = line.split_once('\t') else {
            panic!("{} line {}: no tab", src.display(), n + 1);
        };
        let section = match prefix.len() {
            6 => 0,
            7 => 1,
            9 => 2,
            _ => panic!("{} line {}: prefix {prefix:?}", src.display(), n + 1),
        };
        let value = u64::from_str_radix(prefix, 16)
            .unwrap_or_else(|e| panic!("{} line {}: {e}", src.display(), n + 1));
        let mut org = org.to_string();
        while org.len() > 255 {
            org.pop();
        }
        let idx = *index.entry(org.clone()).or_insert_with(|| {
            names.push(org);
            u16::try_from(names.len() - 1).expect("fewer than 65536 organizations")
        });
        sections[section].insert(value, idx);
    }

    let mut out = Vec::new();
    out.extend_from_slice(&(names.len() as u32).to_le_bytes());
    for name in &names {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    }
    for section in &sections {
        out.extend_from_slice(&(section.len() as u32).to_le_bytes());
        for (prefix, idx) in section {
            out.extend_from_slice(&prefix.to_le_bytes());
            out.extend_from_slice(&idx.to_le_bytes());
        }
    }
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("oui.bin");
    std::fs::File::create(&dest)
        .and_then(|mut f| f.write_all(&out))
        .unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}
