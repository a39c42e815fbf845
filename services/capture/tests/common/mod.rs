//! What the capture tests share: starting the service, reading what it
//! published, and the records the engine gives for the same files.
#![allow(dead_code)] // each test file uses a part

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heimdall_bus::{Bus, BusConfig, Kind};
use heimdall_engine::{CaptureReader, Engine, EngineConfig};
use heimdall_proto::sensor::v1::{
    ConnBatch, ConnRecord, DnsBatch, DnsRecord, Observation, ObservationBatch,
};
use heimdall_tests::process;
use tokio_util::sync::CancellationToken;

pub const SENSOR: &str = "test-sensor";

/// ../shared next to the project (or `HEIMDALL_SHARED`).
pub fn shared() -> PathBuf {
    std::env::var_os("HEIMDALL_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

/// A Zeek reference trace by case name.
pub fn zeek_trace(case: &str) -> PathBuf {
    let dir = shared().join("testdata/zeek").join(case);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the reference data lives in ../shared)",
            dir.display()
        )
    });
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.ends_with(".log") && name != "meta.txt"
        })
        .unwrap_or_else(|| panic!("no trace in {}", dir.display()))
}

/// Records the engine gives for `files` read in order as one stream (as
/// `heimdall analyze a b c` does), and the number of packets. Observations
/// are on, as in the capture service (connection records then carry MACs).
pub fn engine_records(files: &[PathBuf]) -> (Vec<ConnRecord>, Vec<DnsRecord>, u64) {
    let mut engine = Engine::new(EngineConfig {
        observations: true,
        ..EngineConfig::default()
    });
    let mut packets = 0;
    for f in files {
        let mut reader = CaptureReader::open(f).expect("trace opens");
        while let Ok(Some(p)) = reader.next_packet() {
            engine.packet(&p);
            packets += 1;
        }
    }
    engine.finish();
    let conns = engine
        .out
        .conns
        .iter()
        .map(|r| r.to_proto(SENSOR))
        .collect();
    let dns = engine.out.dns.iter().map(|r| r.to_proto(SENSOR)).collect();
    (conns, dns, packets)
}

/// Which fields to compare: everything, or everything but times (live
/// capture stamps packets when they arrive, not when they were recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    Exact,
    Ignored,
}

fn ip(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b).unwrap_or_default()).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or_default()).to_string(),
        _ => format!("{b:?}"),
    }
}

/// One line per record with every compared field; uids are random per run
/// and compared only by count of tunnel parents. Without timing, byte
/// counts are left to [`bytes_agree`]: Zeek leaves them unset when a
/// connection's duration is 0, and a replay spreads packets that shared a
/// timestamp.
pub fn conn_line(r: &ConnRecord, t: Timing) -> String {
    let bytes = |b: Option<u64>| match t {
        Timing::Exact => b,
        Timing::Ignored => None,
    };
    let mut s = format!(
        "{} {}:{} > {}:{} svc={:?} state={} hist={:?} bytes={:?}/{:?} missed={:?} pkts={:?}/{:?} ip_bytes={:?}/{:?} local={:?}/{:?} parents={} vlan={:?}/{:?} cid={} l2={:?}/{:?}",
        r.proto,
        ip(&r.id_orig_h),
        r.id_orig_p,
        ip(&r.id_resp_h),
        r.id_resp_p,
        r.service,
        r.conn_state,
        r.history,
        bytes(r.orig_bytes),
        bytes(r.resp_bytes),
        r.missed_bytes,
        r.orig_pkts,
        r.resp_pkts,
        r.orig_ip_bytes,
        r.resp_ip_bytes,
        r.local_orig,
        r.local_resp,
        r.tunnel_parents.len(),
        r.vlan,
        r.inner_vlan,
        r.community_id,
        r.orig_l2_addr,
        r.resp_l2_addr,
    );
    if t == Timing::Exact {
        s += &format!(" ts={} dur={:?}", r.ts_us, r.duration_us);
    }
    s
}

pub fn dns_line(r: &DnsRecord, t: Timing) -> String {
    let mut s = format!(
        "{} {}:{} > {}:{} id={:?} q={:?} qc={:?} qt={:?} rcode={:?} aa={} tc={} rd={} ra={} z={} ans={:?} ttls={:?} rejected={} op={:?} auth={:?} addl={:?}",
        r.proto,
        ip(&r.id_orig_h),
        r.id_orig_p,
        ip(&r.id_resp_h),
        r.id_resp_p,
        r.trans_id,
        r.query,
        r.qclass,
        r.qtype,
        r.rcode,
        r.aa,
        r.tc,
        r.rd,
        r.ra,
        r.z,
        r.answers,
        r.ttls_us,
        r.rejected,
        r.opcode,
        r.auth,
        r.addl,
    );
    if t == Timing::Exact {
        s += &format!(" ts={} rtt={:?}", r.ts_us, r.rtt_us);
    }
    s
}

/// A multiset of lines, for comparing without caring about order.
pub fn multiset(lines: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l).or_insert(0) += 1;
    }
    m
}

/// Lines in one multiset and not the other, for a readable failure.
pub fn diff(want: &BTreeMap<String, usize>, got: &BTreeMap<String, usize>) -> String {
    let mut lines = Vec::new();
    for (l, n) in want {
        let g = got.get(l).copied().unwrap_or(0);
        if g != *n {
            lines.push(format!("  want {n} got {g}: {l}\n"));
        }
    }
    for (l, n) in got {
        if !want.contains_key(l) {
            lines.push(format!("  unexpected {n}: {l}\n"));
        }
    }
    let more = lines.len().saturating_sub(30);
    let mut out: String = lines.into_iter().take(30).collect();
    if more > 0 {
        out += &format!("  ... and {more} more\n");
    }
    out
}

/// A bus of the test's own namespace on `url`.
pub fn bus_config(url: &str) -> BusConfig {
    let mut c = heimdall_bus::testing::config("cap");
    c.url = heimdall_config::Url::new(url);
    c
}

/// The capture service's environment for `bus`, listening on `listen`.
pub fn env(bus: &BusConfig, listen: SocketAddr, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("HEIMDALL_CAPTURE_SENSOR_ID".to_string(), SENSOR.to_string()),
        ("HEIMDALL_NATS_URL".into(), bus.url.expose().to_string()),
        ("HEIMDALL_NATS_NAMESPACE".into(), bus.namespace.clone()),
        (
            "HEIMDALL_NATS_MEMORY_STORAGE".into(),
            bus.memory_storage.to_string(),
        ),
        (
            "HEIMDALL_NATS_MAX_BYTES_SCALE".into(),
            bus.max_bytes_scale.to_string(),
        ),
        ("HEIMDALL_NATS_CONNECT_TIMEOUT".into(), "1s".into()),
        ("HEIMDALL_TELEMETRY_LISTEN".into(), listen.to_string()),
        ("HEIMDALL_TELEMETRY_LOG".into(), "info".into()),
        ("HEIMDALL_CAPTURE_BATCH_INTERVAL".into(), "100ms".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_heimdall-capture"))
}

/// Everything published so far on a namespace.
#[derive(Debug, Default)]
pub struct Collected {
    pub conns: Vec<ConnRecord>,
    pub dns: Vec<DnsRecord>,
    pub observations: Vec<Observation>,
    pub batch_ids: Vec<String>,
}

/// A consumer of `kind` that adds each batch to `got` with `add`, until
/// `stop`.
fn consume_into<M>(
    b: &Bus,
    kind: Kind,
    stop: &CancellationToken,
    got: &Arc<Mutex<Collected>>,
    add: fn(&mut Collected, M),
) -> tokio::task::JoinHandle<Result<(), heimdall_bus::Error>>
where
    M: heimdall_bus::BusMessage + BatchId,
{
    let (b, stop, got) = (b.clone(), stop.clone(), got.clone());
    tokio::spawn(async move {
        let spec = b.consumer_spec(kind, "test", None);
        b.consume::<M, _, _, String>(spec, stop, move |m| {
            let mut g = got.lock().unwrap_or_else(|p| p.into_inner());
            g.batch_ids.push(m.message.batch_id().to_string());
            add(&mut g, m.message);
            async { Ok(()) }
        })
        .await
    })
}

/// The de-duplication id of a batch message.
pub trait BatchId {
    fn batch_id(&self) -> &str;
}

macro_rules! batch_id {
    ($($t:ty),*) => {$(
        impl BatchId for $t {
            fn batch_id(&self) -> &str {
                &self.batch_id
            }
        }
    )*};
}
batch_id!(ConnBatch, DnsBatch, ObservationBatch);

/// The fields of `/proc/<pid>/status` line `name` (e.g. `Uid:`).
pub fn proc_status(pid: u32, name: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// Consume the streams of `bus` until `done` holds or `timeout` passes.
pub async fn collect(
    bus: &BusConfig,
    timeout: Duration,
    done: impl Fn(&Collected) -> bool,
) -> Collected {
    let b = Bus::connect(bus, "capture-test")
        .await
        .expect("test connects to NATS");
    b.ensure_streams(&[Kind::Flows, Kind::Dns, Kind::Observations])
        .await
        .expect("streams");
    let got = Arc::new(Mutex::new(Collected::default()));
    let stop = CancellationToken::new();
    let consumers = [
        consume_into::<ConnBatch>(&b, Kind::Flows, &stop, &got, |g, m| {
            g.conns.extend(m.records)
        }),
        consume_into::<DnsBatch>(&b, Kind::Dns, &stop, &got, |g, m| g.dns.extend(m.records)),
        consume_into::<ObservationBatch>(&b, Kind::Observations, &stop, &got, |g, m| {
            g.observations.extend(m.records)
        }),
    ];
    let deadline = Instant::now() + timeout;
    loop {
        let finished = done(&got.lock().unwrap_or_else(|p| p.into_inner()));
        if finished || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A moment for anything beyond the target (duplicates) to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for c in consumers {
        let _ = c.await;
    }
    let mut g = got.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::take(&mut *g)
}

/// Compare what was published with what the engine gives; panics with the
/// differences.
pub fn assert_same(
    got: &Collected,
    conns: &[ConnRecord],
    dns: &[DnsRecord],
    timing: Timing,
    context: &str,
) {
    let want_c = multiset(conns.iter().map(|r| conn_line(r, timing)));
    let got_c = multiset(got.conns.iter().map(|r| conn_line(r, timing)));
    let want_d = multiset(dns.iter().map(|r| dns_line(r, timing)));
    let got_d = multiset(got.dns.iter().map(|r| dns_line(r, timing)));
    assert!(
        want_c == got_c && want_d == got_d,
        "{context}: published records differ from the engine's for the files\nconn:\n{}dns:\n{}",
        diff(&want_c, &got_c),
        diff(&want_d, &got_d)
    );
    if timing == Timing::Ignored {
        bytes_agree(&got.conns, conns, context);
    }
    let mut ids = got.batch_ids.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        got.batch_ids.len(),
        "{context}: a batch arrived twice"
    );
}

/// Where a connection has byte counts on both sides, they are equal.
pub fn bytes_agree(got: &[ConnRecord], want: &[ConnRecord], context: &str) {
    let key = |r: &ConnRecord| {
        format!(
            "{} {} {}",
            r.community_id,
            r.orig_pkts.unwrap_or(0),
            r.resp_pkts.unwrap_or(0)
        )
    };
    type Bytes = (Option<u64>, Option<u64>);
    let mut wanted: BTreeMap<String, Vec<Bytes>> = BTreeMap::new();
    for r in want {
        wanted
            .entry(key(r))
            .or_default()
            .push((r.orig_bytes, r.resp_bytes));
    }
    let mut compared = 0;
    for r in got {
        if let (Some(o), Some(b)) = (r.orig_bytes, r.resp_bytes)
            && let Some([(Some(wo), Some(wb))]) = wanted.get(&key(r)).map(Vec::as_slice)
        {
            assert_eq!((o, b), (*wo, *wb), "{context}: byte counts of {}", key(r));
            compared += 1;
        }
    }
    assert!(
        compared > 0 || want.iter().all(|r| r.orig_bytes.is_none()),
        "{context}: no byte counts compared"
    );
}

/// Start the service and wait for `/readyz`, or panic with its log.
pub async fn start(
    env: &[(String, String)],
    listen: SocketAddr,
    log: &Path,
) -> tokio::process::Child {
    let mut child = process::spawn(&binary(), env, log).expect("start heimdall-capture");
    if let Err(e) = process::wait_ready(&mut child, listen, Duration::from_secs(30)).await {
        panic!(
            "heimdall-capture: {e}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    child
}

/// Wait for the process to exit by itself; its status.
pub async fn wait_exit(
    child: &mut tokio::process::Child,
    timeout: Duration,
    log: &Path,
) -> std::process::ExitStatus {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        _ => panic!(
            "heimdall-capture did not exit within {timeout:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

/// Poll a metric until `ok` holds for it; its last value.
pub async fn wait_metric(
    addr: SocketAddr,
    name: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = process::metric(addr, name).await.unwrap_or(f64::NAN);
        if ok(v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
