//! The power state of each sandbox: awake or asleep, what keeps it awake (open streams, leases,
//! recent activity), and the transitions between them.
//!
//! One `watch` channel per sandbox holds everything; changes happen inside `send_if_modified`
//! (a short synchronous lock, never held across an await) and waiters use `wait_for`, so
//! concurrent requests during a wake share that one wake.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use burrow_types::{Lease, PowerInfo, StandbyTier};
use tokio::sync::watch;

/// Where a sandbox is in its sleep cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Awake,
    /// Being frozen and paged out.
    FallingAsleep,
    Asleep {
        since: SystemTime,
        tier: StandbyTier,
    },
    /// Being thawed.
    Waking,
}

impl Power {
    fn is_transition(self) -> bool {
        matches!(self, Power::FallingAsleep | Power::Waking)
    }
}

#[derive(Debug, Clone)]
struct LeaseEntry {
    reason: String,
    /// None: held by a guard (exec `keep_alive`) until dropped.
    expires: Option<(Instant, SystemTime)>,
}

#[derive(Debug, Clone)]
struct PowerState {
    power: Power,
    last_activity: Instant,
    last_activity_wall: SystemTime,
    last_source: &'static str,
    open_streams: u32,
    leases: BTreeMap<String, LeaseEntry>,
    sandbox_leases: u32,
    idle_timeout: Duration,
}

impl PowerState {
    fn touch(&mut self, source: &'static str) {
        self.last_activity = Instant::now();
        self.last_activity_wall = SystemTime::now();
        self.last_source = source;
    }

    fn drop_expired_leases(&mut self, now: Instant) {
        self.leases
            .retain(|_, l| l.expires.is_none_or(|(at, _)| at > now));
    }

    /// Something besides recent activity holds the sandbox awake.
    fn held(&self, now: Instant) -> bool {
        self.open_streams > 0
            || self.sandbox_leases > 0
            || self
                .leases
                .values()
                .any(|l| l.expires.is_none_or(|(at, _)| at > now))
    }
}

/// What a caller that wants to use the sandbox must do next.
pub enum Entry {
    /// Awake: the guard counts as an open stream until dropped.
    Awake(ActivityGuard),
    /// Asleep: this caller now owns the wake (state `Waking`) and must call [`SandboxPower::finish_wake`].
    MustWake,
    /// Someone else is freezing or thawing it: wait with [`SandboxPower::settled`] and retry.
    Wait,
}

/// One sandbox's power state.
#[derive(Debug)]
pub struct SandboxPower {
    state: watch::Sender<PowerState>,
}

impl SandboxPower {
    pub fn new(idle_timeout: Duration, power: Power) -> Arc<Self> {
        let (state, _) = watch::channel(PowerState {
            power,
            last_activity: Instant::now(),
            last_activity_wall: SystemTime::now(),
            last_source: "create",
            open_streams: 0,
            leases: BTreeMap::new(),
            sandbox_leases: 0,
            idle_timeout,
        });
        Arc::new(Self { state })
    }

    pub fn power(&self) -> Power {
        self.state.borrow().power
    }

    pub fn idle_timeout(&self) -> Duration {
        self.state.borrow().idle_timeout
    }

    /// Atomically: if awake, open a stream; if asleep, claim the wake; else tell the caller to wait.
    pub fn enter(self: &Arc<Self>, source: &'static str) -> Entry {
        let mut entry = Entry::Wait;
        self.state.send_if_modified(|s| match s.power {
            Power::Awake => {
                s.open_streams += 1;
                s.touch(source);
                entry = Entry::Awake(ActivityGuard {
                    power: Some(self.clone()),
                    source,
                });
                false
            }
            Power::Asleep { .. } => {
                s.power = Power::Waking;
                entry = Entry::MustWake;
                true
            }
            Power::FallingAsleep | Power::Waking => false,
        });
        entry
    }

    /// Waits until no freeze or thaw is in progress.
    pub async fn settled(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| !s.power.is_transition()).await;
    }

    /// Ends a wake claimed by [`enter`](Self::enter): awake on success, back asleep on failure.
    pub fn finish_wake(&self, woke: bool) {
        self.state.send_modify(|s| {
            if woke {
                s.power = Power::Awake;
                s.touch("resume");
            } else {
                s.power = Power::Asleep {
                    since: SystemTime::now(),
                    tier: StandbyTier::Warm,
                };
            }
        });
    }

    /// Claims a transition to sleep. `only_if_idle`: refuse unless nothing holds the sandbox and
    /// its idle timeout has passed (the idle timer's check, made atomically with the claim).
    pub fn begin_sleep(&self, only_if_idle: bool) -> SleepClaim {
        let mut claim = SleepClaim::Busy;
        self.state.send_if_modified(|s| match s.power {
            Power::Awake => {
                let now = Instant::now();
                if only_if_idle && !idle_due(s, now) {
                    claim = SleepClaim::Busy;
                    return false;
                }
                s.power = Power::FallingAsleep;
                claim = SleepClaim::Claimed;
                true
            }
            Power::Asleep { .. } => {
                claim = SleepClaim::AlreadyAsleep;
                false
            }
            Power::FallingAsleep | Power::Waking => {
                claim = SleepClaim::InTransition;
                false
            }
        });
        claim
    }

    /// Ends a sleep claimed by [`begin_sleep`](Self::begin_sleep). A failed sleep counts as
    /// activity, so the idle timer retries after another full timeout, not on every tick.
    pub fn finish_sleep(&self, slept: bool, tier: StandbyTier) {
        self.state.send_modify(|s| {
            if slept {
                s.power = Power::Asleep {
                    since: SystemTime::now(),
                    tier,
                };
            } else {
                s.power = Power::Awake;
                s.touch("standby failed");
            }
        });
    }

    /// Time since the last activity; zero while a stream or lease holds the sandbox. Time asleep
    /// counts (nothing touches a sleeping sandbox).
    pub fn idle_for(&self) -> Duration {
        let s = self.state.borrow();
        let now = Instant::now();
        if s.held(now) {
            Duration::ZERO
        } else {
            now.duration_since(s.last_activity)
        }
    }

    /// Whether the idle timer should put the sandbox to sleep now.
    pub fn idle_due(&self) -> bool {
        let s = self.state.borrow();
        s.power == Power::Awake && idle_due(&s, Instant::now())
    }

    pub fn set_sandbox_leases(&self, count: u32) {
        self.state.send_if_modified(|s| {
            if count > 0 {
                s.touch("sandbox lease");
            }
            s.sandbox_leases = count;
            false
        });
    }

    /// Adds a lease lasting `ttl`; returns its id.
    pub fn add_lease(&self, ttl: Duration, reason: String) -> String {
        let id = new_lease_id();
        self.state.send_if_modified(|s| {
            let now = Instant::now();
            s.drop_expired_leases(now);
            s.touch("lease");
            s.leases.insert(
                id.clone(),
                LeaseEntry {
                    reason,
                    expires: Some((now + ttl, SystemTime::now() + ttl)),
                },
            );
            false
        });
        id
    }

    /// Removes a lease; false if there was none with this id (or it expired).
    pub fn remove_lease(&self, id: &str) -> bool {
        let mut found = false;
        self.state.send_if_modified(|s| {
            s.drop_expired_leases(Instant::now());
            found = s.leases.remove(id).is_some();
            if found {
                s.touch("lease released");
            }
            false
        });
        found
    }

    /// A lease that lasts until the guard is dropped.
    pub fn hold(self: &Arc<Self>, reason: &str) -> LeaseGuard {
        let id = new_lease_id();
        self.state.send_if_modified(|s| {
            s.leases.insert(
                id.clone(),
                LeaseEntry {
                    reason: reason.to_string(),
                    expires: None,
                },
            );
            false
        });
        LeaseGuard {
            power: self.clone(),
            id,
        }
    }

    pub fn info(&self) -> PowerInfo {
        let s = self.state.borrow();
        let now = Instant::now();
        let (awake, tier, asleep_since) = match s.power {
            Power::Asleep { since, tier } => (false, Some(tier), Some(rfc3339(since))),
            Power::FallingAsleep => (false, Some(StandbyTier::Warm), None),
            Power::Awake | Power::Waking => (true, None, None),
        };
        let standby_in = (awake && !s.held(now) && !s.idle_timeout.is_zero()).then(|| {
            s.idle_timeout
                .saturating_sub(now.duration_since(s.last_activity))
                .as_secs_f64()
        });
        PowerInfo {
            awake,
            tier,
            asleep_since,
            last_activity_at: rfc3339(s.last_activity_wall),
            last_activity_source: s.last_source.to_string(),
            open_streams: s.open_streams,
            leases: s
                .leases
                .iter()
                .filter(|(_, l)| l.expires.is_none_or(|(at, _)| at > now))
                .map(|(id, l)| Lease {
                    id: id.clone(),
                    reason: l.reason.clone(),
                    expires_at: l.expires.map(|(_, wall)| rfc3339(wall)),
                })
                .collect(),
            sandbox_leases: s.sandbox_leases,
            idle_timeout: s.idle_timeout.as_secs(),
            standby_in,
            memory_bytes: None,
            swap_bytes: None,
        }
    }
}

fn idle_due(s: &PowerState, now: Instant) -> bool {
    !s.idle_timeout.is_zero()
        && !s.held(now)
        && now.duration_since(s.last_activity) >= s.idle_timeout
}

/// The outcome of [`SandboxPower::begin_sleep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepClaim {
    /// The caller owns the transition and must call `finish_sleep`.
    Claimed,
    AlreadyAsleep,
    InTransition,
    /// Not idle (idle-only claims).
    Busy,
}

/// An open stream (request, exec, PTY, tunnel, proxied connection): the sandbox stays awake while
/// one exists; dropping it counts as activity.
#[derive(Debug)]
pub struct ActivityGuard {
    power: Option<Arc<SandboxPower>>,
    source: &'static str,
}

impl ActivityGuard {
    pub fn power(&self) -> Option<&Arc<SandboxPower>> {
        self.power.as_ref()
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        if let Some(power) = self.power.take() {
            power.state.send_if_modified(|s| {
                s.open_streams = s.open_streams.saturating_sub(1);
                s.touch(self.source);
                false
            });
        }
    }
}

/// A response body that keeps the sandbox awake until it has been sent (or dropped).
pub fn body_with_activity(
    body: axum::body::Body,
    activity: Arc<ActivityGuard>,
) -> axum::body::Body {
    use futures::StreamExt;
    axum::body::Body::from_stream(body.into_data_stream().map(move |chunk| {
        let _ = &activity;
        chunk
    }))
}

/// A lease held until dropped (exec `keep_alive`).
#[derive(Debug)]
pub struct LeaseGuard {
    power: Arc<SandboxPower>,
    id: String,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.power.remove_lease(&self.id);
    }
}

/// All sandboxes' power states, by id.
#[derive(Debug, Default)]
pub struct PowerRegistry {
    map: Mutex<HashMap<String, Arc<SandboxPower>>>,
}

impl PowerRegistry {
    pub fn get(&self, id: &str) -> Option<Arc<SandboxPower>> {
        self.lock().get(id).cloned()
    }

    pub fn insert(&self, id: &str, power: Arc<SandboxPower>) {
        self.lock().insert(id.to_string(), power);
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn all(&self) -> Vec<(String, Arc<SandboxPower>)> {
        self.lock()
            .iter()
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SandboxPower>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn new_lease_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..12)
        .map(|_| {
            let n = rng.random_range(0..36u8);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect();
    format!("l{suffix}")
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A lease id as [`new_lease_id`] makes them.
pub fn is_valid_lease_id(id: &str) -> bool {
    id.len() == 13
        && id.starts_with('l')
        && id[1..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_leases_hold_the_sandbox_awake() {
        let p = SandboxPower::new(Duration::from_millis(20), Power::Awake);
        std::thread::sleep(Duration::from_millis(30));
        assert!(p.idle_due());
        let Entry::Awake(guard) = p.enter("exec") else {
            panic!("awake sandbox must admit")
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(!p.idle_due(), "an open stream holds it");
        drop(guard);
        assert!(!p.idle_due(), "closing a stream is activity");
        std::thread::sleep(Duration::from_millis(30));
        assert!(p.idle_due());
        let lease = p.add_lease(Duration::from_secs(60), "build".into());
        assert!(!p.idle_due());
        assert_eq!(p.info().leases[0].reason, "build");
        assert!(p.remove_lease(&lease));
        assert!(!p.remove_lease(&lease));
        std::thread::sleep(Duration::from_millis(30));
        let held = p.hold("exec keep_alive");
        assert!(!p.idle_due());
        drop(held);
        assert!(p.info().leases.is_empty());
        p.set_sandbox_leases(1);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!p.idle_due());
        p.set_sandbox_leases(0);
        std::thread::sleep(Duration::from_millis(30));
        assert!(p.idle_due());
    }

    #[test]
    fn zero_timeout_never_sleeps() {
        let p = SandboxPower::new(Duration::ZERO, Power::Awake);
        assert!(!p.idle_due());
        assert_eq!(p.begin_sleep(true), SleepClaim::Busy);
        assert_eq!(p.begin_sleep(false), SleepClaim::Claimed);
    }

    #[tokio::test]
    async fn one_wake_is_shared() {
        let p = SandboxPower::new(Duration::from_secs(15), Power::Awake);
        assert_eq!(p.begin_sleep(false), SleepClaim::Claimed);
        assert!(matches!(p.enter("exec"), Entry::Wait));
        p.finish_sleep(true, StandbyTier::Warm);
        assert_eq!(p.begin_sleep(false), SleepClaim::AlreadyAsleep);
        assert!(matches!(p.enter("exec"), Entry::MustWake));
        // A second request while waking waits for the first wake.
        assert!(matches!(p.enter("files"), Entry::Wait));
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move {
                p.settled().await;
                matches!(p.enter("files"), Entry::Awake(_))
            })
        };
        tokio::task::yield_now().await;
        p.finish_wake(true);
        assert!(waiter.await.unwrap());
        assert_eq!(p.info().last_activity_source, "files");
    }

    #[test]
    fn failed_sleep_restarts_the_idle_clock() {
        let p = SandboxPower::new(Duration::from_millis(20), Power::Awake);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(p.begin_sleep(true), SleepClaim::Claimed);
        p.finish_sleep(false, StandbyTier::Warm);
        assert_eq!(p.power(), Power::Awake);
        assert!(!p.idle_due());
        assert_eq!(p.info().last_activity_source, "standby failed");
    }

    #[test]
    fn lease_ids_validate() {
        assert!(is_valid_lease_id(&new_lease_id()));
        assert!(!is_valid_lease_id("l../../etc"));
    }
}
