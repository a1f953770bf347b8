//! Per-VM retry backoff: after a failed reconcile (a guest that would not start, libvirt or
//! the API refusing a call) the next attempt waits 1 s, 2 s, 4 s, … up to 5 min.
//!
//! Owns only timing, in memory: losing it on an agent restart costs one early retry. A VM
//! starts afresh when it succeeds, when its spec changes (a new generation) or when a restart
//! is requested, so a user's fix is tried at once. A VM's own failure holds back every
//! trigger until the pause ends; a failed reconcile (libvirt down) only delays its requeue,
//! so libvirtd coming back retries at once. Pure: the clock is passed in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First and longest pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Pause after the first failure.
    pub first: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Policy {
    /// The pause after `failures` failures in a row (the first failure is 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// What a user changes to ask for a fresh try: the spec's generation and the restart
/// annotation. A different key starts the count again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryKey {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The `ironvisor.io/restartedAt` annotation.
    pub restart_requested: Option<String>,
}

#[derive(Clone, Debug)]
struct Entry {
    key: RetryKey,
    failures: u32,
    /// Attempts before this are held back (`None`: only the requeue is delayed).
    not_before: Option<Instant>,
}

/// Whether other triggers (a resync, a libvirt event) must wait for the pause too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The VM itself failed (a guest QEMU would not start): only the pause ends the wait, so
    /// a resync does not restart a failing QEMU early.
    AllTriggers,
    /// The reconcile failed (libvirt or the API unreachable): any trigger may try again,
    /// e.g. libvirtd coming back.
    RequeueOnly,
}

/// Backoff state of every VM in trouble, by uid. VMs that reconcile fine have no entry.
#[derive(Debug, Default)]
pub struct Backoff {
    policy: Policy,
    entries: Mutex<HashMap<String, Entry>>,
}

/// A pause shorter than this counts as over: a requeue timer may fire a hair early.
const SLACK: Duration = Duration::from_millis(50);

impl Backoff {
    /// Empty, with `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            entries: Mutex::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a failure at `now`; returns how long to wait before the next attempt.
    pub fn failed(&self, uid: &str, key: &RetryKey, now: Instant, hold: Hold) -> Duration {
        let mut entries = self.entries();
        let failures = match entries.get(uid) {
            Some(e) if e.key == *key => e.failures.saturating_add(1),
            _ => 1,
        };
        let delay = self.policy.delay(failures);
        entries.insert(
            uid.to_owned(),
            Entry {
                key: key.clone(),
                failures,
                not_before: (hold == Hold::AllTriggers).then_some(now + delay),
            },
        );
        delay
    }

    /// The VM reconciled fine: its next failure starts from the first pause again.
    pub fn succeeded(&self, uid: &str) {
        self.entries().remove(uid);
    }

    /// How much longer the VM must wait before its next attempt; `None` when it may go now
    /// (no failure, the pause is over, or the user changed what the failures were about).
    pub fn wait_left(&self, uid: &str, key: &RetryKey, now: Instant) -> Option<Duration> {
        let mut entries = self.entries();
        let entry = entries.get(uid)?;
        if entry.key != *key {
            entries.remove(uid);
            return None;
        }
        let left = entry.not_before?.saturating_duration_since(now);
        (left > SLACK).then_some(left)
    }

    /// Failures in a row so far (0 when none).
    pub fn failures(&self, uid: &str) -> u32 {
        self.entries().get(uid).map_or(0, |e| e.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(generation: i64) -> RetryKey {
        RetryKey {
            generation: Some(generation),
            restart_requested: None,
        }
    }

    #[test]
    fn the_pause_doubles_from_one_second_up_to_five_minutes() {
        let p = Policy::default();
        let secs: Vec<u64> = (1..=11).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(300), "no overflow");
    }

    #[test]
    fn failures_in_a_row_wait_longer_each_time_and_success_resets() {
        let b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(
            b.failed("u", &key(1), t0, Hold::AllTriggers),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.failed("u", &key(1), t0, Hold::AllTriggers),
            Duration::from_secs(2)
        );
        assert_eq!(
            b.failed("u", &key(1), t0, Hold::AllTriggers),
            Duration::from_secs(4)
        );
        assert_eq!(b.failures("u"), 3);
        b.succeeded("u");
        assert_eq!(b.failures("u"), 0);
        assert_eq!(
            b.failed("u", &key(1), t0, Hold::AllTriggers),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_vm_in_backoff_waits_until_its_pause_is_over() {
        let b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.wait_left("u", &key(1), t0), None, "no failure, no wait");
        b.failed("u", &key(1), t0, Hold::AllTriggers);
        b.failed("u", &key(1), t0, Hold::AllTriggers);
        assert_eq!(
            b.wait_left("u", &key(1), t0 + Duration::from_millis(500)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(b.wait_left("u", &key(1), t0 + Duration::from_secs(2)), None);
        assert_eq!(
            b.wait_left("u", &key(1), t0 + Duration::from_millis(1980)),
            None,
            "a timer firing a hair early still counts"
        );
        assert_eq!(b.wait_left("other", &key(1), t0), None, "per VM");
    }

    #[test]
    fn a_spec_change_or_a_restart_request_ends_the_pause_and_the_count() {
        let b = Backoff::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            b.failed("u", &key(1), t0, Hold::AllTriggers);
        }
        assert!(b.wait_left("u", &key(1), t0).is_some());
        assert_eq!(b.wait_left("u", &key(2), t0), None, "new generation");
        assert_eq!(b.failures("u"), 0);
        for _ in 0..5 {
            b.failed("u", &key(2), t0, Hold::AllTriggers);
        }
        let restart = RetryKey {
            restart_requested: Some("2026-11-30T00:00:00Z".into()),
            ..key(2)
        };
        assert_eq!(b.wait_left("u", &restart, t0), None, "restart requested");
        assert_eq!(
            b.failed("u", &restart, t0, Hold::AllTriggers),
            Duration::from_secs(1),
            "counts from the first pause again"
        );
    }

    #[test]
    fn a_reconcile_error_delays_the_requeue_but_lets_other_triggers_through() {
        let b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(
            b.failed("u", &key(1), t0, Hold::RequeueOnly),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.failed("u", &key(1), t0, Hold::RequeueOnly),
            Duration::from_secs(2),
            "the requeue still backs off"
        );
        assert_eq!(b.wait_left("u", &key(1), t0), None, "libvirtd back: go now");
    }
}
