//! `heimdall-asgard-dev`: the reference Asgard server.
//! Settings come from `HEIMDALL_*` variables; `--print-config` shows them.
//!
//! Operator subcommands (they need only the `HEIMDALL_DATABASE_*` settings):
//! - `heimdall-asgard-dev load-intel FILE`: add or change intelligence
//!   (an IntelUpdate in JSON); sensors get it on their next poll.
//! - `heimdall-asgard-dev revoke-tokens [--refresh]`: revoke every access
//!   token (sensors refresh), with `--refresh` every refresh token too
//!   (sensors enroll again).

#![allow(clippy::print_stdout, clippy::print_stderr)] // the subcommands' answers

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("load-intel") => {
            let Some(file) = args.get(1) else {
                eprintln!("usage: heimdall-asgard-dev load-intel FILE");
                std::process::exit(2);
            };
            let intel = match heimdall_asgard_dev::read_intel(file) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("heimdall-asgard-dev: {e}");
                    std::process::exit(2);
                }
            };
            let pool = heimdall_asgard_dev::open_database().await?;
            let changed = heimdall_asgard_dev::load_intel(&pool, &intel).await?;
            println!("{changed} intelligence items added, changed or removed");
            Ok(())
        }
        Some("revoke-tokens") => {
            let refresh = args.get(1).map(String::as_str) == Some("--refresh");
            let pool = heimdall_asgard_dev::open_database().await?;
            let n = heimdall_asgard_dev::revoke_tokens(&pool, refresh).await?;
            println!("{n} tokens revoked");
            Ok(())
        }
        _ => {
            heimdall_telemetry::service_main::<heimdall_asgard_dev::Config, _, _>(
                "heimdall-asgard-dev",
                heimdall_asgard_dev::run,
            )
            .await
        }
    }
}
