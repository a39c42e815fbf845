//! Giving up privileges once the capture handle is open.
//!
//! Opening an interface needs CAP_NET_RAW (and CAP_NET_ADMIN for
//! promiscuous mode on some drivers); nothing after that does. So the
//! service opens its handle first, then, while it is still one thread:
//! removes every other capability from the bounding set, switches to the
//! configured user and group (dropping supplementary groups), leaves at
//! most CAP_NET_RAW and CAP_NET_ADMIN in the *permitted* set (never
//! effective) so a vanished interface can be opened again, and sets
//! no_new_privs so nothing it could execute regains more. With
//! `keep_reopen_caps = false` it keeps no capability at all.
//!
//! The same works for a non-root start with only CAP_NET_RAW (file
//! capabilities or systemd's AmbientCapabilities): the effective set is
//! emptied after the handle is open.

/// Why privileges could not be given up. The service refuses to run on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("capture user {0:?} does not exist")]
    NoSuchUser(String),
    #[error("switching to user {user:?} needs root (running as uid {uid})")]
    NotRoot { user: String, uid: u32 },
    #[error("cannot {what}: {message}")]
    Sys { what: &'static str, message: String },
}

/// What is left after [`drop_privileges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub uid: u32,
    pub gid: u32,
    /// Capabilities kept in the permitted set (not effective).
    pub permitted: Vec<String>,
}

#[cfg(target_os = "linux")]
mod imp {
    use caps::{CapSet, Capability, CapsHashSet};
    use nix::unistd::{Gid, Uid, User, geteuid, setgid, setgroups, setuid};

    use super::{Dropped, Error};

    const REOPEN: [Capability; 2] = [Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN];

    fn sys(what: &'static str) -> impl Fn(String) -> Error {
        move |message| Error::Sys { what, message }
    }

    pub fn drop_privileges(user: &str, keep_reopen_caps: bool) -> Result<Dropped, Error> {
        let permitted_now = caps::read(None, CapSet::Permitted)
            .map_err(|e| sys("read capabilities")(e.to_string()))?;
        let keep: CapsHashSet = if keep_reopen_caps {
            REOPEN
                .iter()
                .copied()
                .filter(|c| permitted_now.contains(c))
                .collect()
        } else {
            CapsHashSet::new()
        };

        // The bounding set can only shrink while CAP_SETPCAP is effective.
        if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
            for cap in caps::all() {
                if !keep.contains(&cap) {
                    // Capabilities this kernel does not know cannot be dropped.
                    let _ = caps::drop(None, CapSet::Bounding, cap);
                }
            }
        }

        if !user.is_empty() {
            let u = User::from_name(user)
                .map_err(|e| sys("look up the capture user")(e.to_string()))?
                .ok_or_else(|| Error::NoSuchUser(user.to_string()))?;
            let euid = geteuid();
            if !euid.is_root() && u.uid != euid {
                return Err(Error::NotRoot {
                    user: user.to_string(),
                    uid: euid.as_raw(),
                });
            }
            if euid.is_root() {
                if !keep.is_empty() {
                    nix::sys::prctl::set_keepcaps(true)
                        .map_err(|e| sys("keep capabilities across setuid")(e.to_string()))?;
                }
                setgroups(&[u.gid]).map_err(|e| sys("drop supplementary groups")(e.to_string()))?;
                setgid(u.gid).map_err(|e| sys("switch group")(e.to_string()))?;
                setuid(u.uid).map_err(|e| sys("switch user")(e.to_string()))?;
                if !keep.is_empty() {
                    nix::sys::prctl::set_keepcaps(false)
                        .map_err(|e| sys("reset keep-capabilities")(e.to_string()))?;
                }
            }
        }

        caps::clear(None, CapSet::Effective)
            .map_err(|e| sys("clear effective capabilities")(e.to_string()))?;
        caps::clear(None, CapSet::Inheritable)
            .map_err(|e| sys("clear inheritable capabilities")(e.to_string()))?;
        // Kernels before 4.3 have no ambient set; nothing to clear there.
        let _ = caps::clear(None, CapSet::Ambient);
        caps::set(None, CapSet::Permitted, &keep)
            .map_err(|e| sys("limit permitted capabilities")(e.to_string()))?;
        nix::sys::prctl::set_no_new_privs().map_err(|e| sys("set no_new_privs")(e.to_string()))?;

        let mut permitted: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
        permitted.sort();
        Ok(Dropped {
            uid: Uid::current().as_raw(),
            gid: Gid::current().as_raw(),
            permitted,
        })
    }

    /// Runs `f` with the reopen capabilities effective on this thread, if
    /// they were kept, and empties the effective set again after.
    pub fn with_capture_caps<T>(f: impl FnOnce() -> T) -> T {
        let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
        let mut raised = false;
        for cap in REOPEN {
            if permitted.contains(&cap) {
                raised |= caps::raise(None, CapSet::Effective, cap).is_ok();
            }
        }
        let out = f();
        if raised {
            let _ = caps::clear(None, CapSet::Effective);
        }
        out
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::{Dropped, Error};

    /// Elsewhere (Windows runs capture as a service account through pktmon)
    /// there is nothing to give up here.
    pub fn drop_privileges(_user: &str, _keep: bool) -> Result<Dropped, Error> {
        Ok(Dropped {
            uid: 0,
            gid: 0,
            permitted: Vec::new(),
        })
    }

    pub fn with_capture_caps<T>(f: impl FnOnce() -> T) -> T {
        f()
    }
}

pub use imp::{drop_privileges, with_capture_caps};
