//! The Kubernetes Events a change of a VM deserves: pure functions of the previous status,
//! what the reconcile observed, and the new status. A failure is announced once per distinct
//! reason and message; the end of a failure is announced too.

use super::failure::{ALL_KINDS, truncate};
use super::status::Failure;
use crate::lifecycle::{StopReason, VmState};
use ironvisor_crds::common::{condition_status, condition_type, find_condition};
use ironvisor_crds::vm::{Phase, VirtualMachineStatus};

/// A Kubernetes Event to publish about the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmEvent {
    /// Warning rather than Normal.
    pub warning: bool,
    /// Started, Stopped, Crashed, Failed, StartFailed, DefineFailed, StorageFailed,
    /// Recovered.
    pub reason: &'static str,
    /// Human-readable note.
    pub note: String,
}

/// Longest Event note: the API server refuses notes over 1 KiB.
const MAX_NOTE: usize = 1000;

/// Events for a change: from the previous status, the state observed before acting, and the
/// new status. A failure is announced once: not again while the Ready condition already
/// shows the same reason and message (which survives agent restarts, being in the API).
pub fn events(
    prev: &VirtualMachineStatus,
    observed: VmState,
    new: &VirtualMachineStatus,
    failure: Option<&Failure>,
) -> Vec<VmEvent> {
    if let Some(f) = failure {
        return failure_event(prev, f).into_iter().collect();
    }
    let prev_phase = prev.phase;
    let mut out = Vec::new();
    if let Some(was) = failed_before(prev)
        && new.phase != Some(Phase::Failed)
    {
        out.push(VmEvent {
            warning: false,
            reason: "Recovered",
            note: format!("the VM no longer fails ({was}): it is {}", phase_word(new)),
        });
    }
    let was_running = matches!(prev_phase, Some(Phase::Running | Phase::Stopping));
    match observed {
        VmState::Stopped(StopReason::Crashed | StopReason::Failed) if was_running => {
            out.push(VmEvent {
                warning: true,
                reason: "Crashed",
                note: "the guest stopped unexpectedly".into(),
            });
        }
        VmState::Stopped(_) if was_running => {
            out.push(VmEvent {
                warning: false,
                reason: "Stopped",
                note: "the guest stopped".into(),
            });
        }
        _ => {}
    }
    let stopped_now = out
        .iter()
        .any(|e| matches!(e.reason, "Crashed" | "Stopped"));
    if new.phase == Some(Phase::Running) && (prev_phase != Some(Phase::Running) || stopped_now) {
        out.push(VmEvent {
            warning: false,
            reason: "Started",
            note: "the guest was started".into(),
        });
    }
    if new.phase == Some(Phase::Stopped) && was_running && !stopped_now {
        out.push(VmEvent {
            warning: false,
            reason: "Stopped",
            note: "the guest stopped".into(),
        });
    }
    out
}

/// The reason the previous status showed a failure: phase Failed, or (for a guest that kept
/// running) Ready=False for a failure that is retried.
fn failed_before(prev: &VirtualMachineStatus) -> Option<&str> {
    let ready = find_condition(&prev.conditions, condition_type::READY);
    let retried = ready.filter(|c| {
        c.status == condition_status::FALSE && ALL_KINDS.iter().any(|k| k.reason() == c.reason)
    });
    match (prev.phase, retried) {
        (_, Some(c)) => Some(c.reason.as_str()),
        (Some(Phase::Failed), _) => Some(ready.map_or("Failed", |c| c.reason.as_str())),
        _ => None,
    }
}

fn phase_word(s: &VirtualMachineStatus) -> &'static str {
    s.phase.map_or("Pending", Phase::as_str)
}

/// The Warning for a failure, unless the previous status already shows it.
fn failure_event(prev: &VirtualMachineStatus, f: &Failure) -> Option<VmEvent> {
    let shown = find_condition(&prev.conditions, condition_type::READY).is_some_and(|c| {
        c.status == condition_status::FALSE && c.reason == f.reason && c.message == f.message
    });
    (!shown).then(|| VmEvent {
        warning: true,
        reason: if f.retried { f.reason } else { "Failed" },
        note: truncate(f.message.clone(), MAX_NOTE),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::status::agent_status;
    use crate::reconcile::status::fixtures::{input, now};

    /// A previous status with only a phase.
    fn phased(p: Phase) -> VirtualMachineStatus {
        VirtualMachineStatus {
            phase: Some(p),
            ..Default::default()
        }
    }

    fn reasons(ev: &[VmEvent]) -> Vec<&'static str> {
        ev.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn a_failure_shows_its_reason_and_message() {
        let prev = phased(Phase::Scheduled);
        let mut i = input(&prev, VmState::Pending);
        i.failure = Some(Failure::permanent(
            "ImageChecksumMismatch",
            "checksum mismatch".into(),
        ));
        let s = agent_status(&i);
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(s.printable_status.as_deref(), Some("ImageChecksumMismatch"));
        let ev = events(&prev, VmState::Pending, &s, i.failure.as_ref());
        assert_eq!(reasons(&ev), vec!["Failed"]);
        assert!(
            events(&s, VmState::Pending, &s, i.failure.as_ref()).is_empty(),
            "once"
        );
    }

    fn start_failed(message: &str) -> Failure {
        Failure {
            reason: "StartFailed",
            message: message.into(),
            retried: true,
        }
    }

    #[test]
    fn a_start_failure_sets_ready_false_start_failed_with_qemus_message() {
        let prev = phased(Phase::Scheduled);
        let mut i = input(&prev, VmState::Stopped(StopReason::NeverStarted));
        i.failure = Some(start_failed("Could not open 'seed.iso': Permission denied"));
        let s = agent_status(&i);
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(s.printable_status.as_deref(), Some("StartFailed"));
        let ready = find_condition(&s.conditions, condition_type::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "StartFailed")
        );
        assert_eq!(
            ready.message,
            "Could not open 'seed.iso': Permission denied"
        );
        let ev = events(&prev, VmState::Pending, &s, i.failure.as_ref());
        assert_eq!(ev.len(), 1);
        assert!(ev[0].warning);
        assert_eq!(ev[0].reason, "StartFailed");
        assert_eq!(ev[0].note, ready.message);
    }

    #[test]
    fn the_same_failure_is_announced_once_and_a_different_one_again() {
        let prev = phased(Phase::Scheduled);
        let mut i = input(&prev, VmState::Pending);
        i.failure = Some(start_failed("Permission denied"));
        let first = agent_status(&i);
        // Every retry: same reason and message, no new Event.
        let mut again = input(&first, VmState::Pending);
        again.failure = i.failure.clone();
        again.now = now(200);
        let second = agent_status(&again);
        assert!(events(&first, VmState::Pending, &second, again.failure.as_ref()).is_empty());
        let ready = find_condition(&second.conditions, condition_type::READY).unwrap();
        assert_eq!(
            ready.last_transition_time,
            now(100),
            "still the same failure"
        );
        // A different message is a different failure.
        let other = start_failed("No space left on device");
        let ev = events(&second, VmState::Pending, &second, Some(&other));
        assert_eq!(reasons(&ev), vec!["StartFailed"]);
        // So is the same message under another reason.
        let define = Failure {
            reason: "DefineFailed",
            ..start_failed("Permission denied")
        };
        let ev = events(&second, VmState::Pending, &second, Some(&define));
        assert_eq!(reasons(&ev), vec!["DefineFailed"]);
    }

    #[test]
    fn a_start_that_works_after_failing_flips_ready_and_says_so() {
        let prev = phased(Phase::Scheduled);
        let mut i = input(&prev, VmState::Pending);
        i.failure = Some(start_failed("Permission denied"));
        let failed = agent_status(&i);
        let mut ok = input(&failed, VmState::Running);
        ok.started_now = true;
        ok.now = now(300);
        let running = agent_status(&ok);
        let ready = find_condition(&running.conditions, condition_type::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Running")
        );
        assert_eq!(ready.last_transition_time, now(300));
        assert_eq!(running.printable_status.as_deref(), Some("Running"));
        let ev = events(
            &failed,
            VmState::Stopped(StopReason::Failed),
            &running,
            None,
        );
        assert_eq!(reasons(&ev), vec!["Recovered", "Started"]);
        assert!(ev.iter().all(|e| !e.warning));
        assert!(ev[0].note.contains("StartFailed"), "{}", ev[0].note);
    }

    #[test]
    fn a_redefinition_accepted_after_being_refused_says_so_while_the_guest_runs_on() {
        let prev = phased(Phase::Running);
        let mut i = input(&prev, VmState::Running);
        i.failure = Some(Failure {
            reason: "DefineFailed",
            ..start_failed("refused")
        });
        let refused = agent_status(&i);
        assert_eq!(refused.phase, Some(Phase::Running));
        let ok = agent_status(&input(&refused, VmState::Running));
        let ev = events(&refused, VmState::Running, &ok, None);
        assert_eq!(
            reasons(&ev),
            vec!["Recovered"],
            "and no Started: it never stopped"
        );
        assert!(events(&ok, VmState::Running, &ok, None).is_empty(), "once");
    }

    #[test]
    fn a_long_failure_message_is_cut_for_the_event_only() {
        let prev = phased(Phase::Scheduled);
        let mut i = input(&prev, VmState::Pending);
        i.failure = Some(start_failed(&"x".repeat(1500)));
        let s = agent_status(&i);
        let ev = events(&prev, VmState::Pending, &s, i.failure.as_ref());
        assert!(ev[0].note.len() <= MAX_NOTE);
        let ready = find_condition(&s.conditions, condition_type::READY).unwrap();
        assert_eq!(ready.message.len(), 1500);
    }

    #[test]
    fn a_crash_then_restart_yields_crashed_and_started_events() {
        let prev = VirtualMachineStatus::default();
        let s = agent_status(&input(&prev, VmState::Running));
        let ev = events(
            &phased(Phase::Running),
            VmState::Stopped(StopReason::Crashed),
            &s,
            None,
        );
        assert_eq!(
            ev.iter().map(|e| e.reason).collect::<Vec<_>>(),
            vec!["Crashed", "Started"]
        );
    }

    #[test]
    fn a_clean_stop_yields_one_stopped_event() {
        let prev = VirtualMachineStatus::default();
        let s = agent_status(&input(&prev, VmState::Stopped(StopReason::Shutdown)));
        let ev = events(
            &phased(Phase::Running),
            VmState::Stopped(StopReason::Shutdown),
            &s,
            None,
        );
        assert_eq!(
            ev.iter().map(|e| e.reason).collect::<Vec<_>>(),
            vec!["Stopped"]
        );
        assert!(
            events(
                &phased(Phase::Stopped),
                VmState::Stopped(StopReason::Shutdown),
                &s,
                None
            )
            .is_empty()
        );
    }
}
