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
    /// Being frozen and paged out, or checkpointed (deep).
    FallingAsleep,
    Asleep {
        since: SystemTime,
        tier: StandbyTier,
    },
    /// Being thawed or restored.
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
    /// Size of the checkpoint image while in deep standby.
    image_bytes: Option<u64>,
    /// The sleep a wake or a deep transition started from, to go back to if it fails.
    slept: Option<(SystemTime, StandbyTier)>,
    /// The sandbox's pre-standby hook is running (the idle timer's grace signal).
    in_grace: bool,
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
    /// Asleep in this tier: this caller now owns the wake (state `Waking`) and must call
    /// [`SandboxPower::finish_wake`].
    MustWake(StandbyTier),
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
            image_bytes: None,
            slept: None,
            in_grace: false,
        });
        Arc::new(Self { state })
    }

    pub fn power(&self) -> Power {
        self.state.borrow().power
    }

    /// In warm or deep standby (not on the way in or out).
    pub fn is_asleep(&self) -> bool {
        matches!(self.power(), Power::Asleep { .. })
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
            Power::Asleep { since, tier } => {
                s.power = Power::Waking;
                s.slept = Some((since, tier));
                entry = Entry::MustWake(tier);
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

    /// Ends a wake claimed by [`enter`](Self::enter): awake on success, back asleep (in the
    /// same tier) on failure.
    pub fn finish_wake(&self, woke: bool) {
        self.state.send_modify(|s| {
            let slept = s.slept.take();
            if woke {
                s.power = Power::Awake;
                s.image_bytes = None;
                s.touch("resume");
            } else {
                let (since, tier) = slept.unwrap_or((SystemTime::now(), StandbyTier::Warm));
                s.power = Power::Asleep { since, tier };
            }
        });
    }

    /// Claims a transition to deep standby, from awake or from warm standby.
    /// `only_if_warm_for`: the deep-after timer's claim: only a sandbox in warm standby for at
    /// least that long, with no paused stream (a checkpoint would cut it), is taken.
    pub fn begin_deep(&self, only_if_warm_for: Option<Duration>) -> DeepClaim {
        let mut claim = DeepClaim::InTransition;
        self.state.send_if_modified(|s| match s.power {
            Power::Awake if only_if_warm_for.is_none() => {
                s.power = Power::FallingAsleep;
                s.slept = None;
                claim = DeepClaim::FromAwake;
                true
            }
            Power::Awake => {
                claim = DeepClaim::Busy;
                false
            }
            Power::Asleep {
                since,
                tier: StandbyTier::Warm,
            } => {
                if let Some(wanted) = only_if_warm_for {
                    let long_enough = since.elapsed().is_ok_and(|asleep| asleep >= wanted);
                    if !long_enough || s.open_streams > 0 {
                        claim = DeepClaim::Busy;
                        return false;
                    }
                }
                s.power = Power::FallingAsleep;
                s.slept = Some((since, StandbyTier::Warm));
                claim = DeepClaim::FromWarm;
                true
            }
            Power::Asleep {
                tier: StandbyTier::Deep,
                ..
            } => {
                claim = DeepClaim::AlreadyDeep;
                false
            }
            Power::FallingAsleep | Power::Waking => {
                claim = DeepClaim::InTransition;
                false
            }
        });
        claim
    }

    /// Ends a transition claimed by [`begin_deep`](Self::begin_deep): deep standby with an image
    /// of `image_bytes` on success; on failure back where it was (awake, or warm standby with
    /// its clock restarted).
    pub fn finish_deep(&self, image_bytes: Option<u64>) {
        self.state.send_modify(|s| {
            let slept = s.slept.take();
            match (image_bytes, slept) {
                (Some(bytes), _) => {
                    s.power = Power::Asleep {
                        since: SystemTime::now(),
                        tier: StandbyTier::Deep,
                    };
                    s.image_bytes = Some(bytes);
                }
                // Back to warm standby; its clock restarts so the deep-after timer retries
                // only after another full period.
                (None, Some((_, tier))) => {
                    s.power = Power::Asleep {
                        since: SystemTime::now(),
                        tier,
                    }
                }
                (None, None) => {
                    s.power = Power::Awake;
                    s.touch("standby failed");
                }
            }
        });
    }

    /// Registers an adopted sandbox found in deep standby (after a daemon restart).
    pub fn set_image_bytes(&self, bytes: u64) {
        self.state.send_if_modified(|s| {
            s.image_bytes = Some(bytes);
            false
        });
    }

    /// Whether the deep-after timer should checkpoint it now (warm for `after`, no stream).
    pub fn deep_due(&self, after: Duration) -> bool {
        let s = self.state.borrow();
        match s.power {
            Power::Asleep {
                since,
                tier: StandbyTier::Warm,
            } => s.open_streams == 0 && since.elapsed().is_ok_and(|t| t >= after),
            _ => false,
        }
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

    /// Whether the idle timer should put the sandbox to sleep now (not while its pre-standby
    /// hook runs: the task that started the hook decides).
    pub fn idle_due(&self) -> bool {
        let s = self.state.borrow();
        s.power == Power::Awake && !s.in_grace && idle_due(&s, Instant::now())
    }

    /// Claims the grace period before an idle standby (the caller runs the sandbox's
    /// pre-standby hook, then calls [`end_grace`](Self::end_grace)): only if the sandbox is
    /// awake, idle and not in grace already.
    pub fn begin_grace(&self) -> bool {
        self.state.send_if_modified(|s| {
            let claimed = s.power == Power::Awake && !s.in_grace && idle_due(s, Instant::now());
            s.in_grace |= claimed;
            claimed
        })
    }

    /// Ends the grace period. `postpone`: the hook asked not to sleep now, which counts as
    /// activity (the idle timer starts over).
    pub fn end_grace(&self, postpone: bool) {
        self.state.send_modify(|s| {
            s.in_grace = false;
            if postpone {
                s.touch("pre-standby hook");
            }
        });
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
        let image_bytes = match s.power {
            Power::Asleep {
                tier: StandbyTier::Deep,
                ..
            } => s.image_bytes,
            _ => None,
        };
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
            pre_standby_hook: s.in_grace,
            memory_bytes: None,
            swap_bytes: None,
            image_bytes,
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

/// The outcome of [`SandboxPower::begin_deep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeepClaim {
    /// The caller owns the transition from awake and must call `finish_deep`.
    FromAwake,
    /// The caller owns the transition from warm standby (frozen) and must call `finish_deep`.
    FromWarm,
    AlreadyDeep,
    InTransition,
    /// Not due (timer claims only).
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
    /// Whether sandbox `id` is asleep (see [`SandboxPower::is_asleep`]); false if untracked.
    pub fn is_asleep(&self, id: &str) -> bool {
        self.get(id).is_some_and(|p| p.is_asleep())
    }

    pub fn get(&self, id: &str) -> Option<Arc<SandboxPower>> {
        self.lock().get(id).cloned()
    }

    pub fn insert(&self, id: &str, power: Arc<SandboxPower>) {
        self.lock().insert(id.to_string(), power);
    }

    /// The entry of `id`, inserting `power` first if there is none.
    pub fn get_or_insert(&self, id: &str, power: Arc<SandboxPower>) -> Arc<SandboxPower> {
        self.lock().entry(id.to_string()).or_insert(power).clone()
    }

    /// Removes the entry of `id` if it is `power` (not one registered since).
    pub fn remove_if(&self, id: &str, power: &Arc<SandboxPower>) {
        let mut map = self.lock();
        if map.get(id).is_some_and(|p| Arc::ptr_eq(p, power)) {
            map.remove(id);
        }
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
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
        assert!(matches!(
            p.enter("exec"),
            Entry::MustWake(StandbyTier::Warm)
        ));
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
    fn deep_transitions_and_failed_wakes_keep_the_tier() {
        let p = SandboxPower::new(Duration::from_secs(15), Power::Awake);
        assert_eq!(p.begin_deep(Some(Duration::ZERO)), DeepClaim::Busy);
        assert_eq!(p.begin_deep(None), DeepClaim::FromAwake);
        p.finish_deep(None);
        assert_eq!(
            p.power(),
            Power::Awake,
            "a failed deep standby from awake stays awake"
        );
        assert_eq!(p.begin_sleep(false), SleepClaim::Claimed);
        p.finish_sleep(true, StandbyTier::Warm);
        assert!(!p.deep_due(Duration::from_secs(60)));
        assert!(p.deep_due(Duration::ZERO));
        assert_eq!(p.begin_deep(Some(Duration::ZERO)), DeepClaim::FromWarm);
        assert!(matches!(p.enter("exec"), Entry::Wait));
        p.finish_deep(None);
        assert!(
            matches!(
                p.power(),
                Power::Asleep {
                    tier: StandbyTier::Warm,
                    ..
                }
            ),
            "a failed deep standby from warm stays warm"
        );
        assert_eq!(p.begin_deep(None), DeepClaim::FromWarm);
        p.finish_deep(Some(4096));
        assert_eq!(p.info().tier, Some(StandbyTier::Deep));
        assert_eq!(p.info().image_bytes, Some(4096));
        assert_eq!(p.begin_deep(None), DeepClaim::AlreadyDeep);
        assert!(matches!(
            p.enter("exec"),
            Entry::MustWake(StandbyTier::Deep)
        ));
        p.finish_wake(false);
        assert!(
            matches!(
                p.power(),
                Power::Asleep {
                    tier: StandbyTier::Deep,
                    ..
                }
            ),
            "a failed restore leaves it in deep standby"
        );
        assert!(matches!(
            p.enter("exec"),
            Entry::MustWake(StandbyTier::Deep)
        ));
        p.finish_wake(true);
        assert_eq!(p.power(), Power::Awake);
        assert_eq!(p.info().image_bytes, None);
    }

    #[test]
    fn lease_ids_validate() {
        assert!(is_valid_lease_id(&new_lease_id()));
        assert!(!is_valid_lease_id("l../../etc"));
    }
}
