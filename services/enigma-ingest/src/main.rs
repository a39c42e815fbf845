//! `heimdall-enigma-ingest`: the reference Enigma ingest server.
//! Settings come from `HEIMDALL_*` variables; `--print-config` shows them.
//!
//! `heimdall-enigma-ingest set-capture-settings SENSOR [--interval S]
//! [--window S] [--filter BPF] [--snaplen N] [--interface NAME]...` sets
//! what one sensor's agent is told to capture (stored in the server's
//! schema; it needs only the `HEIMDALL_DATABASE_*` settings).

#![allow(clippy::print_stdout, clippy::print_stderr)] // the subcommand's answer

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("set-capture-settings") {
        let (sensor, row) = match heimdall_enigma_ingest::parse_capture_args(&args[1..]) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("heimdall-enigma-ingest: {e}");
                std::process::exit(2);
            }
        };
        let pool = heimdall_enigma_ingest::open_database().await?;
        heimdall_enigma_ingest::set_capture_settings(&pool, &sensor, &row).await?;
        println!(
            "sensor {sensor}: capture {}s every {}s, filter {:?}, snaplen {}, interfaces {:?}",
            row.window_seconds, row.interval_seconds, row.bpf_filter, row.snaplen, row.interfaces
        );
        return Ok(());
    }
    heimdall_telemetry::service_main::<heimdall_enigma_ingest::Config, _, _>(
        "heimdall-enigma-ingest",
        heimdall_enigma_ingest::run,
    )
    .await
}
