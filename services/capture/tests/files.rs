//! The capture service reading capture files, against the real NATS
//! server: the records it publishes are the engine's records for the
//! files, each exactly once, through a NATS outage; past its buffer bound
//! it drops and counts.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use heimdall_tests::process::{self, NatsServer};

/// Traces with DNS over UDP and TCP, TCP applications and tunnels.
fn traces() -> Vec<PathBuf> {
    [
        "scripts.base.protocols.dns.tkey",
        "scripts.base.protocols.ftp.ftp-ipv4",
        "core.tunnels.teredo",
        "scripts.base.protocols.pop3.basic",
    ]
    .iter()
    .map(|c| zeek_trace(c))
    .collect()
}

/// A folder of links to `files`, named so they sort in the given order.
fn folder(files: &[PathBuf]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, f) in files.iter().enumerate() {
        let name = format!(
            "{i:02}-{}",
            f.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        );
        std::os::unix::fs::symlink(f, dir.path().join(name)).expect("link");
    }
    dir
}

/// Runs the service over a folder of `files` (with `extra` settings) until
/// it exits by itself, which it must do successfully; the bus it used.
async fn run_to_the_end(files: &[PathBuf], extra: &[(&str, &str)]) -> heimdall_bus::BusConfig {
    let dir = folder(files);
    let bus = bus_config(&heimdall_bus::testing::nats_url());
    let listen = process::free_port().expect("port");
    let log = dir.path().join("capture.log");
    let files_dir = dir.path().to_string_lossy().to_string();
    let mut settings = vec![
        ("HEIMDALL_CAPTURE_SOURCE", "files"),
        ("HEIMDALL_CAPTURE_FILES", files_dir.as_str()),
    ];
    settings.extend_from_slice(extra);
    let env = env(&bus, listen, &settings);
    let mut child = process::spawn(&binary(), &env, &log).expect("start");
    let status = wait_exit(&mut child, Duration::from_secs(60), &log).await;
    assert!(
        status.success(),
        "exit {status}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    bus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_captures_becomes_the_engines_records_on_nats() {
    let files = traces();
    // The folder is read as one stream, like `heimdall analyze a b c d`.
    let (c, d, _) = engine_records(&files);
    let expected = (c, d);
    assert!(!expected.0.is_empty() && !expected.1.is_empty());
    let archive = tempfile::tempdir().expect("tempdir");
    let archive_dir = archive.path().to_string_lossy().to_string();
    let bus = run_to_the_end(&files, &[("HEIMDALL_CAPTURE_ARCHIVE_DIR", &archive_dir)]).await;
    let (nc, nd) = (expected.0.len(), expected.1.len());
    let got = collect(&bus, Duration::from_secs(20), |c| {
        c.conns.len() >= nc && c.dns.len() >= nd
    })
    .await;
    assert_same(&got, &expected.0, &expected.1, Timing::Exact, "files");
    assert!(
        got.conns
            .iter()
            .all(|r| r.sensor_id == SENSOR && !r.uid.is_empty())
    );
    // The rolling archive holds every frame as captured: analyzed again, it
    // gives the same records.
    let mut archived: Vec<PathBuf> = std::fs::read_dir(archive.path())
        .expect("archive")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    archived.sort();
    assert!(!archived.is_empty(), "archive files written");
    let (ac, ad, _) = engine_records(&archived);
    let again = Collected {
        conns: ac,
        dns: ad,
        ..Default::default()
    };
    assert_same(&again, &expected.0, &expected.1, Timing::Exact, "archive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_wait_for_nats_and_arrive_exactly_once() {
    let files = traces();
    let (conns, dns, _) = engine_records(&files[..1]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nats = NatsServer::start(&tmp.path().join("nats")).expect("nats-server");
    nats.stop(); // the outage starts before the service does
    let mut bus = bus_config(&nats.url());
    bus.memory_storage = false;
    let listen = process::free_port().expect("port");
    let log = tmp.path().join("capture.log");
    let file = files[0].to_string_lossy().to_string();
    let env = env(
        &bus,
        listen,
        &[
            ("HEIMDALL_CAPTURE_SOURCE", "files"),
            ("HEIMDALL_CAPTURE_FILES", &file),
        ],
    );
    let mut child = process::spawn(&binary(), &env, &log).expect("start");
    // Everything is produced and held while NATS is away.
    let produced = wait_metric(
        listen,
        "heimdall_capture_records_produced_total{kind=\"conn\"}",
        Duration::from_secs(30),
        |v| v == conns.len() as f64,
    )
    .await;
    assert_eq!(produced, conns.len() as f64);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let buffered = process::metric(listen, "heimdall_capture_buffered_records").await;
    assert_eq!(
        buffered,
        Some((conns.len() + dns.len()) as f64),
        "records wait in the buffer"
    );
    assert_eq!(
        process::http_status(listen, "/readyz").await,
        Some(503),
        "not ready without NATS"
    );
    nats.start_again().expect("nats back");
    let status = wait_exit(&mut child, Duration::from_secs(60), &log).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "exit {status}\n{text}");
    assert!(
        text.contains("NATS unreachable"),
        "the outage is logged:\n{text}"
    );
    let got = collect(&bus, Duration::from_secs(20), |c| {
        c.conns.len() >= conns.len() && c.dns.len() >= dns.len()
    })
    .await;
    assert_same(&got, &conns, &dns, Timing::Exact, "after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_buffer_bound_records_are_dropped_and_counted() {
    let files = traces();
    let (conns, dns, _) = engine_records(&files);
    let total = conns.len() + dns.len();
    assert!(total > 8, "the trace has enough records ({total})");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nats = NatsServer::start(&tmp.path().join("nats")).expect("nats-server");
    nats.stop();
    let bus = bus_config(&nats.url());
    let listen = process::free_port().expect("port");
    let log = tmp.path().join("capture.log");
    let dir = folder(&files);
    let file = dir.path().to_string_lossy().to_string();
    let env = env(
        &bus,
        listen,
        &[
            ("HEIMDALL_CAPTURE_SOURCE", "files"),
            ("HEIMDALL_CAPTURE_FILES", &file),
            ("HEIMDALL_CAPTURE_BATCH_RECORDS", "2"),
            ("HEIMDALL_CAPTURE_BUFFER_RECORDS", "4"),
            ("HEIMDALL_CAPTURE_SHUTDOWN_GRACE", "1s"),
        ],
    );
    let mut child = process::spawn(&binary(), &env, &log).expect("start");
    let name =
        |k: &str, what: &str| format!("heimdall_capture_records_{what}_total{{kind=\"{k}\"}}");
    wait_metric(
        listen,
        &name("conn", "produced"),
        Duration::from_secs(30),
        |v| v == conns.len() as f64,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut dropped = 0.0;
    for k in ["conn", "dns", "observation"] {
        dropped += process::metric(listen, &name(k, "dropped_buffer_full"))
            .await
            .unwrap_or(0.0);
    }
    // The ARP frames in the traces are observations, buffered like records.
    let total = total
        + process::metric(listen, &name("observation", "produced"))
            .await
            .unwrap_or(0.0) as usize;
    let buffered = process::metric(listen, "heimdall_capture_buffered_records")
        .await
        .unwrap_or(-1.0);
    assert!(buffered <= 4.0, "the buffer keeps its bound: {buffered}");
    assert_eq!(
        dropped + buffered,
        total as f64,
        "every record is buffered or counted as dropped"
    );
    process::terminate(&child);
    let status = wait_exit(&mut child, Duration::from_secs(20), &log).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "exit {status}\n{text}");
    assert!(
        text.contains("oldest records dropped"),
        "the drop is logged:\n{text}"
    );
    assert!(
        text.contains("were not published"),
        "the shutdown loss is logged:\n{text}"
    );
}

#[tokio::test]
async fn bad_settings_are_all_reported_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = tmp.path().join("capture.log");
    let env = vec![
        ("HEIMDALL_CAPTURE_SOURCE".to_string(), "files".to_string()),
        (
            "HEIMDALL_CAPTURE_FILES".into(),
            "/no/such/capture.pcap".into(),
        ),
        ("HEIMDALL_CAPTURE_SCHEDULE".into(), "windowed".into()),
        ("HEIMDALL_CAPTURE_WINDOW".into(), "5m".into()),
    ];
    let mut child = process::spawn(&binary(), &env, &log).expect("start");
    let status = wait_exit(&mut child, Duration::from_secs(20), &log).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(2), "{text}");
    for needle in [
        "HEIMDALL_CAPTURE_SENSOR_ID",
        "HEIMDALL_CAPTURE_FILES",
        "/no/such/capture.pcap does not exist",
        "HEIMDALL_CAPTURE_WINDOW",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// tshark's fields for `filter` in `file`, one `|`-separated line per frame.
fn tshark(file: &std::path::Path, filter: &str, fields: &[&str]) -> Vec<String> {
    let mut cmd = std::process::Command::new("tshark");
    cmd.arg("-r").arg(file).args([
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=f",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark (make setup installs it)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_observations_agree_with_tshark() {
    use heimdall_proto::sensor::v1::observation::Kind as Obs;
    let mut files: Vec<PathBuf> = std::fs::read_dir(shared().join("testdata/devices/iot_sentinel"))
        .expect("devices testdata")
        .filter_map(|e| e.ok().map(|e| e.path().join("Setup-A-1-STA.pcap")))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{} device captures", files.len());
    let mut want_dhcp = Vec::new();
    let mut want_arp = Vec::new();
    let mut want_tls = Vec::new();
    let mut want_http = Vec::new();
    for f in &files {
        want_dhcp.extend(tshark(
            f,
            "dhcp && dhcp.option.dhcp && !(ip.src == ip.dst)",
            &[
                "dhcp.id",
                "dhcp.option.dhcp",
                "dhcp.hw.mac_addr",
                "dhcp.option.hostname",
                "dhcp.option.vendor_class_id",
            ],
        ));
        want_arp.extend(tshark(
            f,
            "arp && arp.hw.type == 1 && arp.proto.type == 0x0800",
            &[
                "arp.opcode",
                "arp.src.hw_mac",
                "arp.src.proto_ipv4",
                "arp.dst.proto_ipv4",
            ],
        ));
        // A connection's ClientHello, once (tshark also shows
        // retransmitted ones, so these compare as sets). SSLv2-compatible
        // hellos (record version 0x0002, sent by old OpenSSL in D-Link's
        // camera) carry no extensions, so no SNI and no JA3/JA4: they are
        // not observations.
        want_tls.extend(tshark(
            f,
            "tls.handshake.type == 1 && tcp && !(tls.record.version == 0x0002)",
            &[
                "eth.src",
                "tls.handshake.extensions_server_name",
                "tls.handshake.ja3",
            ],
        ));
        // The engine reads a connection's first request (what a device
        // says about itself); later requests on a kept-alive connection are
        // not observations.
        let mut first = std::collections::BTreeMap::new();
        for line in tshark(
            f,
            "http.request && tcp",
            &[
                "tcp.stream",
                "eth.src",
                "http.request.method",
                "http.request.uri",
                "http.host",
                "http.user_agent",
            ],
        ) {
            if let Some((stream, rest)) = line.split_once('|') {
                first
                    .entry(stream.parse::<u64>().unwrap_or(u64::MAX))
                    .or_insert_with(|| rest.to_string());
            }
        }
        want_http.extend(first.into_values());
    }
    let want_tls: std::collections::BTreeSet<String> = want_tls.into_iter().collect();
    let want_http: std::collections::BTreeSet<String> = want_http.into_iter().collect();
    let want_dhcp = multiset(want_dhcp);
    let want_arp = multiset(want_arp);
    let bus = run_to_the_end(&files, &[]).await;
    let n: usize = want_dhcp.values().sum::<usize>() + want_arp.values().sum::<usize>();
    // Every ARP and DHCP observation tshark shows; the capture service
    // publishes the others in the same batches, in capture order.
    let arp_or_dhcp = |o: &&heimdall_proto::sensor::v1::Observation| {
        matches!(o.kind, Some(Obs::Arp(_)) | Some(Obs::Dhcpv4(_)))
    };
    let got = collect(&bus, Duration::from_secs(20), |c| {
        c.observations.iter().filter(arp_or_dhcp).count() >= n
    })
    .await;
    let mut dhcp = Vec::new();
    let mut arp = Vec::new();
    let mut tls = std::collections::BTreeSet::new();
    let mut http = std::collections::BTreeSet::new();
    for o in &got.observations {
        assert_eq!(o.sensor_id, SENSOR);
        assert!(o.record_uid.starts_with('O'));
        match &o.kind {
            Some(Obs::Dhcpv4(d)) => {
                assert!(
                    o.conn_uid.starts_with('C'),
                    "DHCP belongs to its connection"
                );
                dhcp.push(format!(
                    "0x{:08x}|{}|{}|{}|{}",
                    d.xid,
                    d.message_type,
                    mac(&d.chaddr),
                    d.host_name,
                    d.vendor_class
                ));
            }
            Some(Obs::Arp(a)) => {
                let ip4 = |b: &[u8]| {
                    <[u8; 4]>::try_from(b)
                        .map(|a| std::net::Ipv4Addr::from(a).to_string())
                        .unwrap_or_default()
                };
                arp.push(format!(
                    "{}|{}|{}|{}",
                    a.op,
                    mac(&a.sender_mac),
                    ip4(&a.sender_ip),
                    ip4(&a.target_ip)
                ));
            }
            Some(Obs::TlsClientHello(t)) => {
                tls.insert(format!("{}|{}|{}", mac(&o.src_mac), t.sni, t.ja3));
            }
            Some(Obs::Http(h)) => {
                http.insert(format!(
                    "{}|{}|{}|{}|{}",
                    mac(&o.src_mac),
                    h.method,
                    h.uri,
                    h.host,
                    h.user_agent
                ));
            }
            // mDNS, SSDP, NetBIOS, LLMNR, DHCPv6 and NDP are checked
            // against tshark's decoding of real frames in the engine's
            // unit tests (observe/names.rs, observe/wire.rs).
            Some(_) => {}
            None => panic!("an observation without a kind: {o:?}"),
        }
    }
    assert!(!want_tls.is_empty() && !want_http.is_empty());
    assert_eq!(
        tls.iter()
            .filter(|t| !want_tls.contains(*t))
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "ClientHellos tshark does not show"
    );
    assert_eq!(
        want_tls
            .iter()
            .filter(|t| !tls.contains(*t))
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "ClientHellos tshark shows and the engine missed"
    );
    // tshark reads HTTP on the ports it knows; the engine on any port, so
    // it may see more, never less.
    assert_eq!(
        want_http
            .iter()
            .filter(|h| !http.contains(*h))
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "HTTP requests tshark shows and the engine missed"
    );
    let (got_dhcp, got_arp) = (multiset(dhcp), multiset(arp));
    assert!(!want_dhcp.is_empty() && !want_arp.is_empty());
    assert!(
        got_dhcp == want_dhcp && got_arp == want_arp,
        "observations differ from tshark\ndhcp:\n{}arp:\n{}",
        diff(&want_dhcp, &got_dhcp),
        diff(&want_arp, &got_arp)
    );
}
