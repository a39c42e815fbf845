//! The capture-file reader: pcap, pcapng and gzip from arbitrary bytes.
#![no_main]

use heimdall_engine::CaptureReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = CaptureReader::from_reader(Box::new(std::io::Cursor::new(data.to_vec()))) else { return };
    while let Ok(Some(p)) = r.next_packet() {
        std::hint::black_box(p.data.len());
    }
});
