use super::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Duration;

/// A section shaped like a real service's: a URL, a number, a duration, an
/// enum, a list and a secret, each with a default.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default)]
struct Demo {
    url: String,
    batch_size: u32,
    #[serde(with = "crate::duration")]
    flush: Duration,
    format: Format,
    networks: Vec<String>,
    api_key: Secret,
}

#[derive(Debug, Deserialize, Serialize, PartialEq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Format {
    Json,
    Human,
}

impl Default for Demo {
    fn default() -> Self {
        Demo {
            url: "nats://127.0.0.1:4222".into(),
            batch_size: 1000,
            flush: Duration::from_secs(1),
            format: Format::Human,
            networks: vec!["10.0.0.0/8".into()],
            api_key: Secret::default(),
        }
    }
}

impl Validate for Demo {
    fn validate(&self, prefix: &str, problems: &mut Vec<Problem>) {
        check::url(
            problems,
            format!("{prefix}URL"),
            &self.url,
            &["nats", "tls"],
        );
        check::in_range(
            problems,
            format!("{prefix}BATCH_SIZE"),
            self.batch_size,
            1..=100_000,
        );
    }
}

fn load(vars: &[(&str, &str)], file: Option<&Path>) -> Result<Demo, Error> {
    let mut loader = Loader::from_parts(vars.iter().map(|(k, v)| (*k, *v)), file)?;
    let demo = loader.section::<Demo>("HEIMDALL_DEMO_");
    loader.finish().map(|()| demo)
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let d = load(&[], None).expect("defaults are valid");
    assert_eq!(d.batch_size, 1000);
    assert_eq!(d.flush, Duration::from_secs(1));
    assert_eq!(d.format, Format::Human);
}

#[test]
fn two_bad_variables_produce_one_error_naming_both() {
    let err = load(
        &[
            ("HEIMDALL_DEMO_BATCH_SIZE", "lots"),
            ("HEIMDALL_DEMO_URL", "localhost:4222"),
        ],
        None,
    )
    .expect_err("both values are bad");
    let text = err.to_string();
    assert!(text.starts_with("2 configuration problems"), "{text}");
    assert!(
        text.contains("HEIMDALL_DEMO_BATCH_SIZE: invalid digit"),
        "{text}"
    );
    assert!(
        text.contains("HEIMDALL_DEMO_URL: 'localhost:4222' is not a URL"),
        "{text}"
    );
    let vars: Vec<_> = err.problems().iter().map(|p| p.variable.as_str()).collect();
    assert_eq!(vars, ["HEIMDALL_DEMO_BATCH_SIZE", "HEIMDALL_DEMO_URL"]);
}

#[test]
fn parse_errors_validation_errors_and_enum_errors_are_all_reported() {
    let err = load(
        &[
            ("HEIMDALL_DEMO_FLUSH", "soon"),
            ("HEIMDALL_DEMO_FORMAT", "xml"),
            ("HEIMDALL_DEMO_BATCH_SIZE", "0"),
        ],
        None,
    )
    .expect_err("three problems");
    let vars: Vec<_> = err.problems().iter().map(|p| p.variable.as_str()).collect();
    assert_eq!(
        vars,
        [
            "HEIMDALL_DEMO_BATCH_SIZE",
            "HEIMDALL_DEMO_FLUSH",
            "HEIMDALL_DEMO_FORMAT"
        ],
        "{err}"
    );
    assert!(err.to_string().contains("unknown variant `xml`"), "{err}");
}

#[test]
fn environment_wins_over_file_which_wins_over_defaults() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(
        file,
        "[demo]\nbatch_size = 50\nurl = \"nats://file:4222\"\nnetworks = [\"192.168.0.0/16\", \"fd00::/8\"]\nflush = \"2m\""
    )
    .expect("write");
    let d = load(
        &[("HEIMDALL_DEMO_URL", "nats://env:4222")],
        Some(file.path()),
    )
    .expect("valid");
    assert_eq!(d.url, "nats://env:4222");
    assert_eq!(d.batch_size, 50);
    assert_eq!(d.flush, Duration::from_secs(120));
    assert_eq!(d.networks, ["192.168.0.0/16", "fd00::/8"]);
}

#[test]
fn a_broken_file_says_which_file_and_line() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(file, "[demo]\nbatch_size = = 3").expect("write");
    let err = load(&[], Some(file.path())).expect_err("not TOML");
    let text = err.to_string();
    assert!(text.contains(&file.path().display().to_string()), "{text}");
    assert!(text.contains("line 2"), "{text}");
}

#[test]
fn secrets_come_from_files_and_never_print() {
    let mut key = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(key, "s3cr3t-value").expect("write");
    let path = key.path().display().to_string();
    let d = load(&[("HEIMDALL_DEMO_API_KEY_FILE", path.as_str())], None).expect("valid");
    assert_eq!(d.api_key.expose(), "s3cr3t-value");
    let shown = format!("{d:?} {} {}", d.api_key, render("HEIMDALL_DEMO_", &d));
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(
        shown.contains("HEIMDALL_DEMO_API_KEY=<redacted>"),
        "{shown}"
    );
}

#[test]
fn a_secret_set_twice_or_unreadable_is_a_problem_without_its_value() {
    let err = load(
        &[
            ("HEIMDALL_DEMO_API_KEY", "inline-secret"),
            ("HEIMDALL_DEMO_API_KEY_FILE", "/nonexistent/key"),
        ],
        None,
    )
    .expect_err("set twice");
    assert!(err.to_string().contains("keep one"), "{err}");
    assert!(!err.to_string().contains("inline-secret"), "{err}");

    let err =
        load(&[("HEIMDALL_DEMO_API_KEY_FILE", "/nonexistent/key")], None).expect_err("missing");
    assert!(
        err.to_string()
            .contains("HEIMDALL_DEMO_API_KEY_FILE: cannot read /nonexistent/key"),
        "{err}"
    );
}

#[test]
fn parse_errors_do_not_echo_the_value() {
    // A mistyped secret in a numeric field must not end up in an error.
    let err = load(&[("HEIMDALL_DEMO_BATCH_SIZE", "hunter2")], None).expect_err("bad");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn durations_round_trip() {
    for (text, d) in [
        ("30", Duration::from_secs(30)),
        ("500ms", Duration::from_millis(500)),
        ("2m", Duration::from_secs(120)),
        ("7d", Duration::from_secs(7 * 86_400)),
    ] {
        assert_eq!(duration::parse(text), Ok(d));
    }
    assert_eq!(duration::format(&Duration::from_secs(7 * 86_400)), "7d");
    assert_eq!(duration::format(&Duration::from_millis(1500)), "1500ms");
    assert!(duration::parse("5 weeks").is_err());
}

#[test]
fn urls_with_passwords_are_redacted() {
    assert_eq!(
        check::redact_url("postgres://heimdall:pw@db:5432/h"),
        "postgres://heimdall:<redacted>@db:5432/h"
    );
    assert_eq!(check::redact_url("nats://host:4222"), "nats://host:4222");
}
