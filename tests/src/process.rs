//! Starting, watching and killing the processes under test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub use heimdall_telemetry::terminated;

/// A free TCP port on the loopback address, for a child's listener.
pub fn free_port() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

/// Start `binary` with exactly `env` on top of a clean environment (plus
/// PATH), its stderr going to `log` so a failing test can show it.
/// With `HEIMDALL_TEST_LOG_DIR` set, the log is also linked into that
/// folder (a hard link: it outlives the test's temporary folder), for the
/// suite's secret scan ([`crate::secrets`]).
pub fn spawn(binary: &Path, env: &[(String, String)], log: &Path) -> std::io::Result<Child> {
    let path = log;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if let Some(dir) = crate::secrets::log_dir() {
        let name = binary
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("service");
        let link = dir.join(format!("{}.log", crate::secrets::unique(name)));
        if let Err(e) = std::fs::hard_link(path, &link) {
            // Another file system: copy what is there when the test ends
            // is not possible, so say it; the scan counts the logs it saw.
            eprintln!(
                "cannot link {} into {} for the secret scan: {e}",
                path.display(),
                dir.display()
            );
        }
    }
    Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
}

/// A service binary with the settings a test gives it, started (and
/// started again after a kill) with its stderr in `log`.
#[derive(Debug, Clone)]
pub struct ServiceProcess {
    pub binary: std::path::PathBuf,
    pub env: Vec<(String, String)>,
    /// Its telemetry listener (`/readyz`, `/metrics`).
    pub addr: SocketAddr,
    pub log: std::path::PathBuf,
}

impl ServiceProcess {
    /// `binary` on the test NATS server under `namespace` (memory storage,
    /// small bounds, a 2 s ack wait so a killed consumer's messages come
    /// back soon), telemetry on a free port, JSON logs at info into `log`.
    pub fn new(binary: &Path, namespace: &str, log: &Path) -> std::io::Result<Self> {
        let addr = free_port()?;
        let env = [
            ("HEIMDALL_NATS_URL", heimdall_bus::testing::nats_url()),
            ("HEIMDALL_NATS_NAMESPACE", namespace.to_string()),
            ("HEIMDALL_NATS_MEMORY_STORAGE", "true".into()),
            ("HEIMDALL_NATS_MAX_BYTES_SCALE", "0.05".into()),
            ("HEIMDALL_NATS_ACK_WAIT", "2s".into()),
            ("HEIMDALL_TELEMETRY_LISTEN", addr.to_string()),
            ("HEIMDALL_TELEMETRY_LOG", "info".into()),
            ("HEIMDALL_TELEMETRY_LOG_FORMAT", "json".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(ServiceProcess {
            binary: binary.to_path_buf(),
            env,
            addr,
            log: log.to_path_buf(),
        })
    }

    /// One more setting (a later one wins over an earlier one).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.into()));
        self
    }

    /// Starts it and waits until it is ready; panics with its log if it
    /// is not within 30 s.
    pub async fn start(&self) -> Child {
        let name = self
            .binary
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("service");
        let mut child = spawn(&self.binary, &self.env, &self.log)
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        if let Err(e) = wait_ready(&mut child, self.addr, Duration::from_secs(30)).await {
            panic!(
                "{name}: {e}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        child
    }
}

/// Poll `GET /readyz` on `addr` until it answers 200, the child exits, or
/// `timeout` passes.
pub async fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("process exited before it was ready: {status}"));
        }
        if http_status(addr, "/readyz").await == Some(200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not ready after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status code of `GET path` on `addr`, or `None` if nothing answers.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_get(addr, path).await.map(|(status, _)| status)
}

/// Status and body of `GET path` on `addr`, or `None` if nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    read_response(s).await
}

/// Status and body of `POST path` with a JSON `body` on `addr`, or `None`
/// if nothing answers.
pub async fn http_post_json(addr: SocketAddr, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.ok()?;
    read_response(s).await
}

/// Status and body of the HTTP/1.0 response on `s`.
async fn read_response(mut s: tokio::net::TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.get(9..12)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The value of the Prometheus sample `name` (with its labels, exactly as
/// exposed, e.g. `heimdall_x_total{kind="conn"}`) on `addr`'s `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics").await?;
    body.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == name).then(|| v.parse().ok())?
    })
}

/// A nats-server of a test's own, with JetStream storing on disk in a
/// folder of the test's, so the test can stop it and start it again on the
/// same port (an outage) without touching the machine's server.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl NatsServer {
    /// Picks a free port and starts the server there, ready to use.
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        let port = free_port()?.port();
        let mut s = NatsServer {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        s.start_again()?;
        Ok(s)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it (again) on its port and waits until it accepts connections.
    pub fn start_again(&mut self) -> std::io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats-server.log"))?;
        let child = std::process::Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("js"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start nats-server (make setup installs it): {e}"),
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("nats-server did not start in 20 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops it (SIGKILL: an outage, not a polite shutdown) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends SIGTERM to `child` (the polite stop every service handles).
pub fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        // kill(1) keeps this crate free of unsafe code.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}

/// Runs a service's `run(listener, shutdown)` in this process, on a thread
/// with a runtime of its own as its binary would have, its telemetry on
/// `telemetry`; returns once `/readyz` answers 200 (panics after 30 s),
/// with the token that stops it. For reference servers the tests talk to
/// over the network.
pub async fn serve_in_thread<F, Fut>(
    telemetry: SocketAddr,
    run: F,
) -> tokio_util::sync::CancellationToken
where
    F: FnOnce(tokio::net::TcpListener, tokio_util::sync::CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let stop = tokio_util::sync::CancellationToken::new();
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(telemetry)
                .await
                .expect("bind the telemetry port");
            if let Err(e) = run(listener, stop2).await {
                eprintln!("in-process service: {e:#}");
            }
        });
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_status(telemetry, "/readyz").await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the in-process service did not become ready on {telemetry}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop
}
