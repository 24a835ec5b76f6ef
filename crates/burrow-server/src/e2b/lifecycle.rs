//! E2B lifecycle state per sandbox: the absolute end time and what happens when it is reached.
//!
//! Only sandboxes created through the E2B API have an entry; native sandboxes never time out.
//! Entries are persisted to `<data_dir>/e2b-lifecycle.json` (written atomically on every change),
//! so a daemon restart keeps every end time.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// File in the data dir holding the entries.
pub const LIFECYCLE_FILE: &str = "e2b-lifecycle.json";

/// What happens at the end time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutAction {
    Kill,
    Pause { keep_memory: bool },
}

impl From<burrow_e2b::OnTimeout> for TimeoutAction {
    fn from(value: burrow_e2b::OnTimeout) -> Self {
        match value {
            burrow_e2b::OnTimeout::Kill => Self::Kill,
            burrow_e2b::OnTimeout::Pause { keep_memory } => Self::Pause { keep_memory },
        }
    }
}

impl From<TimeoutAction> for burrow_e2b::OnTimeout {
    fn from(value: TimeoutAction) -> Self {
        match value {
            TimeoutAction::Kill => Self::Kill,
            TimeoutAction::Pause { keep_memory } => Self::Pause { keep_memory },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub end_at: DateTime<Utc>,
    pub on_timeout: TimeoutAction,
    pub auto_resume: bool,
    pub allow_internet_access: Option<bool>,
    /// The create request's timeout in seconds: an auto-resume on traffic sets the end time to
    /// `now + max(timeout, 5 min)`, as E2B does. 0 for entries written before it was recorded.
    #[serde(default)]
    pub timeout_secs: u64,
    /// Set while the sandbox is paused: the end time does not run then, and a resume sets it anew.
    #[serde(default)]
    pub paused: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("E2B lifecycle file {path}: {source}")]
pub struct LifecycleError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// All entries, keyed by sandbox id.
#[derive(Debug)]
pub struct Lifecycles {
    path: PathBuf,
    entries: Mutex<HashMap<String, Lifecycle>>,
}

/// The shortest time to live an auto-resume grants (E2B's `defaultProxyAutoResumeTimeout`).
pub const AUTO_RESUME_MIN_TIMEOUT: Duration = Duration::from_secs(300);

/// `now + d`, saturating far in the future.
pub fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Lifecycles {
    /// Loads `<data_dir>/e2b-lifecycle.json` (missing = empty). A corrupt file is an error: silently
    /// dropping it would turn every E2B sandbox into one that never times out.
    pub fn load(data_dir: &Path) -> Result<Self, LifecycleError> {
        let path = data_dir.join(LIFECYCLE_FILE);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LifecycleError {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(source) => return Err(LifecycleError { path, source }),
        };
        Ok(Self {
            path,
            entries: Mutex::new(entries),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Lifecycle>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Lifecycle> {
        self.lock().get(id).cloned()
    }

    pub fn insert(&self, id: &str, lifecycle: Lifecycle) {
        let mut entries = self.lock();
        entries.insert(id.to_string(), lifecycle);
        self.persist(&entries);
    }

    pub fn remove(&self, id: &str) {
        let mut entries = self.lock();
        if entries.remove(id).is_some() {
            self.persist(&entries);
        }
    }

    /// Applies `change` to the entry of `id`, if there is one; returns the updated entry.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Lifecycle)) -> Option<Lifecycle> {
        let mut entries = self.lock();
        let entry = entries.get_mut(id)?;
        change(entry);
        let updated = entry.clone();
        self.persist(&entries);
        Some(updated)
    }

    /// Drops entries of sandboxes that no longer exist (deleted through the native API, or gone
    /// while the daemon was down).
    pub fn retain_known(&self, known: &[String]) {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|id, _| known.contains(id));
        if entries.len() != before {
            self.persist(&entries);
        }
    }

    /// The proxy's question before traffic wakes sandbox `id`: `false` if it is paused through
    /// E2B without `autoResume` (E2B answers 502 "was not found" then; only connect resumes it).
    /// A paused sandbox with `autoResume` is marked resumed here, its end time set to
    /// `now + max(create timeout, 5 min)` like E2B's auto-resume. Sandboxes without an entry
    /// (native ones) and running ones always admit traffic.
    pub fn admit_traffic(&self, id: &str, now: DateTime<Utc>) -> bool {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(id) else {
            return true;
        };
        if !entry.paused {
            return true;
        }
        if !entry.auto_resume {
            return false;
        }
        entry.paused = false;
        entry.end_at = after(
            now,
            Duration::from_secs(entry.timeout_secs).max(AUTO_RESUME_MIN_TIMEOUT),
        );
        self.persist(&entries);
        true
    }

    /// Running sandboxes whose end time has passed.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<(String, TimeoutAction)> {
        self.lock()
            .iter()
            .filter(|(_, l)| !l.paused && l.end_at <= now)
            .map(|(id, l)| (id.clone(), l.on_timeout))
            .collect()
    }

    /// Ids with an entry.
    #[cfg(test)]
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Writes the file atomically. A failed write is logged, not fatal: the in-memory state stays
    /// authoritative until the next successful write.
    fn persist(&self, entries: &HashMap<String, Lifecycle>) {
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let json = serde_json::to_vec(entries).map_err(std::io::Error::other)?;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        if let Err(e) = write() {
            tracing::error!(path = %self.path.display(), "saving E2B end times failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(end_at: DateTime<Utc>) -> Lifecycle {
        Lifecycle {
            end_at,
            on_timeout: TimeoutAction::Kill,
            auto_resume: false,
            allow_internet_access: None,
            timeout_secs: 0,
            paused: false,
        }
    }

    #[test]
    fn entries_survive_a_reload_and_only_running_overdue_ones_are_due() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let lifecycles = Lifecycles::load(dir.path()).unwrap();
        lifecycles.insert("past", entry(now - chrono::Duration::seconds(1)));
        lifecycles.insert("future", entry(now + chrono::Duration::seconds(60)));
        let mut paused = entry(now - chrono::Duration::seconds(5));
        paused.paused = true;
        lifecycles.insert("paused", paused);

        let reloaded = Lifecycles::load(dir.path()).unwrap();
        let mut ids = reloaded.ids();
        ids.sort();
        assert_eq!(ids, ["future", "past", "paused"]);
        assert_eq!(
            reloaded.due(now),
            [("past".to_string(), TimeoutAction::Kill)]
        );

        reloaded.retain_known(&["past".to_string(), "paused".to_string()]);
        let mut ids = Lifecycles::load(dir.path()).unwrap().ids();
        ids.sort();
        assert_eq!(ids, ["past", "paused"]);

        reloaded.remove("past");
        assert!(Lifecycles::load(dir.path()).unwrap().get("past").is_none());
    }

    #[test]
    fn traffic_wakes_only_auto_resume_sandboxes_and_resets_their_end_time() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let lifecycles = Lifecycles::load(dir.path()).unwrap();
        let mut no_resume = entry(now);
        no_resume.paused = true;
        lifecycles.insert("manual", no_resume.clone());
        let mut auto = no_resume.clone();
        auto.auto_resume = true;
        auto.timeout_secs = 30;
        lifecycles.insert("auto", auto);
        lifecycles.insert("running", entry(now));

        assert!(
            lifecycles.admit_traffic("native", now),
            "no entry: burrow's own rules"
        );
        assert!(lifecycles.admit_traffic("running", now));
        assert!(!lifecycles.admit_traffic("manual", now));
        assert!(
            lifecycles.get("manual").unwrap().paused,
            "refusing changes nothing"
        );
        assert!(lifecycles.admit_traffic("auto", now));
        let woken = Lifecycles::load(dir.path()).unwrap().get("auto").unwrap();
        assert!(!woken.paused, "persisted as resumed");
        assert_eq!(
            woken.end_at,
            now + chrono::Duration::seconds(300),
            "5 min minimum"
        );
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LIFECYCLE_FILE), "{not json").unwrap();
        let err = Lifecycles::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains(LIFECYCLE_FILE), "{err}");
    }

    #[test]
    fn huge_timeouts_saturate() {
        let now = Utc::now();
        assert_eq!(after(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            after(now, Duration::from_secs(10)),
            now + chrono::Duration::seconds(10)
        );
    }
}
