//! `heimdall-fingerprint`: device observations, connections and DNS from
//! NATS into the device registry; device events out.
//! Settings come from `HEIMDALL_*` variables; `--print-config` shows them.

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    heimdall_telemetry::service_main::<heimdall_fingerprint_service::Config, _, _>(
        "heimdall-fingerprint",
        heimdall_fingerprint_service::run,
    )
    .await
}
