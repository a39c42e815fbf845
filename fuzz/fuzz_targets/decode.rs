//! The packet decoder: link layers, IP (with extension headers and
//! fragments) and transports, through the whole engine, from one frame.
//! The first byte picks the link type.
#![no_main]

use heimdall_engine::{Engine, EngineConfig, Packet};
use libfuzzer_sys::fuzz_target;

const LINKTYPES: [u16; 10] = [1, 0, 9, 101, 105, 108, 113, 127, 228, 276];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else { return };
    let linktype = LINKTYPES[pick as usize % LINKTYPES.len()];
    let _ = heimdall_engine::link::decode(linktype, frame);
    let _ = heimdall_engine::ip::parse(frame, true);
    let mut engine = Engine::new(EngineConfig { observations: true, ..Default::default() });
    engine.packet(&Packet { ts_ns: 1, wire_len: frame.len() as u32, linktype, data: frame });
    engine.finish();
});
