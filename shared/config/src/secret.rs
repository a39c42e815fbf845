//! Values that must never be printed whole: API keys, tokens, passwords,
//! and URLs that may carry credentials.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string. `Debug`, `Display` and `Serialize` all show `<redacted>`;
/// the only way to the value is [`Secret::expose`], which makes every use easy
/// to find in review. The memory is zeroed on drop.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The value itself. Pass it straight to the one place that needs it
    /// (a header, a connection option) and never into a log or error.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// True when the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl Default for Secret {
    fn default() -> Self {
        Secret::new(String::new())
    }
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_empty() {
            s.serialize_str("(unset)")
        } else {
            s.serialize_str(REDACTED)
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// A URL (or comma-separated list of URLs) that may carry credentials.
/// `Debug`, `Display` and `Serialize` show it with passwords and tokens
/// masked (see [`crate::check::redact_url`]); [`Url::expose`] gives the
/// whole value to the one place that connects with it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Url(String);

impl Url {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Url(value.into())
    }

    /// The URL with its credentials, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", crate::check::redact_url(&self.0))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::check::redact_url(&self.0))
    }
}

impl Serialize for Url {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::check::redact_url(&self.0))
    }
}

impl<'de> Deserialize<'de> for Url {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Url)
    }
}
