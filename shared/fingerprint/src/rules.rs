//! The knowledge the fingerprinter applies, as data: `data/vendors.toml`
//! (what an IEEE organization name means) and `data/rules.toml` (what a
//! signal seen on the wire means). Both are compiled into the binary and can
//! be replaced at run time with files of the same format. Every entry names
//! its source.

use std::collections::HashMap;

use heimdall_proto::sensor::v1::{DeviceType, EvidenceSource, GoldenProfile};
use regex::{Regex, RegexSet};
use serde::Deserialize;

/// The rules that ship with Heimdall.
pub const BUILTIN_RULES: &str = include_str!("../data/rules.toml");
/// The vendor facts that ship with Heimdall.
pub const BUILTIN_VENDORS: &str = include_str!("../data/vendors.toml");

/// A kind of fact a device shows about itself; rules match on one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// DHCPv4 option 12, option 81, DHCPv6 FQDN, mDNS host names, NetBIOS
    /// and LLMNR names the device answers to.
    Hostname,
    /// DHCPv4 option 60.
    DhcpVendorClass,
    /// DHCPv4 option 55 as decimal codes joined by commas ("1,3,6,15").
    DhcpParams,
    /// DHCPv6 vendor class as "enterprise:data".
    Dhcpv6Vendor,
    /// A DNS-SD service type the device offers ("_airplay._tcp.local").
    MdnsService,
    /// A DNS-SD instance name the device announces.
    MdnsInstance,
    /// A DNS-SD TXT entry as "key=value".
    MdnsTxt,
    /// SSDP SERVER header.
    SsdpServer,
    /// SSDP USER-AGENT header (of M-SEARCH requests the device sends).
    SsdpUserAgent,
    /// SSDP NT, ST and USN values the device announces.
    SsdpType,
    /// SSDP LOCATION URL.
    SsdpLocation,
    /// HTTP User-Agent of requests the device sends.
    HttpUserAgent,
    /// HTTP request target (path and query).
    HttpUri,
    /// A name the device looks up, connects to by TLS SNI, QUIC SNI or names
    /// in an HTTP Host header.
    Domain,
    /// JA4 fingerprint of the device's TLS or QUIC ClientHellos.
    Ja4,
    /// A service the device answers on, as "tcp/631" or "udp/5353".
    Serves,
    /// A service the device asks for, as "udp/32412".
    Contacts,
}

impl Signal {
    /// The evidence source a signal belongs to.
    pub fn source(self) -> EvidenceSource {
        match self {
            Signal::Hostname | Signal::DhcpVendorClass | Signal::DhcpParams => EvidenceSource::Dhcp,
            Signal::Dhcpv6Vendor => EvidenceSource::Dhcpv6,
            Signal::MdnsService | Signal::MdnsInstance | Signal::MdnsTxt => EvidenceSource::Mdns,
            Signal::SsdpServer
            | Signal::SsdpUserAgent
            | Signal::SsdpType
            | Signal::SsdpLocation => EvidenceSource::Ssdp,
            Signal::HttpUserAgent | Signal::HttpUri => EvidenceSource::HttpUserAgent,
            Signal::Domain => EvidenceSource::Dns,
            Signal::Ja4 => EvidenceSource::Tls,
            Signal::Serves | Signal::Contacts => EvidenceSource::Traffic,
        }
    }

    /// Its name in the rules file.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hostname => "hostname",
            Signal::DhcpVendorClass => "dhcp_vendor_class",
            Signal::DhcpParams => "dhcp_params",
            Signal::Dhcpv6Vendor => "dhcpv6_vendor",
            Signal::MdnsService => "mdns_service",
            Signal::MdnsInstance => "mdns_instance",
            Signal::MdnsTxt => "mdns_txt",
            Signal::SsdpServer => "ssdp_server",
            Signal::SsdpUserAgent => "ssdp_user_agent",
            Signal::SsdpType => "ssdp_type",
            Signal::SsdpLocation => "ssdp_location",
            Signal::HttpUserAgent => "http_user_agent",
            Signal::HttpUri => "http_uri",
            Signal::Domain => "domain",
            Signal::Ja4 => "ja4",
            Signal::Serves => "serves",
            Signal::Contacts => "contacts",
        }
    }
}

/// Why a rules or vendors file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// Not valid TOML of the expected shape.
    #[error("{file}: {message}")]
    Syntax {
        /// Which file.
        file: String,
        /// What the parser said.
        message: String,
    },
    /// One entry is wrong.
    #[error("{file}: entry {id:?}: {message}")]
    Entry {
        /// Which file.
        file: String,
        /// The entry's id (or organization pattern).
        id: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    generic_hostname: Vec<String>,
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    signal: Signal,
    /// A regular expression over the signal's text; for `domain` signals a
    /// name suffix may be given instead with `domain`.
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    vendor: Option<String>,
    #[serde(default, rename = "type")]
    device_type: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    os: Option<String>,
    weight: f64,
    /// The device runs a general-purpose system (phone, computer); names
    /// it looks up say what its apps talk to, not what it is.
    #[serde(default)]
    general: bool,
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VendorsFile {
    vendor: Vec<VendorSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VendorSpec {
    /// A regular expression over the IEEE organization name.
    organization: String,
    /// The brand people know.
    #[serde(default)]
    brand: Option<String>,
    /// The organization makes radio modules or builds devices for other
    /// brands: the OUI names the part, not the product.
    #[serde(default)]
    module: bool,
    #[serde(default, rename = "type")]
    device_type: Option<String>,
    #[serde(default)]
    weight: Option<f64>,
    source: String,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable id, quoted in evidence.
    pub id: String,
    /// What it matches.
    pub signal: Signal,
    regex: Regex,
    /// Vendor it implies (may use `$1` of the pattern).
    pub vendor: Option<String>,
    /// Type it implies.
    pub device_type: Option<DeviceType>,
    /// Model it implies (may use `$1`).
    pub model: Option<String>,
    /// Operating system it implies (may use `$1`).
    pub os: Option<String>,
    /// How much it counts, 0 to 1.
    pub weight: f64,
    /// See [`RuleSpec::general`].
    pub general: bool,
    /// Where the fact comes from.
    pub source: String,
}

/// What a rule concluded from one signal value.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding<'r> {
    /// The rule.
    pub rule: &'r Rule,
    /// Vendor with captures filled in.
    pub vendor: Option<String>,
    /// Model with captures filled in.
    pub model: Option<String>,
    /// OS with captures filled in.
    pub os: Option<String>,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// What an IEEE organization means.
#[derive(Debug, Clone)]
pub struct VendorFact {
    /// The brand to show; the cleaned organization name when none is given.
    pub brand: String,
    /// The OUI belongs to a module or ODM maker.
    pub module: bool,
    /// A type most of the organization's networked products have.
    pub device_type: Option<DeviceType>,
    /// How much that type counts.
    pub weight: f64,
    /// Where the fact comes from.
    pub source: Option<String>,
}

/// Compiled rules and vendor facts.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Rule>,
    by_signal: HashMap<Signal, (RegexSet, Vec<usize>)>,
    vendors: Vec<(Regex, VendorSpecCompiled)>,
    generic: Vec<Regex>,
}

#[derive(Debug, Clone)]
struct VendorSpecCompiled {
    brand: Option<String>,
    module: bool,
    device_type: Option<DeviceType>,
    weight: f64,
    source: String,
}

/// The rules of each signal as one regex set.
type Index = HashMap<Signal, (RegexSet, Vec<usize>)>;

fn index(rules: &[Rule]) -> Result<Index, (&'static str, String)> {
    let mut groups: HashMap<Signal, Vec<usize>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        groups.entry(r.signal).or_default().push(i);
    }
    let mut by_signal = HashMap::new();
    for (signal, idx) in groups {
        let set = RegexSet::new(idx.iter().map(|&i| rules[i].regex.as_str()))
            .map_err(|e| (signal.name(), e.to_string()))?;
        by_signal.insert(signal, (set, idx));
    }
    Ok(by_signal)
}

/// A device hint from intelligence: devices of a vendor (and type, model)
/// look up names under `domain`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    /// Stable id, quoted in evidence (`intel:<profile>:<domain>`).
    pub id: String,
    /// Registered domain.
    pub domain: String,
    pub vendor: Option<String>,
    pub device_type: Option<DeviceType>,
    pub model: Option<String>,
    /// 0..1.
    pub weight: f64,
    /// Where it comes from.
    pub source: String,
}

/// Registered domains that many makers' devices use (clouds, CDNs, time,
/// the big platforms): never a hint on their own.
const SHARED_INFRASTRUCTURE: &[&str] = &[
    "akamai.net",
    "akamaihd.net",
    "akamaized.net",
    "amazon.com",
    "amazonaws.com",
    "apple.com",
    "azure.com",
    "azureedge.net",
    "cloudflare.com",
    "cloudflare.net",
    "cloudfront.net",
    "edgekey.net",
    "edgesuite.net",
    "facebook.com",
    "fastly.net",
    "gstatic.com",
    "google.com",
    "googleapis.com",
    "googlevideo.com",
    "icloud.com",
    "microsoft.com",
    "msftconnecttest.com",
    "ntp.org",
    "windows.com",
    "windowsupdate.com",
];

/// Device hints from golden profiles: a destination that most devices of
/// a vendor's profile use (share ≥ 0.5), that no other vendor's profile
/// names, and that is not shared infrastructure, says a device that looks
/// it up is likely of that vendor (and the profile's type and model).
/// Weight 0.4 × share: below a vendor's cloud name in the built-in rules
/// (0.5), a hint, not a proof.
pub fn hints_from_profiles(profiles: &[GoldenProfile]) -> Vec<Hint> {
    let mut vendors_of: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for p in profiles {
        for d in &p.typical_destinations {
            vendors_of
                .entry(d.registered_domain.trim_matches('.').to_ascii_lowercase())
                .or_default()
                .insert(p.vendor.to_ascii_lowercase());
        }
    }
    let mut out = Vec::new();
    for p in profiles {
        if p.vendor.is_empty() {
            continue;
        }
        let device_type = DeviceType::try_from(p.device_type)
            .ok()
            .filter(|t| *t != DeviceType::Unspecified);
        for d in &p.typical_destinations {
            let (domain, share) = (
                d.registered_domain.trim_matches('.').to_ascii_lowercase(),
                d.share,
            );
            let id = &p.profile_id;
            if share < 0.5
                || domain.is_empty()
                || SHARED_INFRASTRUCTURE.contains(&domain.as_str())
                || vendors_of.get(&domain).is_some_and(|v| v.len() > 1)
            {
                continue;
            }
            out.push(Hint {
                id: format!("intel:{id}:{domain}"),
                domain: domain.clone(),
                vendor: Some(p.vendor.clone()),
                device_type,
                model: (!p.model.is_empty()).then(|| p.model.clone()),
                weight: (0.4 * share).clamp(0.0, 0.4),
                source: format!(
                    "Asgard golden profile {id}: {:.0}% of its devices use {domain}",
                    share * 100.0
                ),
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// `"media_player"` -> the enum value; the taxonomy names of device.proto.
pub fn parse_type(s: &str) -> Option<DeviceType> {
    DeviceType::from_str_name(&format!("DEVICE_TYPE_{}", s.to_ascii_uppercase()))
        .filter(|t| *t != DeviceType::Unspecified)
}

/// The enum value -> `"media_player"`.
pub fn type_name(t: DeviceType) -> String {
    t.as_str_name()
        .trim_start_matches("DEVICE_TYPE_")
        .to_ascii_lowercase()
}

impl Rules {
    /// The rules and vendor facts that ship with Heimdall.
    pub fn builtin() -> Result<Rules, RulesError> {
        Rules::parse(
            BUILTIN_RULES,
            "data/rules.toml",
            BUILTIN_VENDORS,
            "data/vendors.toml",
        )
    }

    /// Compiles rules and vendor facts from their text; `*_name` label errors.
    pub fn parse(
        rules: &str,
        rules_name: &str,
        vendors: &str,
        vendors_name: &str,
    ) -> Result<Rules, RulesError> {
        let syntax = |file: &str, e: toml::de::Error| RulesError::Syntax {
            file: file.to_string(),
            message: e.to_string(),
        };
        let rf: RulesFile = toml::from_str(rules).map_err(|e| syntax(rules_name, e))?;
        let vf: VendorsFile = toml::from_str(vendors).map_err(|e| syntax(vendors_name, e))?;
        let entry = |file: &str, id: &str, message: String| RulesError::Entry {
            file: file.to_string(),
            id: id.to_string(),
            message,
        };
        let weight_ok = |w: f64| (0.0..=1.0).contains(&w);
        let kind = |file: &str, id: &str, t: &Option<String>| -> Result<_, RulesError> {
            t.as_deref()
                .map(|s| {
                    parse_type(s).ok_or_else(|| {
                        entry(file, id, format!("type {s:?} is not in the taxonomy of proto/sensor/v1/device.proto (phone, camera, smart_plug, hub, ...)"))
                    })
                })
                .transpose()
        };

        let mut compiled = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in rf.rule {
            if !seen.insert(r.id.clone()) {
                return Err(entry(rules_name, &r.id, "the id is used twice".into()));
            }
            if !weight_ok(r.weight) {
                return Err(entry(
                    rules_name,
                    &r.id,
                    format!("weight {} is outside 0..1", r.weight),
                ));
            }
            let pattern = match (&r.pattern, &r.domain) {
                (Some(p), None) => p.clone(),
                (None, Some(d)) if r.signal == Signal::Domain => {
                    format!(r"(?i)(?:^|\.){}\.?$", regex::escape(d.trim_matches('.')))
                }
                _ => {
                    return Err(entry(
                        rules_name,
                        &r.id,
                        "give exactly one of `pattern` and `domain` (domain only for signal = \"domain\")".into(),
                    ));
                }
            };
            let regex = Regex::new(&pattern)
                .map_err(|e| entry(rules_name, &r.id, format!("pattern: {e}")))?;
            let device_type = kind(rules_name, &r.id, &r.device_type)?;
            if r.vendor.is_none()
                && device_type.is_none()
                && r.model.is_none()
                && r.os.is_none()
                && !r.general
            {
                return Err(entry(
                    rules_name,
                    &r.id,
                    "the rule concludes nothing: give vendor, type, model, os or general".into(),
                ));
            }
            compiled.push(Rule {
                id: r.id,
                signal: r.signal,
                regex,
                vendor: r.vendor,
                device_type,
                model: r.model,
                os: r.os,
                weight: r.weight,
                general: r.general,
                source: r.source,
            });
        }
        let by_signal = index(&compiled).map_err(|(signal, e)| entry(rules_name, signal, e))?;

        let mut vendors = Vec::new();
        for v in vf.vendor {
            let re = Regex::new(&v.organization)
                .map_err(|e| entry(vendors_name, &v.organization, format!("organization: {e}")))?;
            let w = v.weight.unwrap_or(0.5);
            if !weight_ok(w) {
                return Err(entry(
                    vendors_name,
                    &v.organization,
                    format!("weight {w} is outside 0..1"),
                ));
            }
            let device_type = kind(vendors_name, &v.organization, &v.device_type)?;
            vendors.push((
                re,
                VendorSpecCompiled {
                    brand: v.brand,
                    module: v.module,
                    device_type,
                    weight: w,
                    source: v.source,
                },
            ));
        }
        let generic = rf
            .generic_hostname
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| entry(rules_name, p, format!("generic_hostname: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Rules {
            rules: compiled,
            by_signal,
            vendors,
            generic,
        })
    }

    /// These rules and vendor facts with `hints` added as domain rules
    /// (a hint whose id a rule already has is skipped).
    pub fn with_hints(&self, hints: &[Hint]) -> Rules {
        let mut rules = self.rules.clone();
        for h in hints {
            if rules.iter().any(|r| r.id == h.id) {
                continue;
            }
            let pattern = format!(r"(?i)(?:^|\.){}\.?$", regex::escape(&h.domain));
            let Ok(regex) = Regex::new(&pattern) else {
                continue;
            };
            rules.push(Rule {
                id: h.id.clone(),
                signal: Signal::Domain,
                regex,
                vendor: h.vendor.clone(),
                device_type: h.device_type,
                model: h.model.clone(),
                os: None,
                weight: h.weight.clamp(0.0, 1.0),
                general: false,
                source: h.source.clone(),
            });
        }
        match index(&rules) {
            Ok(by_signal) => Rules {
                rules,
                by_signal,
                vendors: self.vendors.clone(),
                generic: self.generic.clone(),
            },
            // Escaped literals always compile; keep the rules as they were.
            Err(_) => Rules {
                rules: self.rules.clone(),
                by_signal: index(&self.rules).unwrap_or_default(),
                vendors: self.vendors.clone(),
                generic: self.generic.clone(),
            },
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule that matches `value` of kind `signal`.
    pub fn matches(&self, signal: Signal, value: &str) -> Vec<Finding<'_>> {
        let Some((set, idx)) = self.by_signal.get(&signal) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for m in set.matches(value).iter() {
            let rule = &self.rules[idx[m]];
            let caps = rule.regex.captures(value);
            let fill = |t: &Option<String>| {
                t.as_ref().map(|t| match &caps {
                    Some(c) if t.contains('$') => {
                        let mut s = String::new();
                        c.expand(t, &mut s);
                        s.trim().to_string()
                    }
                    _ => t.clone(),
                })
            };
            out.push(Finding {
                rule,
                vendor: fill(&rule.vendor),
                model: fill(&rule.model),
                os: fill(&rule.os),
            });
        }
        out
    }

    /// What the IEEE organization name means; the first matching entry wins.
    pub fn vendor(&self, organization: &str) -> VendorFact {
        for (re, v) in &self.vendors {
            if re.is_match(organization) {
                return VendorFact {
                    brand: v.brand.clone().unwrap_or_else(|| short_name(organization)),
                    module: v.module,
                    device_type: v.device_type,
                    weight: v.weight,
                    source: Some(v.source.clone()),
                };
            }
        }
        VendorFact {
            brand: short_name(organization),
            module: false,
            device_type: None,
            weight: 0.0,
            source: None,
        }
    }

    /// A host name many devices share ("android", "ESP_1A2B3C" style
    /// defaults): not an identity.
    pub fn generic_hostname(&self, name: &str) -> bool {
        self.generic.iter().any(|re| re.is_match(name))
    }
}

/// An organization name without its legal form: "Espressif Inc." ->
/// "Espressif", "TP-LINK TECHNOLOGIES CO.,LTD." -> "TP-LINK TECHNOLOGIES".
pub fn short_name(organization: &str) -> String {
    const LEGAL: &[&str] = &[
        "inc",
        "incorporated",
        "ltd",
        "limited",
        "llc",
        "corp",
        "corporation",
        "co",
        "company",
        "gmbh",
        "ag",
        "kg",
        "bv",
        "b.v",
        "nv",
        "oy",
        "oyj",
        "ab",
        "as",
        "asa",
        "plc",
        "pte",
        "pty",
        "sa",
        "sas",
        "srl",
        "spa",
        "s.a",
        "s.p.a",
        "kk",
        "se",
        "holdings",
        "group",
        "international",
    ];
    let head = organization
        .split([',', '('])
        .next()
        .unwrap_or(organization);
    let mut words: Vec<&str> = head.split_whitespace().collect();
    while let Some(last) = words.last() {
        let w = last
            .trim_matches(|c: char| c == '.' || c == ',')
            .to_ascii_lowercase();
        if words.len() > 1 && (LEGAL.contains(&w.as_str()) || w.is_empty() || w == "&") {
            words.pop();
        } else {
            break;
        }
    }
    let s = words.join(" ");
    let s = s.trim_end_matches(['.', ',', ' ']);
    if s.is_empty() {
        organization.trim().to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_compile() {
        let r = Rules::builtin().expect("builtin rules");
        assert!(r.len() > 50, "{} rules", r.len());
    }

    #[test]
    fn legal_forms_are_dropped() {
        assert_eq!(short_name("Espressif Inc."), "Espressif");
        assert_eq!(
            short_name("TP-LINK TECHNOLOGIES CO.,LTD."),
            "TP-LINK TECHNOLOGIES"
        );
        assert_eq!(short_name("Apple, Inc."), "Apple");
        assert_eq!(short_name("Sonos, Inc."), "Sonos");
        assert_eq!(short_name("Inc."), "Inc");
    }

    #[test]
    fn a_domain_rule_matches_the_name_and_its_subdomains_only() {
        let rules = Rules::parse(
            "[[rule]]\nid='x'\nsignal='domain'\ndomain='meethue.com'\nvendor='Philips'\nweight=0.5\nsource='test'\n",
            "r",
            "vendor=[]",
            "v",
        )
        .expect("rules");
        assert_eq!(rules.matches(Signal::Domain, "bridge.meethue.com").len(), 1);
        assert_eq!(rules.matches(Signal::Domain, "MEETHUE.COM.").len(), 1);
        assert!(rules.matches(Signal::Domain, "notmeethue.com").is_empty());
    }

    #[test]
    fn captures_fill_the_model_and_bad_rules_say_what_to_fix() {
        let rules = Rules::parse(
            "[[rule]]\nid='tp'\nsignal='hostname'\npattern='^(HS\\d+)'\nvendor='TP-Link'\ntype='smart_plug'\nmodel='TP-Link $1'\nweight=0.9\nsource='t'\n",
            "r",
            "vendor=[]",
            "v",
        )
        .expect("rules");
        let f = rules.matches(Signal::Hostname, "HS100(EU)");
        assert_eq!(f[0].model.as_deref(), Some("TP-Link HS100"));
        let bad = Rules::parse(
            "[[rule]]\nid='b'\nsignal='hostname'\npattern='x'\ntype='toaster'\nweight=0.5\nsource='t'\n",
            "rules.toml",
            "vendor=[]",
            "v",
        )
        .expect_err("unknown type");
        assert!(
            bad.to_string()
                .contains("rules.toml: entry \"b\": type \"toaster\""),
            "{bad}"
        );
    }
}
