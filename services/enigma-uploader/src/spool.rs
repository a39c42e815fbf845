//! The disk spool: records are durable here before NATS hears an ack, and
//! stay until Enigma acknowledged them.
//!
//! ```text
//! spool/open/<sensor>.<log>.wal   frames appended and fsynced per NATS message
//! spool/ready/<µs>-<batch>.batch  sealed batches: compressed, written to a
//!                                 temporary name, fsynced, renamed
//! spool/quarantine/               batches Enigma refused as malformed
//! spool/recent.ids                message ids of sealed batches (a redelivered
//!                                 message already sealed is not spooled twice)
//! archive/                        uploaded batches, when archiving is on
//! ```
//!
//! A WAL frame is `magic, message id, record count, first and last ts, data
//! length, data, CRC-32`; a torn frame at the end (a crash mid-write) is
//! cut off when the WAL is read again. Sealing a WAL gives the same batch id
//! every time (a digest of its message ids), so a crash between writing the
//! batch and removing the WAL leaves one batch, not two.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"HWL1";
/// How long message ids of sealed batches are remembered.
const RECENT_FOR: Duration = Duration::from_secs(3600);

/// Which log a batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Log {
    Conn,
    Dns,
}

impl Log {
    pub fn name(self) -> &'static str {
        match self {
            Log::Conn => "conn",
            Log::Dns => "dns",
        }
    }
}

/// How payloads are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Zstd,
    Gzip,
}

/// What a sealed batch file says about its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub batch_id: String,
    pub sensor_id: String,
    pub log: Log,
    pub codec: Codec,
    pub records: u64,
    pub uncompressed: u64,
    pub first_ts_us: i64,
    pub last_ts_us: i64,
    pub created_us: i64,
    pub message_ids: Vec<String>,
}

/// A sealed batch read back.
#[derive(Debug)]
pub struct Batch {
    pub meta: BatchMeta,
    pub payload: Vec<u8>,
    pub path: PathBuf,
}

/// An open WAL: what it holds so far.
#[derive(Debug)]
struct Open {
    file: File,
    path: PathBuf,
    sensor: String,
    log: Log,
    ids: Vec<String>,
    records: u64,
    bytes: u64,
    first_ts: i64,
    last_ts: i64,
    opened: SystemTime,
}

impl Open {
    fn new(file: File, path: PathBuf, sensor: String, log: Log) -> Open {
        Open {
            file,
            path,
            sensor,
            log,
            ids: Vec::new(),
            records: 0,
            bytes: 0,
            first_ts: i64::MAX,
            last_ts: i64::MIN,
            opened: SystemTime::now(),
        }
    }

    /// Counts one frame the WAL holds.
    fn add(&mut self, id: &str, records: u32, first_ts: i64, last_ts: i64, bytes: usize) {
        self.ids.push(id.to_string());
        self.records += u64::from(records);
        self.bytes += bytes as u64;
        self.first_ts = self.first_ts.min(first_ts);
        self.last_ts = self.last_ts.max(last_ts);
    }
}

/// The spool. Not thread-safe on its own: the uploader holds it in a mutex.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    archive: Option<PathBuf>,
    codec: Codec,
    open: HashMap<(String, Log), Open>,
    recent: HashSet<String>,
    recent_order: VecDeque<(i64, String)>,
    seq: u64,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A file name part from a sensor id, reversible (hex of its bytes).
fn safe(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The sensor id back from [`safe`].
fn unsafe_name(hex: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

/// One NATS message's lines in a WAL.
#[derive(Debug, Clone, Copy)]
pub struct Lines<'a> {
    /// The message's de-duplication id.
    pub msg_id: &'a str,
    pub records: u32,
    pub first_ts: i64,
    pub last_ts: i64,
    /// The Zeek JSON lines.
    pub data: &'a [u8],
}

/// A frame read back: (message id, records, first ts, last ts, lines).
type Frame<'a> = (String, u32, i64, i64, &'a [u8]);

/// Frames of a WAL; the count of bytes that are whole frames.
fn read_frames(data: &[u8]) -> (Vec<Frame<'_>>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let rest = &data[at..];
        let Some(frame) = (|| {
            if rest.get(..4)? != MAGIC {
                return None;
            }
            let id_len = u16::from_le_bytes(rest.get(4..6)?.try_into().ok()?) as usize;
            let id = std::str::from_utf8(rest.get(6..6 + id_len)?).ok()?;
            let mut p = 6 + id_len;
            let records = u32::from_le_bytes(rest.get(p..p + 4)?.try_into().ok()?);
            let first = i64::from_le_bytes(rest.get(p + 4..p + 12)?.try_into().ok()?);
            let last = i64::from_le_bytes(rest.get(p + 12..p + 20)?.try_into().ok()?);
            let len = u32::from_le_bytes(rest.get(p + 20..p + 24)?.try_into().ok()?) as usize;
            p += 24;
            let body = rest.get(p..p + len)?;
            let crc = u32::from_le_bytes(rest.get(p + len..p + len + 4)?.try_into().ok()?);
            let mut c = flate2::Crc::new();
            c.update(&rest[..p + len]);
            (c.sum() == crc).then(|| ((id.to_string(), records, first, last, body), p + len + 4))
        })() else {
            break;
        };
        out.push(frame.0);
        at += frame.1;
    }
    (out, at)
}

impl Spool {
    /// Opens the spool under `root`, creating its folders; WALs left by a
    /// crash are sealed now.
    pub fn open(
        root: &Path,
        archive: Option<&Path>,
        codec: Codec,
    ) -> io::Result<(Spool, Vec<String>)> {
        for d in ["open", "ready", "quarantine"] {
            fs::create_dir_all(root.join(d))?;
        }
        if let Some(a) = archive {
            fs::create_dir_all(a)?;
        }
        let mut s = Spool {
            root: root.to_path_buf(),
            archive: archive.map(Path::to_path_buf),
            codec,
            open: HashMap::new(),
            recent: HashSet::new(),
            recent_order: VecDeque::new(),
            seq: 0,
        };
        s.load_recent()?;
        let mut notes = Vec::new();
        let mut wals: Vec<PathBuf> = fs::read_dir(root.join("open"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect();
        wals.sort();
        for w in wals {
            if let Some(note) = s.recover(&w)? {
                notes.push(note);
            }
        }
        // Temporary files of a batch that was never renamed are incomplete.
        for e in fs::read_dir(root.join("ready"))?.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                fs::remove_file(e.path())?;
            }
        }
        Ok((s, notes))
    }

    fn load_recent(&mut self) -> io::Result<()> {
        let path = self.root.join("recent.ids");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let oldest = now_us() - RECENT_FOR.as_micros() as i64;
        for line in text.lines() {
            if let Some((ts, id)) = line.split_once(' ')
                && let Ok(ts) = ts.parse::<i64>()
                && ts >= oldest
                && self.recent.insert(id.to_string())
            {
                self.recent_order.push_back((ts, id.to_string()));
            }
        }
        // Rewritten without the expired ids.
        let mut f = File::create(self.root.join("recent.ids.tmp"))?;
        for (ts, id) in &self.recent_order {
            writeln!(f, "{ts} {id}")?;
        }
        f.sync_all()?;
        fs::rename(self.root.join("recent.ids.tmp"), &path)?;
        sync_dir(&self.root)
    }

    /// A WAL found at start: its whole frames are sealed into a batch; a
    /// torn tail is dropped (its message was never acknowledged, so NATS
    /// delivers it again).
    fn recover(&mut self, wal: &Path) -> io::Result<Option<String>> {
        let data = fs::read(wal)?;
        let (frames, whole) = read_frames(&data);
        let name = wal
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let (sensor, log) = match name.rsplit_once('.') {
            Some((s, "conn")) if unsafe_name(s).is_some() => {
                (unsafe_name(s).unwrap_or_default(), Log::Conn)
            }
            Some((s, "dns")) if unsafe_name(s).is_some() => {
                (unsafe_name(s).unwrap_or_default(), Log::Dns)
            }
            _ => {
                return Ok(Some(format!(
                    "{}: not a spool file; left alone",
                    wal.display()
                )));
            }
        };
        if frames.is_empty() {
            fs::remove_file(wal)?;
            return Ok(None);
        }
        let file = OpenOptions::new().append(true).open(wal)?;
        let mut open = Open::new(file, wal.to_path_buf(), sensor.clone(), log);
        for (id, n, first, last, body) in &frames {
            open.add(id, *n, *first, *last, body.len());
        }
        let torn = data.len() - whole;
        let key = (sensor, log);
        self.open.insert(key.clone(), open);
        let batch = self.seal(&key)?;
        Ok(Some(format!(
            "recovered {} after a restart as batch {}{}",
            wal.display(),
            batch.unwrap_or_default(),
            if torn > 0 {
                format!(" ({torn} bytes of an unfinished frame dropped)")
            } else {
                String::new()
            }
        )))
    }

    /// True when the message was spooled before (a redelivery).
    pub fn seen(&self, msg_id: &str) -> bool {
        self.recent.contains(msg_id)
            || self
                .open
                .values()
                .any(|o| o.ids.iter().any(|i| i == msg_id))
    }

    /// Appends one NATS message's lines to its WAL and makes them durable.
    /// Returns the WAL's size afterwards.
    pub fn append(&mut self, sensor: &str, log: Log, l: Lines<'_>) -> io::Result<(u64, u64)> {
        let Lines {
            msg_id,
            records,
            first_ts,
            last_ts,
            data: lines,
        } = l;
        let key = (sensor.to_string(), log);
        if !self.open.contains_key(&key) {
            let path = self
                .root
                .join("open")
                .join(format!("{}.{}.wal", safe(sensor), log.name()));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            sync_dir(&self.root.join("open"))?;
            self.open
                .insert(key.clone(), Open::new(file, path, sensor.to_string(), log));
        }
        let Some(o) = self.open.get_mut(&key) else {
            return Err(io::Error::other("WAL vanished"));
        };
        let mut frame = Vec::with_capacity(lines.len() + 64);
        frame.extend_from_slice(MAGIC);
        let id = msg_id.as_bytes();
        frame.extend_from_slice(&(id.len().min(u16::MAX as usize) as u16).to_le_bytes());
        frame.extend_from_slice(&id[..id.len().min(u16::MAX as usize)]);
        frame.extend_from_slice(&records.to_le_bytes());
        frame.extend_from_slice(&first_ts.to_le_bytes());
        frame.extend_from_slice(&last_ts.to_le_bytes());
        frame.extend_from_slice(&(lines.len() as u32).to_le_bytes());
        frame.extend_from_slice(lines);
        let mut c = flate2::Crc::new();
        c.update(&frame);
        frame.extend_from_slice(&c.sum().to_le_bytes());
        o.file.write_all(&frame)?;
        o.file.sync_data()?;
        o.add(msg_id, records, first_ts, last_ts, lines.len());
        Ok((o.records, o.bytes))
    }

    /// Open WALs due for sealing: past `max_age`, or (any age) when `all`.
    pub fn due(&self, max_age: Duration, all: bool) -> Vec<(String, Log)> {
        self.open
            .iter()
            .filter(|(_, o)| all || o.opened.elapsed().unwrap_or_default() >= max_age)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Seals the WAL of `key` into a ready batch; returns its batch id.
    pub fn seal(&mut self, key: &(String, Log)) -> io::Result<Option<String>> {
        let Some(o) = self.open.remove(key) else {
            return Ok(None);
        };
        drop(o.file);
        let data = fs::read(&o.path)?;
        let (frames, _) = read_frames(&data);
        if frames.is_empty() {
            fs::remove_file(&o.path)?;
            return Ok(None);
        }
        let mut h = Sha256::new();
        h.update(o.sensor.as_bytes());
        h.update([0]);
        h.update(o.log.name());
        for (id, ..) in &frames {
            h.update([0]);
            h.update(id.as_bytes());
        }
        let batch_id: String = h.finalize()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut plain = Vec::with_capacity(o.bytes as usize);
        for (.., body) in &frames {
            plain.extend_from_slice(body);
        }
        let payload = match self.codec {
            Codec::Zstd => zstd::bulk::compress(&plain, 3)?,
            Codec::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&plain)?;
                e.finish()?
            }
        };
        let created = now_us();
        let meta = BatchMeta {
            batch_id: batch_id.clone(),
            sensor_id: o.sensor.clone(),
            log: o.log,
            codec: self.codec,
            records: o.records,
            uncompressed: plain.len() as u64,
            first_ts_us: o.first_ts,
            last_ts_us: o.last_ts,
            created_us: created,
            message_ids: o.ids.clone(),
        };
        self.seq += 1;
        let ready = self.root.join("ready");
        // The name orders batches first in, first out.
        let name = format!("{created:020}-{:06}-{batch_id}.batch", self.seq % 1_000_000);
        let tmp = ready.join(format!("{name}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            let m = serde_json::to_vec(&meta)?;
            f.write_all(&(m.len() as u32).to_le_bytes())?;
            f.write_all(&m)?;
            f.write_all(&payload)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, ready.join(&name))?;
        sync_dir(&ready)?;
        // Remember the message ids before the WAL goes, so a redelivery of
        // one of them is recognised.
        {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.join("recent.ids"))?;
            let mut text = String::new();
            for id in &o.ids {
                text.push_str(&format!("{created} {id}\n"));
            }
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
        }
        for id in o.ids {
            if self.recent.insert(id.clone()) {
                self.recent_order.push_back((created, id));
            }
        }
        let oldest = created - RECENT_FOR.as_micros() as i64;
        while self
            .recent_order
            .front()
            .is_some_and(|(ts, _)| *ts < oldest)
        {
            if let Some((_, id)) = self.recent_order.pop_front() {
                self.recent.remove(&id);
            }
        }
        fs::remove_file(&o.path)?;
        sync_dir(&self.root.join("open"))?;
        Ok(Some(batch_id))
    }

    /// The ready batches, oldest first.
    pub fn ready(&self) -> io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.root.join("ready"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "batch"))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Where uploaded batches go (None: they are deleted).
    pub fn archive_dir(&self) -> Option<&Path> {
        self.archive.as_deref()
    }

    /// The quarantine folder.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// The ready folder.
    pub fn ready_dir(&self) -> PathBuf {
        self.root.join("ready")
    }
}

/// Reads a sealed batch file.
pub fn read_batch(path: &Path) -> io::Result<Batch> {
    let mut f = File::open(path)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a sealed batch", path.display()),
        )
    };
    let len = u32::from_le_bytes(
        data.get(..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let meta: BatchMeta = serde_json::from_slice(data.get(4..4 + len).ok_or_else(bad)?)?;
    Ok(Batch {
        meta,
        payload: data[4 + len..].to_vec(),
        path: path.to_path_buf(),
    })
}

impl Batch {
    /// Check the payload against what the batch says it holds: it
    /// decompresses to `uncompressed` bytes of `records` lines. The answer
    /// to INVALID_ARGUMENT: a batch that passes is sent once more, one that
    /// fails was damaged on disk and is quarantined.
    pub fn verify(&self) -> io::Result<()> {
        let plain = match self.meta.codec {
            Codec::Zstd => zstd::stream::decode_all(self.payload.as_slice())?,
            Codec::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(self.payload.as_slice()).read_to_end(&mut out)?;
                out
            }
        };
        let lines = plain
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
        if plain.len() as u64 != self.meta.uncompressed || lines != self.meta.records {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "batch {} holds {} bytes in {lines} lines, not the {} bytes in {} records it was sealed with",
                    self.meta.batch_id,
                    plain.len(),
                    self.meta.uncompressed,
                    self.meta.records
                ),
            ));
        }
        Ok(())
    }
}

/// Moves an uploaded batch to the archive (or deletes it).
pub fn retire(path: &Path, archive: Option<&Path>) -> io::Result<()> {
    match archive {
        Some(dir) => {
            let name = path
                .file_name()
                .ok_or_else(|| io::Error::other("no file name"))?;
            fs::rename(path, dir.join(name))?;
            sync_dir(dir)
        }
        None => fs::remove_file(path),
    }
}

/// One file removed by the retention sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    pub path: PathBuf,
    pub bytes: u64,
    pub reason: &'static str,
}

/// Removes files in `dirs` older than `keep`, then the oldest until their
/// total is within `quota` bytes. Oldest first, by modification time.
pub fn sweep(dirs: &[PathBuf], keep: Duration, quota: u64) -> io::Result<Vec<Removal>> {
    let mut files = Vec::new();
    for d in dirs {
        let Ok(rd) = fs::read_dir(d) else { continue };
        for e in rd.flatten() {
            let m = e.metadata()?;
            if m.is_file() && e.path().extension().is_none_or(|x| x != "tmp") {
                files.push((m.modified().unwrap_or(UNIX_EPOCH), m.len(), e.path()));
            }
        }
    }
    files.sort();
    let now = SystemTime::now();
    let mut removed = Vec::new();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    for (mtime, bytes, path) in files {
        let reason = if now.duration_since(mtime).unwrap_or_default() > keep {
            "age"
        } else if total > quota {
            "quota"
        } else {
            continue;
        };
        fs::remove_file(&path)?;
        total -= bytes;
        removed.push(Removal {
            path,
            bytes,
            reason,
        });
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_frame_is_cut_and_the_rest_sealed_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Spool::open(dir.path(), None, Codec::Zstd).expect("spool");
        let lines = |msg_id, records, first_ts, last_ts, data| Lines {
            msg_id,
            records,
            first_ts,
            last_ts,
            data,
        };
        let one: &[u8] = b"{\"a\":1}\n{\"a\":2}\n";
        let two: &[u8] = b"{\"a\":3}\n";
        s.append("pi-1", Log::Conn, lines("m1", 2, 10, 20, one))
            .expect("append");
        s.append("pi-1", Log::Conn, lines("m2", 1, 30, 30, two))
            .expect("append");
        assert!(s.seen("m1") && !s.seen("m3"));
        drop(s);
        // A crash in the middle of a third frame.
        let wal = dir.path().join(format!("open/{}.conn.wal", safe("pi-1")));
        let mut f = OpenOptions::new().append(true).open(&wal).expect("wal");
        f.write_all(b"HWL1\x02\x00m3\x01\x00").expect("torn");
        drop(f);
        let (s, notes) = Spool::open(dir.path(), None, Codec::Zstd).expect("reopen");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("dropped"), "{notes:?}");
        let ready = s.ready().expect("ready");
        assert_eq!(ready.len(), 1);
        let b = read_batch(&ready[0]).expect("batch");
        assert_eq!(
            (b.meta.records, b.meta.first_ts_us, b.meta.last_ts_us),
            (3, 10, 30)
        );
        assert_eq!(b.meta.message_ids, vec!["m1", "m2"]);
        let plain = zstd::bulk::decompress(&b.payload, 1 << 20).expect("zstd");
        assert_eq!(plain, b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
        b.verify().expect("the sealed batch checks out");
        let mut damaged = read_batch(&ready[0]).expect("batch");
        damaged.meta.records = 4;
        let why = damaged.verify().expect_err("records disagree").to_string();
        assert!(
            why.contains("3 lines") && why.contains("4 records"),
            "{why}"
        );
        damaged.payload.truncate(damaged.payload.len() / 2);
        assert!(
            damaged.verify().is_err(),
            "a torn payload does not decompress"
        );
        assert!(s.seen("m1") && s.seen("m2"), "sealed ids are remembered");
        // Reopened again: the ids survive, nothing is sealed twice.
        drop(s);
        let (s, notes) = Spool::open(dir.path(), None, Codec::Zstd).expect("reopen");
        assert!(notes.is_empty());
        assert!(s.seen("m2"));
        assert_eq!(s.ready().expect("ready").len(), 1);
    }

    #[test]
    fn retention_removes_old_files_then_the_oldest_over_the_quota() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let mk = |name: &str, age_s: u64, bytes: usize| {
            let p = dir.path().join(name);
            fs::write(&p, vec![0u8; bytes]).expect("write");
            File::options()
                .write(true)
                .open(&p)
                .expect("open")
                .set_modified(now - Duration::from_secs(age_s))
                .expect("mtime");
        };
        mk("a", 8 * 86_400, 10);
        mk("b", 3_000, 100);
        mk("c", 2_000, 100);
        mk("d", 1_000, 100);
        let removed = sweep(
            &[dir.path().to_path_buf()],
            Duration::from_secs(7 * 86_400),
            150,
        )
        .expect("sweep");
        let names: Vec<_> = removed
            .iter()
            .map(|r| {
                (
                    r.path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("")
                        .to_string(),
                    r.reason,
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("a".into(), "age"),
                ("b".into(), "quota"),
                ("c".into(), "quota")
            ]
        );
        assert!(dir.path().join("d").exists());
    }
}
