//! Live capture on a veth pair: testdata traces are replayed with tcpreplay
//! from a network namespace into the pair, and the capture service listens
//! on the other end. Needs root (CI runs as root); without it these tests
//! fail and say so rather than skip.
//!
//! Only the pair's own two ends carry the traffic (see
//! `heimdall_tests::veth`).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use heimdall_tests::process::{self, NatsServer};
use heimdall_tests::veth::Veth;

/// Short Ethernet traces with TCP, UDP, DNS (UDP and TCP) and tunnels, none
/// with a gap long enough for replay jitter to change a timer's outcome.
fn live_traces() -> Vec<PathBuf> {
    [
        "scripts.base.protocols.dns.tkey",
        "scripts.base.protocols.ssh.http-port-22",
        "core.tunnels.gtp.outer_ip_frag",
        "scripts.base.protocols.ldap.sasl-signed-clear-2",
        "core.cisco-fabric-path",
        "scripts.base.protocols.ftp.ftp-max-pending-commands",
        "scripts.base.protocols.dns.nsec",
        "core.q-in-q",
    ]
    .iter()
    .map(|c| zeek_trace(c))
    .collect()
}

fn packets_total() -> &'static str {
    "heimdall_capture_packets_total"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_capture_publishes_what_the_engine_gives_for_the_files() {
    let veth = Veth::setup();
    let files = live_traces();
    let (conns, dns, packets) = engine_records(&files);
    let tmp = tempfile::tempdir().expect("tempdir");
    let bus = bus_config(&heimdall_bus::testing::nats_url());
    let Live { listen, log, env } = live(&veth, &bus, tmp.path(), &[]);
    let mut child = start(&env, listen, &log).await;
    for f in &files {
        veth.replay(f);
    }
    let seen = wait_metric(listen, packets_total(), Duration::from_secs(20), |v| {
        v >= packets as f64
    })
    .await;
    assert_eq!(
        seen, packets as f64,
        "every replayed frame reached the engine"
    );
    let dropped = process::metric(listen, "heimdall_capture_kernel_dropped_total").await;
    assert_eq!(dropped, Some(0.0));
    process::terminate(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30), &log).await;
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let got = collect(&bus, Duration::from_secs(20), |c| {
        c.conns.len() >= conns.len() && c.dns.len() >= dns.len()
    })
    .await;
    assert_same(&got, &conns, &dns, Timing::Ignored, "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_flaps_interface_loss_and_nats_restarts_lose_nothing() {
    let veth = Veth::setup();
    let files = live_traces();
    let (a, b, c) = (&files[0..1], &files[1..2], &files[2..3]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nats = NatsServer::start(&tmp.path().join("nats")).expect("nats-server");
    let mut bus = bus_config(&nats.url());
    bus.memory_storage = false;
    // As an unprivileged user, keeping only what reopening needs.
    let Live { listen, log, env } = live(
        &veth,
        &bus,
        tmp.path(),
        &[("HEIMDALL_CAPTURE_USER", "nobody")],
    );
    let mut child = start(&env, listen, &log).await;
    let pid = child.id().expect("pid");
    let field = |name: &str| proc_status(pid, name);
    assert_eq!(field("Uid:"), ["65534"; 4], "runs as nobody");
    assert_eq!(
        field("CapEff:"),
        ["0000000000000000"],
        "no effective capability"
    );
    // CAP_NET_ADMIN (12) and CAP_NET_RAW (13), permitted only.
    assert_eq!(field("CapPrm:"), ["0000000000003000"]);
    assert_eq!(field("NoNewPrivs:"), ["1"]);

    veth.replay(&a[0]);
    let (mut want_c, mut want_d, mut packets) = engine_records(a);
    wait_metric(listen, packets_total(), Duration::from_secs(20), |v| {
        v >= packets as f64
    })
    .await;

    // Link down and up again.
    veth.set("down");
    tokio::time::sleep(Duration::from_millis(500)).await;
    veth.set("up");
    tokio::time::sleep(Duration::from_millis(500)).await;
    veth.replay(&b[0]);
    let (c2, d2, p2) = engine_records(b);
    packets += p2;
    want_c.extend(c2);
    want_d.extend(d2);
    let seen = wait_metric(listen, packets_total(), Duration::from_secs(30), |v| {
        v >= packets as f64
    })
    .await;
    assert_eq!(
        seen, packets as f64,
        "frames after the link came back were captured"
    );

    // The interface disappears and comes back; NATS restarts meanwhile.
    veth.delete_link();
    nats.stop();
    let errors = wait_metric(
        listen,
        "heimdall_capture_source_errors_total",
        Duration::from_secs(10),
        |v| v >= 1.0,
    )
    .await;
    assert!(errors >= 1.0, "the loss of the interface is counted");
    assert_eq!(
        process::http_status(listen, "/readyz").await,
        Some(503),
        "not ready meanwhile"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    veth.create();
    let reopened = wait_metric(
        listen,
        "heimdall_capture_source_reopens_total",
        Duration::from_secs(30),
        |v| v >= 1.0,
    )
    .await;
    assert!(
        reopened >= 1.0,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    veth.replay(&c[0]);
    let (c3, d3, p3) = engine_records(c);
    packets += p3;
    want_c.extend(c3);
    want_d.extend(d3);
    let seen = wait_metric(listen, packets_total(), Duration::from_secs(30), |v| {
        v >= packets as f64
    })
    .await;
    assert_eq!(
        seen, packets as f64,
        "frames after the interface came back were captured"
    );
    nats.start_again().expect("nats back");
    wait_metric(
        listen,
        "heimdall_capture_buffered_records",
        Duration::from_secs(30),
        |v| v == 0.0,
    )
    .await;

    process::terminate(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30), &log).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{text}");
    for needle in [
        "capture source failed",
        "capture source open again",
        "publish",
    ] {
        assert!(text.contains(needle), "{needle:?} not in the log:\n{text}");
    }
    let got = collect(&bus, Duration::from_secs(20), |g| {
        g.conns.len() >= want_c.len() && g.dns.len() >= want_d.len()
    })
    .await;
    assert_same(
        &got,
        &want_c,
        &want_d,
        Timing::Ignored,
        "through the outages",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_schedule_analyzes_only_inside_its_windows() {
    let veth = Veth::setup();
    let tmp = tempfile::tempdir().expect("tempdir");
    // Six seconds of one UDP packet every 50 ms, each its own connection.
    let pcap = udp_burst(tmp.path(), 40_000, 120, 50_000);
    let bus = bus_config(&heimdall_bus::testing::nats_url());
    let Live { listen, log, env } = live(
        &veth,
        &bus,
        tmp.path(),
        &[
            ("HEIMDALL_CAPTURE_SCHEDULE", "windowed"),
            ("HEIMDALL_CAPTURE_INTERVAL", "2s"),
            ("HEIMDALL_CAPTURE_WINDOW", "1s"),
        ],
    );
    let mut child = start(&env, listen, &log).await;
    veth.replay(&pcap);
    tokio::time::sleep(Duration::from_millis(300)).await;
    process::terminate(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30), &log).await;
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let got = collect(&bus, Duration::from_secs(5), |_| false).await;
    let n = got.conns.len();
    assert!(
        (30..=90).contains(&n),
        "about half of 120 packets fall in windows: {n}"
    );
    for r in &got.conns {
        let into = r.ts_us.rem_euclid(2_000_000);
        assert!(
            into < 1_000_000,
            "a record from outside the windows: ts {} is {into} µs into its interval",
            r.ts_us
        );
    }
}

/// A capture service on `veth`'s outer end: where its telemetry listens,
/// its log file, and its settings (`extra` on top of the interface).
struct Live {
    listen: std::net::SocketAddr,
    log: PathBuf,
    env: Vec<(String, String)>,
}

fn live(
    veth: &Veth,
    bus: &heimdall_bus::BusConfig,
    dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> Live {
    let listen = process::free_port().expect("port");
    let mut settings = vec![("HEIMDALL_CAPTURE_INTERFACE", veth.outer.as_str())];
    settings.extend_from_slice(extra);
    Live {
        listen,
        log: dir.join("capture.log"),
        env: env(bus, listen, &settings),
    }
}

/// A capture of `n` UDP packets `gap_us` apart, from source ports `first`,
/// `first + 1`, ...: each its own connection.
fn udp_burst(dir: &std::path::Path, first: u16, n: u16, gap_us: i64) -> PathBuf {
    let pcap = dir.join(format!("udp-{first}.pcap"));
    let f = std::fs::File::create(&pcap).expect("create");
    let mut w = heimdall_engine::reader::PcapWriter::new(f, 1, 65535).expect("writer");
    for i in 0..n {
        w.write(
            1_700_000_000_000_000 + i64::from(i) * gap_us,
            &udp_frame(first + i),
        )
        .expect("write");
    }
    w.finish().expect("finish");
    pcap
}

/// Enigma's settings move a running capture: a filter, a refused filter
/// that changes nothing, a windowed schedule; a restarted capture takes the
/// latest settings again. The settings arrive on the control subject as the
/// enigma-uploader publishes them (its own test covers Enigma to NATS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enigma_settings_steer_the_filter_and_schedule_of_a_running_capture() {
    use heimdall_bus::{Bus, Kind};
    use heimdall_proto::enigma::v1::CaptureSettings;
    let veth = Veth::setup();
    let tmp = tempfile::tempdir().expect("tempdir");
    let bus = bus_config(&heimdall_bus::testing::nats_url());
    let Live { listen, log, env } = live(
        &veth,
        &bus,
        tmp.path(),
        &[("HEIMDALL_CAPTURE_STEERING", "enigma")],
    );
    let mut child = start(&env, listen, &log).await;
    let control = Bus::connect(&bus, "steering-test").await.expect("NATS");
    control
        .ensure_streams(&[Kind::Control])
        .await
        .expect("stream");
    let subject = control.subjects().publish(Kind::Control, SENSOR, 0);
    let send = |settings: CaptureSettings| {
        let (control, subject) = (control.clone(), subject.clone());
        async move {
            control
                .publish(&subject, &settings.version.clone(), &settings)
                .await
                .expect("publish settings");
        }
    };
    let applied = "heimdall_capture_steering_applied_total";
    let refused = "heimdall_capture_steering_refused_total";
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    send(CaptureSettings {
        version: "v1".into(),
        interval_seconds: 60,
        window_seconds: 60,
        bpf_filter:
            "udp dst port 9999 and (src portrange 40000-40009 or src portrange 41000-41009)".into(),
        ..Default::default()
    })
    .await;
    let n = wait_metric(listen, applied, Duration::from_secs(10), |v| v >= 1.0).await;
    assert_eq!(n, 1.0, "{}", log_text());
    veth.replay(&udp_burst(tmp.path(), 40_000, 40, 10_000));

    send(CaptureSettings {
        version: "v2".into(),
        bpf_filter: "udp port nope".into(),
        ..Default::default()
    })
    .await;
    let n = wait_metric(listen, refused, Duration::from_secs(10), |v| v >= 1.0).await;
    assert_eq!(n, 1.0, "{}", log_text());
    veth.replay(&udp_burst(tmp.path(), 41_000, 40, 10_000));

    send(CaptureSettings {
        version: "v3".into(),
        interval_seconds: 2,
        window_seconds: 1,
        ..Default::default()
    })
    .await;
    let n = wait_metric(listen, applied, Duration::from_secs(10), |v| v >= 2.0).await;
    assert_eq!(n, 2.0, "{}", log_text());
    veth.replay(&udp_burst(tmp.path(), 42_000, 120, 50_000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    process::terminate(&child);
    assert!(
        wait_exit(&mut child, Duration::from_secs(30), &log)
            .await
            .success()
    );

    let got = collect(&bus, Duration::from_secs(5), |_| false).await;
    let ports = |lo: u32, hi: u32| -> Vec<u32> {
        let mut p: Vec<u32> = got
            .conns
            .iter()
            .map(|r| r.id_orig_p)
            .filter(|p| (lo..=hi).contains(p))
            .collect();
        p.sort_unstable();
        p
    };
    assert_eq!(
        ports(40_000, 40_999),
        (40_000..=40_009).collect::<Vec<_>>(),
        "v1's filter"
    );
    assert_eq!(
        ports(41_000, 41_999),
        (41_000..=41_009).collect::<Vec<_>>(),
        "v2 was refused: v1's filter still held"
    );
    let windowed = ports(42_000, 42_999).len();
    assert!(
        (30..=90).contains(&windowed),
        "v3: about half of 120 in windows: {windowed}"
    );
    for r in got.conns.iter().filter(|r| r.id_orig_p >= 42_000) {
        assert!(
            r.ts_us.rem_euclid(2_000_000) < 1_000_000,
            "outside v3's windows: {}",
            r.ts_us
        );
    }
    assert_eq!(got.conns.len(), 20 + windowed, "nothing else was captured");
    let why = log_text()
        .lines()
        .find(|l| l.contains("not applied"))
        .unwrap_or_default()
        .to_string();
    assert!(
        why.contains("v2") && why.contains("does not compile"),
        "{why}"
    );

    // Started again, the capture reads the latest settings (v3) at once.
    let listen = process::free_port().expect("port");
    let env2: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "HEIMDALL_TELEMETRY_LISTEN" => (k, listen.to_string()),
            _ => (k, v),
        })
        .collect();
    let mut child = start(&env2, listen, &log).await;
    let n = wait_metric(listen, applied, Duration::from_secs(10), |v| v >= 1.0).await;
    process::terminate(&child);
    assert!(
        wait_exit(&mut child, Duration::from_secs(30), &log)
            .await
            .success()
    );
    assert_eq!(n, 1.0, "{}", log_text());
    let last = log_text()
        .lines()
        .rev()
        .find(|l| l.contains("capture settings from Enigma applied"))
        .unwrap_or_default()
        .to_string();
    assert!(last.contains("v3"), "{last}");
}

/// An Ethernet/IPv4/UDP frame from 10.9.0.1:`sport` to 10.9.0.2:9999.
fn udp_frame(sport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let payload = b"heimdall-window-test";
    let total = 20 + 8 + payload.len();
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0,
        0,
        64,
        17,
        0,
        0,
        10,
        9,
        0,
        1,
        10,
        9,
        0,
        2,
    ];
    let sum = checksum(&ip);
    ip[10] = (sum >> 8) as u8;
    ip[11] = sum as u8;
    f.extend_from_slice(&ip);
    let ulen = 8 + payload.len();
    f.extend_from_slice(&[
        (sport >> 8) as u8,
        sport as u8,
        0x27,
        0x0f,
        (ulen >> 8) as u8,
        ulen as u8,
        0,
        0,
    ]);
    f.extend_from_slice(payload);
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcpdump_backend_reads_rotated_files_and_restarts_tcpdump() {
    use std::os::unix::fs::PermissionsExt;
    let veth = Veth::setup();
    let files = live_traces();
    let (a, b) = (&files[0..2], &files[2..4]);
    let tmp = tempfile::tempdir().expect("tempdir");
    // tcpdump writes as nobody (-Z): it must be able to reach the folder.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = tmp.path().join("tcpdump");
    let dir_text = dir.to_string_lossy().into_owned();
    let bus = bus_config(&heimdall_bus::testing::nats_url());
    let Live { listen, log, env } = live(
        &veth,
        &bus,
        tmp.path(),
        &[
            ("HEIMDALL_CAPTURE_SOURCE", "tcpdump"),
            ("HEIMDALL_CAPTURE_TCPDUMP_DIR", &dir_text),
            ("HEIMDALL_CAPTURE_TCPDUMP_ROTATE", "1s"),
            ("HEIMDALL_CAPTURE_TCPDUMP_USER", "nobody"),
        ],
    );
    let mut child = start(&env, listen, &log).await;
    let tcpdump_ready = || async {
        for _ in 0..200 {
            if std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "tcpdump wrote no file\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    tcpdump_ready().await;
    for f in a {
        veth.replay(f);
    }
    let (mut want_c, mut want_d, mut packets) = engine_records(a);
    let seen = wait_metric(listen, packets_total(), Duration::from_secs(30), |v| {
        v >= packets as f64
    })
    .await;
    assert_eq!(seen, packets as f64, "frames from tcpdump's rotated files");

    // tcpdump dies; the service reads what it wrote and starts it again.
    heimdall_tests::veth::run(Command::new("pkill").args(["-KILL", "-f", &dir_text]));
    let reopened = wait_metric(
        listen,
        "heimdall_capture_source_reopens_total",
        Duration::from_secs(30),
        |v| v >= 1.0,
    )
    .await;
    assert!(
        reopened >= 1.0,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    tcpdump_ready().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for f in b {
        veth.replay(f);
    }
    let (c2, d2, p2) = engine_records(b);
    packets += p2;
    want_c.extend(c2);
    want_d.extend(d2);
    let seen = wait_metric(listen, packets_total(), Duration::from_secs(30), |v| {
        v >= packets as f64
    })
    .await;
    assert_eq!(seen, packets as f64, "frames after tcpdump was restarted");

    process::terminate(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30), &log).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{text}");
    assert!(
        text.contains("tcpdump exited"),
        "the exit is logged:\n{text}"
    );
    let got = collect(&bus, Duration::from_secs(20), |g| {
        g.conns.len() >= want_c.len() && g.dns.len() >= want_d.len()
    })
    .await;
    assert_same(&got, &want_c, &want_d, Timing::Ignored, "tcpdump");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .collect();
    assert!(left.is_empty(), "read files are removed: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_a_non_root_user_with_only_the_capture_capabilities() {
    let veth = Veth::setup();
    let files = live_traces();
    let (conns, dns, packets) = engine_records(&files[..1]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let bus = bus_config(&heimdall_bus::testing::nats_url());
    let Live { listen, log, env } = live(&veth, &bus, tmp.path(), &[]);
    // As systemd's AmbientCapabilities= would start it: user nobody with
    // CAP_NET_RAW and CAP_NET_ADMIN, nothing else.
    let mut child = tokio::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all,+net_raw,+net_admin",
            "--ambient-caps=-all,+net_raw,+net_admin",
        ])
        .arg(binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(std::fs::File::create(&log).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("setpriv (util-linux)");
    if let Err(e) = process::wait_ready(&mut child, listen, Duration::from_secs(30)).await {
        panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    // setpriv execs the service: the pid is the service's.
    let pid = child.id().expect("pid");
    let field = |name: &str| proc_status(pid, name);
    assert_eq!(field("Uid:"), ["65534"; 4], "runs as nobody");
    assert_eq!(
        field("CapEff:"),
        ["0000000000000000"],
        "nothing effective once open"
    );
    assert_eq!(
        field("CapPrm:"),
        ["0000000000003000"],
        "only the reopen capabilities, permitted"
    );
    assert_eq!(
        field("CapAmb:"),
        ["0000000000000000"],
        "nothing handed to children"
    );
    veth.replay(&files[0]);
    let seen = wait_metric(listen, packets_total(), Duration::from_secs(20), |v| {
        v >= packets as f64
    })
    .await;
    assert_eq!(seen, packets as f64);
    process::terminate(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30), &log).await;
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let got = collect(&bus, Duration::from_secs(20), |c| {
        c.conns.len() >= conns.len() && c.dns.len() >= dns.len()
    })
    .await;
    assert_same(&got, &conns, &dns, Timing::Ignored, "non-root");
}
