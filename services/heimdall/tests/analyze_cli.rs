//! `heimdall analyze` as a user runs it: the logs, the summary, and what
//! happens with files that are missing, not captures, or cut short.

use std::path::Path;
use std::process::Command;

use heimdall::homegen::{HomeSpec, generate};

fn capture(dir: &Path) -> std::path::PathBuf {
    home(dir, 2)
}

/// `minutes` of the generator's home network.
fn home(dir: &Path, minutes: u32) -> std::path::PathBuf {
    let path = dir.join("home.pcap");
    let mut f = std::fs::File::create(&path).expect("create capture");
    generate(
        &HomeSpec {
            minutes,
            ..Default::default()
        },
        &mut f,
    )
    .expect("generate");
    path
}

fn analyze(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_heimdall"))
        .arg("analyze")
        .args(args)
        .output()
        .expect("run heimdall");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rows(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("log")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[test]
fn a_good_capture_gives_zeek_logs_and_a_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = capture(dir.path());
    let logs = dir.path().join("logs");
    let (code, stderr) = analyze(&[
        pcap.to_str().expect("utf8"),
        "--logs",
        logs.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("heimdall analyze: 1 file,") && stderr.contains("connections"),
        "{stderr}"
    );
    let conn = std::fs::read_to_string(logs.join("conn.log")).expect("conn.log");
    assert!(conn.starts_with("#separator \\x09\n"));
    assert!(
        conn.lines()
            .any(|l| l.starts_with("#fields\tts\tuid\tid.orig_h"))
    );
    assert!(
        conn.trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("#close"))
    );
    assert!(rows(&logs.join("dns.log")).len() > 10);
}

#[test]
fn json_lines_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = capture(dir.path());
    let logs = dir.path().join("logs");
    let (code, _) = analyze(&[
        pcap.to_str().expect("utf8"),
        "--logs",
        logs.to_str().expect("utf8"),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let text = std::fs::read_to_string(logs.join("conn.log")).expect("conn.log");
    assert!(
        text.lines()
            .all(|l| l.starts_with("{\"ts\":") && l.ends_with('}')),
        "{text}"
    );
}

#[test]
fn a_truncated_capture_keeps_what_came_before_and_says_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = capture(dir.path());
    let bytes = std::fs::read(&pcap).expect("read");
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3 + 7]).expect("write");
    let logs = dir.path().join("logs");
    let (code, stderr) = analyze(&[
        cut.to_str().expect("utf8"),
        "--logs",
        logs.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("cut.pcap: truncated: the file ends inside a"),
        "{stderr}"
    );
    assert!(
        stderr.contains("packets before it were analyzed"),
        "{stderr}"
    );
    assert!(
        rows(&logs.join("conn.log")).len() > 20,
        "records before the cut are written"
    );
}

#[test]
fn missing_and_non_capture_files_are_named_and_the_rest_analyzed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = capture(dir.path());
    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, "shopping list\n").expect("write");
    let missing = dir.path().join("nope.pcap");
    let logs = dir.path().join("logs");
    let (code, stderr) = analyze(&[
        missing.to_str().expect("utf8"),
        junk.to_str().expect("utf8"),
        pcap.to_str().expect("utf8"),
        "--logs",
        logs.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("nope.pcap: cannot read"), "{stderr}");
    assert!(
        stderr.contains("notes.txt: not a pcap or pcapng capture (it starts with 73 68 6f 70)"),
        "{stderr}"
    );
    assert!(
        !rows(&logs.join("conn.log")).is_empty(),
        "the good file was still analyzed"
    );
}

#[test]
fn bad_arguments_say_what_to_fix() {
    let (code, stderr) = analyze(&["x.pcap", "--logs", "/tmp/x", "--local-nets", "10.0.0.0/33"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--local-nets: \"10.0.0.0/33\" is not a network in CIDR form"),
        "{stderr}"
    );
    let (code, stderr) = analyze(&["x.pcap"]);
    assert_eq!(code, 2, "clap's usage error");
    assert!(stderr.contains("--logs"), "{stderr}");
}

#[test]
fn live_options_say_what_they_need() {
    let (code, stderr) = analyze(&["x.pcap", "--logs", "/tmp/x", "--count", "5"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--count, --duration, --filter and --no-promisc need --interface"),
        "{stderr}"
    );
    let (code, stderr) = analyze(&["x.pcap", "--interface", "eth0", "--logs", "/tmp/x"]);
    assert_eq!(code, 2, "files and an interface at once: {stderr}");
    let (code, stderr) = analyze(&["--interface", "hm-no-such-if0", "--logs", "/tmp/x"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot capture on hm-no-such-if0"),
        "the error names the interface: {stderr}"
    );
}

#[test]
fn a_quiet_home_raises_nothing_above_low() {
    // Ten minutes of the generator's home: phones, a laptop, a TV, a plug,
    // a printer and a speaker, with their keep-alives, discovery and DNS.
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = home(dir.path(), 10);
    let logs = dir.path().join("logs");
    let (code, stderr) = analyze(&[
        pcap.to_str().expect("utf8"),
        "--logs",
        logs.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(" alert"),
        "the summary counts alerts: {stderr}"
    );
    let alerts = std::fs::read_to_string(logs.join("alerts.jsonl")).expect("alerts.jsonl");
    for line in alerts.lines() {
        assert!(
            line.contains("\"severity\":\"info\"") || line.contains("\"severity\":\"low\""),
            "a benign home raised {line}"
        );
    }
}
