//! `heimdall-asgard-bridge`: anonymized behaviour out to Asgard,
//! intelligence in. Settings come from `HEIMDALL_*` variables;
//! `--print-config` shows them.

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    heimdall_telemetry::service_main::<heimdall_asgard_bridge::Config, _, _>(
        "heimdall-asgard-bridge",
        heimdall_asgard_bridge::run,
    )
    .await
}
