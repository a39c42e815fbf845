//! The capture thread: packets from a source through the engine into
//! batches, on a plain OS thread with no async runtime (the engine is
//! synchronous and a capture must never wait for the bus).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heimdall_engine::{Engine, EngineConfig, Stats};
use heimdall_telemetry::Health;
use tracing::{error, info, warn};

use crate::metrics::CaptureMetrics;
use crate::outbox::{Batcher, Outbox};
use crate::source::{KernelStats, Next, Source};
use crate::steer::{SourceChange, Steering};

/// When packets are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Continuous,
    /// Open for `window` at the start of every `interval`, aligned to the
    /// epoch (so every sensor with the same settings opens at the same time).
    Windowed {
        interval: Duration,
        window: Duration,
    },
}

impl Schedule {
    /// `None` when open at `now`; otherwise how long until it opens.
    pub fn closed_for(&self, now: SystemTime) -> Option<Duration> {
        match *self {
            Schedule::Continuous => None,
            Schedule::Windowed { interval, window } => {
                let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
                let iv = interval.as_nanos().max(1);
                let into = Duration::from_nanos((since.as_nanos() % iv) as u64);
                (into >= window).then(|| interval - into)
            }
        }
    }

    /// How long the window open at `now` stays open (`None` when closed;
    /// forever when continuous).
    pub fn open_for(&self, now: SystemTime) -> Option<Duration> {
        match *self {
            Schedule::Continuous => Some(Duration::MAX),
            Schedule::Windowed { interval, window } => {
                let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
                let iv = interval.as_nanos().max(1);
                let into = Duration::from_nanos((since.as_nanos() % iv) as u64);
                (into < window).then(|| window - into)
            }
        }
    }

    /// Whether a packet stamped `ts_ns` falls inside a window.
    fn admits(&self, ts_ns: i64) -> bool {
        let t = UNIX_EPOCH + Duration::from_nanos(ts_ns.max(0) as u64);
        self.closed_for(t).is_none()
    }
}

/// Why the capture thread stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop (SIGTERM).
    Stopped,
    /// The last capture file was read.
    EndOfInput,
    /// The source failed and cannot be opened again (no capability kept).
    Failed(String),
}

/// Everything the capture thread owns.
pub struct Driver {
    pub source: Box<dyn Source>,
    pub engine: EngineConfig,
    pub batcher: Batcher,
    pub outbox: Arc<Outbox>,
    pub stop: Arc<AtomicBool>,
    pub schedule: Schedule,
    pub metrics: CaptureMetrics,
    pub health: Health,
    pub stats_interval: Duration,
    /// The rolling pcap archive, if configured.
    pub archive: Option<crate::archive::Archive>,
    /// True when no capability was kept: a reopen refused for lack of
    /// privileges then ends the thread (the supervisor restarts the service).
    pub reopen_without_caps_fails: bool,
    /// Enigma's capture settings as they arrive (`HEIMDALL_CAPTURE_STEERING`),
    /// with what the source runs now.
    pub steering: Option<(Receiver<Steering>, SourceChange)>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("source", &self.source.describe())
            .field("schedule", &self.schedule)
            .finish()
    }
}

/// Rows are handed to the batcher at least this often, and after this many
/// packets, so records leave promptly on a busy link and on a quiet one.
const DRAIN_PACKETS: u32 = 512;
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Between drains, the time is checked every this many packets.
const CLOCK_EVERY: u32 = 64;

impl Driver {
    /// Run until stopped, the input ends, or the source fails for good.
    /// Every connection still open is logged and queued before it returns,
    /// and the outbox is closed.
    pub fn run(mut self) -> Ended {
        let mut engine = Engine::new(self.engine.clone());
        let mut seen = Stats::default();
        let mut kernel_seen = KernelStats::default();
        let mut in_window;
        let mut since_drain = 0u32;
        let mut last_drain = Instant::now();
        let mut last_stats = Instant::now();
        let live = self.source.is_live();
        self.source.set_stop(self.stop.clone());
        if self.schedule != Schedule::Continuous && self.source.keep_schedule(self.schedule) {
            self.schedule = Schedule::Continuous;
        }
        in_window = self.schedule == Schedule::Continuous;
        if in_window {
            self.health.ready("source", self.source.describe());
        }
        let ended = loop {
            if self.stop.load(Ordering::Relaxed) {
                if self.source.drains_on_stop() && in_window {
                    self.take_queued(&mut engine);
                }
                break Ended::Stopped;
            }
            let closed = match self.schedule {
                Schedule::Continuous => None,
                windowed => windowed.closed_for(SystemTime::now()),
            };
            if let Some(wait) = closed {
                if in_window {
                    in_window = false;
                    if let Err(e) = self.source.pause() {
                        warn!(error = %e, "could not pause the capture between windows");
                    }
                    // A window is logged like a capture file: what is open ends now.
                    engine.finish();
                    self.drain(&mut engine);
                    self.batcher.flush(true, &self.outbox);
                    info!(next_in_s = wait.as_secs_f64(), "capture window closed");
                    self.health.ready(
                        "source",
                        format!("{} (between windows)", self.source.describe()),
                    );
                }
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                self.batcher.flush(false, &self.outbox);
                self.follow();
                continue;
            }
            if !in_window {
                in_window = true;
                if let Err(e) = self.source.resume() {
                    warn!(error = %e, "could not resume the capture for a window");
                }
                self.metrics.windows.inc();
                info!("capture window open");
                self.health.ready("source", self.source.describe());
            }
            match self.source.next() {
                Ok(Next::Packet(p)) => {
                    if self.schedule == Schedule::Continuous || self.schedule.admits(p.ts_ns) {
                        engine.packet(&p);
                        if let Some(a) = self.archive.as_mut() {
                            a.write(&p);
                        }
                    } else {
                        self.metrics.outside_window.inc();
                    }
                    since_drain += 1;
                }
                Ok(Next::Idle) => {
                    if live {
                        // A quiet link: the wall clock ends connections on time.
                        engine.tick(self.source.idle_clock_ns());
                    }
                    since_drain = DRAIN_PACKETS;
                }
                Ok(Next::End) => break Ended::EndOfInput,
                Err(e) => {
                    self.metrics.source_errors.inc();
                    error!(error = %e, "capture source failed; opening it again with backoff");
                    self.health.not_ready("source", e.to_string());
                    if let Some(end) = self.recover() {
                        break end;
                    }
                }
            }
            // The clock is read once per CLOCK_EVERY packets, not per packet.
            if since_drain < DRAIN_PACKETS && !since_drain.is_multiple_of(CLOCK_EVERY) {
                continue;
            }
            let now = Instant::now();
            if since_drain >= DRAIN_PACKETS || now - last_drain >= DRAIN_EVERY {
                since_drain = 0;
                last_drain = now;
                self.drain(&mut engine);
                self.batcher.flush(false, &self.outbox);
                self.count(&engine, &mut seen);
                self.follow();
            }
            if now - last_stats >= self.stats_interval {
                last_stats = now;
                self.kernel(&mut kernel_seen);
            }
        };
        engine.finish();
        self.drain(&mut engine);
        self.batcher.flush(true, &self.outbox);
        self.count(&engine, &mut seen);
        self.kernel(&mut kernel_seen);
        self.outbox.close();
        let s = engine.stats();
        info!(
            packets = s.packets,
            connections = s.connections,
            dns = s.dns_transactions,
            kernel_dropped = kernel_seen.dropped,
            interface_dropped = kernel_seen.if_dropped,
            ?ended,
            "capture stopped; every open connection was logged"
        );
        ended
    }

    /// Apply the newest of Enigma's settings that arrived, if any. The
    /// schedule takes effect at the top of the loop: a window closing now
    /// logs what is open, as any window end does.
    fn follow(&mut self) {
        let Some((rx, current)) = self.steering.as_mut() else {
            return;
        };
        let Some(next) = rx.try_iter().last() else {
            return;
        };
        if next.source != *current {
            if let Err(e) = self.source.steer(&next.source) {
                self.metrics.steering_refused.inc();
                error!(
                    version = %next.version,
                    error = %e,
                    "capture settings from Enigma not applied; the capture goes on as it was"
                );
                return;
            }
            *current = next.source.clone();
        }
        self.schedule =
            if next.schedule != Schedule::Continuous && self.source.keep_schedule(next.schedule) {
                Schedule::Continuous
            } else {
                next.schedule
            };
        if !next.ignored_interfaces.is_empty() {
            warn!(ignored = ?next.ignored_interfaces, "one capture serves one interface; run another for the others");
        }
        self.metrics.steering_applied.inc();
        info!(
            version = %next.version,
            schedule = ?next.schedule,
            interface = %next.source.interface,
            filter = %next.source.filter,
            snaplen = next.source.snaplen,
            "capture settings from Enigma applied"
        );
    }

    /// On stop: what the kernel (or a converted pktmon window) already
    /// holds is analyzed too, for at most ten seconds, so a SIGTERM right
    /// after traffic loses none of it.
    fn take_queued(&mut self, engine: &mut Engine) {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            match self.source.next() {
                Ok(Next::Packet(p)) => engine.packet(&p),
                _ => break,
            }
        }
    }

    fn drain(&mut self, engine: &mut Engine) {
        if !engine.out.observations.is_empty() {
            self.batcher.add_observations(
                &mut engine.out.observations,
                &self.metrics,
                &self.outbox,
            );
        }
        if engine.out.conns.is_empty() && engine.out.dns.is_empty() {
            return;
        }
        self.batcher.add(
            &engine.out.conns,
            &engine.out.dns,
            &self.metrics,
            &self.outbox,
        );
        engine.clear_output();
    }

    fn count(&self, engine: &Engine, seen: &mut Stats) {
        let s = engine.stats();
        let m = &self.metrics;
        m.packets.inc_by(s.packets - seen.packets);
        m.bytes.inc_by(s.bytes - seen.bytes);
        m.decode_errors.inc_by(s.decode_errors - seen.decode_errors);
        m.bad_checksums.inc_by(s.bad_checksums - seen.bad_checksums);
        m.evicted.inc_by(s.evicted - seen.evicted);
        m.active_connections.set(s.active as i64);
        *seen = s;
        m.files_dropped.inc_by(
            self.source
                .files_dropped()
                .saturating_sub(m.files_dropped.get()),
        );
        if let Some(a) = &self.archive {
            m.archive_errors
                .inc_by(a.errors.saturating_sub(m.archive_errors.get()));
            m.archive_removed
                .inc_by(a.removed.saturating_sub(m.archive_removed.get()));
        }
    }

    fn kernel(&mut self, seen: &mut KernelStats) {
        let Some(k) = self.source.kernel_stats() else {
            return;
        };
        let m = &self.metrics;
        m.kernel_received
            .inc_by(k.received.saturating_sub(seen.received));
        let dropped = k.dropped.saturating_sub(seen.dropped);
        let if_dropped = k.if_dropped.saturating_sub(seen.if_dropped);
        m.kernel_dropped.inc_by(dropped);
        m.interface_dropped.inc_by(if_dropped);
        if dropped + if_dropped > 0 {
            warn!(
                kernel_dropped = dropped,
                interface_dropped = if_dropped,
                "packets dropped before the engine saw them (raise HEIMDALL_CAPTURE_BUFFER_BYTES, \
                 or add a filter)"
            );
        }
        *seen = k;
    }

    /// Open the source again, backing off from 100 ms to 10 s. Returns
    /// `Some` when the thread should stop instead.
    fn recover(&mut self) -> Option<Ended> {
        let mut delay = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if self.stop.load(Ordering::Relaxed) {
                    return Some(Ended::Stopped);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            attempts += 1;
            match self.source.reopen() {
                Ok(()) => {
                    self.metrics.source_reopens.inc();
                    info!(attempts, source = %self.source.describe(), "capture source open again");
                    self.health.ready("source", self.source.describe());
                    return None;
                }
                Err(e) => {
                    let denied = e.to_string().contains("ermission");
                    if denied && self.reopen_without_caps_fails {
                        return Some(Ended::Failed(format!(
                            "{e}; no capability was kept to open it again \
                             (HEIMDALL_CAPTURE_KEEP_REOPEN_CAPS=false): restart the service"
                        )));
                    }
                    if attempts == 1 || attempts.is_power_of_two() {
                        warn!(attempts, error = %e, "capture source still unavailable");
                    }
                    self.health.not_ready("source", e.to_string());
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_open_at_the_start_of_each_interval() {
        let s = Schedule::Windowed {
            interval: Duration::from_secs(120),
            window: Duration::from_secs(30),
        };
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(1_800_000_000 / 120 * 120 + secs);
        assert_eq!(s.closed_for(at(0)), None);
        assert_eq!(s.closed_for(at(29)), None);
        assert_eq!(s.closed_for(at(30)), Some(Duration::from_secs(90)));
        assert_eq!(s.closed_for(at(119)), Some(Duration::from_secs(1)));
        assert_eq!(s.closed_for(at(120)), None);
        assert_eq!(Schedule::Continuous.closed_for(at(50)), None);
    }
}
