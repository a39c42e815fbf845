//! `heimdall-enigma-ingest`: the reference Enigma ingest server.
//! Settings come from `HEIMDALL_*` variables; `--print-config` shows them.

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    heimdall_telemetry::service_main::<heimdall_enigma_ingest::Config, _, _>(
        "heimdall-enigma-ingest",
        heimdall_enigma_ingest::run,
    )
    .await
}
