//! Where packets come from: a live interface through libpcap, or capture
//! files replayed fast or at their recorded pace. Both hand the driver one
//! [`Packet`] at a time, borrowed from the source's own buffer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use heimdall_engine::{CaptureReader, Packet};
use tracing::{info, warn};

use crate::settings::Replay;

/// What a source has for the driver.
#[derive(Debug)]
pub enum Next<'a> {
    /// One frame.
    Packet(Packet<'a>),
    /// Nothing arrived within the poll interval; the driver advances timers.
    Idle,
    /// The source has nothing more (the last file was read).
    End,
}

/// Why a source stopped delivering.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libpcap refused to open the interface. The message is libpcap's, with
    /// the interface name; lack of privileges shows here.
    #[error("cannot capture on {interface}: {message}")]
    Open { interface: String, message: String },
    /// The BPF filter does not compile.
    #[error("capture filter {filter:?} does not compile: {message}")]
    Filter { filter: String, message: String },
    /// Reading failed: the interface went down or away.
    #[error("capture on {interface} failed: {message}")]
    Read { interface: String, message: String },
    /// A source that cannot change how it captures while it runs.
    #[error("{0}")]
    Steer(String),
    /// No capture file to read.
    #[error("no capture files in {0}")]
    NoFiles(PathBuf),
}

/// Counters a live source reads from the kernel.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the kernel handed to the capture (after the filter).
    pub received: u64,
    /// Packets dropped because the capture buffer was full.
    pub dropped: u64,
    /// Packets the interface or its driver dropped.
    pub if_dropped: u64,
}

/// A packet source the driver pulls from.
pub trait Source: Send {
    /// The next frame, `Idle` after the poll interval, or `End`.
    fn next(&mut self) -> Result<Next<'_>, Error>;
    /// Kernel counters since the source was created (live sources).
    fn kernel_stats(&mut self) -> Option<KernelStats>;
    /// Open again after a read error. Live sources only; files say no.
    fn reopen(&mut self) -> Result<(), Error>;
    /// Stop taking packets until [`Source::resume`] (windowed schedule).
    fn pause(&mut self) -> Result<(), Error>;
    /// Take packets again.
    fn resume(&mut self) -> Result<(), Error>;
    /// True for an interface: the wall clock drives idle timers.
    fn is_live(&self) -> bool;
    /// Capture files removed unread because too many waited (tcpdump).
    fn files_dropped(&self) -> u64 {
        0
    }
    /// How far behind the wall clock packets arrive (a source that hands
    /// over files after they close). Idle ticks keep this far back, so no
    /// connection ends before its late packets are read.
    fn clock_lag(&self) -> Duration {
        Duration::ZERO
    }
    /// Where the engine's clock may move while nothing arrives: the wall
    /// clock, held back by [`Source::clock_lag`].
    fn idle_clock_ns(&self) -> i64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        wall.saturating_sub(self.clock_lag()).as_nanos() as i64
    }
    /// On stop, read what the source already holds (a kernel buffer, a
    /// converted window) before finishing. Files are simply left unread.
    fn drains_on_stop(&self) -> bool {
        self.is_live()
    }
    /// For logs: `interface eth0`, `files /data/x.pcap`.
    fn describe(&self) -> String;
    /// The driver's stop flag, for sources that wait long inside `next`.
    fn set_stop(&mut self, _stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {}
    /// Take over a windowed schedule (sources that capture in windows of
    /// their own and hand the packets over later, like pktmon). True if the
    /// source keeps it; the driver then runs continuously.
    fn keep_schedule(&mut self, _schedule: crate::driver::Schedule) -> bool {
        false
    }
    /// Capture on `to.interface` with `to.filter` and `to.snaplen` from now
    /// on (Enigma's settings, see [`crate::steer`]). On an error nothing
    /// changed. Sources that take these only from their own settings say so.
    fn steer(&mut self, _to: &crate::steer::SourceChange) -> Result<(), Error> {
        Err(Error::Steer(format!(
            "{} takes its interface, filter and snap length only from its own settings",
            self.describe()
        )))
    }
}

/// How a live capture is opened.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub interface: String,
    pub snaplen: u32,
    pub promisc: bool,
    pub immediate: bool,
    pub buffer_bytes: u32,
    pub filter: String,
    /// How long a read waits before the driver gets `Idle`.
    pub poll: Duration,
}

/// How far behind the wall clock the engine's idle ticks stay on a live
/// interface. Frames reach the engine up to a kernel block (100 ms) plus a
/// poll late, more on a loaded machine; the engine's clock never goes back,
/// so a tick ahead of a frame still in the ring would stamp that frame with
/// the tick's time (a connection's duration would read 0 and Zeek's rules
/// would then unset its byte counts). Two seconds covers a loaded machine;
/// connections end at most that much later than their timeout.
pub const LIVE_CLOCK_LAG: Duration = Duration::from_secs(2);

/// A filter no frame passes: installed while a windowed schedule is closed,
/// so the kernel discards packets instead of queueing them.
const NOTHING: &str = "less 1";

/// Live capture through libpcap.
pub struct LiveSource {
    opts: LiveOptions,
    cap: pcap::Capture<pcap::Active>,
    linktype: u16,
    /// Counters of handles closed by a reopen, so totals never go back.
    before: KernelStats,
    last: KernelStats,
    /// The last read found nothing: wait for the handle before the next.
    quiet: bool,
    /// Between windows: the installed filter passes nothing.
    paused: bool,
}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSource")
            .field("interface", &self.opts.interface)
            .field("linktype", &self.linktype)
            .finish()
    }
}

impl LiveSource {
    /// Open the interface. Needs CAP_NET_RAW (and CAP_NET_ADMIN for
    /// promiscuous mode on some drivers), which the caller gives up after.
    pub fn open(opts: LiveOptions) -> Result<Self, Error> {
        let (cap, linktype) = open_handle(&opts)?;
        info!(
            interface = %opts.interface,
            linktype,
            snaplen = opts.snaplen,
            promisc = opts.promisc,
            buffer_bytes = opts.buffer_bytes,
            filter = %opts.filter,
            "capture handle open"
        );
        Ok(LiveSource {
            opts,
            cap,
            linktype,
            before: KernelStats::default(),
            last: KernelStats::default(),
            quiet: false,
            paused: false,
        })
    }

    /// Capture from `cap` from now on; the old handle's counters are kept
    /// so totals never go back.
    fn replace_handle(&mut self, cap: pcap::Capture<pcap::Active>, linktype: u16) {
        self.before.received += self.last.received;
        self.before.dropped += self.last.dropped;
        self.before.if_dropped += self.last.if_dropped;
        self.last = KernelStats::default();
        self.cap = cap;
        self.linktype = linktype;
    }

    fn set_filter(&mut self, filter: &str) -> Result<(), Error> {
        self.cap.filter(filter, true).map_err(|e| Error::Filter {
            filter: filter.to_string(),
            message: e.to_string(),
        })
    }
}

fn open_handle(opts: &LiveOptions) -> Result<(pcap::Capture<pcap::Active>, u16), Error> {
    let open_err = |e: pcap::Error| Error::Open {
        interface: opts.interface.clone(),
        message: e.to_string(),
    };
    let timeout_ms = opts.poll.as_millis().clamp(1, 10_000) as i32;
    let mut cap = pcap::Capture::from_device(opts.interface.as_str())
        .map_err(open_err)?
        .snaplen(opts.snaplen as i32)
        .promisc(opts.promisc)
        .immediate_mode(opts.immediate)
        .buffer_size(opts.buffer_bytes as i32)
        .precision(pcap::Precision::Nano)
        .timeout(timeout_ms)
        .open()
        .map_err(open_err)?
        // Reads never block: the driver waits in poll(2) with its own
        // timeout. libpcap's read timeout cannot be relied on for that (on
        // Linux a blocking read on a quiet link may wait indefinitely, and
        // packets can sit unread behind it).
        .setnonblock()
        .map_err(open_err)?;
    if !opts.filter.is_empty() {
        cap.filter(&opts.filter, true).map_err(|e| Error::Filter {
            filter: opts.filter.clone(),
            message: e.to_string(),
        })?;
    }
    let linktype = cap.get_datalink().0 as u16;
    Ok((cap, linktype))
}

/// Wait until the handle has packets (or an error to report), at most `d`.
#[cfg(unix)]
fn wait_readable(cap: &pcap::Capture<pcap::Active>, d: Duration) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let ms = d.as_millis().clamp(1, u128::from(u16::MAX)) as u16;
    let mut fds = [PollFd::new(cap.as_fd(), PollFlags::POLLIN)];
    // EINTR and friends: the driver simply calls again.
    let _ = poll(&mut fds, PollTimeout::from(ms));
}

#[cfg(not(unix))]
fn wait_readable(_cap: &pcap::Capture<pcap::Active>, d: Duration) {
    std::thread::sleep(d.min(Duration::from_millis(5)));
}

impl Source for LiveSource {
    fn next(&mut self) -> Result<Next<'_>, Error> {
        if self.quiet {
            self.quiet = false;
            wait_readable(&self.cap, self.opts.poll);
        }
        match self.cap.next_packet() {
            Ok(p) => {
                // Opened with nanosecond precision: tv_usec holds nanoseconds.
                // (time_t is 32 bits on some Pi systems: widen, never cut.)
                #[allow(clippy::useless_conversion)]
                let ts_ns =
                    i64::from(p.header.ts.tv_sec) * 1_000_000_000 + i64::from(p.header.ts.tv_usec);
                Ok(Next::Packet(Packet {
                    ts_ns,
                    wire_len: p.header.len,
                    linktype: self.linktype,
                    data: p.data,
                }))
            }
            Err(pcap::Error::TimeoutExpired) => {
                self.quiet = true;
                Ok(Next::Idle)
            }
            Err(e) => Err(Error::Read {
                interface: self.opts.interface.clone(),
                message: e.to_string(),
            }),
        }
    }

    fn kernel_stats(&mut self) -> Option<KernelStats> {
        if let Ok(s) = self.cap.stats() {
            self.last = KernelStats {
                received: s.received as u64,
                dropped: s.dropped as u64,
                if_dropped: s.if_dropped as u64,
            };
        }
        Some(KernelStats {
            received: self.before.received + self.last.received,
            dropped: self.before.dropped + self.last.dropped,
            if_dropped: self.before.if_dropped + self.last.if_dropped,
        })
    }

    fn reopen(&mut self) -> Result<(), Error> {
        let _ = self.kernel_stats();
        let (cap, linktype) = crate::privileges::with_capture_caps(|| open_handle(&self.opts))?;
        self.replace_handle(cap, linktype);
        Ok(())
    }

    fn pause(&mut self) -> Result<(), Error> {
        self.set_filter(NOTHING)?;
        self.paused = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), Error> {
        let filter = self.opts.filter.clone();
        self.set_filter(&filter)?;
        self.paused = false;
        Ok(())
    }

    fn steer(&mut self, to: &crate::steer::SourceChange) -> Result<(), Error> {
        let mut next = self.opts.clone();
        next.interface.clone_from(&to.interface);
        next.filter.clone_from(&to.filter);
        next.snaplen = to.snaplen;
        if next.interface == self.opts.interface && next.snaplen == self.opts.snaplen {
            // Only the filter: compile it for this link type first, so a
            // bad one changes nothing, then install it (unless between
            // windows, where resume installs it).
            let dead = pcap::Capture::dead(pcap::Linktype(i32::from(self.linktype)))
                .map_err(|e| Error::Steer(e.to_string()))?;
            if !next.filter.is_empty() {
                dead.compile(&next.filter, true)
                    .map_err(|e| Error::Filter {
                        filter: next.filter.clone(),
                        message: e.to_string(),
                    })?;
            }
            if !self.paused {
                self.set_filter(&next.filter)?;
            }
            self.opts = next;
            return Ok(());
        }
        // Another interface or snap length: a new handle, taken only once
        // it is open (with its filter) so a failure keeps the old one.
        let (cap, linktype) = crate::privileges::with_capture_caps(|| open_handle(&next))?;
        let _ = self.kernel_stats();
        self.replace_handle(cap, linktype);
        self.opts = next;
        if self.paused {
            self.set_filter(NOTHING)?;
        }
        Ok(())
    }

    fn is_live(&self) -> bool {
        true
    }

    fn clock_lag(&self) -> Duration {
        LIVE_CLOCK_LAG
    }

    fn describe(&self) -> String {
        format!("interface {}", self.opts.interface)
    }
}

/// A capture file that another program wrote for us (a pktmon window,
/// a tcpdump rotation): read through once, then removed.
#[derive(Debug, Default)]
pub struct Spooled {
    current: Option<(FileSource, PathBuf)>,
}

impl Spooled {
    /// Whether a file is being read.
    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// Start reading `path`.
    pub fn open(&mut self, path: PathBuf) -> Result<(), Error> {
        self.close();
        self.current = Some((FileSource::open(&path, Replay::Fast)?, path));
        Ok(())
    }

    /// Reads the next frame; false (and the file removed) at its end.
    pub fn advance(&mut self) -> bool {
        let more = self.current.as_mut().is_some_and(|(f, _)| f.advance());
        if !more {
            self.close();
        }
        more
    }

    /// The frame [`Spooled::advance`] read, as the source's next.
    pub fn next(&self) -> Next<'_> {
        match self.current.as_ref().and_then(|(f, _)| f.current()) {
            Some(p) => Next::Packet(p),
            None => Next::Idle,
        }
    }

    /// Stop reading and remove the file.
    pub fn close(&mut self) {
        if let Some((_, path)) = self.current.take()
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(file = %path.display(), error = %e, "could not remove a capture file after reading it");
        }
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        self.close();
    }
}

/// Capture files, one after another as one stream of packets.
#[derive(Debug)]
pub struct FileSource {
    files: Vec<PathBuf>,
    at: usize,
    reader: Option<CaptureReader>,
    replay: Replay,
    /// The frame handed out last (or waiting for its time when pacing).
    buf: Vec<u8>,
    pending: Option<(i64, u32, u16)>,
    /// First packet's time and the wall clock then, for recorded pace.
    origin: Option<(i64, Instant)>,
    /// Files that could not be read (fully), for the report.
    pub problems: u64,
    paused: bool,
}

impl FileSource {
    /// `path` is a capture file or a folder; a folder's files (not starting
    /// with `.`) are read in name order.
    pub fn open(path: &Path, replay: Replay) -> Result<Self, Error> {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|_| Error::NoFiles(path.to_path_buf()))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.'))
                })
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        if files.is_empty() {
            return Err(Error::NoFiles(path.to_path_buf()));
        }
        Ok(FileSource {
            files,
            at: 0,
            reader: None,
            replay,
            buf: Vec::with_capacity(65_536),
            pending: None,
            origin: None,
            problems: 0,
            paused: false,
        })
    }

    /// Reads the next frame (without pacing); false after the last file.
    /// [`FileSource::current`] then hands it out.
    pub fn advance(&mut self) -> bool {
        self.pending = None;
        self.fill()
    }

    /// The frame [`FileSource::advance`] read.
    pub fn current(&self) -> Option<Packet<'_>> {
        self.pending.map(|(ts_ns, wire_len, linktype)| Packet {
            ts_ns,
            wire_len,
            linktype,
            data: &self.buf,
        })
    }

    /// Reads the next frame into `buf`; false at the end of the last file.
    fn fill(&mut self) -> bool {
        loop {
            if self.reader.is_none() {
                let Some(path) = self.files.get(self.at) else {
                    return false;
                };
                self.at += 1;
                match CaptureReader::open(path) {
                    Ok(r) => {
                        info!(file = %path.display(), "reading capture file");
                        self.reader = Some(r);
                    }
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "capture file skipped");
                        self.problems += 1;
                        continue;
                    }
                }
            }
            let Some(reader) = self.reader.as_mut() else {
                continue;
            };
            match reader.next_packet() {
                Ok(Some(p)) => {
                    self.buf.clear();
                    self.buf.extend_from_slice(p.data);
                    self.pending = Some((p.ts_ns, p.wire_len, p.linktype));
                    return true;
                }
                Ok(None) => self.reader = None,
                Err(e) => {
                    let file = self.files[self.at - 1].display().to_string();
                    warn!(%file, error = %e, "capture file damaged; the rest of it is skipped");
                    self.problems += 1;
                    self.reader = None;
                }
            }
        }
    }
}

impl Source for FileSource {
    fn next(&mut self) -> Result<Next<'_>, Error> {
        if self.paused {
            std::thread::sleep(Duration::from_millis(50));
            return Ok(Next::Idle);
        }
        if self.pending.is_none() && !self.fill() {
            return Ok(Next::End);
        }
        let Some((ts_ns, wire_len, linktype)) = self.pending else {
            return Ok(Next::End);
        };
        if self.replay == Replay::Recorded {
            let (t0, wall0) = *self.origin.get_or_insert((ts_ns, Instant::now()));
            let due = wall0 + Duration::from_nanos(ts_ns.saturating_sub(t0).max(0) as u64);
            let now = Instant::now();
            if due > now {
                // Wait in short steps so a stop request is seen promptly.
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
                if Instant::now() < due {
                    return Ok(Next::Idle);
                }
            }
        }
        self.pending = None;
        Ok(Next::Packet(Packet {
            ts_ns,
            wire_len,
            linktype,
            data: &self.buf,
        }))
    }

    fn kernel_stats(&mut self) -> Option<KernelStats> {
        None
    }

    fn reopen(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn pause(&mut self) -> Result<(), Error> {
        self.paused = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), Error> {
        self.paused = false;
        Ok(())
    }

    fn is_live(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        match self.files.as_slice() {
            [one] => format!("file {}", one.display()),
            many => format!("{} files", many.len()),
        }
    }
}
