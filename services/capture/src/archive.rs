//! The optional rolling pcap archive: every analyzed frame is also written
//! to pcap files (nanosecond timestamps, lengths on the wire kept) that
//! rotate by size and by time. Files older than the retention period go,
//! then the oldest go until the folder is within its quota; every removal
//! is logged with its reason. A write error (a full disk) is logged and
//! counted, the file is closed, and archiving resumes with the next file;
//! it never stops the capture.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use heimdall_engine::Packet;
use heimdall_engine::reader::PcapWriter;
use tracing::{info, warn};

/// Archive settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    /// Start a new file past this size.
    pub file_bytes: u64,
    /// Start a new file after this long.
    pub rotate: Duration,
    /// Remove files older than this.
    pub keep: Duration,
    /// Keep the folder's archive files within this many bytes.
    pub quota_bytes: u64,
    /// Names files `<sensor>-<time>.pcap`.
    pub sensor: String,
    pub snaplen: u32,
}

struct Open {
    writer: PcapWriter<BufWriter<File>>,
    path: PathBuf,
    linktype: u16,
    bytes: u64,
    since: Instant,
}

/// The archive writer, owned by the capture thread.
pub struct Archive {
    opts: Options,
    open: Option<Open>,
    seq: u64,
    /// Write errors so far (also in `capture_archive_errors_total`).
    pub errors: u64,
    /// Files removed by retention or quota so far.
    pub removed: u64,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("dir", &self.opts.dir)
            .field("errors", &self.errors)
            .finish()
    }
}

const SUFFIX: &str = ".pcap";

impl Archive {
    /// Make the folder and apply retention to what an earlier run left.
    pub fn new(opts: Options) -> std::io::Result<Self> {
        std::fs::create_dir_all(&opts.dir)?;
        let mut a = Archive {
            opts,
            open: None,
            seq: 0,
            errors: 0,
            removed: 0,
        };
        a.enforce();
        Ok(a)
    }

    fn prefix(&self) -> String {
        format!("{}-", self.opts.sensor)
    }

    /// Archive one frame.
    pub fn write(&mut self, p: &Packet<'_>) {
        let rotate = match &self.open {
            Some(o) => {
                o.linktype != p.linktype
                    || o.bytes >= self.opts.file_bytes
                    || o.since.elapsed() >= self.opts.rotate
            }
            None => true,
        };
        if rotate {
            self.close();
            self.enforce();
            if let Err(e) = self.start(p.linktype) {
                self.fail("cannot start an archive file", &e);
                return;
            }
        }
        let result = match self.open.as_mut() {
            Some(o) => o.writer.write_packet(p).map(|n| o.bytes += n as u64),
            None => return,
        };
        if let Err(e) = result {
            self.fail("archive write failed; this file ends here", &e);
            self.open = None;
        }
    }

    fn fail(&mut self, what: &str, e: &std::io::Error) {
        self.errors += 1;
        if self.errors == 1 || self.errors.is_power_of_two() {
            warn!(dir = %self.opts.dir.display(), error = %e, errors = self.errors, "{what}");
        }
    }

    fn start(&mut self, linktype: u16) -> std::io::Result<()> {
        self.seq += 1;
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let path = self.opts.dir.join(format!(
            "{}{secs}-{:04}{SUFFIX}",
            self.prefix(),
            self.seq % 10_000
        ));
        let file = File::create(&path)?;
        let writer = PcapWriter::with_nanos(BufWriter::new(file), linktype, self.opts.snaplen)?;
        self.open = Some(Open {
            writer,
            path,
            linktype,
            bytes: 24,
            since: Instant::now(),
        });
        Ok(())
    }

    /// Close the current file (at rotation and at the end).
    pub fn close(&mut self) {
        if let Some(o) = self.open.take()
            && let Err(e) = o.writer.finish()
        {
            let path = o.path.display().to_string();
            self.fail(&format!("closing {path} failed"), &e);
        }
    }

    /// Retention, then quota: oldest first, each removal logged.
    pub fn enforce(&mut self) {
        let current = self.open.as_ref().map(|o| o.path.clone());
        let mut files: Vec<(PathBuf, SystemTime, u64)> = std::fs::read_dir(&self.opts.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.starts_with(&self.prefix()) && n.ends_with(SUFFIX))
                    })
                    .filter_map(|e| {
                        let m = e.metadata().ok()?;
                        Some((e.path(), m.modified().ok()?, m.len()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort_by_key(|(p, t, _)| (*t, p.clone()));
        let now = SystemTime::now();
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        for (path, modified, len) in files {
            if Some(&path) == current.as_ref() {
                continue;
            }
            let age = now.duration_since(modified).unwrap_or_default();
            let reason = if age > self.opts.keep {
                format!(
                    "older than {}",
                    heimdall_config::duration::format(&self.opts.keep)
                )
            } else if total > self.opts.quota_bytes {
                format!("archive over its quota of {} bytes", self.opts.quota_bytes)
            } else {
                continue;
            };
            self.remove(&path, len, &reason);
            total = total.saturating_sub(len);
        }
    }

    fn remove(&mut self, path: &Path, len: u64, reason: &str) {
        match std::fs::remove_file(path) {
            Ok(()) => {
                self.removed += 1;
                info!(file = %path.display(), bytes = len, reason, "archive file removed");
            }
            Err(e) => warn!(file = %path.display(), error = %e, "could not remove an archive file"),
        }
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> Options {
        Options {
            dir: dir.to_path_buf(),
            file_bytes: 1000,
            rotate: Duration::from_secs(3600),
            keep: Duration::from_secs(7 * 86_400),
            quota_bytes: 3000,
            sensor: "pi".into(),
            snaplen: 65_535,
        }
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn files_rotate_by_size_and_stay_within_the_quota_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = Archive::new(opts(dir.path())).expect("archive");
        let frame = [0x42u8; 184]; // 200 bytes with its record header
        for i in 0..60 {
            a.write(&Packet {
                ts_ns: 1_700_000_000_000_000_000 + i * 1_000_123,
                wire_len: 1500,
                linktype: 1,
                data: &frame,
            });
        }
        a.close();
        a.enforce();
        let left = files(dir.path());
        let total: u64 = left
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(total <= 3000, "within the quota: {total}");
        assert!(a.removed >= 5, "older files went: {}", a.removed);
        // What is left is the newest data, readable, with times and wire
        // lengths as captured.
        let newest = left.last().expect("a file");
        let mut r = heimdall_engine::CaptureReader::open(newest).expect("readable");
        let mut last = None;
        while let Ok(Some(p)) = r.next_packet() {
            assert_eq!((p.wire_len, p.data.len()), (1500, 184));
            last = Some(p.ts_ns);
        }
        assert_eq!(last, Some(1_700_000_000_000_000_000 + 59 * 1_000_123));
    }

    #[test]
    fn files_past_the_retention_period_are_removed_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("pi-1600000000-0001.pcap");
        let young = dir.path().join("pi-1700000000-0002.pcap");
        let other = dir.path().join("notes.txt");
        for p in [&old, &young, &other] {
            std::fs::write(p, b"x").expect("write");
        }
        let f = File::options().write(true).open(&old).expect("open");
        f.set_modified(SystemTime::now() - Duration::from_secs(8 * 86_400))
            .expect("mtime");
        let a = Archive::new(opts(dir.path())).expect("archive");
        assert_eq!(a.removed, 1);
        assert_eq!(files(dir.path()), [other, young]);
    }
}
