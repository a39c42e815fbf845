//! `heimdall analyze`: capture files in, Zeek logs out.

use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heimdall_engine::zeeklog::{Format, LogWriter};
use heimdall_engine::{CaptureReader, Engine, EngineConfig, ReadError, Stats};
use heimdall_fingerprint::registry::device_json;
use heimdall_fingerprint::{Registry, RegistryConfig, Rules};

/// A live interface to analyze instead of files, and when to stop.
#[derive(Debug, Clone)]
pub struct LiveInput {
    pub capture: heimdall_capture::source::LiveOptions,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// What to analyze and where the logs go.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub inputs: Vec<PathBuf>,
    /// Capture live instead of reading `inputs`.
    pub live: Option<LiveInput>,
    pub logs: PathBuf,
    pub format: Format,
    pub engine: EngineConfig,
    /// Show a progress bar when stderr is a terminal and the input is large.
    pub progress: bool,
    /// Identify devices and write devices.jsonl (turns the engine's
    /// observations on).
    pub devices: bool,
    /// Run the detectors and write alerts.jsonl (turns the engine's
    /// observations on: ARP feeds the host sweep detector).
    pub alerts: bool,
    /// Baselines from an earlier run (its baselines.json) to judge devices
    /// against; without it they are learnt from the start of the input.
    pub baseline: Option<PathBuf>,
    /// Thresholds per device type and device (docs/detection.md).
    pub thresholds: Option<heimdall_detect::thresholds::Thresholds>,
}

/// Failures that stop the run (an unreadable input does not: it is a problem).
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("cannot create the log folder {path}: {source}")]
    LogDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Capture(#[from] heimdall_capture::source::Error),
    #[error("the device rules do not load: {0}")]
    Rules(heimdall_fingerprint::RulesError),
    #[error(
        "cannot use the baselines in {path}: {reason} (give the baselines.json an earlier `heimdall analyze` wrote)"
    )]
    Baseline { path: PathBuf, reason: String },
}

/// One input that did not read cleanly.
#[derive(Debug)]
pub struct Problem {
    pub file: PathBuf,
    pub error: ReadError,
    /// Packets analyzed from this file before the problem.
    pub packets_before: u64,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.error)?;
        if self.error.is_damage() {
            write!(
                f,
                "; the {} packets before it were analyzed",
                self.packets_before
            )?;
        }
        Ok(())
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    pub files: usize,
    pub stats: Stats,
    pub conn_rows: u64,
    pub dns_rows: u64,
    /// Devices written to devices.jsonl; `None` with `--no-devices`.
    pub devices: Option<usize>,
    /// Alerts written to alerts.jsonl; `None` with `--no-alerts`.
    pub alerts: Option<usize>,
    pub elapsed: Duration,
    pub problems: Vec<Problem>,
    /// Live capture: what the kernel counted, and why it stopped.
    pub live: Option<LiveReport>,
}

/// How a live capture went.
#[derive(Debug)]
pub struct LiveReport {
    pub interface: String,
    pub kernel: heimdall_capture::source::KernelStats,
    /// A read error that ended the capture early (the interface went away).
    pub error: Option<String>,
}

impl Report {
    pub fn exit_code(&self) -> u8 {
        if self.live.as_ref().is_some_and(|l| l.error.is_some()) {
            crate::EXIT_FAILURE
        } else if self.problems.iter().any(|p| !p.error.is_damage()) {
            crate::EXIT_UNREADABLE
        } else if !self.problems.is_empty() {
            crate::EXIT_DAMAGED
        } else {
            crate::EXIT_OK
        }
    }

    pub fn summary_line(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let what = match &self.live {
            Some(l) => format!("interface {}", l.interface),
            None => format!(
                "{} file{}",
                self.files,
                if self.files == 1 { "" } else { "s" }
            ),
        };
        format!(
            "heimdall analyze: {what}, {} packets ({}), {} connections, {} DNS transactions{}{}, {} decode errors, {} bad checksums, {:.2} s ({}/s)",
            group(self.stats.packets),
            bytes(self.stats.bytes),
            group(self.conn_rows),
            group(self.dns_rows),
            self.devices
                .map(|n| format!(
                    ", {} device{}",
                    group(n as u64),
                    if n == 1 { "" } else { "s" }
                ))
                .unwrap_or_default(),
            self.alerts
                .map(|n| format!(
                    ", {} alert{}",
                    group(n as u64),
                    if n == 1 { "" } else { "s" }
                ))
                .unwrap_or_default(),
            group(self.stats.decode_errors),
            group(self.stats.bad_checksums),
            secs,
            rate(self.stats.packets as f64 / secs, "packets"),
        ) + &self.limits_line()
    }

    /// Limits that were reached, if any: evictions from a full table,
    /// fragments dropped, tunnels nested too deep.
    fn limits_line(&self) -> String {
        let s = &self.stats;
        let mut parts = Vec::new();
        if let Some(l) = &self.live {
            if l.kernel.dropped + l.kernel.if_dropped > 0 {
                parts.push(format!(
                    "{} packets dropped by the kernel and {} by the interface before analysis",
                    group(l.kernel.dropped),
                    group(l.kernel.if_dropped)
                ));
            }
            if let Some(e) = &l.error {
                parts.push(format!("capture ended early: {e}"));
            }
        }
        if s.evicted > 0 {
            parts.push(format!(
                "{} connections logged early because the table was full (--max-connections)",
                group(s.evicted)
            ));
        }
        if s.fragments_dropped > 0 {
            parts.push(format!(
                "{} fragments dropped unassembled",
                group(s.fragments_dropped)
            ));
        }
        if s.tunnel_too_deep > 0 {
            parts.push(format!(
                "{} packets in tunnels nested too deep",
                group(s.tunnel_too_deep)
            ));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("; {}", parts.join(", "))
        }
    }
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

fn rate(r: f64, what: &str) -> String {
    if r >= 1e6 {
        format!("{:.2} M {what}", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k {what}", r / 1e3)
    } else {
        format!("{r:.0} {what}")
    }
}

struct Logs {
    conn: LogWriter<File>,
    dns: LogWriter<File>,
    conn_path: PathBuf,
    dns_path: PathBuf,
    devices: Option<Devices>,
    alerts: Option<Alerts>,
}

/// The detectors `analyze` runs when alerts are on, and their output.
struct Alerts {
    monitor: heimdall_detect::Monitor,
    out: std::io::BufWriter<File>,
    path: PathBuf,
    /// Where the learnt baselines go (baselines.json).
    baselines: PathBuf,
    written: usize,
}

/// baselines.json: every device's learnt profile, by device key (MAC, or
/// address for devices seen without one).
#[derive(serde::Serialize, serde::Deserialize)]
struct BaselineFile {
    devices: std::collections::BTreeMap<String, heimdall_detect::baseline::DeviceProfile>,
}

/// The device registry `analyze` keeps when devices are on.
struct Devices {
    registry: Registry,
    path: PathBuf,
}

impl Logs {
    fn open(dir: &Path, opts: &AnalyzeOptions, now_s: i64) -> Result<Self, AnalyzeError> {
        let format = opts.format;
        std::fs::create_dir_all(dir).map_err(|source| AnalyzeError::LogDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let conn_path = dir.join("conn.log");
        let dns_path = dir.join("dns.log");
        let open = |p: &Path| {
            File::create(p).map_err(|source| AnalyzeError::Write {
                path: p.to_path_buf(),
                source,
            })
        };
        let conn = LogWriter::conn(open(&conn_path)?, format, now_s).map_err(|source| {
            AnalyzeError::Write {
                path: conn_path.clone(),
                source,
            }
        })?;
        let dns = LogWriter::dns(open(&dns_path)?, format, now_s).map_err(|source| {
            AnalyzeError::Write {
                path: dns_path.clone(),
                source,
            }
        })?;
        let devices = if opts.devices {
            let rules = Rules::builtin().map_err(AnalyzeError::Rules)?;
            let cfg = RegistryConfig {
                sensor_id: opts.engine.sensor_id.clone(),
                local_nets: opts.engine.local_nets.clone(),
                ..RegistryConfig::default()
            };
            let path = dir.join("devices.jsonl");
            // Created now so a folder that cannot take it fails early.
            open(&path)?;
            Some(Devices {
                registry: Registry::new(cfg, Arc::new(rules)),
                path,
            })
        } else {
            None
        };
        let alerts = if opts.alerts {
            let path = dir.join("alerts.jsonl");
            let mut monitor = heimdall_detect::Monitor::new(
                heimdall_detect::DetectConfig::default(),
                heimdall_detect::baseline::BaselineConfig::default(),
            );
            if let Some(t) = &opts.thresholds {
                monitor = monitor.with_thresholds(t.clone());
            }
            if let Some(b) = &opts.baseline {
                let bad = |reason: String| AnalyzeError::Baseline {
                    path: b.clone(),
                    reason,
                };
                let text = std::fs::read_to_string(b).map_err(|e| bad(e.to_string()))?;
                let file: BaselineFile =
                    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
                for (key, profile) in file.devices {
                    monitor.profiler.restore(&key, profile);
                }
            }
            Some(Alerts {
                monitor,
                out: std::io::BufWriter::new(open(&path)?),
                path,
                baselines: dir.join("baselines.json"),
                written: 0,
            })
        } else {
            None
        };
        Ok(Logs {
            conn,
            dns,
            conn_path,
            dns_path,
            devices,
            alerts,
        })
    }

    /// Writes the closing lines, flushes both logs and writes devices.jsonl;
    /// returns how many devices it holds.
    fn close(self) -> Result<(Option<usize>, Option<usize>), AnalyzeError> {
        let now = wall_now_s();
        let Logs {
            conn,
            dns,
            conn_path,
            dns_path,
            devices,
            alerts,
        } = self;
        let count = match devices {
            Some(d) => Some(d.write()?),
            None => None,
        };
        let alerts = match alerts {
            Some(a) => Some(a.finish()?),
            None => None,
        };
        conn.finish(now).map_err(|source| AnalyzeError::Write {
            path: conn_path,
            source,
        })?;
        dns.finish(now).map_err(|source| AnalyzeError::Write {
            path: dns_path,
            source,
        })?;
        Ok((count, alerts))
    }

    fn drain(&mut self, engine: &mut Engine) -> Result<(), AnalyzeError> {
        for r in &engine.out.conns {
            self.conn
                .write_conn_row(r)
                .map_err(|source| AnalyzeError::Write {
                    path: self.conn_path.clone(),
                    source,
                })?;
        }
        for r in &engine.out.dns {
            self.dns
                .write_dns_row(r)
                .map_err(|source| AnalyzeError::Write {
                    path: self.dns_path.clone(),
                    source,
                })?;
        }
        if let Some(d) = &mut self.devices {
            let reg = &mut d.registry;
            let mut latest = 0;
            for o in &engine.out.observations {
                reg.observe(o);
                latest = latest.max(o.ts_us);
            }
            for r in &engine.out.conns {
                reg.conn(&conn_sighting(r));
                latest = latest.max(r.ts_us);
            }
            for r in &engine.out.dns {
                reg.dns(&dns_sighting(r));
                latest = latest.max(r.ts_us());
            }
            // Flushing keeps the registry's pending work small; what it
            // decided names the detectors' devices (their ids and types,
            // for thresholds per type).
            let events = reg.flush(latest);
            if let Some(a) = &mut self.alerts {
                for e in &events {
                    let Some(dev) = &e.device else { continue };
                    let ty = heimdall_fingerprint::rules::type_name(dev.device_type());
                    let ty = if ty == "unspecified" {
                        String::new()
                    } else {
                        ty
                    };
                    for m in &dev.macs {
                        if let Ok(mac) = <[u8; 6]>::try_from(m.mac.as_ref()) {
                            a.monitor.device(mac, &dev.device_id, &ty);
                        }
                    }
                }
            }
        }
        if let Some(a) = &mut self.alerts {
            let d = &mut a.monitor;
            for o in &engine.out.observations {
                d.observation(o);
            }
            for r in &engine.out.conns {
                d.flow(&heimdall_detect::Flow {
                    ts_us: r.ts_us,
                    src: r.orig.ip(),
                    src_mac: (r.orig_l2 != [0; 6]).then_some(r.orig_l2),
                    dst: r.resp.ip(),
                    dst_port: r.resp_p,
                    transport: r.transport,
                    state: r.conn_state,
                    orig_bytes: r.orig_bytes.unwrap_or(0),
                    resp_bytes: r.resp_bytes.unwrap_or(0),
                    resp_pkts: r.resp_pkts,
                    duration_us: r.duration_us.unwrap_or(0),
                });
            }
            let mut answers = Vec::new();
            for r in &engine.out.dns {
                if let Some(q) = r.info.query() {
                    answers.clear();
                    answers.extend(r.info.answer_addrs.iter().map(|a| a.ip()));
                    d.dns(
                        r.ts_us(),
                        r.orig.ip(),
                        q,
                        r.info.qtype,
                        r.info.rcode,
                        &answers,
                    );
                }
            }
            a.write()?;
        }
        engine.clear_output();
        Ok(())
    }
}

/// What the registry reads of a connection (addresses, MACs, ports,
/// protocol, state): the full record's uids and Community ID cost time
/// and are not needed here.
fn conn_sighting(r: &heimdall_engine::ConnRow) -> heimdall_proto::sensor::v1::ConnRecord {
    let mac = |m: [u8; 6]| if m == [0; 6] { Vec::new() } else { m.to_vec() };
    heimdall_proto::sensor::v1::ConnRecord {
        ts_us: r.ts_us,
        id_orig_h: r.orig.octets().to_vec().into(),
        id_orig_p: u32::from(r.orig_p),
        id_resp_h: r.resp.octets().to_vec().into(),
        id_resp_p: u32::from(r.resp_p),
        proto: r.transport as i32,
        conn_state: r.conn_state as i32,
        resp_pkts: Some(r.resp_pkts),
        orig_l2_addr: mac(r.orig_l2).into(),
        resp_l2_addr: mac(r.resp_l2).into(),
        ..Default::default()
    }
}

/// What the registry reads of a DNS transaction: who asked, for what.
fn dns_sighting(r: &heimdall_engine::DnsRow) -> heimdall_proto::sensor::v1::DnsRecord {
    heimdall_proto::sensor::v1::DnsRecord {
        ts_us: r.ts_us(),
        id_orig_h: r.orig.octets().to_vec().into(),
        id_resp_p: u32::from(r.resp_p),
        query: r.info.query().map(str::to_string),
        ..Default::default()
    }
}

impl Alerts {
    /// Writes the alerts raised so far to alerts.jsonl.
    fn write(&mut self) -> Result<(), AnalyzeError> {
        use std::io::Write;
        for alert in self.monitor.take() {
            let line = crate::alerts::json(&alert);
            serde_json::to_writer(&mut self.out, &line)
                .map_err(std::io::Error::from)
                .and_then(|()| self.out.write_all(b"\n"))
                .map_err(|source| AnalyzeError::Write {
                    path: self.path.clone(),
                    source,
                })?;
            self.written += 1;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<usize, AnalyzeError> {
        use std::io::Write;
        self.write()?;
        let file = BaselineFile {
            devices: self
                .monitor
                .profiles_of()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let err = |source| AnalyzeError::Write {
            path: self.baselines.clone(),
            source,
        };
        let tmp = self.baselines.with_extension("json.tmp");
        let body = serde_json::to_vec(&file)
            .map_err(std::io::Error::from)
            .map_err(err)?;
        std::fs::write(&tmp, body).map_err(err)?;
        std::fs::rename(&tmp, &self.baselines).map_err(err)?;
        self.out.flush().map_err(|source| AnalyzeError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(self.written)
    }
}

impl Devices {
    /// Writes devices.jsonl: one device per line, in order of first sight.
    fn write(self) -> Result<usize, AnalyzeError> {
        use std::io::Write;
        let err = |source| AnalyzeError::Write {
            path: self.path.clone(),
            source,
        };
        let mut out = std::io::BufWriter::new(File::create(&self.path).map_err(err)?);
        let devices = self.registry.devices();
        for d in &devices {
            serde_json::to_writer(&mut out, &device_json(d))
                .map_err(std::io::Error::from)
                .map_err(err)?;
            out.write_all(b"\n").map_err(err)?;
        }
        out.flush().map_err(err)?;
        Ok(devices.len())
    }
}

fn wall_now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Analyzes every input in order as one stream of packets, or the live
/// interface until a limit or `stop`.
pub fn analyze(opts: &AnalyzeOptions, stop: &AtomicBool) -> Result<Report, AnalyzeError> {
    if let Some(live) = &opts.live {
        return analyze_live(opts, live, stop);
    }
    let started = Instant::now();
    let mut logs = Logs::open(&opts.logs, opts, wall_now_s())?;
    let mut engine = Engine::new(opts.engine.clone());
    let mut problems = Vec::new();

    let total: u64 = opts
        .inputs
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = (opts.progress && std::io::stderr().is_terminal() && total > 64 << 20).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} [{bar:40}] {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut done_before = 0u64;

    for path in &opts.inputs {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let mut reader = match CaptureReader::open(path) {
            Ok(r) => r,
            Err(error) => {
                problems.push(Problem {
                    file: path.clone(),
                    error,
                    packets_before: 0,
                });
                continue;
            }
        };
        let mut n = 0u64;
        loop {
            match reader.next_packet() {
                Ok(Some(pkt)) => {
                    engine.packet(&pkt);
                    n += 1;
                    if n.is_multiple_of(4096) {
                        logs.drain(&mut engine)?;
                        if let Some(bar) = &bar {
                            let at = if reader.is_gzip() {
                                size * n / (n + 1)
                            } else {
                                reader.offset().min(size)
                            };
                            bar.set_position(done_before + at);
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    problems.push(Problem {
                        file: path.clone(),
                        error,
                        packets_before: n,
                    });
                    break;
                }
            }
        }
        done_before += size;
        logs.drain(&mut engine)?;
    }
    engine.finish();
    logs.drain(&mut engine)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let conn_rows = logs.conn.rows();
    let dns_rows = logs.dns.rows();
    let (devices, alerts) = logs.close()?;
    Ok(Report {
        files: opts.inputs.len(),
        stats: engine.stats(),
        conn_rows,
        dns_rows,
        devices,
        alerts,
        elapsed: started.elapsed(),
        problems,
        live: None,
    })
}

/// Live capture into the logs. The handle is opened, then every capability
/// is given up; the capture runs until `count` packets, `duration`, a read
/// error or `stop` (SIGINT, SIGTERM), and then every open connection is
/// logged as at the end of a file.
fn analyze_live(
    opts: &AnalyzeOptions,
    live: &LiveInput,
    stop: &AtomicBool,
) -> Result<Report, AnalyzeError> {
    use heimdall_capture::source::{Next, Source};
    let mut src = heimdall_capture::source::LiveSource::open(live.capture.clone())?;
    if let Err(e) = heimdall_capture::privileges::drop_privileges("", false) {
        eprintln!("heimdall: warning: could not give up capabilities: {e}");
    }
    let started = Instant::now();
    let mut logs = Logs::open(&opts.logs, opts, wall_now_s())?;
    let mut engine = Engine::new(opts.engine.clone());
    eprintln!("heimdall analyze: capturing on {}", live.capture.interface);
    let mut n = 0u64;
    let mut error = None;
    let mut last_drain = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed)
            || live.count.is_some_and(|c| n >= c)
            || live.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        match src.next() {
            Ok(Next::Packet(p)) => {
                engine.packet(&p);
                n += 1;
            }
            Ok(Next::Idle) => engine.tick(src.idle_clock_ns()),
            Ok(Next::End) => break,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
        if n.is_multiple_of(4096) || last_drain.elapsed() >= Duration::from_millis(200) {
            logs.drain(&mut engine)?;
            last_drain = Instant::now();
        }
    }
    let kernel = src.kernel_stats().unwrap_or_default();
    engine.finish();
    logs.drain(&mut engine)?;
    let conn_rows = logs.conn.rows();
    let dns_rows = logs.dns.rows();
    let (devices, alerts) = logs.close()?;
    Ok(Report {
        files: 0,
        stats: engine.stats(),
        conn_rows,
        dns_rows,
        devices,
        alerts,
        elapsed: started.elapsed(),
        problems: Vec::new(),
        live: Some(LiveReport {
            interface: live.capture.interface.clone(),
            kernel,
            error,
        }),
    })
}
