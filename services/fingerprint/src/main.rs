//! `heimdall-fingerprint`: device observations, connections and DNS from
//! NATS into the device registry; device events out.
//! Settings come from `HEIMDALL_*` variables; `--print-config` shows them.

#![allow(clippy::print_stdout, clippy::print_stderr)] // config and start-up errors

use heimdall_fingerprint_service::{Config, run};
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let config = match heimdall_config::Loader::from_env().and_then(Config::load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("heimdall-fingerprint: {e}");
            std::process::exit(2);
        }
    };
    if std::env::args().any(|a| a == "--print-config") {
        print!("{}", config.render());
        return Ok(());
    }
    let _guard = heimdall_telemetry::init("heimdall-fingerprint", &config.telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.telemetry.listen).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        heimdall_telemetry::terminated().await;
        signal.cancel();
    });
    run(config, listener, shutdown).await
}
