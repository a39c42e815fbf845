//! The process's Prometheus registry.

use std::sync::{Arc, RwLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::{Metric, Registry};

/// One registry per process, cheap to clone. Every metric is prefixed
/// `heimdall_`; components register at start and update lock-free afterwards
/// (prometheus-client metrics are atomics behind an `Arc`).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            registry: Arc::new(RwLock::new(Registry::with_prefix("heimdall"))),
        }
    }
}

impl Metrics {
    /// A fresh, empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `metric` as `heimdall_<name>` with `help` text. Registering at
    /// start-up is the norm; late registration works too.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
        reg.register(name, help, metric);
    }

    /// Register under `heimdall_<prefix>_<name>` with constant labels, for
    /// components that exist several times in one process (two consumers).
    pub fn register_with_labels(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        metric: impl Metric,
    ) {
        let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
        let owned = labels.iter().map(|(k, v)| {
            (
                std::borrow::Cow::Owned(k.to_string()),
                std::borrow::Cow::Owned(v.to_string()),
            )
        });
        reg.sub_registry_with_labels(owned)
            .register(name, help, metric);
    }

    /// The Prometheus text exposition of everything registered.
    pub fn encode(&self) -> String {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &reg);
        out
    }
}
