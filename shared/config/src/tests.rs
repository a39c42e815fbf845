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
    /// A real setting whose name ends in `_file`: not a file indirection.
    read_file: String,
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
            read_file: String::new(),
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
    assert!(
        err.to_string()
            .contains("unknown value, expected `json` or `human`"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("xml"),
        "the bad value is not echoed: {err}"
    );
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
    assert_eq!(
        check::redact_url("nats://tok1@a:4222,nats://u:p@b:4222"),
        "nats://<redacted>@a:4222,nats://u:<redacted>@b:4222"
    );
    assert_eq!(
        check::redact_url("postgres://heimdall@db/h?sslmode=require&password=pw"),
        "postgres://heimdall@db/h?sslmode=require&password=<redacted>"
    );
    let url = Url::new("nats://secret-token@host:4222");
    let shown = format!(
        "{url} {url:?} {}",
        serde_json::to_string(&url).expect("json")
    );
    assert!(!shown.contains("secret-token"), "{shown}");
    assert_eq!(url.expose(), "nats://secret-token@host:4222");
}

#[test]
fn unknown_variables_in_a_section_are_reported_with_the_known_ones() {
    let err = load(&[("HEIMDALL_DEMO_BATCHSIZE", "5")], None).expect_err("typo");
    let text = err.to_string();
    assert!(
        text.contains("HEIMDALL_DEMO_BATCHSIZE: unknown setting; this section has url, batch_size"),
        "{text}"
    );
}

#[test]
fn two_fields_with_the_same_bad_value_are_both_reported() {
    let err = load(
        &[
            ("HEIMDALL_DEMO_BATCH_SIZE", "5x"),
            ("HEIMDALL_DEMO_FLUSH", "5x"),
        ],
        None,
    )
    .expect_err("bad");
    let vars: Vec<_> = err.problems().iter().map(|p| p.variable.as_str()).collect();
    assert_eq!(
        vars,
        ["HEIMDALL_DEMO_BATCH_SIZE", "HEIMDALL_DEMO_FLUSH"],
        "{err}"
    );
}

#[test]
fn an_environment_secret_wins_over_a_secret_file_named_in_the_config_file() {
    let mut key = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(key, "from-file").expect("write");
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(file, "[demo]\napi_key_file = \"{}\"", key.path().display()).expect("write");
    let d = load(&[], Some(file.path())).expect("valid");
    assert_eq!(d.api_key.expose(), "from-file");
    let d = load(&[("HEIMDALL_DEMO_API_KEY", "from-env")], Some(file.path())).expect("valid");
    assert_eq!(d.api_key.expose(), "from-env");
}

#[test]
fn a_setting_that_ends_in_file_is_a_setting() {
    let d = load(&[("HEIMDALL_DEMO_READ_FILE", "/tmp/capture.pcap")], None).expect("valid");
    assert_eq!(d.read_file, "/tmp/capture.pcap");
}
