//! The flow table: a sequence of frames with time steps, into an engine with
//! a tiny table (so evictions happen) and device observations on, then the
//! end of input. Input layout:
//! repeated [time step: 2 bytes][length: 2 bytes][frame].
#![no_main]

use heimdall_engine::{Engine, EngineConfig, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut engine =
        Engine::new(EngineConfig { max_connections: 8, observations: true, ..Default::default() });
    let mut ts: i64 = 1_000_000_000;
    let mut rest = data;
    while rest.len() >= 4 {
        let step = u16::from_le_bytes([rest[0], rest[1]]) as i64;
        let len = (u16::from_le_bytes([rest[2], rest[3]]) as usize).min(rest.len() - 4);
        let frame = &rest[4..4 + len];
        rest = &rest[4 + len..];
        // steps up to ~65 s, so every timer kind fires
        ts += step * 1_000_000;
        engine.packet(&Packet { ts_ns: ts, wire_len: frame.len() as u32, linktype: 1, data: frame });
        engine.clear_output();
    }
    engine.finish();
});
