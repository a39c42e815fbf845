//! TCP as Zeek tracks it: per-endpoint states, sequence-space sizes, the
//! history letters, close handling, and ACK-driven gap detection
//! (missed_bytes). The rules are written down in docs/zeek-semantics.md;
//! the comments here name the rule, not the reason.

use heimdall_proto::sensor::v1::ConnState;

use crate::history::{History, Letter};

pub const SYN: u8 = 0x02;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Largest sequence jump a SYN or RST may make before it is distrusted.
const MAX_SEQ_JUMP: i32 = 1 << 20;
/// Bytes buffered above a hole, with nothing of ours acked, before the
/// reassembler gives up on the stream.
const MAX_ABOVE_HOLE_WITHOUT_ACKS: u64 = 16 * 1024;
/// Bytes buffered in total before the reassembler gives up.
const MAX_BUFFERED: u64 = 10 << 20;
/// Out-of-order blocks remembered per endpoint before the reassembler gives
/// up (a stream shredded into many holes).
const MAX_BLOCKS: usize = 512;
/// Bytes of stream content kept per endpoint for analyzers that look at
/// content (service identification, DNS over TCP); data past this in a
/// reordered stream is tracked by range only.
const MAX_CONTENT_BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    #[default]
    Inactive,
    SynSent,
    SynAckSent,
    Partial,
    Established,
    Closed,
    Reset,
}

/// A TCP segment as the state machine needs it.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Payload length from the IP header (what the sender sent).
    pub len: u32,
    /// Payload bytes captured (may be shorter than `len`).
    pub payload: &'a [u8],
}

impl Segment<'_> {
    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// A block received above the in-order point.
#[derive(Debug, Clone)]
struct Block {
    start: u64,
    end: u64,
    data: Option<Vec<u8>>,
}

/// Per-endpoint stream reassembly, only as far as Zeek's accounting needs:
/// which bytes arrived, which the peer acknowledged without us seeing them
/// (gaps), and in-order content for analyzers.
#[derive(Debug, Clone, Default)]
struct Reasm {
    /// Relative sequence number of the next byte to deliver (starts at 1).
    delivered: u64,
    blocks: Vec<Block>,
    buffered: u64,
    content_buffered: usize,
    skip: bool,
    any_acked: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Scaled {
    count: u64,
    threshold: u64,
}

impl Scaled {
    /// True on the 1st, 10th, 100th... occurrence.
    fn hit(&mut self) -> bool {
        if self.threshold == 0 {
            self.threshold = 1;
        }
        self.count += 1;
        if self.count == self.threshold {
            self.threshold = self.threshold.saturating_mul(10);
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    pub state: State,
    pub prev_state: State,
    start_seq: i64,
    last_seq: u32,
    ack_seq: u32,
    seq_wraps: u32,
    ack_wraps: u32,
    pub fin_cnt: u32,
    rst_cnt: u32,
    fin_seq: i64,
    pub did_close: bool,
    hist_last_syn: i64,
    hist_last_fin: i64,
    hist_last_rst: i64,
    /// Whether the history bit for S/H, F, R was already set.
    rxmt: Scaled,
    win0: Scaled,
    gap: Scaled,
    reasm: Reasm,
    close_pending: bool,
    close_gen_event: bool,
}

impl Endpoint {
    fn set_state(&mut self, s: State) {
        self.prev_state = self.state;
        self.state = s;
    }

    fn full_last(&self) -> i64 {
        ((self.seq_wraps as i64) << 32) | self.last_seq as i64
    }

    fn full_ack(&self) -> i64 {
        ((self.ack_wraps as i64) << 32) | self.ack_seq as i64
    }

    fn init_seqs(&mut self, start: u32, last: u32) {
        self.start_seq = start as i64;
        self.ack_seq = start;
        self.last_seq = last;
        self.seq_wraps = 0;
        self.ack_wraps = 0;
    }

    fn no_data_acked(&self) -> bool {
        let a = self.full_ack();
        a == self.start_seq || a == self.start_seq + 1
    }

    /// Relative position of `cur` given the running `last` and wrap count;
    /// `None` when it falls before the start (underflow).
    fn relative(&self, cur: u32, last: u32, wraps: u32) -> Option<i64> {
        let d = seq_delta(cur, last);
        let mut w = wraps;
        if d < 0 && w > 0 && cur > last {
            w -= 1;
        } else if d > 0 && cur < last {
            w += 1;
        }
        if w == 0 {
            let r = seq_delta(cur, self.start_seq as u32) as i64;
            if r < 0 { None } else { Some(r) }
        } else {
            Some(((w as i64) << 32) + cur as i64 - self.start_seq)
        }
    }
}

fn seq_delta(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

fn is_clean(e: &Endpoint) -> bool {
    e.state == State::Established
        || (e.state == State::Closed && e.prev_state == State::Established)
}

/// What a packet did that the connection as a whole must act on.
#[derive(Debug, Default, Clone, Copy)]
pub struct Effects {
    /// The SYN/SYN-ACK reversal: roles must be flipped after this packet.
    pub flip: bool,
    /// The originator's first SYN: start the attempt timer.
    pub attempt_timer: bool,
    /// The handshake phase ended: switch to the TCP inactivity timeout.
    pub handshake_done: bool,
    /// A close completed: schedule removal.
    pub close_complete: bool,
    /// A close that did not complete (the peer is still open).
    pub close_partial: bool,
}

/// Both endpoints of one TCP connection.
#[derive(Debug, Clone, Default)]
pub struct Tcp {
    pub orig: Endpoint,
    pub resp: Endpoint,
    is_partial: bool,
    first_orig_seen: bool,
    first_resp_seen: bool,
    /// Bytes the peer acknowledged that were never seen.
    pub missed_bytes: u64,
    report_gaps_for_partial: bool,
}

fn in_handshake(s: State) -> bool {
    matches!(s, State::Inactive | State::SynSent | State::SynAckSent)
}

impl Tcp {
    pub fn new(report_gaps_for_partial: bool) -> Self {
        Tcp {
            report_gaps_for_partial,
            ..Default::default()
        }
    }

    /// Swaps the endpoints after a flip of roles.
    pub fn flip(&mut self) {
        std::mem::swap(&mut self.orig, &mut self.resp);
        std::mem::swap(&mut self.first_orig_seen, &mut self.first_resp_seen);
        self.is_partial = false;
    }

    fn eps(&mut self, is_orig: bool) -> (&mut Endpoint, &mut Endpoint) {
        if is_orig {
            (&mut self.orig, &mut self.resp)
        } else {
            (&mut self.resp, &mut self.orig)
        }
    }

    /// Whether a SYN arriving for this connection starts a new one (Zeek's
    /// connection reuse rule).
    pub fn is_reuse(&self, seg: &Segment<'_>) -> bool {
        if !seg.has(SYN) {
            return false;
        }
        let conn_orig = if seg.has(ACK) {
            if self.orig.state != State::Inactive {
                return false;
            }
            &self.resp
        } else {
            &self.orig
        };
        if !(self.orig.did_close || self.resp.did_close) {
            if seg.seq as i64 == conn_orig.start_seq {
                return false;
            }
            if !seg.has(ACK)
                && conn_orig.state == State::SynAckSent
                && self.resp.state == State::Inactive
                && seg.seq as i64 == self.resp.start_seq
            {
                return false;
            }
        }
        true
    }

    /// Processes one segment from `is_orig`'s side. `deliver` receives
    /// in-order stream content for analyzers; `last_time` is the
    /// connection's last-activity time, which stops once both sides closed.
    pub fn packet(
        &mut self,
        is_orig: bool,
        seg: &Segment<'_>,
        ts: i64,
        last_time: &mut i64,
        hist: &mut History,
        deliver: &mut dyn FnMut(bool, &[u8]),
    ) -> Effects {
        let mut fx = Effects::default();
        let syn = seg.has(SYN);
        let fin = seg.has(FIN);
        let rst = seg.has(RST);
        let ackf = seg.has(ACK);
        let len = seg.len;

        // Partial status, on each endpoint's first packet.
        if is_orig && !self.first_orig_seen {
            self.first_orig_seen = true;
            self.is_partial = !syn || ackf;
        } else if !is_orig && !self.first_resp_seen {
            self.first_resp_seen = true;
            if !self.is_partial {
                self.is_partial = !syn;
            }
        }

        let seg_len = len as i64 + syn as i64 + fin as i64 - if rst { len as i64 } else { 0 };
        let end_seq = seg.seq.wrapping_add(seg_len as u32);

        // Sequence initialisation.
        {
            let (ep, _) = self.eps(is_orig);
            match ep.state {
                State::Inactive => {
                    if syn {
                        ep.init_seqs(seg.seq, end_seq);
                    } else {
                        ep.init_seqs(seg.seq.wrapping_sub(1), seg.seq);
                    }
                }
                State::SynSent | State::SynAckSent => {
                    if syn && seg.seq as i64 != ep.start_seq {
                        ep.init_seqs(seg.seq, end_seq);
                    }
                }
                State::Established | State::Partial => {
                    if syn {
                        ep.init_seqs(seg.seq, end_seq);
                    }
                }
                State::Reset => {
                    if syn && ep.prev_state == State::Inactive {
                        ep.init_seqs(seg.seq, end_seq);
                    }
                }
                State::Closed => {}
            }
        }

        let (ep, _) = self.eps(is_orig);
        let rel_seq = ep.relative(seg.seq, ep.last_seq, ep.seq_wraps);
        let underflow = rel_seq.is_none();
        let rel = rel_seq.unwrap_or(0);

        // History letters.
        let n = syn as u8 + fin as u8 + rst as u8;
        if n >= 2 {
            if fin && rst {
                hist.check(is_orig, Letter::I);
            } else {
                hist.check(is_orig, Letter::Q);
            }
        } else if n == 1 {
            if syn {
                let l = if ackf { Letter::H } else { Letter::S };
                if !hist.check(is_orig, l) && rel != ep.hist_last_syn {
                    hist.add(is_orig, l);
                }
                ep.hist_last_syn = rel;
            }
            if fin {
                let at = rel + len as i64;
                if !hist.check(is_orig, Letter::F) && at != ep.hist_last_fin {
                    hist.add(is_orig, Letter::F);
                }
                ep.hist_last_fin = at;
            }
            if rst {
                if !hist.check(is_orig, Letter::R) && rel != ep.hist_last_rst {
                    hist.add(is_orig, Letter::R);
                }
                ep.hist_last_rst = rel;
            }
        } else if len > 0 {
            hist.check(is_orig, Letter::D);
        } else if ackf {
            hist.check(is_orig, Letter::A);
        }

        // Zero window (scaling cannot make a zero window non-zero).
        {
            let (ep, peer) = self.eps(is_orig);
            if seg.window == 0
                && !rst
                && ep.state != State::Reset
                && peer.state != State::Closed
                && ep.win0.hit()
            {
                hist.add(is_orig, Letter::W);
            }
        }

        if !(self.orig.did_close && self.resp.did_close) {
            *last_time = ts;
        }

        let (ep, peer) = self.eps(is_orig);
        if fin {
            ep.fin_cnt += 1;
            ep.fin_seq = rel + seg_len;
        }
        if rst {
            ep.rst_cnt += 1;
        }

        let mut rel_ack: Option<i64> = None;
        if ackf {
            if peer.state == State::Inactive {
                peer.init_seqs(seg.ack.wrapping_sub(1), seg.ack.wrapping_sub(1));
                rel_ack = Some(1);
            } else {
                let r = peer.relative(seg.ack, peer.ack_seq, peer.ack_wraps);
                match r {
                    None => rel_ack = Some(0),
                    Some(r) => {
                        rel_ack = Some(r);
                        if !rst {
                            let d = seq_delta(seg.ack, peer.ack_seq);
                            if !(seg.ack == 0 && d > MAX_SEQ_JUMP) && d > 0 {
                                if seg.ack < peer.ack_seq {
                                    peer.ack_wraps += 1;
                                }
                                peer.ack_seq = seg.ack;
                            }
                        }
                    }
                }
            }
        }

        // last_seq.
        {
            let (ep, _) = self.eps(is_orig);
            let d = seq_delta(end_seq, ep.last_seq);
            if (syn || rst) && !(-MAX_SEQ_JUMP..=MAX_SEQ_JUMP).contains(&d) {
                // distrusted
            } else if fin && ep.last_seq as i64 == ((ep.start_seq + 1) & 0xffff_ffff) {
                ep.last_seq = end_seq;
            } else if ep.state == State::Reset {
                // sequence numbers after a RST are not trusted
            } else if d > 0 {
                if end_seq < ep.last_seq {
                    ep.seq_wraps += 1;
                }
                ep.last_seq = end_seq;
            } else if len > 0 && ep.rxmt.hit() {
                hist.add(is_orig, Letter::T);
            }
        }

        // State machine.
        let was_handshake = in_handshake(self.orig.state) && in_handshake(self.resp.state);
        let (do_close, gen_event) = self.state_machine(is_orig, seg, hist, &mut fx);
        if was_handshake && !(in_handshake(self.orig.state) && in_handshake(self.resp.state)) {
            fx.handshake_done = true;
        }

        // The flip happened inside the state machine: "is_orig" now names the
        // other endpoint. Work with the sender's endpoint from here on.
        let sender_is_orig = if fx.flip { !is_orig } else { is_orig };

        if let Some(a) = rel_ack {
            self.ack_received(!sender_is_orig, a, hist, deliver);
        }
        if len > 0 && !rst && !underflow {
            let start = (rel + syn as i64).max(0) as u64;
            let captured = seg.payload.len() as u32 >= len;
            let payload = &seg.payload[..(len as usize).min(seg.payload.len())];
            self.data_sent(
                sender_is_orig,
                start,
                len as u64,
                if captured { Some(payload) } else { None },
                deliver,
            );
        }
        if do_close {
            let (ep, _) = self.eps(sender_is_orig);
            ep.close_pending = true;
            ep.close_gen_event = gen_event;
        }
        self.check_eof(sender_is_orig, &mut fx);
        self.check_eof(!sender_is_orig, &mut fx);
        fx
    }

    fn state_machine(
        &mut self,
        is_orig: bool,
        seg: &Segment<'_>,
        hist: &mut History,
        fx: &mut Effects,
    ) -> (bool, bool) {
        let syn = seg.has(SYN);
        let fin = seg.has(FIN);
        let rst = seg.has(RST);
        let ackf = seg.has(ACK);
        let len = seg.len;
        let mut do_close = false;
        let mut gen_event = false;
        let (ep, peer) = self.eps(is_orig);
        match ep.state {
            State::Inactive => {
                if syn {
                    if is_orig {
                        if ackf {
                            ep.set_state(State::SynAckSent);
                        } else {
                            ep.set_state(State::SynSent);
                        }
                        fx.attempt_timer = true;
                    } else {
                        if !ackf && peer.state == State::SynAckSent {
                            // SYN and SYN-ACK were seen in reverse order.
                            fx.flip = true;
                            peer.set_state(State::Established);
                        } else if peer.state == State::SynSent {
                            peer.set_state(State::Established);
                        }
                        ep.set_state(State::Established);
                    }
                }
                if fin {
                    ep.set_state(State::Closed);
                    do_close = true;
                    gen_event = true;
                }
                if rst {
                    ep.set_state(State::Reset);
                    do_close = true;
                }
                if ep.state == State::Inactive {
                    if !is_orig && len == 0 && peer.state == State::SynSent {
                        // an ACK before the SYN-ACK: not yet partial
                    } else if ackf && peer.state == State::Established {
                        ep.set_state(State::Established);
                        self.is_partial = false;
                    } else {
                        ep.set_state(State::Partial);
                    }
                }
            }
            State::SynSent | State::SynAckSent => {
                if fin {
                    ep.set_state(State::Closed);
                    do_close = true;
                    gen_event = true;
                } else if rst {
                    ep.set_state(State::Reset);
                    do_close = true;
                }
                if syn && fin && rst {
                    // FIN handled; RST as well, per flag precedence
                    ep.set_state(State::Reset);
                }
            }
            State::Partial | State::Established => {
                if syn && !ackf && ep.state == State::Partial && peer.state == State::Inactive {
                    ep.set_state(State::SynSent);
                }
                if fin && !rst {
                    ep.set_state(State::Closed);
                    if peer.state == State::Reset && peer.prev_state == State::Closed {
                        peer.set_state(State::Closed);
                    }
                    do_close = true;
                    gen_event = true;
                }
                if rst {
                    ep.set_state(State::Reset);
                    do_close = true;
                }
            }
            State::Closed => {
                if rst && peer.state != State::Closed {
                    ep.set_state(State::Reset);
                    if !ep.did_close {
                        do_close = true;
                    }
                }
            }
            State::Reset => {}
        }
        if fx.flip {
            self.flip();
            hist.flip();
        }
        (do_close, gen_event)
    }

    fn data_sent(
        &mut self,
        is_orig: bool,
        start: u64,
        len: u64,
        payload: Option<&[u8]>,
        deliver: &mut dyn FnMut(bool, &[u8]),
    ) {
        let (ep, _) = self.eps(is_orig);
        let r = &mut ep.reasm;
        if r.delivered == 0 {
            r.delivered = 1;
        }
        if r.skip {
            return;
        }
        let Some(payload) = payload else {
            return; // snapped: never inserted, becomes a gap once acked
        };
        let end = start + len;
        if end <= r.delivered {
            return; // old data
        }
        if start <= r.delivered {
            let skip = (r.delivered - start) as usize;
            deliver(is_orig, &payload[skip.min(payload.len())..]);
            r.delivered = end;
            Self::deliver_blocks(is_orig, r, deliver);
            return;
        }
        // Above a hole: remember it.
        if r.blocks.iter().any(|b| b.start <= start && b.end >= end) {
            return;
        }
        let keep = r.content_buffered + payload.len() <= MAX_CONTENT_BUFFER;
        if keep {
            r.content_buffered += payload.len();
        }
        r.buffered += len;
        let pos = r.blocks.partition_point(|b| b.start < start);
        r.blocks.insert(
            pos,
            Block {
                start,
                end,
                data: keep.then(|| payload.to_vec()),
            },
        );
        if r.buffered > MAX_BUFFERED
            || r.blocks.len() > MAX_BLOCKS
            || (!r.any_acked && r.buffered > MAX_ABOVE_HOLE_WITHOUT_ACKS)
        {
            r.skip = true;
            r.blocks.clear();
            r.buffered = 0;
            r.content_buffered = 0;
        }
    }

    fn deliver_blocks(is_orig: bool, r: &mut Reasm, deliver: &mut dyn FnMut(bool, &[u8])) {
        while let Some(b) = r.blocks.first() {
            if b.start > r.delivered {
                break;
            }
            let b = r.blocks.remove(0);
            r.buffered = r.buffered.saturating_sub(b.end - b.start);
            if let Some(d) = &b.data {
                r.content_buffered = r.content_buffered.saturating_sub(d.len());
                if b.end > r.delivered {
                    let skip = (r.delivered - b.start) as usize;
                    deliver(is_orig, &d[skip.min(d.len())..]);
                }
            }
            r.delivered = r.delivered.max(b.end);
        }
    }

    /// The peer acknowledged `is_orig`'s data up to relative `ack`.
    fn ack_received(
        &mut self,
        is_orig: bool,
        ack: i64,
        hist: &mut History,
        deliver: &mut dyn FnMut(bool, &[u8]),
    ) {
        let clean = is_clean(&self.orig) && is_clean(&self.resp);
        let report = self.report_gaps_for_partial || clean;
        let is_partial = self.is_partial;
        let (ep, _) = self.eps(is_orig);
        let mut a = ack;
        if ep.fin_cnt > 0 && a >= ep.fin_seq {
            a = ep.fin_seq - 1;
        }
        if is_partial && a <= 2 {
            return;
        }
        let r = &mut ep.reasm;
        if r.delivered == 0 {
            r.delivered = 1;
        }
        if a <= 1 {
            return;
        }
        r.any_acked = true;
        let a = a as u64;
        if r.skip || a <= r.delivered {
            return;
        }
        // Every hole in [delivered, a) is a gap.
        let mut missed = 0u64;
        let mut at = r.delivered;
        for b in r.blocks.iter() {
            if b.start >= a {
                break;
            }
            if b.start > at {
                missed += b.start - at;
            }
            at = at.max(b.end);
        }
        if at < a {
            missed += a - at;
        }
        if missed > 0 && report {
            self.missed_bytes += missed;
            let (ep, _) = self.eps(is_orig);
            if clean && ep.gap.hit() {
                hist.add(is_orig, Letter::G);
            }
        }
        let (ep, _) = self.eps(is_orig);
        let r = &mut ep.reasm;
        // Deliver what we have below the ack, skipping the holes.
        while let Some(b) = r.blocks.first() {
            if b.start >= a {
                break;
            }
            r.delivered = r.delivered.max(b.start);
            Self::deliver_blocks(is_orig, r, deliver);
        }
        r.delivered = r.delivered.max(a);
        Self::deliver_blocks(is_orig, r, deliver);
    }

    /// Whether `is_orig`'s side still has data pending below its FIN.
    fn pending(&self, is_orig: bool) -> bool {
        let (ep, peer) = if is_orig {
            (&self.orig, &self.resp)
        } else {
            (&self.resp, &self.orig)
        };
        let r = &ep.reasm;
        if r.skip {
            return false;
        }
        let delivered = ep.start_seq + r.delivered.max(1) as i64;
        let last = ep.full_last();
        if last < delivered {
            return false;
        }
        if delivered != last - 1 && delivered != last {
            return true;
        }
        ep.state != State::Reset && !peer.reasm.blocks.is_empty()
    }

    fn check_eof(&mut self, is_orig: bool, fx: &mut Effects) {
        let (ep, _) = self.eps(is_orig);
        if !ep.close_pending {
            return;
        }
        if self.pending(is_orig) {
            return;
        }
        let (ep, peer) = self.eps(is_orig);
        ep.close_pending = false;
        if ep.did_close {
            return;
        }
        ep.did_close = true;
        let complete = ep.state == State::Reset || peer.did_close || peer.state == State::Inactive;
        if complete {
            fx.close_complete = true;
        } else {
            fx.close_partial = true;
        }
    }

    /// orig_bytes or resp_bytes.
    pub fn size(&self, is_orig: bool) -> u64 {
        let (ep, peer) = if is_orig {
            (&self.orig, &self.resp)
        } else {
            (&self.resp, &self.orig)
        };
        if ep.prev_state == State::SynSent
            && ep.state == State::Reset
            && peer.state == State::Inactive
            && !ep.no_data_acked()
        {
            return 0;
        }
        let last = ep.full_last();
        let ackd = ep.full_ack();
        let mut s = if last > ackd {
            last - ep.start_seq
        } else {
            ackd - ep.start_seq
        };
        if s > 0 {
            s -= 1;
        }
        if ep.fin_cnt > 0 && s > 0 {
            s -= 1;
        }
        s.max(0) as u64
    }

    /// Zeek's conn_state for TCP.
    pub fn conn_state(&self, history: &str) -> ConnState {
        use State::*;
        let os = self.orig.state;
        let rs = self.resp.state;
        let o_inactive = matches!(os, Inactive | Partial);
        let r_inactive = matches!(rs, Inactive | Partial);
        if rs == Reset {
            if matches!(os, SynSent | SynAckSent)
                || (os == Reset && self.size(true) == 0 && self.size(false) == 0)
            {
                ConnState::Rej
            } else if o_inactive {
                ConnState::Rstrh
            } else {
                ConnState::Rstr
            }
        } else if os == Reset {
            if r_inactive {
                if rstos0_history(history) {
                    ConnState::Rstos0
                } else {
                    ConnState::Oth
                }
            } else {
                ConnState::Rsto
            }
        } else if os == Closed && rs == Closed {
            ConnState::Sf
        } else if os == Closed {
            if r_inactive {
                ConnState::Sh
            } else {
                ConnState::S2
            }
        } else if rs == Closed {
            if o_inactive {
                ConnState::Shr
            } else {
                ConnState::S3
            }
        } else if os == SynSent && rs == Inactive {
            ConnState::S0
        } else if os == Established && rs == Established {
            ConnState::S1
        } else {
            ConnState::Oth
        }
    }

    /// Conditions of Zeek's TCP expire timer.
    pub fn expire_ok(&self) -> bool {
        let (o, r) = (&self.orig, &self.resp);
        let some_closed = o.did_close || r.did_close;
        let any_reset = o.state == State::Reset || r.state == State::Reset;
        let any_inactive = o.state == State::Inactive || r.state == State::Inactive;
        (some_closed && ((o.did_close && r.did_close) || any_reset || any_inactive))
            || (o.state == State::Inactive && r.state == State::Inactive)
    }

    /// Conditions of Zeek's attempt timer: still an unanswered SYN.
    pub fn attempt_unanswered(&self) -> bool {
        matches!(self.orig.state, State::SynSent | State::SynAckSent)
            && self.resp.state == State::Inactive
    }
}

/// /^\^?S[^HAFGIQ]*R.*/ matched against the whole history.
fn rstos0_history(h: &str) -> bool {
    let b = h.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'^') {
        i = 1;
    }
    if b.get(i) != Some(&b'S') {
        return false;
    }
    i += 1;
    while i < b.len() {
        match b[i] {
            b'R' => return true,
            b'H' | b'A' | b'F' | b'G' | b'I' | b'Q' => return false,
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rstos0_pattern() {
        assert!(rstos0_history("SR"));
        assert!(rstos0_history("^SdR"));
        assert!(
            rstos0_history("ShR"),
            "the responder's h is lower case: allowed"
        );
        assert!(!rstos0_history("SAR"));
        assert!(!rstos0_history("R"));
    }

    #[test]
    fn scaled_letters_at_powers_of_ten() {
        let mut s = Scaled::default();
        let hits: Vec<u64> = (1..=1000).filter(|_| s.hit()).collect();
        assert_eq!(hits.len(), 4);
    }
}
