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
pub use secret::Secret;

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
    vars: BTreeMap<String, String>,
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
        let mut merged = BTreeMap::new();
        if let Some(path) = file {
            merged.extend(read_file(path)?);
        }
        for (k, v) in vars {
            let k = k.into();
            if k.starts_with(PREFIX) {
                merged.insert(k, v.into());
            }
        }
        let mut loader = Loader {
            vars: BTreeMap::new(),
            problems: Vec::new(),
        };
        loader.vars = loader.resolve_file_variables(merged);
        Ok(loader)
    }

    /// Replace every `X_FILE=path` with `X=<contents of path>`. A variable set
    /// both ways is a problem: the operator meant one of them.
    fn resolve_file_variables(
        &mut self,
        merged: BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut from_files = Vec::new();
        for (k, v) in merged {
            if k == "HEIMDALL_CONFIG_FILE" {
                continue;
            }
            match k.strip_suffix(FILE_SUFFIX) {
                Some(base) => from_files.push((base.to_string(), k.clone(), v)),
                None => {
                    out.insert(k, v);
                }
            }
        }
        for (base, file_var, path) in from_files {
            if out.contains_key(&base) {
                self.problems.push(Problem {
                    variable: file_var,
                    message: format!("both {base} and {base}{FILE_SUFFIX} are set; keep one"),
                });
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    out.insert(base, text.trim_end_matches(['\r', '\n']).to_string());
                }
                Err(e) => self.problems.push(Problem {
                    variable: file_var,
                    // The path is not secret; the contents would be.
                    message: format!("cannot read {path}: {e}"),
                }),
            }
        }
        out
    }

    /// Deserialize the section whose variables start with `prefix` (for
    /// example `"HEIMDALL_NATS_"`), then validate it. On any problem the
    /// section falls back to defaults for the bad fields so that the remaining
    /// sections are still checked; the problems surface in [`Loader::finish`].
    pub fn section<T>(&mut self, prefix: &str) -> T
    where
        T: DeserializeOwned + Default + Validate,
    {
        let mut vars: BTreeMap<String, String> = self
            .vars
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(prefix)
                    .map(|rest| (rest.to_ascii_lowercase(), v.clone()))
            })
            .collect();
        // envy stops at the first bad field. Remove the field it complained
        // about and try again, so every bad field in the section is reported.
        let value = loop {
            match envy::from_iter::<_, T>(vars.clone()) {
                Ok(v) => break v,
                Err(e) => {
                    let (named, message) = describe_envy_error(&e);
                    // serde's enum errors do not say which field; find the
                    // variable whose removal makes this error go away.
                    let field = named.or_else(|| culprit::<T>(&vars, &e));
                    let variable = match &field {
                        Some(f) => format!("{prefix}{}", f.to_ascii_uppercase()),
                        None => format!("{prefix}*"),
                    };
                    self.problems.push(Problem { variable, message });
                    match field {
                        Some(f) if vars.remove(&f).is_some() => continue,
                        // Nothing left to remove: give up on this section.
                        _ => break T::default(),
                    }
                }
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

/// Turn envy's message into (lower-case field name, readable message). envy
/// says `missing value for field url` or `... while parsing value 'x' provided
/// by port`; the value itself is left out of our message because the field
/// might be a secret.
fn describe_envy_error(e: &envy::Error) -> (Option<String>, String) {
    match e {
        envy::Error::MissingValue(field) => (Some((*field).to_string()), "is required".into()),
        envy::Error::Custom(msg) => {
            if let Some((cause, field)) = msg.rsplit_once(" provided by ") {
                let cause = cause
                    .split(" while parsing value ")
                    .next()
                    .unwrap_or(cause)
                    .to_string();
                (Some(field.to_ascii_lowercase()), cause)
            } else {
                (None, msg.clone())
            }
        }
    }
}

/// The variable whose removal changes the deserialization error `e`.
fn culprit<T: DeserializeOwned>(
    vars: &BTreeMap<String, String>,
    e: &envy::Error,
) -> Option<String> {
    let wanted = e.to_string();
    vars.keys().find_map(|k| {
        let mut fewer = vars.clone();
        fewer.remove(k);
        match envy::from_iter::<_, T>(fewer) {
            Err(other) if other.to_string() == wanted => None,
            _ => Some(k.clone()),
        }
    })
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

    /// Hide a password embedded in a URL (`postgres://user:pw@host`).
    pub fn redact_url(value: &str) -> String {
        match (value.find("://"), value.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                let userinfo = &value[scheme_end + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!(
                        "{}{user}:<redacted>{}",
                        &value[..scheme_end + 3],
                        &value[at..]
                    ),
                    None => value.to_string(),
                }
            }
            _ => value.to_string(),
        }
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
            .map_err(|_| format!("'{t}' is not a duration; use e.g. 30s, 500ms, 2m, 1h or 7d"))?;
        let secs = |m: u64| Duration::from_secs(n.saturating_mul(m));
        Ok(match unit {
            "" | "s" => secs(1),
            "ms" => Duration::from_millis(n),
            "m" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            _ => return Err(format!("'{t}' has an unknown unit; use ms, s, m, h or d")),
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
