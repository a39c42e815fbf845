//! A veth pair for live-capture tests: one end in a network namespace of
//! its own, where tcpreplay sends captures, the other in this namespace,
//! where the capture listens. Neither end has an address and IPv6 is off on
//! both, so the kernel sends nothing itself and routes nothing anywhere:
//! only replayed frames cross the pair. Needs root (CI runs as root);
//! without it the test fails and says so rather than skip.

use std::path::Path;
use std::process::Command;

/// Runs `cmd`; panics with its stderr if it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails the test, saying why, unless it runs as root.
pub fn require_root() {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "live-capture tests make network namespaces and veth pairs and need root; \
         run `make test` as root (CI does)"
    );
}

/// A veth pair: `outer` in this namespace (where the service captures),
/// `inner` in namespace `ns` (where tcpreplay sends).
#[derive(Debug)]
pub struct Veth {
    pub ns: String,
    pub outer: String,
    pub inner: String,
}

impl Veth {
    /// A new namespace and pair, up; removed again when dropped.
    pub fn setup() -> Veth {
        require_root();
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let v = Veth {
            ns: format!("hmcap-{tag}"),
            outer: format!("hmo{tag}"),
            inner: format!("hmi{tag}"),
        };
        run(Command::new("ip").args(["netns", "add", &v.ns]));
        v.create();
        v
    }

    /// Make the pair (again, after [`Veth::delete_link`]) and bring it up.
    pub fn create(&self) {
        run(Command::new("ip").args([
            "link",
            "add",
            &self.outer,
            "type",
            "veth",
            "peer",
            "name",
            &self.inner,
            "netns",
            &self.ns,
        ]));
        // No IPv6 (no router solicitations, no duplicate address probes):
        // only replayed frames cross the pair.
        run(Command::new("sysctl").args([
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", self.outer),
        ]));
        run(Command::new("ip").args([
            "netns",
            "exec",
            &self.ns,
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", self.inner),
        ]));
        // Jumbo frames in the traces must fit.
        run(Command::new("ip").args(["link", "set", &self.outer, "mtu", "65535", "up"]));
        run(Command::new("ip").args([
            "netns",
            "exec",
            &self.ns,
            "ip",
            "link",
            "set",
            &self.inner,
            "mtu",
            "65535",
            "up",
        ]));
    }

    pub fn delete_link(&self) {
        run(Command::new("ip").args(["link", "del", &self.outer]));
    }

    pub fn set(&self, state: &str) {
        run(Command::new("ip").args(["link", "set", &self.outer, state]));
    }

    /// Send `file` into the pair at its recorded pace.
    pub fn replay(&self, file: &Path) {
        run(Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "tcpreplay",
                "-q",
                "-i",
                &self.inner,
            ])
            .arg(file));
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.outer])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
