//! `heimdall-sink`: connection batches from the bus into PostgreSQL.
//! Settings come from `HEIMDALL_*` variables; `--print-config` shows them.

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    heimdall_telemetry::service_main::<heimdall_tests::sink::Config, _, _>(
        "heimdall-sink",
        heimdall_tests::sink::run,
    )
    .await
}
