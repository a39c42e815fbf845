//! What the service benchmarks of `make bench` share: a service binary
//! started pinned to one core (`taskset -c 0`) with the test servers, the
//! CPU seconds it used, and a wait until one of its counters reaches a
//! number.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// User plus system CPU seconds of process `pid` so far (Linux `/proc`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A service process under measurement.
#[derive(Debug)]
pub struct Measured {
    pub child: tokio::process::Child,
    pub pid: u32,
    /// Its telemetry listener.
    pub addr: SocketAddr,
    /// Its stderr.
    pub log: std::path::PathBuf,
    /// Whether it runs pinned to one core.
    pub pinned: bool,
    pub started: Instant,
}

impl Measured {
    /// Starts `binary` with exactly `env` plus a telemetry listener on a
    /// free port, logging warnings to `log`, pinned to core 0 when
    /// `taskset` exists.
    pub fn start(binary: &Path, env: &[(&str, String)], log: &Path) -> anyhow::Result<Measured> {
        let addr = crate::process::free_port()?;
        let pinned = std::process::Command::new("taskset")
            .arg("--version")
            .output()
            .is_ok();
        let mut cmd = if pinned {
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg("0").arg(binary);
            c
        } else {
            tokio::process::Command::new(binary)
        };
        let child = cmd
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("HEIMDALL_TELEMETRY_LISTEN", addr.to_string())
            .env("HEIMDALL_TELEMETRY_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Measured {
            pid: child.id().unwrap_or(0),
            child,
            addr,
            log: log.to_path_buf(),
            pinned,
            started: Instant::now(),
        })
    }

    /// Waits until counter `metric` reaches `n` (fails with the log after
    /// `timeout` or if the process exits); returns wall and CPU seconds
    /// since the start.
    pub async fn wait_for(
        &mut self,
        metric: &str,
        n: f64,
        timeout: Duration,
    ) -> anyhow::Result<(f64, f64)> {
        let deadline = self.started + timeout;
        let mut done = 0.0;
        while done < n {
            if Instant::now() > deadline || self.child.try_wait()?.is_some() {
                anyhow::bail!(
                    "{metric} reached {done} of {n}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            done = crate::process::metric(self.addr, metric)
                .await
                .unwrap_or(0.0);
        }
        let wall = self.started.elapsed().as_secs_f64();
        Ok((wall, cpu_seconds(self.pid).unwrap_or(wall)))
    }
}
