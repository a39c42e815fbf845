//! Liveness and readiness, as components report them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One component's readiness as shown on `/readyz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    /// Whether this component can do its work now.
    pub ready: bool,
    /// Why not, or what it is connected to; never a secret.
    pub detail: String,
}

/// Shared health state. A service is ready when every registered component
/// says so; it is alive until [`Health::set_dead`] (a fatal, unrecoverable
/// state that an orchestrator should answer with a restart).
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    dead: Option<String>,
    components: BTreeMap<String, Readiness>,
}

impl Health {
    /// A new health state with no components (and therefore ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare a component, not ready until it says otherwise.
    pub fn register(&self, component: &str) {
        self.set(component, false, "starting");
    }

    /// Mark `component` ready with a short detail.
    pub fn ready(&self, component: &str, detail: impl Into<String>) {
        self.set(component, true, detail);
    }

    /// Mark `component` not ready and say why.
    pub fn not_ready(&self, component: &str, why: impl Into<String>) {
        self.set(component, false, why);
    }

    fn set(&self, component: &str, ready: bool, detail: impl Into<String>) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.components.insert(
            component.to_string(),
            Readiness {
                ready,
                detail: detail.into(),
            },
        );
    }

    /// The process cannot recover; `/healthz` starts failing.
    pub fn set_dead(&self, why: impl Into<String>) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.dead = Some(why.into());
    }

    /// `None` while alive, else the reason it is not.
    pub fn dead(&self) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dead
            .clone()
    }

    /// Whether every component is ready, and each one's state.
    pub fn readiness(&self) -> (bool, BTreeMap<String, Readiness>) {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let all = s.dead.is_none() && s.components.values().all(|r| r.ready);
        (all, s.components.clone())
    }
}
