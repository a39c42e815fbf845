//! Enigma steers the capture: this task asks Enigma for each sensor's
//! capture settings (`GetCaptureSettings`) and publishes every new version
//! on the sensor's control subject (`sensor.<id>.control.p0`, a stream that
//! keeps the latest message per subject), where the capture service picks
//! it up (`HEIMDALL_CAPTURE_STEERING=enigma`, see `heimdall_capture::steer`).
//!
//! Sensors asked for: those in `HEIMDALL_ENIGMA_SENSORS` and every sensor
//! whose records this uploader has spooled, a new one at once, then every
//! `HEIMDALL_ENIGMA_SETTINGS_EVERY`. A failed fetch is retried with backoff;
//! a server without the method is not asked again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heimdall_bus::{Bus, Kind};
use heimdall_proto::enigma::v1::GetCaptureSettingsRequest;
use heimdall_proto::enigma::v1::ingest_client::IngestClient;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tracing::{error, info, warn};

use crate::{Uploader, backoff, bearer};

/// How often the list of sensors is looked at for new ones.
const LOOK: Duration = Duration::from_secs(1);

/// Per sensor: the version last published and when to ask next.
#[derive(Debug, Default)]
struct Asked {
    version: Option<String>,
    next: Option<Instant>,
    failures: u32,
}

/// Run until `shutdown`, or until Enigma says it has no capture settings.
pub(crate) async fn run(
    up: Arc<Uploader>,
    channel: Channel,
    bus: Bus,
    shutdown: CancellationToken,
) {
    let s = up.settings.clone();
    if s.settings_every.is_zero() {
        return;
    }
    let Some(auth) = bearer(&s) else {
        return;
    };
    if let Err(e) = bus.ensure_streams(&[Kind::Control]).await {
        warn!(error = %e, "cannot set up the control stream; capture settings not followed");
        return;
    }
    let mut client = IngestClient::new(channel);
    let mut asked: HashMap<String, Asked> = HashMap::new();
    loop {
        if up.refused.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        for sensor in up.sensors() {
            let a = asked.entry(sensor.clone()).or_default();
            if a.next.is_some_and(|t| t > now) {
                continue;
            }
            let mut request = tonic::Request::new(GetCaptureSettingsRequest {
                sensor_id: sensor.clone(),
                current_version: a.version.clone().unwrap_or_default(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
            });
            request.metadata_mut().insert("authorization", auth.clone());
            let result = client.get_capture_settings(request).await;
            let outcome = match &result {
                Ok(_) => "ok".to_string(),
                Err(st) => format!("{:?}", st.code()).to_ascii_lowercase(),
            };
            up.metrics
                .settings_fetches
                .get_or_create(&vec![("outcome".into(), outcome)])
                .inc();
            let failed = match result {
                Ok(r) => {
                    let cs = r.into_inner();
                    if a.version.as_deref() == Some(cs.version.as_str()) {
                        false
                    } else {
                        // A fresh message id each time: a version that comes
                        // back after another must be stored again.
                        let stamp = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_micros());
                        let subject = bus.subjects().publish(Kind::Control, &sensor, 0);
                        let id = format!("capture-settings-{sensor}-{}-{stamp}", cs.version);
                        match bus.publish(&subject, &id, &cs).await {
                            Ok(_) => {
                                info!(
                                    sensor = %sensor,
                                    version = %cs.version,
                                    interval_s = cs.interval_seconds,
                                    window_s = cs.window_seconds,
                                    filter = %cs.bpf_filter,
                                    snaplen = cs.snaplen,
                                    interfaces = ?cs.interfaces,
                                    "new capture settings from Enigma published for the capture"
                                );
                                a.version = Some(cs.version);
                                false
                            }
                            Err(e) => {
                                warn!(sensor = %sensor, error = %e, "cannot publish capture settings; will retry");
                                true
                            }
                        }
                    }
                }
                Err(st) if st.code() == Code::Unimplemented => {
                    info!("Enigma does not serve capture settings; the capture keeps its own");
                    return;
                }
                Err(st) if st.code() == Code::Unauthenticated => {
                    up.refuse(&st);
                    return;
                }
                Err(st) if st.code() == Code::PermissionDenied => {
                    error!(sensor = %sensor, reason = %st.message(),
                        "the API key does not cover this sensor's capture settings: check HEIMDALL_ENIGMA_API_KEY_FILE and HEIMDALL_ENIGMA_SENSORS");
                    true
                }
                Err(st) => {
                    warn!(sensor = %sensor, code = ?st.code(), reason = %st.message(),
                        "cannot fetch capture settings; will retry");
                    true
                }
            };
            a.next = Some(if failed {
                a.failures += 1;
                now + backoff(&s, a.failures).min(s.settings_every)
            } else {
                a.failures = 0;
                now + s.settings_every
            });
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(LOOK) => {}
        }
    }
}
