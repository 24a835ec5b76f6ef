//! Lets the port proxy ask whether traffic may wake a sandbox (E2B's `autoResume`).
//!
//! burrow wakes a sleeping sandbox on any request. E2B does so only for sandboxes created with
//! `autoResume`: traffic to any other paused sandbox gets the proxy's 502 "was not found", and
//! only connect resumes it. The answer lives in the E2B lifecycle entries of the server that owns
//! the sandbox; the proxy only holds that server's `AppState`, so entries are found by data dir
//! (one server per data dir at a time; a restarted server registers its new entries).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use chrono::Utc;

use super::lifecycle::Lifecycles;

static REGISTRY: LazyLock<Mutex<HashMap<PathBuf, Weak<Lifecycles>>>> =
    LazyLock::new(Mutex::default);

/// Makes `lifecycles` the E2B state consulted for sandboxes of the server on `data_dir`.
pub fn register(data_dir: &Path, lifecycles: &Arc<Lifecycles>) {
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    registry.retain(|_, entry| entry.strong_count() > 0);
    registry.insert(data_dir.to_path_buf(), Arc::downgrade(lifecycles));
}

/// `false` if sandbox `id` is paused through E2B without `autoResume`: the proxy must not wake
/// it. See [`Lifecycles::admit_traffic`].
pub fn admit_traffic(data_dir: &Path, id: &str) -> bool {
    let lifecycles = REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(data_dir)
        .and_then(Weak::upgrade);
    lifecycles.is_none_or(|l| l.admit_traffic(id, Utc::now()))
}
