//! alerts.jsonl: one JSON object per alert, the fields people and scoring
//! tools read: `ts` (seconds since the epoch), `type`, `severity` (info,
//! low, medium, high, critical), `score` (0..1), `src` (`mac`, `ip`), `dst`
//! (`ip`, `port`, `domain`; absent when the alert has no single
//! destination), `description`, `expected`, `observed`, `evidence` (an
//! object), `incident_id`, `first_ts`, `last_ts`, `count`.

use heimdall_proto::sensor::v1::{Alert, Severity};
use serde_json::{Map, Value, json};

fn ip_text(b: &[u8]) -> Option<String> {
    heimdall_proto::addr::ip(b).map(|ip| ip.to_string())
}

fn mac_text(b: &[u8]) -> Option<String> {
    <[u8; 6]>::try_from(b)
        .ok()
        .map(heimdall_proto::addr::mac_text)
}

fn secs(us: i64) -> f64 {
    us as f64 / 1e6
}

/// The alerts.jsonl object for `a`.
pub fn json(a: &Alert) -> Value {
    let severity = Severity::try_from(a.severity)
        .map(|s| heimdall_asgard_api::enum_name(s.as_str_name(), "SEVERITY_"))
        .unwrap_or_else(|_| "unspecified".into());
    let mut src = Map::new();
    if let Some(m) = mac_text(&a.src_mac) {
        src.insert("mac".into(), m.into());
    }
    if let Some(ip) = ip_text(&a.src_ip) {
        src.insert("ip".into(), ip.into());
    }
    let mut dst = Map::new();
    if let Some(ip) = ip_text(&a.dst_ip) {
        dst.insert("ip".into(), ip.into());
        if let Some(p) = a.dst_port {
            dst.insert("port".into(), p.into());
        }
    }
    if let Some(d) = &a.dst_domain {
        dst.insert("domain".into(), d.clone().into());
    }
    let evidence: Map<String, Value> = a
        .evidence
        .iter()
        .map(|kv| (kv.key.clone(), Value::from(kv.value.clone())))
        .collect();
    let mut obj = json!({
        "ts": secs(a.ts_us),
        "type": a.alert_type,
        "severity": severity,
        "score": (a.score * 1000.0).round() / 1000.0,
        "src": src,
        "description": a.description,
        "expected": a.expected,
        "observed": a.observed,
        "evidence": evidence,
        "incident_id": a.incident_id,
        "first_ts": secs(a.first_ts_us),
        "last_ts": secs(a.last_ts_us),
        "count": a.count,
        "alert_id": a.alert_id,
    });
    if !dst.is_empty()
        && let Some(o) = obj.as_object_mut()
    {
        o.insert("dst".into(), Value::Object(dst));
    }
    obj
}
