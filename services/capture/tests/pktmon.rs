//! The pktmon orchestration, on Linux, against a stand-in program that
//! checks arguments as pktmon does and writes the files pktmon would
//! (tests/fixtures/pktmon-standin).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use heimdall_capture::pktmon::{Filter, Options, Pktmon, SystemRunner};
use heimdall_tests::process;

fn standin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pktmon-standin")
}

struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    /// State and outputs folders; window 1 converts to `first`.
    fn new(first: &Path) -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        for d in ["state", "outputs", "work"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
        }
        std::fs::copy(first, tmp.path().join("outputs/1.pcapng")).expect("copy");
        let empty = std::fs::File::create(tmp.path().join("outputs/empty.pcapng")).expect("empty");
        heimdall_engine::reader::PcapWriter::new(empty, 1, 65535)
            .and_then(|w| w.finish())
            .expect("empty capture");
        Setup { tmp }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PKTMON_STATE".into(), self.path("state")),
            ("PKTMON_OUTPUTS".into(), self.path("outputs")),
        ]
    }

    fn path(&self, p: &str) -> String {
        self.tmp.path().join(p).to_string_lossy().into_owned()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.tmp.path().join("state/calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn options(&self, filters: Vec<Filter>) -> Options {
        Options {
            program: standin(),
            work_dir: self.tmp.path().join("work"),
            filters,
            packet_size: 65535,
            file_size_mb: 512,
            window: Duration::from_millis(10),
        }
    }
}

/// Runs the stand-in with the test's environment: a runner that adds it.
struct EnvRunner(Vec<(String, String)>);

impl heimdall_capture::pktmon::CommandRunner for EnvRunner {
    fn run(
        &mut self,
        program: &Path,
        args: &[String],
    ) -> std::io::Result<heimdall_capture::pktmon::Output> {
        let out = std::process::Command::new(program)
            .args(args)
            .envs(self.0.iter().map(|(k, v)| (k, v)))
            .output()?;
        Ok(heimdall_capture::pktmon::Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn pcapng_trace() -> PathBuf {
    zeek_trace("core.pcapng-pktsrc")
}

#[test]
fn a_window_is_filtered_started_stopped_converted_and_cleaned_up() {
    let s = Setup::new(&pcapng_trace());
    let filters = vec![
        Filter::parse("udp/53").expect("filter"),
        Filter::parse("tcp/443@10.0.0.1").expect("filter"),
    ];
    let mut p = Pktmon::new(EnvRunner(s.env()), s.options(filters)).expect("pktmon");
    let mut waited = None;
    let out = p.capture_window(|d| waited = Some(d)).expect("a window");
    assert_eq!(waited, Some(Duration::from_millis(10)));
    let work = s.path("work");
    assert_eq!(
        s.calls(),
        [
            "filter remove".to_string(),
            "filter add heimdall-0 -t UDP -p 53".into(),
            "filter add heimdall-1 -t TCP -i 10.0.0.1 -p 443".into(),
            format!(
                "start --capture --comp nics --pkt-size 65535 --file-name {work}/heimdall-1.etl --file-size 512"
            ),
            "stop".into(),
            format!("etl2pcap {work}/heimdall-1.etl --out {work}/heimdall-1.pcapng"),
        ]
    );
    assert_eq!(out, Path::new(&work).join("heimdall-1.pcapng"));
    assert!(
        !Path::new(&work).join("heimdall-1.etl").exists(),
        "the ETL file is removed"
    );
    // The pcapng file is the capture pktmon converted, readable by the engine.
    let (conns, _, packets) = engine_records(&[out]);
    assert!(packets > 0 && !conns.is_empty());
}

#[test]
fn failures_name_the_step_and_leave_nothing_running() {
    let s = Setup::new(&pcapng_trace());
    for (step, needle) in [
        ("start", "`pktmon start` failed (exit 31)"),
        ("etl2pcap", "`pktmon etl2pcap` failed (exit 31)"),
        ("stop", "`pktmon stop` failed (exit 31)"),
    ] {
        let mut env = s.env();
        env.push(("PKTMON_FAIL".into(), step.into()));
        let mut p = Pktmon::new(EnvRunner(env), s.options(Vec::new())).expect("pktmon");
        let e = p.capture_window(|_| {}).expect_err(step).to_string();
        assert!(
            e.contains(needle) && e.contains("stand-in told to fail"),
            "{step}: {e}"
        );
        let work: Vec<_> = std::fs::read_dir(s.path("work")).expect("work").collect();
        assert!(work.is_empty(), "{step}: no ETL or pcapng left behind");
        let _ = std::fs::remove_file(s.tmp.path().join("state/running"));
    }
    let mut env = s.env();
    env.push(("PKTMON_DENY".into(), "1".into()));
    let mut p = Pktmon::new(EnvRunner(env), s.options(Vec::new())).expect("pktmon");
    let e = p.capture_window(|_| {}).expect_err("denied").to_string();
    assert!(
        e.contains("Access is denied") && e.contains("administrator"),
        "{e}"
    );

    let mut opts = s.options(Vec::new());
    opts.program = PathBuf::from("/no/such/pktmon.exe");
    let mut p = Pktmon::new(SystemRunner, opts).expect("pktmon");
    let e = p.capture_window(|_| {}).expect_err("missing").to_string();
    assert!(
        e.contains("cannot run /no/such/pktmon.exe") && e.contains("Windows 10 2004"),
        "{e}"
    );
}

#[test]
fn filters_are_checked_when_read() {
    assert_eq!(
        Filter::parse("tcp/443@192.168.1.10"),
        Ok(Filter {
            transport: Some("TCP".into()),
            ip: Some("192.168.1.10".into()),
            port: Some(443),
        })
    );
    assert_eq!(Filter::parse("/123").map(|f| f.port), Ok(Some(123)));
    assert!(Filter::parse("udp/dns").is_err());
    assert!(Filter::parse("tcp@not-an-ip").is_err());
    assert!(Filter::parse("t;cp").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_on_pktmon_publishes_each_windows_records_and_cleans_up() {
    let s = Setup::new(&pcapng_trace());
    std::fs::copy(
        zeek_trace("scripts.base.protocols.dns.tkey"),
        s.tmp.path().join("outputs/2.pcapng"),
    )
    .expect("copy");
    let (conns, dns, _) = engine_records(&[
        pcapng_trace(),
        zeek_trace("scripts.base.protocols.dns.tkey"),
    ]);
    let bus = bus_config(&heimdall_bus::testing::nats_url());
    let listen = process::free_port().expect("port");
    let log = s.tmp.path().join("capture.log");
    let program = standin().to_string_lossy().into_owned();
    let work = s.path("work");
    let mut env = env(
        &bus,
        listen,
        &[
            ("HEIMDALL_CAPTURE_SOURCE", "pktmon"),
            ("HEIMDALL_CAPTURE_PKTMON_PROGRAM", &program),
            ("HEIMDALL_CAPTURE_PKTMON_WORK_DIR", &work),
            ("HEIMDALL_CAPTURE_PKTMON_FILTERS", "udp/53,tcp"),
            ("HEIMDALL_CAPTURE_WINDOW", "200ms"),
        ],
    );
    env.extend(s.env());
    let mut child = start(&env, listen, &log).await;
    let windows = s.tmp.path().join("state/windows");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&windows)
        .ok()
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0)
        < 4
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    process::terminate(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30), &log).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{text}");
    let got = collect(&bus, Duration::from_secs(20), |c| {
        c.conns.len() >= conns.len() && c.dns.len() >= dns.len()
    })
    .await;
    assert_same(&got, &conns, &dns, Timing::Exact, "pktmon");
    let calls = s.calls();
    assert!(
        calls.iter().filter(|c| c.starts_with("start ")).count() >= 4,
        "{calls:?}"
    );
    assert!(
        calls.contains(&"filter add heimdall-0 -t UDP -p 53".to_string()),
        "{calls:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&work)
        .expect("work")
        .filter_map(|e| e.ok())
        .collect();
    assert!(left.is_empty(), "work files removed: {left:?}");
}
