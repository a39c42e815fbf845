//! `heimdall`: wiring only; the work is in the library.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = heimdall::cli::Cli::parse();
    match heimdall::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("heimdall: {e}");
            ExitCode::from(heimdall::EXIT_FAILURE)
        }
    }
}
