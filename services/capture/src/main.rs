//! `heimdall-capture`: packets in, records out on NATS.
//! Settings come from `HEIMDALL_*` variables; `--print-config` shows them.
//!
//! Order matters here: the capture handle is opened and privileges are
//! given up while the process is still one thread, before the async
//! runtime starts its workers (capabilities are per thread on Linux).

#![allow(clippy::print_stdout, clippy::print_stderr)] // config and start-up errors

use std::process::ExitCode;

use heimdall_capture::settings::SourceKind;
use heimdall_capture::{Config, Ended, open_source, privileges};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let config = match heimdall_config::Loader::from_env().and_then(Config::load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("heimdall-capture: {e}");
            return ExitCode::from(2);
        }
    };
    if std::env::args().any(|a| a == "--print-config") {
        print!("{}", config.render());
        return ExitCode::SUCCESS;
    }
    let source = match open_source(&config.capture) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("heimdall-capture: {e}");
            return ExitCode::from(1);
        }
    };
    // With tcpdump holding the capture, this process must be able to start
    // it again; tcpdump gives up its own privileges (-Z).
    let dropped = if config.capture.source == SourceKind::Tcpdump {
        None
    } else {
        match privileges::drop_privileges(&config.capture.user, config.capture.keep_reopen_caps) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("heimdall-capture: cannot give up privileges: {e}");
                return ExitCode::from(1);
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("heimdall-capture: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        let _guard = heimdall_telemetry::init("heimdall-capture", &config.telemetry)?;
        match &dropped {
            Some(d) => {
                tracing::info!(
                    uid = d.uid,
                    gid = d.gid,
                    permitted_capabilities = ?d.permitted,
                    "privileges given up after opening the capture handle"
                );
                if d.uid == 0 && config.capture.source == SourceKind::Interface {
                    tracing::warn!(
                        "still running as root (without capabilities); set \
                         HEIMDALL_CAPTURE_USER to an unprivileged user"
                    );
                }
            }
            None => {
                tracing::info!("privileges kept to restart tcpdump, which gives up its own (-Z)")
            }
        }
        let listener = tokio::net::TcpListener::bind(config.telemetry.listen).await?;
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            heimdall_telemetry::terminated().await;
            signal.cancel();
        });
        heimdall_capture::run(config, source, listener, shutdown).await
    });
    match result {
        Ok(Ended::Stopped | Ended::EndOfInput) => ExitCode::SUCCESS,
        Ok(Ended::Failed(why)) => {
            eprintln!("heimdall-capture: {why}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("heimdall-capture: {e:#}");
            ExitCode::from(1)
        }
    }
}
