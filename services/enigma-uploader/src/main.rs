//! `heimdall-enigma-uploader`: connection and DNS records from NATS to Enigma, spooled on disk.
//! Settings come from `HEIMDALL_*` variables; `--print-config` shows them.

#![allow(clippy::print_stdout, clippy::print_stderr)] // config and start-up errors

use heimdall_enigma_uploader::{Config, run};
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let config = match heimdall_config::Loader::from_env().and_then(Config::load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("heimdall-enigma-uploader: {e}");
            std::process::exit(2);
        }
    };
    if std::env::args().any(|a| a == "--print-config") {
        print!("{}", config.render());
        return Ok(());
    }
    // One TLS provider for the whole process (ring, as every crate here).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _guard = heimdall_telemetry::init("heimdall-enigma-uploader", &config.telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.telemetry.listen).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        heimdall_telemetry::terminated().await;
        signal.cancel();
    });
    run(config, listener, shutdown).await
}
