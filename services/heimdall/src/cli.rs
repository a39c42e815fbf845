//! Command-line arguments and dispatch.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use heimdall_engine::ids::LocalNets;
use heimdall_engine::zeeklog::Format;
use heimdall_engine::{Checksums, EngineConfig};

use crate::analyze::{AnalyzeOptions, analyze};

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read capture files (pcap, pcapng, gzip) and write conn.log and dns.log
    Analyze {
        /// Capture files, read in the order given as one stream
        #[arg(required = true)]
        pcaps: Vec<PathBuf>,
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
            logs,
            format,
            local_nets,
            checksums,
            ignore_checksums,
            max_connections,
            sensor_id,
            uid_seed,
            no_progress,
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
            engine.sensor_id = sensor_id;
            if let Some(seed) = uid_seed {
                engine.uid_seed = seed;
            }
            let opts = AnalyzeOptions {
                inputs: pcaps,
                logs,
                format: match format {
                    LogFormat::Tsv => Format::Tsv,
                    LogFormat::Json => Format::Json,
                },
                engine,
                progress: !no_progress,
            };
            let report = analyze(&opts).map_err(|e| e.to_string())?;
            for problem in &report.problems {
                eprintln!("heimdall: {problem}");
            }
            eprintln!("{}", report.summary_line());
            Ok(report.exit_code())
        }
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
