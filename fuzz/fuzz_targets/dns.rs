//! The DNS decoder: one message each way over UDP, then the same bytes as a
//! TCP stream in two pieces, then the end of the connection.
#![no_main]

use heimdall_engine::dns::{ConnCtx, Effects, Out, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for ctx in [
        ConnCtx { orig_p: 40000, resp_p: 53, resp_multicast: false },
        ConnCtx { orig_p: 137, resp_p: 137, resp_multicast: false },
        ConnCtx { orig_p: 5353, resp_p: 5353, resp_multicast: true },
    ] {
        let mut s = Session::new();
        let mut out = Out::default();
        s.message(&ctx, data, Some(true), 0, &mut out);
        s.message(&ctx, data, Some(false), 1, &mut out);
        let mut fx = Effects::default();
        let (a, b) = data.split_at(data.len() / 2);
        s.tcp_data(&ctx, true, a, 2, &mut out, &mut fx);
        s.tcp_data(&ctx, true, b, 3, &mut out, &mut fx);
        s.finish(&ctx, 4, &mut out);
    }
});
