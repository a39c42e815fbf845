//! `heimdall-enigma-uploader`: connection and DNS records from NATS to Enigma,
//! spooled on disk.
//! Settings come from `HEIMDALL_*` variables; `--print-config` shows them.

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    heimdall_telemetry::service_main::<heimdall_enigma_uploader::Config, _, _>(
        "heimdall-enigma-uploader",
        heimdall_enigma_uploader::run,
    )
    .await
}
