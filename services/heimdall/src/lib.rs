//! The Heimdall command line. `heimdall analyze` reads capture files and
//! writes Zeek's conn.log and dns.log, needing no server.
//!
//! What this crate promises:
//! - The logs mean what Zeek's mean, in Zeek's TSV or JSON-lines format.
//! - A file that cannot be read, is truncated or is corrupt gets a clear
//!   message naming the file and the byte where it went wrong; everything
//!   decoded before that is still written; the exit code says which
//!   ([`EXIT_UNREADABLE`], [`EXIT_DAMAGED`]).
//! - On a terminal, large inputs show progress; every run ends with a
//!   one-line summary.
//! - Beside the logs it writes devices.jsonl (what each device is) and
//!   alerts.jsonl (port scans, host sweeps, beaconing, DNS tunnels; one
//!   JSON object per alert, see [`alerts`]).
//! - `heimdall generate` writes a realistic home-network capture, the same
//!   bytes for the same seed, for demos, benchmarks and tests.

pub mod alerts;
pub mod analyze;
pub mod cli;
pub mod evaluate;
pub mod homegen;

/// Every input read completely.
pub const EXIT_OK: u8 = 0;
/// The output could not be written, or another failure.
pub const EXIT_FAILURE: u8 = 1;
/// Bad arguments (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// An input could not be opened or is not a capture; the others were analyzed.
pub const EXIT_UNREADABLE: u8 = 3;
/// An input was truncated or corrupt; what came before the damage is in the logs.
pub const EXIT_DAMAGED: u8 = 4;
