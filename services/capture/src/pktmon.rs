//! Windows capture through pktmon, the packet monitor built into Windows
//! 10 (2004) and later, as the Enigma plan names it.
//!
//! One capture window is: clear pktmon's filters, add the configured ones,
//! `pktmon start --capture` into an ETL file, wait the window, `pktmon
//! stop`, `pktmon etl2pcap` to pcapng, remove the ETL file. The pcapng file
//! is then read like any capture file and removed. [`PktmonSource`] repeats
//! windows back to back (continuous) or on the schedule's windows.
//!
//! Everything here is platform-neutral and runs commands through
//! [`CommandRunner`], so the orchestration (arguments, files, errors,
//! clean-up) is tested on Linux against a stand-in program that behaves
//! like pktmon. Only the program's location differs on Windows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use crate::source::{self, KernelStats, Next, Source, Spooled};

/// Where pktmon lives: the one Windows-only fact here. By full path, so a
/// `pktmon.exe` earlier on PATH is never run with the service's rights.
#[cfg(windows)]
pub const DEFAULT_PROGRAM: &str = r"C:\Windows\System32\PktMon.exe";
/// Elsewhere there is no pktmon; tests name a stand-in.
#[cfg(not(windows))]
pub const DEFAULT_PROGRAM: &str = "pktmon";

/// What a command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` if it was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs programs. The system runner spawns them; tests may run anything.
pub trait CommandRunner: Send {
    fn run(&mut self, program: &Path, args: &[String]) -> std::io::Result<Output>;
}

/// Runs programs with `std::process::Command`, waiting for each.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&mut self, program: &Path, args: &[String]) -> std::io::Result<Output> {
        let out = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// One pktmon packet filter (`pktmon filter add`). Unset parts match all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Transport protocol: TCP, UDP, ICMP, ICMPv6...
    pub transport: Option<String>,
    /// An IP address (either end).
    pub ip: Option<String>,
    /// A port (either end).
    pub port: Option<u16>,
}

impl Filter {
    /// Parses `tcp`, `udp/53`, `tcp/443@192.168.1.10`, `@10.0.0.1`, `/123`.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let (rest, ip) = match text.split_once('@') {
            Some((r, ip)) => (r, Some(ip.trim().to_string())),
            None => (text, None),
        };
        let (transport, port) = match rest.split_once('/') {
            Some((t, p)) => (
                t,
                Some(
                    p.trim()
                        .parse::<u16>()
                        .map_err(|_| format!("{text:?}: {p:?} is not a port"))?,
                ),
            ),
            None => (rest, None),
        };
        let transport = transport.trim();
        if !transport.is_empty() && !transport.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("{text:?}: {transport:?} is not a protocol name"));
        }
        if let Some(ip) = &ip
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            return Err(format!("{text:?}: {ip:?} is not an IP address"));
        }
        Ok(Filter {
            transport: (!transport.is_empty()).then(|| transport.to_ascii_uppercase()),
            ip,
            port,
        })
    }
}

/// How pktmon is driven.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pktmon program (`pktmon`, found on PATH, on Windows).
    pub program: PathBuf,
    /// Where ETL and pcapng files are written while a window is converted.
    pub work_dir: PathBuf,
    /// Filters; none captures everything.
    pub filters: Vec<Filter>,
    /// Bytes kept per packet (pktmon's default is 128; 0 keeps all).
    pub packet_size: u32,
    /// ETL size bound in MB for one window.
    pub file_size_mb: u32,
    /// How long each capture window lasts.
    pub window: Duration,
}

/// What went wrong with pktmon, with the step and what it said.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {program}: {source}{hint}")]
    Spawn {
        program: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("`pktmon {step}` failed (exit {code}): {message}{hint}")]
    Failed {
        step: String,
        code: String,
        message: String,
        hint: &'static str,
    },
    #[error("`pktmon etl2pcap` reported success but wrote no {0}")]
    NoOutput(PathBuf),
    #[error("work folder {path}: {source}")]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Drives pktmon through a [`CommandRunner`].
#[derive(Debug)]
pub struct Pktmon<R> {
    runner: R,
    opts: Options,
    seq: u64,
}

impl<R: CommandRunner> Pktmon<R> {
    pub fn new(runner: R, opts: Options) -> Result<Self, Error> {
        std::fs::create_dir_all(&opts.work_dir).map_err(|source| Error::WorkDir {
            path: opts.work_dir.clone(),
            source,
        })?;
        Ok(Pktmon {
            runner,
            opts,
            seq: 0,
        })
    }

    fn pktmon(&mut self, args: Vec<String>) -> Result<Output, Error> {
        let program = self.opts.program.clone();
        let out = self
            .runner
            .run(&program, &args)
            .map_err(|source| Error::Spawn {
                program: program.display().to_string(),
                hint: if source.kind() == std::io::ErrorKind::NotFound {
                    " (pktmon ships with Windows 10 2004 and later)"
                } else {
                    ""
                },
                source,
            })?;
        if out.code == Some(0) {
            return Ok(out);
        }
        let said = if out.stderr.trim().is_empty() {
            out.stdout.trim()
        } else {
            out.stderr.trim()
        };
        let denied = said.to_ascii_lowercase().contains("access is denied");
        Err(Error::Failed {
            step: match args.as_slice() {
                [first, second, ..] if first == "filter" => format!("{first} {second}"),
                [first, ..] => first.clone(),
                [] => String::new(),
            },
            code: out
                .code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "by signal".into()),
            message: said.lines().last().unwrap_or("").to_string(),
            hint: if denied {
                " (pktmon needs an administrator account: run the service as LocalSystem)"
            } else {
                ""
            },
        })
    }

    fn remove(path: &Path) {
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(file = %path.display(), error = %e, "could not remove a pktmon work file");
        }
    }

    /// One capture window; the pcapng file it produced (the caller reads
    /// and removes it). `wait` sleeps through the window (and may return
    /// early, e.g. on shutdown). pktmon is always stopped and the ETL file
    /// always removed, whatever fails.
    pub fn capture_window(&mut self, wait: impl FnOnce(Duration)) -> Result<PathBuf, Error> {
        self.seq += 1;
        let etl = self
            .opts
            .work_dir
            .join(format!("heimdall-{}.etl", self.seq));
        let pcapng = self
            .opts
            .work_dir
            .join(format!("heimdall-{}.pcapng", self.seq));
        Self::remove(&etl);
        Self::remove(&pcapng);

        self.pktmon(vec!["filter".into(), "remove".into()])?;
        for (i, f) in self.opts.filters.clone().iter().enumerate() {
            let mut args = vec!["filter".into(), "add".into(), format!("heimdall-{i}")];
            if let Some(t) = &f.transport {
                args.extend(["-t".into(), t.clone()]);
            }
            if let Some(ip) = &f.ip {
                args.extend(["-i".into(), ip.clone()]);
            }
            if let Some(p) = f.port {
                args.extend(["-p".into(), p.to_string()]);
            }
            self.pktmon(args)?;
        }
        self.pktmon(vec![
            "start".into(),
            "--capture".into(),
            "--comp".into(),
            "nics".into(),
            "--pkt-size".into(),
            self.opts.packet_size.to_string(),
            "--file-name".into(),
            etl.display().to_string(),
            "--file-size".into(),
            self.opts.file_size_mb.to_string(),
        ])?;
        wait(self.opts.window);
        let stopped = self.pktmon(vec!["stop".into()]);
        let converted = stopped.and_then(|_| {
            self.pktmon(vec![
                "etl2pcap".into(),
                etl.display().to_string(),
                "--out".into(),
                pcapng.display().to_string(),
            ])
        });
        Self::remove(&etl);
        converted?;
        if !pcapng.is_file() {
            return Err(Error::NoOutput(pcapng));
        }
        Ok(pcapng)
    }

    /// Stop a capture left running (by a crash of an earlier run). Errors
    /// are ignored: pktmon says "not running" when there is none.
    pub fn stop_leftover(&mut self) {
        let _ = self.pktmon(vec!["stop".into()]);
    }
}

/// Capture windows from pktmon, one after another, as a packet source.
pub struct PktmonSource<R> {
    pktmon: Pktmon<R>,
    window: Spooled,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    schedule: crate::driver::Schedule,
}

impl<R> std::fmt::Debug for PktmonSource<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PktmonSource").finish_non_exhaustive()
    }
}

impl<R: CommandRunner> PktmonSource<R> {
    pub fn new(mut pktmon: Pktmon<R>) -> Self {
        pktmon.stop_leftover();
        PktmonSource {
            pktmon,
            window: Spooled::default(),
            stop: Default::default(),
            schedule: crate::driver::Schedule::Continuous,
        }
    }
}

impl<R: CommandRunner> Source for PktmonSource<R> {
    fn next(&mut self) -> Result<Next<'_>, source::Error> {
        if !self.window.is_open() {
            // Windowed: wait for a window, and capture until it closes.
            let Some(open) = self.schedule.open_for(std::time::SystemTime::now()) else {
                std::thread::sleep(Duration::from_millis(50));
                return Ok(Next::Idle);
            };
            let stop = self.stop.clone();
            let window = self.pktmon.capture_window(|d| {
                let until = std::time::Instant::now() + d.min(open);
                while std::time::Instant::now() < until
                    && !stop.load(std::sync::atomic::Ordering::Relaxed)
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let path = window.map_err(|e| source::Error::Read {
                interface: "pktmon".into(),
                message: e.to_string(),
            })?;
            info!(file = %path.display(), "pktmon window converted");
            self.window.open(path)?;
        }
        if !self.window.advance() {
            return Ok(Next::Idle);
        }
        Ok(self.window.next())
    }

    fn set_stop(&mut self, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.stop = stop;
    }

    fn keep_schedule(&mut self, schedule: crate::driver::Schedule) -> bool {
        self.schedule = schedule;
        true
    }

    fn kernel_stats(&mut self) -> Option<KernelStats> {
        None
    }

    fn reopen(&mut self) -> Result<(), source::Error> {
        self.window.close();
        self.pktmon.stop_leftover();
        Ok(())
    }

    /// Never called: the pktmon source keeps the schedule itself.
    fn pause(&mut self) -> Result<(), source::Error> {
        Ok(())
    }

    fn resume(&mut self) -> Result<(), source::Error> {
        Ok(())
    }

    fn is_live(&self) -> bool {
        false
    }

    fn drains_on_stop(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "pktmon".into()
    }
}
