//! `heimdall-sink`: connection batches from the bus into PostgreSQL.
//! Settings come from `HEIMDALL_*` variables; `--print-config` shows them.

#![allow(clippy::print_stdout)] // its report (or --print-config) is its output

use heimdall_tests::sink::{self, Config};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match heimdall_config::Loader::from_env().and_then(Config::load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("heimdall-sink: {e}");
            std::process::exit(2);
        }
    };
    if std::env::args().any(|a| a == "--print-config") {
        print!("{}", config.render());
        return Ok(());
    }
    let _guard = heimdall_telemetry::init("heimdall-sink", &config.telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.telemetry.listen).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        heimdall_tests::process::terminated().await;
        signal.cancel();
    });
    sink::run(config, listener, shutdown).await
}
