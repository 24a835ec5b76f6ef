//! A few idle `criu swrk` workers, refilled in the background.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{CriuConfig, CriuError, Worker};

/// Back-off after a failed spawn, so a missing criu does not spin the refill thread.
const RESPAWN_BACKOFF: Duration = Duration::from_secs(1);
/// While at least one worker is idle, a refill waits this long after its ticket is dropped:
/// the request a restore was for is still being answered (by the restored sandbox, through
/// the daemon), and a worker's start (an exec, criu's start) would compete for the cores.
const REFILL_DELAY: Duration = Duration::from_millis(50);

struct State {
    idle: Vec<Worker>,
    shutdown: bool,
}

struct Shared {
    config: CriuConfig,
    size: usize,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the Vec inconsistent; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps `size` generic workers (no inherited files) ready for dumps, checks and restores that
/// need no `inherit_fd`.
pub struct WorkerPool {
    shared: Arc<Shared>,
    refill: Option<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts the pool. Verifies criu first with a `check` request, so a broken installation is
    /// reported here rather than at the first standby.
    pub fn start(config: CriuConfig, size: usize) -> Result<Self, CriuError> {
        let work_dir = std::fs::File::open(&config.work_dir).map_err(|source| CriuError::Io {
            path: config.work_dir.clone(),
            source,
        })?;
        Worker::spawn(&config, &[])?.check(std::os::fd::AsFd::as_fd(&work_dir))?;
        super::hold_perf_sched_hooks();
        let shared = Arc::new(Shared {
            config,
            size: size.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                shutdown: false,
            }),
            wake: Condvar::new(),
        });
        let refill_shared = Arc::clone(&shared);
        let refill = std::thread::Builder::new()
            .name("criu-pool".into())
            .spawn(move || refill_loop(&refill_shared))
            .map_err(|source| CriuError::Io {
                path: "criu-pool thread".into(),
                source,
            })?;
        Ok(Self {
            shared,
            refill: Some(refill),
        })
    }

    /// A live idle worker, or a freshly spawned one if the pool is empty, and the ticket that
    /// starts the pool's refill when dropped: keep it until the worker's request is answered,
    /// so spawning its successor (an exec and criu's start, ~7 ms of CPU) does not compete with
    /// that request for the host's cores.
    pub fn take(&self) -> Result<(Worker, Refill), CriuError> {
        let found = {
            let mut state = self.shared.lock();
            let mut found = None;
            while let Some(mut worker) = state.idle.pop() {
                if worker.is_alive() {
                    found = Some(worker);
                    break;
                }
            }
            found
        };
        let refill = Refill(Arc::clone(&self.shared));
        match found {
            Some(worker) => Ok((worker, refill)),
            None => Ok((Worker::spawn(&self.shared.config, &[])?, refill)),
        }
    }

    /// Number of idle workers right now.
    pub fn idle(&self) -> usize {
        self.shared.lock().idle.len()
    }

    /// Waits until the pool is full (for tests and benchmarks).
    pub fn wait_full(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.idle() >= self.shared.size {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    pub fn config(&self) -> &CriuConfig {
        &self.shared.config
    }
}

/// Wakes the pool's refill thread when dropped (see [`WorkerPool::take`]).
pub struct Refill(Arc<Shared>);

impl Drop for Refill {
    fn drop(&mut self) {
        self.0.wake.notify_one();
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.refill.take() {
            let _ = handle.join();
        }
        // Dropping the idle workers kills them.
        self.shared.lock().idle.clear();
    }
}

fn refill_loop(shared: &Shared) {
    loop {
        {
            let mut state = shared.lock();
            while !state.shutdown && state.idle.len() >= shared.size {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.shutdown {
                return;
            }
            if !state.idle.is_empty() {
                // Interrupted by shutdown only (its notify_all); a take meanwhile does not
                // hurry the refill unless it emptied the pool.
                let (next, _) = shared
                    .wake
                    .wait_timeout_while(state, REFILL_DELAY, |s| !s.shutdown && !s.idle.is_empty())
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if next.shutdown {
                    return;
                }
            }
        }
        // Spawn outside the lock: take() must never wait for an exec.
        match Worker::spawn(&shared.config, &[]) {
            Ok(worker) => {
                let mut state = shared.lock();
                if state.shutdown {
                    return;
                }
                state.idle.push(worker);
            }
            Err(e) => {
                tracing::warn!(error = %e, "criu worker pool: spawn failed");
                std::thread::sleep(RESPAWN_BACKOFF);
            }
        }
    }
}
