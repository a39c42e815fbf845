//! Steering: Enigma's capture settings applied to a running capture.
//!
//! The enigma-uploader asks Enigma for each sensor's capture settings
//! (`GetCaptureSettings`) and publishes every new version on
//! `sensor.<id>.control.p0`, a stream that keeps only the latest message of
//! each subject. With `HEIMDALL_CAPTURE_STEERING=enigma` the capture service
//! reads that message when it starts and each time it changes, and the
//! capture thread applies it between two packets:
//!
//! - schedule: a window of `window_seconds` at the start of every
//!   `interval_seconds` (0 means 30 s and 120 s, as the contract says); a
//!   window as long as its interval is continuous capture.
//! - filter: Enigma's BPF filter narrows the local `HEIMDALL_CAPTURE_FILTER`
//!   (a packet must pass both); an empty one leaves the local filter alone.
//! - snap length: 0 keeps the local one; another value opens the handle
//!   again with it.
//! - interfaces: the first one, when given and different, replaces the
//!   interface (the handle is opened again, with the kept capability).
//!
//! Settings are taken or refused whole: a filter that does not compile or
//! an interface that cannot be opened leaves the capture exactly as it was,
//! with an error in the log and `capture_steering_refused` counted. Retention,
//! log types and compression in the same message are the uploader's.

use std::sync::mpsc::Sender;
use std::time::Duration;

use heimdall_bus::{Bus, BusConfig, Kind, Received};
use heimdall_proto::enigma::v1::CaptureSettings as EnigmaSettings;
use heimdall_telemetry::Health;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::driver::Schedule;
use crate::metrics::CaptureMetrics;
use crate::settings::CaptureSettings;

/// The largest snap length Enigma may ask for (its own default).
const MAX_SNAPLEN: u32 = 262_144;

/// What a source is asked to capture: the whole state, not a difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceChange {
    pub interface: String,
    /// The filter to install (the local one and Enigma's, joined).
    pub filter: String,
    pub snaplen: u32,
}

impl SourceChange {
    /// What the local settings alone ask for.
    pub fn local(s: &CaptureSettings) -> Self {
        SourceChange {
            interface: s.interface.clone(),
            filter: s.filter.clone(),
            snaplen: s.snaplen,
        }
    }
}

/// One version of Enigma's settings, checked and ready for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steering {
    pub version: String,
    pub schedule: Schedule,
    pub source: SourceChange,
    /// Interfaces Enigma named beyond the first, which one capture cannot
    /// serve (logged when applied).
    pub ignored_interfaces: Vec<String>,
}

/// Check Enigma's settings against the local ones and say what to run.
pub fn from_enigma(e: &EnigmaSettings, local: &CaptureSettings) -> Result<Steering, String> {
    let interval = match e.interval_seconds {
        0 => 120,
        n => n,
    };
    let window = match e.window_seconds {
        0 => 30,
        n => n,
    };
    if interval > 86_400 {
        return Err(format!(
            "interval_seconds {interval} is over a day; Heimdall takes at most 86400"
        ));
    }
    if window > interval {
        return Err(format!(
            "window_seconds {window} is longer than interval_seconds {interval}"
        ));
    }
    if e.snaplen > MAX_SNAPLEN || (e.snaplen != 0 && e.snaplen < 64) {
        return Err(format!(
            "snaplen {} is outside 64..={MAX_SNAPLEN} (0 keeps the local one)",
            e.snaplen
        ));
    }
    let schedule = if window == interval {
        Schedule::Continuous
    } else {
        Schedule::Windowed {
            interval: Duration::from_secs(interval.into()),
            window: Duration::from_secs(window.into()),
        }
    };
    let remote = e.bpf_filter.trim();
    let filter = match (local.filter.trim(), remote) {
        (l, "") => l.to_string(),
        ("", r) => r.to_string(),
        (l, r) => format!("({l}) and ({r})"),
    };
    let mut interfaces = e.interfaces.iter().filter(|i| !i.trim().is_empty());
    let interface = interfaces
        .next()
        .map_or_else(|| local.interface.clone(), |i| i.trim().to_string());
    Ok(Steering {
        version: e.version.clone(),
        schedule,
        source: SourceChange {
            interface,
            filter,
            snaplen: if e.snaplen == 0 {
                local.snaplen
            } else {
                e.snaplen
            },
        },
        ignored_interfaces: interfaces.cloned().collect(),
    })
}

/// Follow this sensor's control subject until `shutdown`, handing every
/// valid version to the capture thread through `to_driver`.
pub async fn listen(
    nats: BusConfig,
    local: CaptureSettings,
    to_driver: Sender<Steering>,
    metrics: CaptureMetrics,
    health: Health,
    shutdown: CancellationToken,
) {
    let mut pause = Duration::from_millis(200);
    let bus = loop {
        match Bus::connect(&nats, "heimdall-capture-steering").await {
            Ok(bus) => match bus.ensure_streams(&[Kind::Control]).await {
                Ok(()) => break bus,
                Err(e) => warn!(error = %e, "cannot set up the control stream; retrying"),
            },
            Err(e) => warn!(error = %e, "steering cannot reach NATS; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    };
    let bus = bus.with_health(health);
    let sensor = local.sensor_id.clone();
    let mut spec = bus.consumer_spec(Kind::Control, &format!("capture-steering-{sensor}"), None);
    spec.filter = bus.subjects().sensor(Kind::Control, &sensor);
    spec.latest = true;
    info!(subject = %spec.filter, "following Enigma's capture settings");
    let result = bus
        .consume::<EnigmaSettings, _, _, String>(spec, shutdown, |m: Received<EnigmaSettings>| {
            match from_enigma(&m.message, &local) {
                Ok(s) => {
                    // The driver is gone only while the service stops.
                    let _ = to_driver.send(s);
                }
                Err(why) => {
                    metrics.steering_refused.inc();
                    warn!(
                        version = %m.message.version,
                        %why,
                        "capture settings from Enigma refused; the capture goes on as it was"
                    );
                }
            }
            async { Ok(()) }
        })
        .await;
    if let Err(e) = result {
        warn!(error = %e, "steering stopped: Enigma's capture settings are no longer followed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> CaptureSettings {
        CaptureSettings {
            interface: "eth0".into(),
            filter: "not port 4222".into(),
            snaplen: 65_535,
            ..CaptureSettings::default()
        }
    }

    #[test]
    fn zero_means_the_contract_defaults_and_filters_narrow_the_local_one() {
        let s = from_enigma(
            &EnigmaSettings {
                version: "v1".into(),
                bpf_filter: "tcp or udp".into(),
                ..Default::default()
            },
            &local(),
        )
        .expect("valid");
        assert_eq!(
            s.schedule,
            Schedule::Windowed {
                interval: Duration::from_secs(120),
                window: Duration::from_secs(30)
            }
        );
        assert_eq!(s.source.filter, "(not port 4222) and (tcp or udp)");
        assert_eq!(s.source.snaplen, 65_535);
        assert_eq!(s.source.interface, "eth0");
    }

    #[test]
    fn a_window_as_long_as_its_interval_is_continuous() {
        let s = from_enigma(
            &EnigmaSettings {
                interval_seconds: 60,
                window_seconds: 60,
                interfaces: vec!["wlan0".into(), "eth1".into()],
                snaplen: 128,
                ..Default::default()
            },
            &CaptureSettings::default(),
        )
        .expect("valid");
        assert_eq!(s.schedule, Schedule::Continuous);
        assert_eq!(s.source.interface, "wlan0");
        assert_eq!(s.ignored_interfaces, ["eth1"]);
        assert_eq!(s.source.snaplen, 128);
        assert_eq!(s.source.filter, "");
    }

    #[test]
    fn impossible_settings_are_refused_with_the_reason() {
        let bad = |e: EnigmaSettings| from_enigma(&e, &local()).expect_err("refused");
        assert!(
            bad(EnigmaSettings {
                interval_seconds: 10,
                window_seconds: 20,
                ..Default::default()
            })
            .contains("longer than interval_seconds")
        );
        assert!(
            bad(EnigmaSettings {
                snaplen: 10_000_000,
                ..Default::default()
            })
            .contains("snaplen")
        );
        assert!(
            bad(EnigmaSettings {
                interval_seconds: 90_000,
                ..Default::default()
            })
            .contains("over a day")
        );
    }
}
