//! libvirt's capability probe, timed, with hysteresis.
//!
//! A healthy libvirtd answers a domain-capabilities call from its cache in milliseconds. When
//! its cache keeps being invalidated (e.g. /dev/kvm readable by root but not by the QEMU user)
//! every call re-probes QEMU and takes seconds. One slow probe right after libvirtd starts is
//! normal, so a state change needs [`STREAK`] probes in a row on the other side.

use std::time::Duration;

/// A probe slower than this counts as slow.
pub const SLOW: Duration = Duration::from_secs(1);
/// Probes in a row needed to change state.
pub const STREAK: u32 = 2;

/// Reasons of the `LibvirtHealthy` condition.
pub mod reason {
    /// Capability probes answer quickly.
    pub const HEALTHY: &str = "CapabilityProbeFast";
    /// Capability probes keep taking seconds.
    pub const SLOW: &str = "CapabilityProbeSlow";
    /// The probe call failed.
    pub const FAILED: &str = "CapabilityProbeFailed";
    /// The agent has no libvirt connection.
    pub const DISCONNECTED: &str = "Disconnected";
}

/// The hysteresis over probe durations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTracker {
    healthy: bool,
    /// Probes in a row that disagree with the current state.
    streak: u32,
    /// The last probe's duration.
    last: Option<Duration>,
}

impl Default for ProbeTracker {
    fn default() -> Self {
        Self {
            healthy: true,
            streak: 0,
            last: None,
        }
    }
}

impl ProbeTracker {
    /// Record one probe; returns whether the state changed.
    pub fn record(&mut self, took: Duration) -> bool {
        self.last = Some(took);
        let slow = took >= SLOW;
        if slow == self.healthy {
            self.streak += 1;
            if self.streak >= STREAK {
                self.healthy = !self.healthy;
                self.streak = 0;
                return true;
            }
        } else {
            self.streak = 0;
        }
        false
    }

    /// Whether probes are fast (after hysteresis).
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// The last probe's duration.
    pub fn last(&self) -> Option<Duration> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(20);
    const SLOW4: Duration = Duration::from_secs(4);

    #[test]
    fn one_slow_probe_after_a_restart_is_not_a_finding() {
        let mut t = ProbeTracker::default();
        assert!(!t.record(SLOW4));
        assert!(t.healthy());
        assert!(!t.record(FAST));
        assert!(!t.record(SLOW4));
        assert!(t.healthy(), "slow, fast, slow never makes a streak");
    }

    #[test]
    fn probes_that_keep_taking_seconds_make_libvirt_unhealthy_and_fast_ones_heal_it() {
        let mut t = ProbeTracker::default();
        t.record(SLOW4);
        assert!(t.record(SLOW4), "two slow probes in a row flip the state");
        assert!(!t.healthy());
        assert!(!t.record(FAST));
        assert!(!t.healthy(), "one fast probe is not enough");
        assert!(!t.record(SLOW4));
        assert!(!t.record(FAST));
        assert!(t.record(FAST));
        assert!(t.healthy());
        assert_eq!(t.last(), Some(FAST));
    }

    #[test]
    fn the_threshold_itself_counts_as_slow() {
        let mut t = ProbeTracker::default();
        t.record(SLOW);
        t.record(SLOW);
        assert!(!t.healthy());
    }
}
