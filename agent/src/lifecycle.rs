//! The lifecycle of a VM on its host as an explicit state machine.
//!
//! States are what the agent observes of the domain (plus the two it decides on its own:
//! Failed for a spec it cannot run, Deleting while the finalizer cleans up). Every
//! observation is checked against [`valid_transition`]; an impossible one is logged and
//! counted, never trusted blindly, because it means an event was missed or someone changed
//! the domain behind the agent's back (the resync then repairs it).

use ironvisor_crds::vm::Phase;

/// Why a stopped domain stopped, from libvirt's shutoff reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// Defined but never started (or libvirt does not know).
    NeverStarted,
    /// The guest powered off.
    Shutdown,
    /// Destroyed (by the agent or out of band).
    Destroyed,
    /// QEMU crashed or the guest panicked.
    Crashed,
    /// It failed to start.
    Failed,
}

/// The lifecycle state of one VM on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmState {
    /// Placed here; no domain defined yet.
    Pending,
    /// The domain is defined and not running.
    Stopped(StopReason),
    /// Start was issued; QEMU is coming up.
    Starting,
    /// The guest runs.
    Running,
    /// The guest is paused (by an administrator or libvirt).
    Paused,
    /// An ACPI shutdown was sent; waiting for the guest.
    Stopping,
    /// The spec cannot run here (a permanent error; waits for a spec change).
    Failed,
    /// The VM is being deleted; the finalizer removes domain and files.
    Deleting,
    /// Domain and files are gone.
    Deleted,
}

/// Every state, for exhaustive tests and metrics.
pub const ALL_STATES: [VmState; 13] = [
    VmState::Pending,
    VmState::Stopped(StopReason::NeverStarted),
    VmState::Stopped(StopReason::Shutdown),
    VmState::Stopped(StopReason::Destroyed),
    VmState::Stopped(StopReason::Crashed),
    VmState::Stopped(StopReason::Failed),
    VmState::Starting,
    VmState::Running,
    VmState::Paused,
    VmState::Stopping,
    VmState::Failed,
    VmState::Deleting,
    VmState::Deleted,
];

/// Whether a VM may go from `from` to `to`. Staying in the same state is always valid.
pub fn valid_transition(from: VmState, to: VmState) -> bool {
    use StopReason as R;
    use VmState::*;
    if from == to {
        return true;
    }
    match (from, to) {
        // Anything that exists can be deleted, or fail on a spec change; Deleting only ends.
        (Deleted, _) => false,
        (Deleting, Deleted) => true,
        (Deleting, _) => false,
        (_, Deleting) => true,
        (_, Deleted) => false,
        (_, Failed) => true,
        // A failed VM comes back only through a new definition (or an adopted domain).
        (Failed, Pending | Stopped(_) | Running) => true,
        (Failed, _) => false,
        (Pending, Stopped(R::NeverStarted) | Starting | Running) => true,
        (Pending, _) => false,
        (Stopped(_), Starting | Running | Pending) => true,
        // A defined domain's stop reason can be rewritten only by libvirt restarting it.
        (Stopped(_), Stopped(_)) => true,
        (Stopped(_), _) => false,
        (Starting, Running | Paused | Stopped(R::Failed | R::Crashed | R::Destroyed) | Pending) => {
            true
        }
        (Starting, _) => false,
        (
            Running,
            Paused | Stopping | Stopped(R::Shutdown | R::Destroyed | R::Crashed) | Pending,
        ) => true,
        (Running, _) => false,
        (
            Paused,
            Running | Stopping | Stopped(R::Shutdown | R::Destroyed | R::Crashed) | Pending,
        ) => true,
        (Paused, _) => false,
        (Stopping, Running | Stopped(R::Shutdown | R::Destroyed | R::Crashed) | Pending) => true,
        (Stopping, _) => false,
    }
}

impl VmState {
    /// The phase the VM's status shows in this state.
    pub fn phase(self) -> Phase {
        match self {
            VmState::Pending => Phase::Scheduled,
            VmState::Starting => Phase::Starting,
            VmState::Running | VmState::Paused => Phase::Running,
            VmState::Stopping | VmState::Deleting => Phase::Stopping,
            VmState::Stopped(StopReason::Failed) | VmState::Failed => Phase::Failed,
            VmState::Stopped(_) | VmState::Deleted => Phase::Stopped,
        }
    }

    /// Whether the guest is up (running or paused).
    pub fn is_up(self) -> bool {
        matches!(self, VmState::Running | VmState::Paused | VmState::Stopping)
    }

    /// A short fixed word for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Pending => "pending",
            VmState::Stopped(_) => "stopped",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopping => "stopping",
            VmState::Failed => "failed",
            VmState::Deleting => "deleting",
            VmState::Deleted => "deleted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StopReason as R;
    use super::VmState::*;
    use super::*;

    /// The full table of allowed changes (self-transitions aside). Every other pair is
    /// checked to be refused, so widening the match without updating this list fails.
    fn allowed() -> Vec<(VmState, VmState)> {
        let stopped = [
            R::NeverStarted,
            R::Shutdown,
            R::Destroyed,
            R::Crashed,
            R::Failed,
        ]
        .map(Stopped);
        let mut v = vec![(Deleting, Deleted)];
        for s in ALL_STATES {
            if !matches!(s, Deleting | Deleted) {
                v.push((s, Deleting));
                v.push((s, Failed));
            }
        }
        v.extend([(Failed, Pending), (Failed, Running)]);
        v.extend(stopped.map(|s| (Failed, s)));
        v.extend([
            (Pending, Stopped(R::NeverStarted)),
            (Pending, Starting),
            (Pending, Running),
        ]);
        for s in stopped {
            v.extend([(s, Starting), (s, Running), (s, Pending)]);
            v.extend(stopped.map(|t| (s, t)));
        }
        v.extend([
            (Starting, Running),
            (Starting, Paused),
            (Starting, Stopped(R::Failed)),
            (Starting, Stopped(R::Crashed)),
            (Starting, Stopped(R::Destroyed)),
            (Starting, Pending),
        ]);
        for s in [Running, Paused, Stopping] {
            v.extend([
                (s, Stopped(R::Shutdown)),
                (s, Stopped(R::Destroyed)),
                (s, Stopped(R::Crashed)),
                (s, Pending),
            ]);
        }
        v.extend([
            (Running, Paused),
            (Running, Stopping),
            (Paused, Running),
            (Paused, Stopping),
            (Stopping, Running),
        ]);
        v
    }

    #[test]
    fn every_pair_of_states_follows_the_transition_table() {
        let allowed = allowed();
        for from in ALL_STATES {
            for to in ALL_STATES {
                let expected = from == to || allowed.contains(&(from, to));
                assert_eq!(valid_transition(from, to), expected, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn a_deleted_vm_never_comes_back() {
        for to in ALL_STATES.into_iter().filter(|s| *s != Deleted) {
            assert!(!valid_transition(Deleted, to), "{to:?}");
        }
    }

    #[test]
    fn a_stopped_guest_cannot_be_stopping() {
        assert!(!valid_transition(Stopped(R::Shutdown), Stopping));
    }

    #[test]
    fn phases_follow_states() {
        assert_eq!(Running.phase(), Phase::Running);
        assert_eq!(Paused.phase(), Phase::Running);
        assert_eq!(Stopped(R::Failed).phase(), Phase::Failed);
        assert_eq!(Stopped(R::Shutdown).phase(), Phase::Stopped);
        assert_eq!(Pending.phase(), Phase::Scheduled);
        assert_eq!(Stopping.phase(), Phase::Stopping);
    }
}
