//! Settings for every Heimdall service, from the environment and an optional
//! TOML file, checked before anything starts.
//!
//! What this crate promises:
//! - One source of truth per setting: a struct field with a doc comment and a
//!   default. The environment variable is the field name in upper case behind
//!   the section's prefix (`HEIMDALL_NATS_URL` for field `url` in section
//!   `HEIMDALL_NATS_`). A TOML file may set the same keys (`[nats] url = ...`);
//!   the environment wins over the file, the file over the default.
//! - Secrets can come from files: `HEIMDALL_ENIGMA_API_KEY_FILE=/run/secrets/key`
//!   sets `HEIMDALL_ENIGMA_API_KEY` from the file's contents (trailing newline
//!   removed). Secrets live in [`Secret`], which never prints its value.
//! - Every problem is reported at once: a [`Loader`] gathers parse errors and
//!   validation failures from all sections and [`Loader::finish`] returns one
//!   [`Error`] that names every variable at fault.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

mod secret;
pub use secret::{Secret, Url};

/// The prefix every Heimdall variable starts with.
pub const PREFIX: &str = "HEIMDALL_";

/// Suffix that turns a variable into "read my value from this file".
const FILE_SUFFIX: &str = "_FILE";

/// One thing wrong with the configuration, tied to the variable that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The environment variable (or its file-key equivalent) at fault.
    pub variable: String,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read or is not valid TOML.
    #[error("cannot use config file {path}: {reason}")]
    File {
        /// The file that was asked for.
        path: PathBuf,
        /// What went wrong reading or parsing it.
        reason: String,
    },
    /// One or more settings are missing, malformed or out of range.
    #[error("{} configuration problem{}:\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, list(.0))]
    Invalid(Vec<Problem>),
}

impl Error {
    /// The individual problems, empty for a file error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::Invalid(p) => p,
            Error::File { .. } => &[],
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Semantic checks that go beyond "does it parse".
///
/// `prefix` is the section's variable prefix, so a problem can name the exact
/// variable (`format!("{prefix}URL")`).
pub trait Validate {
    /// Push one [`Problem`] per thing wrong; push nothing when all is well.
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>);
}

/// Gathers settings sections from one snapshot of the environment and an
/// optional file, accumulating problems until [`Loader::finish`].
#[derive(Debug)]
pub struct Loader {
    /// `HEIMDALL_*` variables from the TOML file.
    file: BTreeMap<String, String>,
    /// `HEIMDALL_*` variables from the environment.
    env: BTreeMap<String, String>,
    problems: Vec<Problem>,
}

impl Loader {
    /// Snapshot the process environment, then the file named by
    /// `HEIMDALL_CONFIG_FILE` if it is set.
    pub fn from_env() -> Result<Self, Error> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let file = env
            .iter()
            .find(|(k, _)| k == "HEIMDALL_CONFIG_FILE")
            .map(|(_, v)| PathBuf::from(v));
        Self::from_parts(env, file.as_deref())
    }

    /// Build from explicit variables and an optional TOML file; the variables
    /// win over the file. Tests use this instead of touching the process
    /// environment.
    pub fn from_parts<I, K, V>(vars: I, file: Option<&Path>) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let file = match file {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        let env = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| k.starts_with(PREFIX) && k != "HEIMDALL_CONFIG_FILE")
            .collect();
        Ok(Loader {
            file,
            env,
            problems: Vec::new(),
        })
    }

    /// The section's settings from one source, keyed by lower-case field
    /// name, with `<field>_FILE` indirections read. Only a declared field can
    /// be given through a file, so a real setting whose name ends in `_file`
    /// is left alone.
    fn source(
        &mut self,
        from: &BTreeMap<String, String>,
        prefix: &str,
        fields: &[&str],
    ) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = from
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(prefix)
                    .map(|rest| (rest.to_ascii_lowercase(), v.clone()))
            })
            .collect();
        let indirect: Vec<(String, String)> = out
            .keys()
            .filter_map(|k| {
                let base = k.strip_suffix("_file")?;
                (!fields.contains(&k.as_str()) && fields.contains(&base))
                    .then(|| (k.clone(), base.to_string()))
            })
            .collect();
        for (key, base) in indirect {
            let path = out.remove(&key).unwrap_or_default();
            let file_var = format!("{prefix}{}", key.to_ascii_uppercase());
            if out.contains_key(&base) {
                self.problem(
                    file_var,
                    format!(
                        "both {prefix}{0} and {prefix}{0}{FILE_SUFFIX} are set; keep one",
                        base.to_ascii_uppercase()
                    ),
                );
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    out.insert(base, text.trim_end_matches(['\r', '\n']).to_string());
                }
                // The path is not secret; the contents would be.
                Err(e) => self.problem(file_var, format!("cannot read {path}: {e}")),
            }
        }
        out
    }

    /// Deserialize the section whose variables start with `prefix` (for
    /// example `"HEIMDALL_NATS_"`), then validate it. A bad field falls back to
    /// its default so the remaining settings and sections are still checked;
    /// every problem surfaces in [`Loader::finish`].
    pub fn section<T>(&mut self, prefix: &str) -> T
    where
        T: DeserializeOwned + Default + Validate,
    {
        let fields = field_names::<T>();
        let file = self.file.clone();
        let env = self.env.clone();
        let mut vars = self.source(&file, prefix, fields);
        vars.extend(self.source(&env, prefix, fields));

        let unknown: Vec<String> = vars
            .keys()
            .filter(|k| !fields.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            vars.remove(&key);
            self.problem(
                format!("{prefix}{}", key.to_ascii_uppercase()),
                format!("unknown setting; this section has {}", fields.join(", ")),
            );
        }

        // envy stops at the first bad field, so try each variable on its own:
        // every one that fails is reported and left at its default.
        let value = match envy::from_iter::<_, T>(vars.clone()) {
            Ok(v) => v,
            Err(whole) => {
                let mut found = false;
                for (key, val) in vars.clone() {
                    if let Err(e) = envy::from_iter::<_, T>([(key.clone(), val)]) {
                        found = true;
                        vars.remove(&key);
                        self.problem(
                            format!("{prefix}{}", key.to_ascii_uppercase()),
                            describe_envy_error(&e),
                        );
                    }
                }
                if !found {
                    self.problem(format!("{prefix}*"), describe_envy_error(&whole));
                }
                envy::from_iter::<_, T>(vars).unwrap_or_default()
            }
        };
        value.validate(prefix, &mut self.problems);
        value
    }

    /// Record a problem found outside any section (for example two settings
    /// that contradict each other).
    pub fn problem(&mut self, variable: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            variable: variable.into(),
            message: message.into(),
        });
    }

    /// `Ok` when every section loaded cleanly; otherwise one error listing all
    /// problems in a stable order.
    pub fn finish(mut self) -> Result<(), Error> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            self.problems.sort_by(|a, b| a.variable.cmp(&b.variable));
            self.problems.dedup();
            Err(Error::Invalid(self.problems))
        }
    }
}

/// envy's message without the offending value, which may be a secret typed
/// into the wrong variable: `invalid digit found in string while parsing
/// value 'x' provided by PORT` becomes `invalid digit found in string`, and
/// serde's ``unknown variant `x`, expected one of ...`` loses the `x`.
fn describe_envy_error(e: &envy::Error) -> String {
    match e {
        envy::Error::MissingValue(_) => "is required".into(),
        envy::Error::Custom(msg) => {
            let cause = msg.split(" while parsing value ").next().unwrap_or(msg);
            match cause
                .strip_prefix("unknown variant `")
                .and_then(|rest| rest.split_once("`, "))
            {
                Some((_, expected)) => format!("unknown value, {expected}"),
                None => cause.to_string(),
            }
        }
    }
}

/// The field names a settings struct declares, read from its `Deserialize`
/// implementation (serde passes them to `deserialize_struct`).
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields.unwrap_or(&[])
}

struct FieldProbe<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for FieldProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("settings must be a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(serde::de::Error::custom("probe only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// Flatten a TOML file into `HEIMDALL_SECTION_KEY` variables: top-level keys
/// map to `HEIMDALL_KEY`, keys in `[section]` to `HEIMDALL_SECTION_KEY`, arrays
/// become comma-separated lists as they would be in the environment.
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, Error> {
    let file_err = |reason: String| Error::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        file_err(e.message().to_string() + &line_of(&text, e.span()))
    })?;
    let mut out = BTreeMap::new();
    flatten(PREFIX, &table, &mut out).map_err(file_err)?;
    Ok(out)
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|s| {
        let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    })
    .unwrap_or_default()
}

fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (key, value) in table {
        let name = format!("{prefix}{}", key.to_ascii_uppercase().replace('-', "_"));
        match value {
            toml::Value::Table(inner) => flatten(&format!("{name}_"), inner, out)?,
            toml::Value::Array(items) => {
                let parts: Result<Vec<String>, String> =
                    items.iter().map(|v| scalar(&name, v)).collect();
                out.insert(name, parts?.join(","));
            }
            other => {
                let s = scalar(&name, other)?;
                out.insert(name, s);
            }
        }
    }
    Ok(())
}

fn scalar(name: &str, v: &toml::Value) -> Result<String, String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            return Err(format!(
                "{name}: nested arrays and tables are not supported"
            ));
        }
    })
}

/// Helpers for the most common checks in [`Validate`] implementations.
pub mod check {
    use super::Problem;

    /// A client's endpoint: `https://...`, or `http://...` only on a
    /// loopback address (`what` names the endpoint in the message).
    pub fn endpoint_url(problems: &mut Vec<Problem>, variable: String, url: &str, what: &str) {
        let loopback = url.strip_prefix("http://").is_some_and(|h| {
            h.starts_with("127.") || h.starts_with("localhost") || h.starts_with("[::1]")
        });
        if !(url.starts_with("https://") || loopback) {
            problems.push(Problem {
                variable,
                message: format!("give {what} as https://host[:port] (http:// only on loopback)"),
            });
        }
    }

    /// A server's TLS files: both `TLS_CERT_FILE` and `TLS_KEY_FILE` or
    /// neither, and neither only when it listens on a loopback address.
    pub fn tls_listener(
        problems: &mut Vec<Problem>,
        prefix: &str,
        listen: std::net::SocketAddr,
        cert: &str,
        key: &str,
    ) {
        if cert.is_empty() != key.is_empty() {
            problems.push(Problem {
                variable: format!("{prefix}TLS_KEY_FILE"),
                message: "give both TLS_CERT_FILE and TLS_KEY_FILE, or neither".into(),
            });
        }
        if cert.is_empty() && !listen.ip().is_loopback() {
            problems.push(Problem {
                variable: format!("{prefix}TLS_CERT_FILE"),
                message: format!(
                    "required when listening on {listen} (plain text only on loopback)"
                ),
            });
        }
    }

    /// `value` must lie in `range`.
    pub fn in_range<T>(
        problems: &mut Vec<Problem>,
        variable: String,
        value: T,
        range: std::ops::RangeInclusive<T>,
    ) where
        T: PartialOrd + std::fmt::Display + Copy,
    {
        if !range.contains(&value) {
            problems.push(Problem {
                variable,
                message: format!(
                    "{value} is out of range; use {} to {}",
                    range.start(),
                    range.end()
                ),
            });
        }
    }

    /// `value` must start with one of the URL `schemes` (e.g. `nats://`).
    pub fn url(problems: &mut Vec<Problem>, variable: String, value: &str, schemes: &[&str]) {
        let ok = schemes.iter().any(|s| {
            value
                .strip_prefix(s)
                .and_then(|rest| rest.strip_prefix("://"))
                .is_some_and(|host| !host.is_empty())
        });
        if !ok {
            problems.push(Problem {
                variable,
                message: format!(
                    "'{}' is not a URL; expected {}://host[:port]",
                    redact_url(value),
                    schemes.join("|")
                ),
            });
        }
    }

    /// Hide credentials in a URL, or in a comma-separated list of URLs:
    /// the password of `user:password@`, a bare token in `nats://token@host`
    /// (NATS schemes only; elsewhere a bare userinfo is a user name), and a
    /// `password=` query parameter.
    pub fn redact_url(value: &str) -> String {
        value
            .split(',')
            .map(redact_one)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn redact_one(value: &str) -> String {
        let Some(scheme_end) = value.find("://") else {
            return value.to_string();
        };
        let scheme = value[..scheme_end].trim().to_ascii_lowercase();
        let rest = &value[scheme_end + 3..];
        let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(host_end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:<redacted>@{host}"),
                None if matches!(scheme.as_str(), "nats" | "tls" | "ws" | "wss") => {
                    format!("<redacted>@{host}")
                }
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                            format!("{k}=<redacted>")
                        }
                        _ => kv.to_string(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_string(),
        };
        format!("{}://{authority}{tail}", &value[..scheme_end])
    }
}

/// Deserialize a duration written as whole seconds (`30`) or with a unit
/// (`500ms`, `30s`, `2m`, `1h`, `7d`). Use with `#[serde(with = "heimdall_config::duration")]`.
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Parse `"30s"`, `"500ms"`, `"2m"`, `"1h"`, `"7d"` or plain seconds.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| "not a duration; use e.g. 30s, 500ms, 2m, 1h or 7d".to_string())?;
        let secs = |m: u64| Duration::from_secs(n.saturating_mul(m));
        Ok(match unit {
            "" | "s" => secs(1),
            "ms" => Duration::from_millis(n),
            "m" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            _ => return Err("unknown unit; use ms, s, m, h or d".to_string()),
        })
    }

    /// Write a duration back in the shortest exact unit.
    pub fn format(d: &Duration) -> String {
        let ms = d.as_millis();
        if !ms.is_multiple_of(1000) {
            return format!("{ms}ms");
        }
        let s = d.as_secs();
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if s >= size && s.is_multiple_of(size) {
                return format!("{}{unit}", s / size);
            }
        }
        format!("{s}s")
    }

    /// serde hook for reading.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// serde hook for writing (`--print-config`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }
}

/// Render any settings struct as TOML-like `KEY = value` lines with secrets
/// already redacted by [`Secret`]'s `Serialize`. Used by `--print-config`.
pub fn render<T: serde::Serialize>(prefix: &str, value: &T) -> String {
    let json = match serde_json::to_value(value) {
        Ok(v) => v,
        Err(e) => return format!("# cannot render configuration: {e}\n"),
    };
    let mut out = String::new();
    if let serde_json::Value::Object(map) = json {
        for (k, v) in map {
            let shown = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => "(unset)".into(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            out.push_str(&format!("{prefix}{}={shown}\n", k.to_ascii_uppercase()));
        }
    }
    out
}

#[cfg(test)]
mod tests;
