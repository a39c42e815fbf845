//! `heimdall-anomaly`: the anomaly service.
//! Settings come from `HEIMDALL_*` variables; `--print-config` shows them.
//!
//! Operator subcommands (they need only the `HEIMDALL_DATABASE_*` settings):
//! - `heimdall-anomaly versions SENSOR DEVICE`: a device's stored baseline
//!   versions, newest first.
//! - `heimdall-anomaly rollback SENSOR DEVICE VERSION`: roll the device's
//!   baseline back to a stored version (the running service applies it
//!   within a second; a stopped one when it starts).
//! - `heimdall-anomaly incidents SENSOR [open|acknowledged|closed]`: the
//!   sensor's incidents, newest first.
//! - `heimdall-anomaly acknowledge|close SENSOR INCIDENT --by NAME [--note
//!   TEXT]`: a person's verdict on an incident (the running service
//!   publishes it, and after a close opens a new incident for the device's
//!   next alert, within a second).

#![allow(clippy::print_stdout, clippy::print_stderr)] // the subcommands' answers

use std::time::{Duration, Instant};

fn usage(line: &str) -> ! {
    eprintln!("usage: heimdall-anomaly {line}");
    std::process::exit(2);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("versions") => {
            let (Some(sensor), Some(device)) = (args.get(1), args.get(2)) else {
                usage("versions SENSOR DEVICE");
            };
            let pool = heimdall_anomaly_service::open_database().await?;
            let v = heimdall_anomaly_service::versions(&pool, sensor, device).await?;
            if v.is_empty() {
                eprintln!(
                    "heimdall-anomaly: no stored baseline for device {device} on sensor {sensor}"
                );
                std::process::exit(1);
            }
            println!("version  created               confidence  destinations  ports  reason");
            for x in v {
                println!(
                    "{:>7}  {:<20}  {:>10.2}  {:>12}  {:>5}  {}",
                    x.version, x.created_at, x.confidence, x.destinations, x.ports, x.reason
                );
            }
            Ok(())
        }
        Some("rollback") => {
            let (Some(sensor), Some(device), Some(version)) =
                (args.get(1), args.get(2), args.get(3))
            else {
                usage("rollback SENSOR DEVICE VERSION");
            };
            let Ok(version) = version.parse::<u64>() else {
                usage("rollback SENSOR DEVICE VERSION (VERSION is a number)");
            };
            let pool = heimdall_anomaly_service::open_database().await?;
            if let Err(e) =
                heimdall_anomaly_service::request_rollback(&pool, sensor, device, version).await
            {
                eprintln!("heimdall-anomaly: {e}");
                std::process::exit(1);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match heimdall_anomaly_service::rollback_pending(&pool, sensor, device).await {
                    Ok(false) => {
                        let v = heimdall_anomaly_service::versions(&pool, sensor, device).await?;
                        let newest = v.first().map_or(0, |x| x.version);
                        println!(
                            "rolled {device} back to version {version}; it is now version {newest}"
                        );
                        return Ok(());
                    }
                    Ok(true) => tokio::time::sleep(Duration::from_millis(200)).await,
                    Err(e) => {
                        eprintln!("heimdall-anomaly: {e}");
                        std::process::exit(1);
                    }
                }
            }
            println!(
                "rollback of {device} to version {version} requested; no running service took it within 10 s, so it applies when the service starts"
            );
            Ok(())
        }
        Some("incidents") => {
            let Some(sensor) = args.get(1) else {
                usage("incidents SENSOR [open|acknowledged|closed]");
            };
            let pool = heimdall_anomaly_service::open_database().await?;
            let list =
                heimdall_anomaly_service::incidents(&pool, sensor, args.get(2).map(String::as_str))
                    .await?;
            println!("incident           state         severity  alerts  device             types");
            for i in list {
                println!(
                    "{:<18} {:<13} {:<9} {:>6}  {:<18} {}{}",
                    i.incident_id,
                    i.state,
                    i.severity,
                    i.alert_count,
                    i.device_id,
                    i.alert_types.join(","),
                    i.changed_by
                        .map(|by| format!("  ({} by {by})", i.state))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        Some(verb) if heimdall_anomaly_service::Action::from_verb(verb).is_some() => {
            let line = format!("{verb} SENSOR INCIDENT --by NAME [--note TEXT]");
            let (Some(sensor), Some(incident)) = (args.get(1), args.get(2)) else {
                usage(&line);
            };
            let (mut by, mut note) = (None, String::new());
            let mut rest = args[3..].iter();
            while let Some(a) = rest.next() {
                match (a.as_str(), rest.next()) {
                    ("--by", Some(v)) => by = Some(v.clone()),
                    ("--note", Some(v)) => note.clone_from(v),
                    _ => usage(&line),
                }
            }
            let Some(by) = by else { usage(&line) };
            let Some(action) = heimdall_anomaly_service::Action::from_verb(verb) else {
                usage(&line);
            };
            let pool = heimdall_anomaly_service::open_database().await?;
            match heimdall_anomaly_service::act(&pool, sensor, incident, action, &by, &note).await {
                Ok(i) => {
                    println!("incident {} is {} (by {by})", i.incident_id, i.state);
                    Ok(())
                }
                Err(e) => {
                    eprintln!("heimdall-anomaly: {e}");
                    std::process::exit(1);
                }
            }
        }
        _ => {
            heimdall_telemetry::service_main::<heimdall_anomaly_service::Config, _, _>(
                "heimdall-anomaly",
                heimdall_anomaly_service::run,
            )
            .await
        }
    }
}
