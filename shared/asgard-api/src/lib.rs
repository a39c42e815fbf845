//! The bodies of the Asgard sensor API, as `proto/asgard/v1/openapi.yaml`
//! describes them, for its one client (asgard-bridge) and the reference
//! server (asgard-dev).
//!
//! What this crate promises:
//! - One Rust type per schema, with the schema's field names; optional
//!   fields are omitted when empty, unknown fields are ignored when read.
//! - Enums travel as the protobuf value name without its prefix, in lower
//!   case (`DEVICE_TYPE_MEDIA_PLAYER` is `"media_player"`); a value this
//!   build does not know reads as `unspecified` ([`enum_name`],
//!   [`enum_value`]).
//! - Intelligence converts to the bus's messages
//!   (`heimdall.sensor.v1.IntelUpdate` and its parts) field for field
//!   ([`IntelUpdate::to_proto`]), after [`IntelUpdate::validate`] said
//!   what, if anything, is wrong with it.

use heimdall_proto::sensor::v1 as pb;
use serde::{Deserialize, Serialize};

/// `"media_player"` for `DeviceType::MediaPlayer`, given the enum's
/// protobuf name and prefix.
pub fn enum_name(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or(proto_name)
        .to_ascii_lowercase()
}

/// The protobuf name of a JSON enum value (`"high"`, `"SEVERITY_"` →
/// `"SEVERITY_HIGH"`).
pub fn enum_value(json: &str, prefix: &str) -> String {
    format!("{prefix}{}", json.to_ascii_uppercase())
}

macro_rules! json_enum {
    ($to:ident, $from:ident, $ty:ty, $prefix:literal) => {
        /// The JSON name of a protobuf enum value (unknown: `unspecified`).
        pub fn $to(v: i32) -> String {
            <$ty>::try_from(v)
                .map(|e| enum_name(e.as_str_name(), $prefix))
                .unwrap_or_else(|_| "unspecified".into())
        }
        /// The protobuf value of a JSON enum name (unknown: 0, unspecified).
        pub fn $from(s: &str) -> i32 {
            <$ty>::from_str_name(&enum_value(s, $prefix)).map_or(0, |e| e as i32)
        }
    };
}
json_enum!(
    device_type_name,
    device_type_value,
    pb::DeviceType,
    "DEVICE_TYPE_"
);
json_enum!(severity_name, severity_value, pb::Severity, "SEVERITY_");
json_enum!(transport_name, transport_value, pb::Transport, "TRANSPORT_");
json_enum!(
    signature_kind_name,
    signature_kind_value,
    pb::SignatureKind,
    "SIGNATURE_KIND_"
);
json_enum!(
    action_name,
    action_value,
    pb::EnforcementAction,
    "ENFORCEMENT_ACTION_"
);

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// `field: message; field: message` for logs and errors.
pub fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `application/problem+json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// `POST /v1/sensors/register`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegisterRequest {
    pub enrollment_token: String,
    pub hardware_id: String,
    pub software_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub platform: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// Tokens from register or refresh. Secrets: `Debug` hides them.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_expires_in: Option<u64>,
    /// Only in the answer to register.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sensor_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intel_poll_interval_s: Option<u64>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("sensor_id", &self.sensor_id)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/auth/refresh`. `Debug` hides the token.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshRequest {
    pub sensor_id: String,
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRequest")
            .field("sensor_id", &self.sensor_id)
            .finish_non_exhaustive()
    }
}

/// The answer to an upload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchResult {
    pub batch_id: String,
    /// `accepted` or `duplicate`.
    pub status: String,
    pub accepted: u64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub server_time_us: i64,
}

/// A few points of a distribution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// A destination in a feature summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DestinationCount {
    pub registered_domain: String,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub connections: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub bytes_up: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub bytes_down: u64,
    /// Hours of the window in which the device used it.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub hours: u64,
}

/// A remote port in a feature summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortCount {
    pub transport: String,
    pub port: u32,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub connections: u64,
}

/// What a device's baseline says, without anything identifying.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeatureSummary {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_destinations: Vec<DestinationCount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_ports: Vec<PortCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_bytes_up: Option<Quantiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_bytes_down: Option<Quantiles>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub active_hours: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections_per_hour: Option<Quantiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_out_per_day: Option<Quantiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_peers: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_queries_per_hour: Option<Quantiles>,
    /// Distinct destinations in the window, named or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destinations: Option<u64>,
    /// New destinations per day after the first day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_destinations_per_day: Option<f64>,
    /// How far the baseline behind the summary can be trusted, 0..1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_confidence: Option<f64>,
}

/// Fingerprints that describe a kind of device, not a household.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceFingerprints {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dhcp_parameter_request_list: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dhcp_vendor_class: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dhcpv6_enterprise_numbers: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ja4: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mdns_service_types: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssdp_servers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_agents: Vec<String>,
}

/// One device's anonymized behaviour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BehaviourSignature {
    pub anon_device_id: String,
    pub device_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_confidence: Option<f64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub vendor: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub oui: String,
    pub window_start_us: i64,
    pub window_end_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_version: Option<u64>,
    pub features: FeatureSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprints: Option<DeviceFingerprints>,
}

/// `POST /v1/signatures`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SignatureBatch {
    pub batch_id: String,
    pub sensor_id: String,
    pub created_us: i64,
    pub signatures: Vec<BehaviourSignature>,
}

/// One alert's metadata, anonymized.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnonymizedAlert {
    pub alert_id: String,
    pub alert_type: String,
    pub severity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    pub ts_us: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub first_ts_us: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub last_ts_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    pub anon_device_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub device_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub anon_dst_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub transport: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dst_domain: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub signature_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub anon_incident_id: String,
}

/// `POST /v1/alerts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertBatch {
    pub batch_id: String,
    pub sensor_id: String,
    pub created_us: i64,
    pub alerts: Vec<AnonymizedAlert>,
}

/// A destination typical for a kind of device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DestinationShare {
    pub registered_domain: String,
    pub share: f64,
}

/// A port typical for a kind of device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortShare {
    pub transport: String,
    pub port: u32,
    pub share: f64,
}

/// How a kind of device normally behaves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GoldenProfile {
    pub profile_id: String,
    pub device_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub vendor: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
    pub version: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub typical_destinations: Vec<DestinationShare>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub typical_ports: Vec<PortShare>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_bytes_up: Option<Quantiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_bytes_down: Option<Quantiles>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub active_hours: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections_per_hour: Option<Quantiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_out_per_day: Option<Quantiles>,
    pub sample_size: u64,
    pub published_us: i64,
}

/// Something known to be bad.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThreatSignature {
    pub id: String,
    pub kind: String,
    pub value: String,
    pub severity: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub created_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_us: Option<i64>,
}

/// What an enforcement rule matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleMatch {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_types: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dst_cidrs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub transport: String,
}

/// An action for a gateway enforcer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnforcementRule {
    pub id: String,
    pub action: String,
    pub criteria: RuleMatch,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_bps: Option<u64>,
    pub priority: i32,
    pub created_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_us: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// `GET /v1/intel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IntelUpdate {
    pub cursor: String,
    pub etag: String,
    pub full_snapshot: bool,
    pub has_more: bool,
    pub generated_us: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub golden_profiles: Vec<GoldenProfile>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub threat_signatures: Vec<ThreatSignature>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub enforcement_rules: Vec<EnforcementRule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_profile_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_signature_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_rule_ids: Vec<String>,
}

fn quantiles(q: &Option<Quantiles>) -> Option<pb::Quantiles> {
    q.as_ref().map(|q| pb::Quantiles {
        p50: q.p50,
        p90: q.p90,
        p99: q.p99,
        max: q.max,
    })
}

impl IntelUpdate {
    /// Every problem that makes this update unusable: missing ids, values
    /// a sensor cannot apply (an unknown signature kind, an empty value, a
    /// CIDR that does not parse, a share outside 0..1). Empty when fine.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut bad = |field: String, message: &str| {
            errors.push(FieldError {
                field,
                message: message.into(),
            })
        };
        if self.cursor.is_empty() {
            bad("cursor".into(), "missing");
        }
        for (i, p) in self.golden_profiles.iter().enumerate() {
            if p.profile_id.is_empty() {
                bad(format!("golden_profiles[{i}].profile_id"), "missing");
            }
            if p.typical_destinations
                .iter()
                .map(|d| d.share)
                .chain(p.typical_ports.iter().map(|p| p.share))
                .any(|s| !(0.0..=1.0).contains(&s))
            {
                bad(format!("golden_profiles[{i}]"), "a share outside 0..1");
            }
        }
        for (i, s) in self.threat_signatures.iter().enumerate() {
            if s.id.is_empty() {
                bad(format!("threat_signatures[{i}].id"), "missing");
            }
            if signature_kind_value(&s.kind) == 0 {
                bad(format!("threat_signatures[{i}].kind"), "unknown kind");
            }
            if s.value.trim().is_empty() {
                bad(format!("threat_signatures[{i}].value"), "empty");
            }
            if s.kind == "ip" && s.value.parse::<std::net::IpAddr>().is_err() {
                bad(format!("threat_signatures[{i}].value"), "not an IP address");
            }
            if s.kind == "cidr" && !is_cidr(&s.value) {
                bad(format!("threat_signatures[{i}].value"), "not a CIDR");
            }
        }
        for (i, r) in self.enforcement_rules.iter().enumerate() {
            if r.id.is_empty() {
                bad(format!("enforcement_rules[{i}].id"), "missing");
            }
            if action_value(&r.action) == 0 {
                bad(format!("enforcement_rules[{i}].action"), "unknown action");
            }
            if r.criteria.dst_cidrs.iter().any(|c| !is_cidr(c)) {
                bad(
                    format!("enforcement_rules[{i}].criteria.dst_cidrs"),
                    "not a CIDR",
                );
            }
        }
        errors
    }

    /// The bus's message for this update.
    pub fn to_proto(&self) -> pb::IntelUpdate {
        pb::IntelUpdate {
            cursor: self.cursor.clone(),
            etag: self.etag.clone(),
            full_snapshot: self.full_snapshot,
            has_more: self.has_more,
            generated_us: self.generated_us,
            golden_profiles: self
                .golden_profiles
                .iter()
                .map(|p| pb::GoldenProfile {
                    profile_id: p.profile_id.clone(),
                    device_type: device_type_value(&p.device_type),
                    vendor: p.vendor.clone(),
                    model: p.model.clone(),
                    version: p.version,
                    typical_destinations: p
                        .typical_destinations
                        .iter()
                        .map(|d| pb::DestinationExpectation {
                            registered_domain: d.registered_domain.clone(),
                            share: d.share,
                        })
                        .collect(),
                    typical_ports: p
                        .typical_ports
                        .iter()
                        .map(|t| pb::PortExpectation {
                            transport: transport_value(&t.transport),
                            port: t.port,
                            share: t.share,
                        })
                        .collect(),
                    daily_bytes_up: quantiles(&p.daily_bytes_up),
                    daily_bytes_down: quantiles(&p.daily_bytes_down),
                    active_hours: p.active_hours.clone(),
                    connections_per_hour: quantiles(&p.connections_per_hour),
                    fan_out_per_day: quantiles(&p.fan_out_per_day),
                    sample_size: p.sample_size,
                    published_us: p.published_us,
                })
                .collect(),
            threat_signatures: self
                .threat_signatures
                .iter()
                .map(|s| pb::ThreatSignature {
                    id: s.id.clone(),
                    kind: signature_kind_value(&s.kind),
                    value: s.value.clone(),
                    severity: severity_value(&s.severity),
                    source: s.source.clone(),
                    description: s.description.clone(),
                    created_us: s.created_us,
                    expires_us: s.expires_us,
                })
                .collect(),
            enforcement_rules: self
                .enforcement_rules
                .iter()
                .map(|r| pb::EnforcementRule {
                    id: r.id.clone(),
                    action: action_value(&r.action),
                    criteria: Some(pb::RuleMatch {
                        device_types: r
                            .criteria
                            .device_types
                            .iter()
                            .map(|t| device_type_value(t))
                            .collect(),
                        device_ids: r.criteria.device_ids.clone(),
                        dst_cidrs: r.criteria.dst_cidrs.clone(),
                        domains: r.criteria.domains.clone(),
                        ports: r.criteria.ports.clone(),
                        transport: transport_value(&r.criteria.transport),
                    }),
                    rate_limit_bps: r.rate_limit_bps,
                    priority: r.priority,
                    created_us: r.created_us,
                    expires_us: r.expires_us,
                    reason: r.reason.clone(),
                })
                .collect(),
            removed_profile_ids: self.removed_profile_ids.clone(),
            removed_signature_ids: self.removed_signature_ids.clone(),
            removed_rule_ids: self.removed_rule_ids.clone(),
        }
    }
}

/// `a.b.c.d/n` or `v6/n` with n in range.
fn is_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(n)) => n <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(n)) => n <= 128,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_travel_as_lower_case_names_and_unknown_ones_read_as_unspecified() {
        assert_eq!(
            device_type_name(pb::DeviceType::MediaPlayer as i32),
            "media_player"
        );
        assert_eq!(
            device_type_value("media_player"),
            pb::DeviceType::MediaPlayer as i32
        );
        assert_eq!(severity_value("high"), pb::Severity::High as i32);
        assert_eq!(severity_value("apocalyptic"), 0);
        assert_eq!(device_type_name(9999), "unspecified");
        assert_eq!(signature_kind_name(pb::SignatureKind::Ja4 as i32), "ja4");
    }

    #[test]
    fn intelligence_is_validated_then_converted_field_for_field() {
        let json = r#"{
            "cursor": "c-7", "etag": "e-7", "full_snapshot": true, "has_more": false,
            "generated_us": 1700000000000000, "something_new": [1, 2],
            "threat_signatures": [
                {"id": "sig-1", "kind": "domain", "value": "evil.example", "severity": "high",
                 "source": "test", "created_us": 5, "expires_us": 9},
                {"id": "sig-2", "kind": "cidr", "value": "203.0.113.0/24", "severity": "medium"}
            ],
            "enforcement_rules": [
                {"id": "r-1", "action": "block", "priority": 10,
                 "criteria": {"domains": ["evil.example"], "transport": "tcp", "ports": [443]}}
            ],
            "golden_profiles": [
                {"profile_id": "p-plug", "device_type": "smart_plug", "version": 3,
                 "typical_destinations": [{"registered_domain": "tuya.com", "share": 0.9}]}
            ],
            "removed_signature_ids": ["sig-0"]
        }"#;
        let update: IntelUpdate = serde_json::from_str(json).expect("json");
        assert!(update.validate().is_empty(), "{:?}", update.validate());
        let p = update.to_proto();
        assert_eq!(
            p.threat_signatures[0].kind,
            pb::SignatureKind::Domain as i32
        );
        assert_eq!(p.threat_signatures[0].severity, pb::Severity::High as i32);
        assert_eq!(p.threat_signatures[0].expires_us, Some(9));
        assert_eq!(p.threat_signatures[1].expires_us, None);
        let rule = &p.enforcement_rules[0];
        assert_eq!(rule.action, pb::EnforcementAction::Block as i32);
        let criteria = rule.criteria.as_ref().expect("criteria");
        assert_eq!(criteria.transport, pb::Transport::Tcp as i32);
        assert_eq!(criteria.ports, [443]);
        assert_eq!(
            p.golden_profiles[0].device_type,
            pb::DeviceType::SmartPlug as i32
        );
        assert_eq!(p.removed_signature_ids, ["sig-0"]);
        assert!(p.full_snapshot);

        let mut broken = update.clone();
        broken.threat_signatures[1].value = "203.0.113.0/40".into();
        broken.threat_signatures[0].kind = "smell".into();
        broken.enforcement_rules[0].action = "explode".into();
        let fields: Vec<String> = broken.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "threat_signatures[0].kind",
                "threat_signatures[1].value",
                "enforcement_rules[0].action"
            ]
        );
    }

    #[test]
    fn tokens_never_print() {
        let t = TokenResponse {
            access_token: "acc-secret".into(),
            refresh_token: "ref-secret".into(),
            sensor_id: "s-1".into(),
            ..Default::default()
        };
        let shown = format!("{t:?}");
        assert!(
            shown.contains("s-1") && !shown.contains("secret"),
            "{shown}"
        );
        let r = RefreshRequest {
            sensor_id: "s-1".into(),
            refresh_token: "ref-secret".into(),
        };
        assert!(!format!("{r:?}").contains("secret"));
    }
}
