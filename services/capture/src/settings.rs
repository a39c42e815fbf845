//! `HEIMDALL_CAPTURE_*`: what to capture, how, and how records leave.

use std::time::Duration;

use heimdall_config::{Problem, Validate, check};
use heimdall_engine::ids::LocalNets;
use heimdall_engine::{Checksums, EngineConfig};
use serde::{Deserialize, Serialize};

/// The variable prefix of this section.
pub const PREFIX: &str = "HEIMDALL_CAPTURE_";

/// Where packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A network interface through libpcap (the default).
    #[default]
    Interface,
    /// A capture file, or every capture file in a folder (in name order).
    Files,
    /// Windows' pktmon: capture windows to ETL, converted to pcapng.
    Pktmon,
    /// tcpdump holds the capture and writes rotated files, read as they close.
    Tcpdump,
}

/// How fast capture files are replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Replay {
    /// As fast as the engine reads them (the default).
    #[default]
    Fast,
    /// At the pace the packets were recorded.
    Recorded,
}

/// When to capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// All the time (the default).
    #[default]
    Continuous,
    /// A window of `window` at the start of every `interval` (the Enigma
    /// plan: 30 seconds every 2 minutes). Connections still open when a
    /// window closes are logged then, as if the window were a capture file.
    Windowed,
}

/// Who else may change how the capture runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SteeringKind {
    /// Only these settings (the default).
    #[default]
    Off,
    /// Enigma's capture settings, as the enigma-uploader publishes them.
    Enigma,
}

/// Which checksums the engine verifies (see docs/decisions.md #16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumPolicy {
    /// Every checksum, as Zeek without `-C`.
    All,
    /// IPv4 headers and tunnel encapsulations; transport checksums pass
    /// (checksum offload leaves them unfinished on the capturing host).
    #[default]
    Auto,
    /// None, as Zeek's `-C`.
    None,
}

impl From<ChecksumPolicy> for Checksums {
    fn from(p: ChecksumPolicy) -> Self {
        match p {
            ChecksumPolicy::All => Checksums::All,
            ChecksumPolicy::Auto => Checksums::Auto,
            ChecksumPolicy::None => Checksums::None,
        }
    }
}

/// The capture service's own settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct CaptureSettings {
    /// `HEIMDALL_CAPTURE_SENSOR_ID`: this sensor's id, in subjects and on
    /// every record. Required; letters, digits, `-`, `_` and `.` (a host
    /// name does; in subjects a `.` becomes `_`).
    pub sensor_id: String,
    /// `HEIMDALL_CAPTURE_SOURCE`: `interface` (default) or `files`.
    pub source: SourceKind,
    /// `HEIMDALL_CAPTURE_INTERFACE`: the interface to capture on, e.g. `eth0`.
    pub interface: String,
    /// `HEIMDALL_CAPTURE_FILES`: a capture file (pcap, pcapng, gzip) or a
    /// folder of them, for `source = files`.
    pub files: String,
    /// `HEIMDALL_CAPTURE_PKTMON_PROGRAM`: the pktmon program. Default
    /// `C:\Windows\System32\PktMon.exe` on Windows, `pktmon` elsewhere
    /// (tests use a stand-in).
    pub pktmon_program: String,
    /// `HEIMDALL_CAPTURE_PKTMON_FILTERS`: pktmon filters, comma-separated, each
    /// `[protocol][/port][@ip]`, e.g. `udp/53,tcp/443@192.168.1.10`.
    /// Default none: everything.
    pub pktmon_filters: String,
    /// `HEIMDALL_CAPTURE_PKTMON_WORK_DIR`: where ETL and pcapng files are
    /// written while a window is converted (removed after). Default: a
    /// `heimdall-pktmon` folder in the system's temporary folder.
    pub pktmon_work_dir: String,
    /// `HEIMDALL_CAPTURE_TCPDUMP_PROGRAM`: the tcpdump program. Default `tcpdump`.
    pub tcpdump_program: String,
    /// `HEIMDALL_CAPTURE_TCPDUMP_DIR`: where tcpdump's rotated files wait to
    /// be read (removed after). Default: `heimdall-tcpdump` in the system's
    /// temporary folder.
    pub tcpdump_dir: String,
    /// `HEIMDALL_CAPTURE_TCPDUMP_ROTATE`: how long each file covers (`-G`);
    /// records are this much later. Default `5s`.
    #[serde(with = "heimdall_config::duration")]
    pub tcpdump_rotate: Duration,
    /// `HEIMDALL_CAPTURE_TCPDUMP_USER`: the user tcpdump switches to once
    /// the interface is open (`-Z`). Default `tcpdump`.
    pub tcpdump_user: String,
    /// `HEIMDALL_CAPTURE_ARCHIVE_DIR`: keep a rolling pcap archive of what
    /// is analyzed in this folder. Default empty: no archive.
    pub archive_dir: String,
    /// `HEIMDALL_CAPTURE_ARCHIVE_FILE_BYTES`: start a new archive file past
    /// this size. Default 64 MiB.
    pub archive_file_bytes: u64,
    /// `HEIMDALL_CAPTURE_ARCHIVE_ROTATE`: start a new archive file after
    /// this long. Default `1h`.
    #[serde(with = "heimdall_config::duration")]
    pub archive_rotate: Duration,
    /// `HEIMDALL_CAPTURE_ARCHIVE_KEEP`: remove archive files older than
    /// this. Default `7d`.
    #[serde(with = "heimdall_config::duration")]
    pub archive_keep: Duration,
    /// `HEIMDALL_CAPTURE_ARCHIVE_QUOTA_BYTES`: remove the oldest archive
    /// files beyond this total. Default 2 GiB.
    pub archive_quota_bytes: u64,
    /// `HEIMDALL_CAPTURE_REPLAY`: `fast` (default) or `recorded` pace for files.
    pub replay: Replay,
    /// `HEIMDALL_CAPTURE_SNAPLEN`: bytes kept of each packet. Default 65535.
    pub snaplen: u32,
    /// `HEIMDALL_CAPTURE_PROMISC`: see traffic not addressed to this host.
    /// Default true (a sensor on a mirror port or bridge needs it).
    pub promisc: bool,
    /// `HEIMDALL_CAPTURE_IMMEDIATE`: hand each packet over as it arrives
    /// instead of in kernel blocks (TPACKET_V3, at most 100 ms late).
    /// Default false: blocks cost a fraction of the CPU (docs/performance.md:
    /// 600k packets/s at 31% of a core against 54% with drops when
    /// immediate), and records leave when connections end anyway.
    pub immediate: bool,
    /// `HEIMDALL_CAPTURE_BUFFER_BYTES`: kernel capture buffer. Default 16 MiB;
    /// larger rides out longer bursts.
    pub buffer_bytes: u32,
    /// `HEIMDALL_CAPTURE_FILTER`: a BPF filter (tcpdump syntax). Default none.
    pub filter: String,
    /// `HEIMDALL_CAPTURE_SCHEDULE`: `continuous` (default) or `windowed`.
    pub schedule: ScheduleKind,
    /// `HEIMDALL_CAPTURE_INTERVAL`: how often a window opens. Default `2m`.
    #[serde(with = "heimdall_config::duration")]
    pub interval: Duration,
    /// `HEIMDALL_CAPTURE_WINDOW`: how long each window stays open. Default `30s`.
    #[serde(with = "heimdall_config::duration")]
    pub window: Duration,
    /// `HEIMDALL_CAPTURE_STEERING`: `off` (default) or `enigma`: follow the
    /// capture settings Enigma gives this sensor (schedule, filter, snap
    /// length, interface), which the enigma-uploader fetches and publishes on
    /// the bus. See [`crate::steer`].
    pub steering: SteeringKind,
    /// `HEIMDALL_CAPTURE_BATCH_RECORDS`: records per bus message at most.
    /// Default 1000.
    pub batch_records: usize,
    /// `HEIMDALL_CAPTURE_BATCH_INTERVAL`: a batch goes out at latest this long
    /// after its first record. Default `1s`.
    #[serde(with = "heimdall_config::duration")]
    pub batch_interval: Duration,
    /// `HEIMDALL_CAPTURE_BUFFER_RECORDS`: records held while NATS is away.
    /// Past it the oldest batches are dropped and counted
    /// (`capture_records_dropped_total`). Default 500000 (about 150 MB).
    pub buffer_records: usize,
    /// `HEIMDALL_CAPTURE_SHUTDOWN_GRACE`: on SIGTERM, how long to keep trying
    /// to publish what is left before giving up (and counting it). Default `20s`.
    #[serde(with = "heimdall_config::duration")]
    pub shutdown_grace: Duration,
    /// `HEIMDALL_CAPTURE_USER`: once the capture handle is open, switch to
    /// this user (and its group). Default empty: stay who we are, but still
    /// give up every capability not needed.
    pub user: String,
    /// `HEIMDALL_CAPTURE_KEEP_REOPEN_CAPS`: keep CAP_NET_RAW (and
    /// CAP_NET_ADMIN) in the permitted set, not effective, so a vanished
    /// interface can be opened again. Default true; false keeps no
    /// capability at all, and a vanished interface then stops the service
    /// for its supervisor to restart.
    pub keep_reopen_caps: bool,
    /// `HEIMDALL_CAPTURE_LOCAL_NETS`: networks that count as local besides
    /// the private address space (comma-separated CIDRs).
    pub local_nets: String,
    /// `HEIMDALL_CAPTURE_CHECKSUMS`: `auto` (default), `all` or `none`.
    pub checksums: ChecksumPolicy,
    /// `HEIMDALL_CAPTURE_MAX_CONNECTIONS`: connections tracked at once;
    /// beyond it the oldest are logged early and counted. Default 262144
    /// (about 150 MB of state at most).
    pub max_connections: usize,
    /// `HEIMDALL_CAPTURE_PARTITIONS`: subject partitions (see
    /// docs/architecture.md). Default 1.
    pub partitions: u16,
    /// `HEIMDALL_CAPTURE_STATS_INTERVAL`: how often kernel drop counters are
    /// read. Default `5s`.
    #[serde(with = "heimdall_config::duration")]
    pub stats_interval: Duration,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        CaptureSettings {
            sensor_id: String::new(),
            source: SourceKind::Interface,
            interface: String::new(),
            files: String::new(),
            pktmon_program: crate::pktmon::DEFAULT_PROGRAM.into(),
            pktmon_filters: String::new(),
            pktmon_work_dir: String::new(),
            tcpdump_program: "tcpdump".into(),
            tcpdump_dir: String::new(),
            tcpdump_rotate: Duration::from_secs(5),
            tcpdump_user: "tcpdump".into(),
            archive_dir: String::new(),
            archive_file_bytes: 64 << 20,
            archive_rotate: Duration::from_secs(3600),
            archive_keep: Duration::from_secs(7 * 86_400),
            archive_quota_bytes: 2 << 30,
            replay: Replay::Fast,
            snaplen: 65_535,
            promisc: true,
            immediate: false,
            buffer_bytes: 16 << 20,
            filter: String::new(),
            schedule: ScheduleKind::Continuous,
            interval: Duration::from_secs(120),
            window: Duration::from_secs(30),
            steering: SteeringKind::Off,
            batch_records: 1000,
            batch_interval: Duration::from_secs(1),
            buffer_records: 500_000,
            shutdown_grace: Duration::from_secs(20),
            user: String::new(),
            keep_reopen_caps: true,
            local_nets: String::new(),
            checksums: ChecksumPolicy::Auto,
            max_connections: 262_144,
            partitions: 1,
            stats_interval: Duration::from_secs(5),
        }
    }
}

impl CaptureSettings {
    /// The networks LOCAL_NETS adds to the private address space.
    fn extra_local_nets(&self) -> Result<LocalNets, String> {
        LocalNets::parse(
            self.local_nets
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty()),
        )
        .map_err(|e| e.to_string())
    }

    /// The engine configuration these settings describe. Uids are seeded at
    /// random: two runs of a sensor never give out the same uid.
    pub fn engine(&self) -> Result<EngineConfig, String> {
        let mut cfg = EngineConfig::default();
        cfg.local_nets = cfg.local_nets.union(&self.extra_local_nets()?);
        cfg.checksums = self.checksums.into();
        cfg.max_connections = self.max_connections;
        cfg.uid_seed = rand::random();
        cfg.observations = true;
        cfg.sensor_id = self.sensor_id.clone();
        Ok(cfg)
    }

    /// A configured folder, or `name` in the system's temporary folder.
    fn dir_or_temp(dir: &str, name: &str) -> std::path::PathBuf {
        if dir.is_empty() {
            std::env::temp_dir().join(name)
        } else {
            dir.into()
        }
    }

    /// pktmon settings: each window lasts WINDOW (back to back when the
    /// schedule is continuous), packets kept whole up to SNAPLEN.
    pub fn pktmon(&self) -> crate::pktmon::Options {
        crate::pktmon::Options {
            program: self.pktmon_program.clone().into(),
            work_dir: Self::dir_or_temp(&self.pktmon_work_dir, "heimdall-pktmon"),
            filters: self
                .pktmon_filters
                .split(',')
                .filter_map(|f| crate::pktmon::Filter::parse(f.trim()).ok())
                .collect(),
            packet_size: self.snaplen,
            file_size_mb: 512,
            window: self.window,
        }
    }

    /// tcpdump settings.
    pub fn tcpdump(&self) -> crate::tcpdump::Options {
        crate::tcpdump::Options {
            program: self.tcpdump_program.clone().into(),
            interface: self.interface.clone(),
            snaplen: self.snaplen,
            promisc: self.promisc,
            buffer_bytes: self.buffer_bytes,
            filter: self.filter.clone(),
            dir: Self::dir_or_temp(&self.tcpdump_dir, "heimdall-tcpdump"),
            rotate: self.tcpdump_rotate,
            user: self.tcpdump_user.clone(),
        }
    }

    /// Archive settings, when an archive folder is set.
    pub fn archive(&self) -> Option<crate::archive::Options> {
        (!self.archive_dir.is_empty()).then(|| crate::archive::Options {
            dir: self.archive_dir.clone().into(),
            file_bytes: self.archive_file_bytes,
            rotate: self.archive_rotate,
            keep: self.archive_keep,
            quota_bytes: self.archive_quota_bytes,
            sensor: self.sensor_id.clone(),
            snaplen: self.snaplen,
        })
    }
}

impl Validate for CaptureSettings {
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>) {
        let mut bad = |name: &str, message: String| {
            problems.push(Problem {
                variable: format!("{prefix}{name}"),
                message,
            })
        };
        if self.sensor_id.is_empty() {
            bad(
                "SENSOR_ID",
                "required: name this sensor, e.g. pi-kitchen".into(),
            );
        } else if self
            .sensor_id
            .contains(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            || self.sensor_id.len() > 128
        {
            bad(
                "SENSOR_ID",
                "use at most 128 letters, digits, '-', '_' and '.'".into(),
            );
        }
        match self.source {
            SourceKind::Interface | SourceKind::Tcpdump if self.interface.is_empty() => bad(
                "INTERFACE",
                "required with SOURCE=interface or tcpdump: the interface to capture on, e.g. eth0"
                    .into(),
            ),
            SourceKind::Files if self.files.is_empty() => bad(
                "FILES",
                "required with SOURCE=files: a capture file or a folder of them".into(),
            ),
            SourceKind::Files if !std::path::Path::new(&self.files).exists() => {
                bad("FILES", format!("{} does not exist", self.files))
            }
            _ => {}
        }
        for f in self
            .pktmon_filters
            .split(',')
            .filter(|f| !f.trim().is_empty())
        {
            if let Err(e) = crate::pktmon::Filter::parse(f.trim()) {
                bad("PKTMON_FILTERS", e);
            }
        }
        if !self.archive_dir.is_empty()
            && self.archive_quota_bytes < self.archive_file_bytes.saturating_mul(2)
        {
            bad(
                "ARCHIVE_QUOTA_BYTES",
                "must hold at least two files (2 x ARCHIVE_FILE_BYTES)".into(),
            );
        }
        if self.schedule == ScheduleKind::Windowed
            && (self.window.is_zero() || self.window > self.interval)
        {
            bad(
                "WINDOW",
                "must be longer than 0 and at most INTERVAL".into(),
            );
        }
        if self.buffer_records < self.batch_records {
            bad("BUFFER_RECORDS", "must be at least BATCH_RECORDS".into());
        }
        if let Err(e) = self.extra_local_nets() {
            bad("LOCAL_NETS", e);
        }
        let var = |name: &str| format!("{prefix}{name}");
        check::in_range(problems, var("SNAPLEN"), self.snaplen, 64..=262_144);
        check::in_range(
            problems,
            var("BUFFER_BYTES"),
            self.buffer_bytes,
            1 << 16..=1 << 30,
        );
        check::in_range(
            problems,
            var("BATCH_RECORDS"),
            self.batch_records,
            1..=100_000,
        );
        check::in_range(
            problems,
            var("MAX_CONNECTIONS"),
            self.max_connections,
            1..=usize::MAX,
        );
        check::in_range(problems, var("PARTITIONS"), self.partitions, 1..=1024);
        if !self.archive_dir.is_empty() {
            check::in_range(
                problems,
                var("ARCHIVE_FILE_BYTES"),
                self.archive_file_bytes,
                1 << 20..=u64::MAX,
            );
        }
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let mut durations = vec![
            ("BATCH_INTERVAL", self.batch_interval, ms(10)..=secs(300)),
            ("STATS_INTERVAL", self.stats_interval, ms(100)..=secs(3600)),
            ("TCPDUMP_ROTATE", self.tcpdump_rotate, secs(1)..=secs(3600)),
        ];
        if self.schedule == ScheduleKind::Windowed {
            durations.push(("INTERVAL", self.interval, secs(1)..=secs(86_400)));
        }
        if !self.archive_dir.is_empty() {
            durations.push((
                "ARCHIVE_ROTATE",
                self.archive_rotate,
                secs(10)..=secs(7 * 86_400),
            ));
        }
        for (name, value, range) in durations {
            if !range.contains(&value) {
                problems.push(Problem {
                    variable: var(name),
                    message: format!(
                        "out of range; use {} to {}",
                        heimdall_config::duration::format(range.start()),
                        heimdall_config::duration::format(range.end())
                    ),
                });
            }
        }
    }
}
