//! Secrets made by tests carry one marker, so a scan over everything the
//! suite wrote (service logs, exported traces, test output) can prove that
//! no secret leaked anywhere, not just where one test looked.
//!
//! `make test` points `HEIMDALL_TEST_LOG_DIR` at a folder in the temporary
//! directory; [`crate::process::spawn`] links every service log into it and
//! [`keep`] adds other text (exported traces). `scripts/secret-scan.sh`
//! then searches that folder and nextest's captured output for
//! [`MARKER`] and fails on any hit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// In every test secret; in nothing else.
pub const MARKER: &str = "hsk9canary";

/// A fresh secret for `label` (an API key, a password, a token).
pub fn secret(label: &str) -> String {
    format!("{label}-{MARKER}-{}", uuid::Uuid::new_v4().simple())
}

/// The suite's log folder, if `make test` set one.
pub fn log_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("HEIMDALL_TEST_LOG_DIR")?);
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// A name no other file in the folder has.
pub fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Keep `text` in the suite's log folder for the scan.
pub fn keep(name: &str, text: &str) {
    if let Some(dir) = log_dir() {
        let _ = std::fs::write(dir.join(format!("{}.txt", unique(name))), text);
    }
}
