//! The tcpdump backend, for hosts where the operator wants tcpdump itself
//! to hold the capture.
//!
//! tcpdump writes rotated files (`-G`, one file per rotation period, named
//! by their start time) into a work folder and drops its own privileges to
//! `-Z user` once the interface is open. A file is closed when the next one
//! appears; closed files are read in order, like capture files, and removed.
//! If tcpdump exits (the interface vanished, someone killed it), what it
//! wrote is read, the exit and its last words are logged and counted, and it
//! is started again with backoff by the driver's reopen path. On stop,
//! tcpdump gets SIGTERM (it flushes and closes its file) and every file is
//! read before the service finishes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use crate::source::{self, KernelStats, Next, Source, Spooled};

/// How tcpdump is run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The tcpdump program (`tcpdump`, found on PATH).
    pub program: PathBuf,
    pub interface: String,
    pub snaplen: u32,
    pub promisc: bool,
    pub buffer_bytes: u32,
    pub filter: String,
    /// Folder tcpdump writes into; made (and handed to `user`) if needed.
    pub dir: PathBuf,
    /// How long each file covers (`-G`).
    pub rotate: Duration,
    /// The user tcpdump switches to after opening the interface (`-Z`).
    pub user: String,
}

const PREFIX: &str = "heimdall-tcpdump-";

/// Closed files waiting beyond this many (the engine cannot keep up, or the
/// service was stopped while tcpdump ran on): the oldest are removed,
/// counted and logged, so tcpdump never fills the disk.
pub const MAX_BACKLOG: usize = 256;

impl Options {
    /// tcpdump's arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "-i".into(),
            self.interface.clone(),
            "-n".into(),
            // Packet-buffered: a rotated file holds every packet up to it.
            "-U".into(),
            "-s".into(),
            self.snaplen.to_string(),
            "-B".into(),
            (self.buffer_bytes / 1024).max(1).to_string(),
            "-G".into(),
            self.rotate.as_secs().max(1).to_string(),
            "-w".into(),
            self.dir
                .join(format!("{PREFIX}%s.pcap"))
                .display()
                .to_string(),
        ];
        if !self.promisc {
            a.push("-p".into());
        }
        if !self.user.is_empty() {
            a.extend(["-Z".into(), self.user.clone()]);
        }
        if !self.filter.is_empty() {
            a.push(self.filter.clone());
        }
        a
    }
}

/// Packets from tcpdump's rotated files.
#[derive(Debug)]
pub struct TcpdumpSource {
    opts: Options,
    child: Option<Child>,
    file: Spooled,
    stop: Arc<AtomicBool>,
    stopping: bool,
    /// Why tcpdump last exited, waiting to be reported by `next`.
    exited: Option<String>,
    /// Files removed unread because the backlog was over [`MAX_BACKLOG`].
    pub files_dropped: u64,
}

fn sys_err(what: &str, e: impl std::fmt::Display) -> source::Error {
    source::Error::Read {
        interface: "tcpdump".into(),
        message: format!("{what}: {e}"),
    }
}

impl TcpdumpSource {
    /// Make the folder and start tcpdump.
    pub fn start(opts: Options) -> Result<Self, source::Error> {
        std::fs::create_dir_all(&opts.dir).map_err(|e| source::Error::Open {
            interface: opts.interface.clone(),
            message: format!("cannot make {}: {e}", opts.dir.display()),
        })?;
        hand_over(&opts.dir, &opts.user)?;
        let mut s = TcpdumpSource {
            opts,
            child: None,
            file: Spooled::default(),
            stop: Arc::default(),
            stopping: false,
            exited: None,
            files_dropped: 0,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<(), source::Error> {
        let child = Command::new(&self.opts.program)
            .args(self.opts.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| source::Error::Open {
                interface: self.opts.interface.clone(),
                message: format!("cannot run {}: {e}", self.opts.program.display()),
            })?;
        info!(pid = child.id(), args = ?self.opts.args(), "tcpdump started");
        self.child = Some(child);
        Ok(())
    }

    /// tcpdump's files, oldest first.
    fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.opts.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".pcap"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Notice an exit of tcpdump; its last stderr line, if it exited.
    fn reap(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                self.child = None;
                let last = err
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .to_string();
                Some(format!("tcpdump exited ({status}): {last}"))
            }
            _ => None,
        }
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            #[cfg(unix)]
            {
                use nix::sys::signal::{Signal, kill};
                use nix::unistd::Pid;
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
                for _ in 0..100 {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// When a file's period began, from its name (`heimdall-tcpdump-<secs>.pcap`).
fn started(p: &Path) -> Option<Duration> {
    let name = p.file_name()?.to_str()?;
    let secs = name
        .strip_prefix(PREFIX)?
        .strip_suffix(".pcap")?
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// Give the folder to tcpdump's user, who writes into it after `-Z`.
#[cfg(unix)]
fn hand_over(dir: &Path, user: &str) -> Result<(), source::Error> {
    if user.is_empty() || !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let u = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| sys_err("tcpdump user", format!("{user:?} does not exist")))?;
    std::os::unix::fs::chown(dir, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
        .map_err(|e| sys_err(&format!("cannot give {} to {user}", dir.display()), e))
}

#[cfg(not(unix))]
fn hand_over(_dir: &Path, _user: &str) -> Result<(), source::Error> {
    Ok(())
}

impl Source for TcpdumpSource {
    fn next(&mut self) -> Result<Next<'_>, source::Error> {
        if !self.stopping && self.stop.load(Ordering::Relaxed) {
            // tcpdump closes its file on SIGTERM; then every file is closed.
            self.stopping = true;
            self.terminate();
        }
        if !self.file.is_open() {
            if self.exited.is_none() {
                self.exited = self.reap();
            }
            let mut files = self.files();
            if files.len() > MAX_BACKLOG {
                let excess = files.len() - MAX_BACKLOG;
                for old in files.drain(..excess) {
                    let _ = std::fs::remove_file(&old);
                    self.files_dropped += 1;
                    warn!(file = %old.display(), "tcpdump backlog over {MAX_BACKLOG} files: oldest removed unread");
                }
            }
            // While tcpdump runs, its newest file may still be written to,
            // until its period is over: tcpdump checks the period before it
            // writes a packet and starts a new file if it is (and on a quiet
            // link it starts none, so the age is what tells).
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let over = |p: &Path| {
                started(p).is_some_and(|t| t + self.opts.rotate + Duration::from_secs(1) < now)
            };
            let closed = match files.last() {
                Some(last) if self.child.is_some() && !over(last) => files.len() - 1,
                _ => files.len(),
            };
            match files.into_iter().take(closed).next() {
                Some(path) => self.file.open(path)?,
                None => {
                    if let Some(why) = self.exited.take() {
                        if !self.stopping {
                            return Err(sys_err("capture stopped", why));
                        }
                        return Ok(Next::End);
                    }
                    if self.stopping {
                        return Ok(Next::End);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    return Ok(Next::Idle);
                }
            }
        }
        if !self.file.advance() {
            if self.stopping {
                // Stopping: straight on to the next file, so the driver's
                // final read takes all of them.
                return self.next();
            }
            return Ok(Next::Idle);
        }
        Ok(self.file.next())
    }

    fn kernel_stats(&mut self) -> Option<KernelStats> {
        None
    }

    /// Start tcpdump again (after it exited).
    fn reopen(&mut self) -> Result<(), source::Error> {
        if self.child.is_none() {
            self.spawn()?;
        }
        Ok(())
    }

    fn pause(&mut self) -> Result<(), source::Error> {
        Ok(())
    }

    fn resume(&mut self) -> Result<(), source::Error> {
        Ok(())
    }

    fn is_live(&self) -> bool {
        true
    }

    fn files_dropped(&self) -> u64 {
        self.files_dropped
    }

    /// Packets arrive a rotation period (and a poll) after they were seen.
    fn clock_lag(&self) -> Duration {
        self.opts.rotate + Duration::from_secs(2)
    }

    fn drains_on_stop(&self) -> bool {
        true
    }

    fn set_stop(&mut self, stop: Arc<AtomicBool>) {
        self.stop = stop;
    }

    fn describe(&self) -> String {
        format!("tcpdump on {}", self.opts.interface)
    }
}

impl Drop for TcpdumpSource {
    fn drop(&mut self) {
        self.terminate();
    }
}
