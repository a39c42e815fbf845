//! Command-line arguments and dispatch.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use heimdall_engine::ids::LocalNets;
use heimdall_engine::zeeklog::Format;
use heimdall_engine::{Checksums, EngineConfig};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use heimdall_capture::source::LiveOptions;

use crate::analyze::{AnalyzeOptions, LiveInput, analyze};

/// Sets `flag` on SIGINT or SIGTERM, from a small thread of its own.
fn stop_on_signal(flag: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(heimdall_telemetry::terminated());
        flag.store(true, Ordering::Relaxed);
    });
}

#[derive(Debug, Parser)]
#[command(
    name = "heimdall",
    version,
    about = "Heimdall: a passive network sensor for homes and gateways"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Zeek's tab-separated logs with header lines
    Tsv,
    /// Zeek's JSON lines
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ChecksumArg {
    All,
    Auto,
    None,
}

// Parsed once per run; boxing the analyze options would only obscure them.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read capture files (pcap, pcapng, gzip), or capture live on an
    /// interface, and write conn.log and dns.log
    Analyze {
        /// Capture files, read in the order given as one stream
        #[arg(required_unless_present = "interface", conflicts_with = "interface")]
        pcaps: Vec<PathBuf>,
        /// Capture live on this interface instead (needs CAP_NET_RAW; every
        /// capability is given up once it is open). Stops on Ctrl-C or
        /// SIGTERM, --count or --duration, and logs every open connection
        #[arg(long, short = 'i')]
        interface: Option<String>,
        /// With --interface: stop after this many packets
        #[arg(long, requires = "interface")]
        count: Option<u64>,
        /// With --interface: stop after this many seconds
        #[arg(long, requires = "interface")]
        duration: Option<f64>,
        /// With --interface: a BPF filter (tcpdump syntax)
        #[arg(long, requires = "interface", default_value = "")]
        filter: String,
        /// With --interface: do not put the interface in promiscuous mode
        #[arg(long, requires = "interface")]
        no_promisc: bool,
        /// Folder for the logs (created if missing)
        #[arg(long)]
        logs: PathBuf,
        /// Log format
        #[arg(long, value_enum, default_value_t = LogFormat::Tsv)]
        format: LogFormat,
        /// Networks that count as local, in addition to the private address
        /// space (comma-separated CIDRs, like 203.0.113.0/24,2001:db8::/32)
        #[arg(long, value_delimiter = ',')]
        local_nets: Vec<String>,
        /// Which checksums to verify: all (Zeek's default), auto (IP headers
        /// and tunnel encapsulations; transport checksums are often wrong in
        /// captures taken on the sending host because of checksum offload),
        /// none
        #[arg(long, value_enum, default_value_t = ChecksumArg::Auto)]
        checksums: ChecksumArg,
        /// Verify no checksums (Zeek's -C; the same as --checksums none)
        #[arg(short = 'C', long)]
        ignore_checksums: bool,
        /// Most connections tracked at once; beyond it the oldest are logged early
        #[arg(long, default_value_t = 1_000_000)]
        max_connections: usize,
        /// Sensor id stamped on records
        #[arg(long, default_value = "")]
        sensor_id: String,
        /// Seed for connection uids (the same seed gives the same uids)
        #[arg(long)]
        uid_seed: Option<u64>,
        /// Never show a progress bar
        #[arg(long)]
        no_progress: bool,
        /// Do not identify devices (no devices.jsonl; the engine then skips
        /// device observations)
        #[arg(long)]
        no_devices: bool,
        /// Do not run the detectors (no alerts.jsonl)
        #[arg(long)]
        no_alerts: bool,
        /// Judge devices against the baselines of an earlier run (its
        /// baselines.json) instead of learning from the start of this input
        #[arg(long, value_name = "FILE")]
        baseline: Option<PathBuf>,
        /// Detector thresholds per device type and per device, over the
        /// global ones (TOML; see docs/detection.md)
        #[arg(long, value_name = "FILE")]
        thresholds: Option<PathBuf>,
    },
    /// Simulate a multi-day home with injected anomalies and score every
    /// detector on it: recall by type, false incidents per device-day, time
    /// to detect, compression by incidents
    Evaluate {
        /// Seed (the same seed makes the same home)
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Days simulated
        #[arg(long, default_value_t = 14)]
        days: i64,
        /// Days to learn before anomalies are injected and judged
        #[arg(long, default_value_t = 7)]
        learn_days: i64,
        /// Also write the records (records.jsonl), the devices and the
        /// ground truth (truth.jsonl) and the figures (evaluation.json) here
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
    /// Write a realistic home-network capture (pcap) made by Heimdall's own generator
    Generate {
        /// Output file
        #[arg(long)]
        out: PathBuf,
        /// Minutes of traffic
        #[arg(long, default_value_t = 10)]
        minutes: u32,
        /// Seed (the same seed writes the same bytes)
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<u8, String> {
    match cli.command {
        Command::Analyze {
            pcaps,
            interface,
            count,
            duration,
            filter,
            no_promisc,
            logs,
            format,
            local_nets,
            checksums,
            ignore_checksums,
            max_connections,
            sensor_id,
            uid_seed,
            no_progress,
            no_devices,
            no_alerts,
            baseline,
            thresholds,
        } => {
            let mut engine = EngineConfig::default();
            let mut nets: Vec<String> = Vec::new();
            if !local_nets.is_empty() {
                nets.extend(local_nets);
            }
            if !nets.is_empty() {
                let extra = LocalNets::parse(nets.iter().map(String::as_str))
                    .map_err(|e| format!("--local-nets: {e}"))?;
                engine.local_nets = engine.local_nets.union(&extra);
            }
            engine.checksums = match (ignore_checksums, checksums) {
                (true, _) | (false, ChecksumArg::None) => Checksums::None,
                (false, ChecksumArg::All) => Checksums::All,
                (false, ChecksumArg::Auto) => Checksums::Auto,
            };
            if max_connections == 0 {
                return Err("--max-connections must be at least 1".into());
            }
            engine.max_connections = max_connections;
            engine.observations = !no_devices || !no_alerts;
            if no_alerts && (baseline.is_some() || thresholds.is_some()) {
                return Err(
                    "--baseline and --thresholds feed the detectors; they cannot go with --no-alerts"
                        .into(),
                );
            }
            let thresholds = thresholds
                .map(|p| heimdall_detect::thresholds::Thresholds::load(&p))
                .transpose()
                .map_err(|e| format!("--thresholds: {e}"))?;
            engine.sensor_id = sensor_id;
            if let Some(seed) = uid_seed {
                engine.uid_seed = seed;
            }
            if interface.is_none()
                && (count.is_some() || duration.is_some() || !filter.is_empty() || no_promisc)
            {
                return Err(
                    "--count, --duration, --filter and --no-promisc need --interface".into(),
                );
            }
            if duration.is_some_and(|d| !(d > 0.0 && d < 1e9)) {
                return Err("--duration must be a positive number of seconds".into());
            }
            let live = interface.map(|interface| LiveInput {
                capture: LiveOptions {
                    interface,
                    snaplen: 65_535,
                    promisc: !no_promisc,
                    immediate: false,
                    buffer_bytes: 32 << 20,
                    filter,
                    poll: heimdall_capture::POLL,
                },
                count,
                duration: duration.map(Duration::from_secs_f64),
            });
            let stop = Arc::new(AtomicBool::new(false));
            if live.is_some() {
                stop_on_signal(stop.clone());
            }
            let opts = AnalyzeOptions {
                inputs: pcaps,
                live,
                logs,
                format: match format {
                    LogFormat::Tsv => Format::Tsv,
                    LogFormat::Json => Format::Json,
                },
                engine,
                progress: !no_progress,
                devices: !no_devices,
                alerts: !no_alerts,
                baseline,
                thresholds,
            };
            let report = analyze(&opts, &stop).map_err(|e| e.to_string())?;
            for problem in &report.problems {
                eprintln!("heimdall: {problem}");
            }
            eprintln!("{}", report.summary_line());
            Ok(report.exit_code())
        }
        Command::Evaluate {
            seed,
            days,
            learn_days,
            write,
        } => crate::evaluate::run(seed, days, learn_days, write.as_deref()),
        Command::Generate { out, minutes, seed } => {
            let spec = crate::homegen::HomeSpec {
                seed,
                minutes,
                ..Default::default()
            };
            let mut file = std::fs::File::create(&out)
                .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
            let n = crate::homegen::generate(&spec, &mut file)
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            eprintln!(
                "heimdall generate: {n} packets, {minutes} minutes of home traffic in {}",
                out.display()
            );
            Ok(crate::EXIT_OK)
        }
    }
}
