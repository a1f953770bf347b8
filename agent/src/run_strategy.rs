//! What to do with a domain, given the VM's runStrategy and what is observed: a pure decision.
//!
//! Inputs are everything that matters and nothing else (observed state, annotations, status
//! fields, clock), so the decision is the same after an agent restart at any instant.

use crate::lifecycle::{StopReason, VmState};
use ironvisor_crds::vm::{OperationKind, RunStrategy, VmOperation};
use std::time::Duration;

/// The restart request (`ironvisor.io/restartedAt`) the agent may act on now. While another
/// operation holds the VM's lock (`status.operation`: a snapshot being taken, a restore, a
/// backup, a resize, a migration) a reset would pull the guest from under it, so the request
/// waits: it stays pending (not recorded as handled) and is acted on once the lock is free.
/// Returns the request, or the holder it waits for.
pub fn actionable_restart<'a>(
    requested: Option<&'a str>,
    holder: Option<&VmOperation>,
) -> Result<Option<&'a str>, VmOperation> {
    match holder {
        Some(op) if requested.is_some() && op.kind != OperationKind::Reset => Err(op.clone()),
        _ => Ok(requested),
    }
}

/// What the agent should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The domain is where it should be.
    Nothing,
    /// Start the domain.
    Start,
    /// Ask the guest to power off (ACPI).
    Shutdown,
    /// Wait for the guest to power off; check again after this long.
    AwaitShutdown(Duration),
    /// Force the domain off: the grace period is over.
    Destroy,
    /// Destroy (when up) and start again: an explicit restart request.
    Restart,
}

/// What a decision needs.
#[derive(Clone, Debug)]
pub struct DecisionInput<'a> {
    /// The VM's runStrategy.
    pub strategy: RunStrategy,
    /// What the domain is doing.
    pub state: VmState,
    /// The `ironvisor.io/requestedState` annotation (Manual only).
    pub requested_state: Option<&'a str>,
    /// The `ironvisor.io/restartedAt` annotation.
    pub restart_requested: Option<&'a str>,
    /// `status.lastRestartRequest`: the restart value already acted on.
    pub last_restart_request: Option<&'a str>,
    /// Whether the guest has run before (`status.startedAt` set).
    pub has_run: bool,
    /// How long ago the ACPI shutdown was sent, when it was.
    pub shutdown_sent_ago: Option<Duration>,
    /// `terminationGracePeriodSeconds`.
    pub grace: Duration,
}

/// The decision and whether it consumes the restart request (to record in
/// `status.lastRestartRequest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The restart annotation value to record as handled, if this decision handles it.
    pub restart_handled: Option<String>,
}

/// Whether the strategy wants the guest up now.
fn wants_running(input: &DecisionInput<'_>) -> bool {
    let ran_and_stopped = |reason: StopReason| input.has_run || reason != StopReason::NeverStarted;
    match input.strategy {
        RunStrategy::Always => true,
        RunStrategy::Halted => false,
        RunStrategy::Manual => match input.requested_state {
            Some("Running") => true,
            Some("Stopped") => false,
            // No request: keep whatever the domain is doing (a new VM stays stopped).
            _ => input.state.is_up() || input.state == VmState::Starting,
        },
        RunStrategy::RerunOnFailure => match input.state {
            VmState::Stopped(StopReason::Shutdown) => false,
            VmState::Stopped(StopReason::NeverStarted) => !input.has_run,
            _ => true,
        },
        RunStrategy::Once => match input.state {
            VmState::Stopped(r) => !ran_and_stopped(r),
            VmState::Pending => !input.has_run,
            _ => true,
        },
    }
}

/// Decide the next step.
pub fn decide(input: &DecisionInput<'_>) -> Decision {
    let nothing = Decision {
        action: Action::Nothing,
        restart_handled: None,
    };
    if matches!(
        input.state,
        VmState::Failed | VmState::Deleting | VmState::Deleted
    ) {
        return nothing;
    }
    let want = wants_running(input);
    let new_restart = input
        .restart_requested
        .filter(|v| !v.is_empty() && Some(*v) != input.last_restart_request);
    if let Some(value) = new_restart {
        // Handled once per value: a stopped VM that should stay stopped just records it.
        let action = if input.strategy != RunStrategy::Halted
            && (want || input.strategy == RunStrategy::Once)
        {
            Action::Restart
        } else {
            Action::Nothing
        };
        return Decision {
            action,
            restart_handled: Some(value.to_owned()),
        };
    }
    let action = match (want, input.state) {
        (true, VmState::Pending | VmState::Stopped(_)) => Action::Start,
        (true, _) => Action::Nothing,
        (false, VmState::Running | VmState::Paused | VmState::Stopping | VmState::Starting) => {
            match input.shutdown_sent_ago {
                None => Action::Shutdown,
                Some(ago) if ago >= input.grace => Action::Destroy,
                Some(ago) => Action::AwaitShutdown(input.grace - ago),
            }
        }
        (false, _) => Action::Nothing,
    };
    Decision {
        action,
        restart_handled: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_waits_while_another_operation_holds_the_vm() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let op = |kind| VmOperation {
            kind,
            name: "snap1".into(),
            uid: "u".into(),
            since: Time(jiff::Timestamp::UNIX_EPOCH),
        };
        let snap = op(OperationKind::Snapshot);
        assert_eq!(actionable_restart(Some("t1"), Some(&snap)), Err(snap));
        assert_eq!(actionable_restart(Some("t1"), None), Ok(Some("t1")));
        let reset = op(OperationKind::Reset);
        assert_eq!(actionable_restart(Some("t1"), Some(&reset)), Ok(Some("t1")));
        let mig = op(OperationKind::Migration);
        assert_eq!(actionable_restart(None, Some(&mig)), Ok(None));
    }
    use StopReason as R;

    fn input(strategy: RunStrategy, state: VmState) -> DecisionInput<'static> {
        DecisionInput {
            strategy,
            state,
            requested_state: None,
            restart_requested: None,
            last_restart_request: None,
            has_run: false,
            shutdown_sent_ago: None,
            grace: Duration::from_secs(60),
        }
    }

    fn act(i: &DecisionInput<'_>) -> Action {
        decide(i).action
    }

    #[test]
    fn always_starts_a_new_vm_and_starts_it_again_whatever_stopped_it() {
        assert_eq!(
            act(&input(RunStrategy::Always, VmState::Pending)),
            Action::Start
        );
        for r in [
            R::Shutdown,
            R::Destroyed,
            R::Crashed,
            R::Failed,
            R::NeverStarted,
        ] {
            let mut i = input(RunStrategy::Always, VmState::Stopped(r));
            i.has_run = true;
            assert_eq!(act(&i), Action::Start, "{r:?}");
        }
        assert_eq!(
            act(&input(RunStrategy::Always, VmState::Running)),
            Action::Nothing
        );
    }

    #[test]
    fn rerun_on_failure_restarts_after_a_crash_but_not_after_a_clean_shutdown() {
        assert_eq!(
            act(&input(RunStrategy::RerunOnFailure, VmState::Pending)),
            Action::Start
        );
        let mut i = input(RunStrategy::RerunOnFailure, VmState::Stopped(R::Crashed));
        i.has_run = true;
        assert_eq!(act(&i), Action::Start);
        i.state = VmState::Stopped(R::Shutdown);
        assert_eq!(act(&i), Action::Nothing);
        i.state = VmState::Stopped(R::NeverStarted);
        assert_eq!(
            act(&i),
            Action::Nothing,
            "a guest that ran and whose reason was lost stays off"
        );
    }

    #[test]
    fn once_runs_a_vm_a_single_time() {
        assert_eq!(
            act(&input(RunStrategy::Once, VmState::Pending)),
            Action::Start
        );
        assert_eq!(
            act(&input(RunStrategy::Once, VmState::Stopped(R::NeverStarted))),
            Action::Start
        );
        let mut i = input(RunStrategy::Once, VmState::Stopped(R::Crashed));
        assert_eq!(act(&i), Action::Nothing);
        i.state = VmState::Stopped(R::Shutdown);
        assert_eq!(act(&i), Action::Nothing);
        i.state = VmState::Pending;
        i.has_run = true;
        assert_eq!(
            act(&i),
            Action::Nothing,
            "a Once VM whose domain vanished after it ran stays off"
        );
    }

    #[test]
    fn halted_shuts_down_then_destroys_after_the_grace_period() {
        let mut i = input(RunStrategy::Halted, VmState::Running);
        assert_eq!(act(&i), Action::Shutdown);
        i.shutdown_sent_ago = Some(Duration::from_secs(20));
        assert_eq!(act(&i), Action::AwaitShutdown(Duration::from_secs(40)));
        i.shutdown_sent_ago = Some(Duration::from_secs(60));
        assert_eq!(act(&i), Action::Destroy);
        assert_eq!(
            act(&input(RunStrategy::Halted, VmState::Pending)),
            Action::Nothing
        );
        assert_eq!(
            act(&input(RunStrategy::Halted, VmState::Stopped(R::Shutdown))),
            Action::Nothing
        );
    }

    #[test]
    fn a_zero_grace_period_destroys_at_once_after_the_shutdown_request() {
        let mut i = input(RunStrategy::Halted, VmState::Stopping);
        i.grace = Duration::ZERO;
        i.shutdown_sent_ago = Some(Duration::ZERO);
        assert_eq!(act(&i), Action::Destroy);
    }

    #[test]
    fn manual_follows_the_requested_state_and_otherwise_leaves_the_vm_alone() {
        let mut i = input(RunStrategy::Manual, VmState::Pending);
        assert_eq!(
            act(&i),
            Action::Nothing,
            "a new Manual VM waits for a start request"
        );
        i.requested_state = Some("Running");
        assert_eq!(act(&i), Action::Start);
        i.state = VmState::Running;
        i.requested_state = Some("Stopped");
        assert_eq!(act(&i), Action::Shutdown);
        i.requested_state = None;
        assert_eq!(
            act(&i),
            Action::Nothing,
            "a running Manual VM keeps running"
        );
        i.state = VmState::Stopped(R::Shutdown);
        assert_eq!(
            act(&i),
            Action::Nothing,
            "a stopped Manual VM stays stopped"
        );
    }

    #[test]
    fn a_restart_request_is_handled_once_per_value() {
        let mut i = input(RunStrategy::Always, VmState::Running);
        i.restart_requested = Some("2026-11-25T08:00:00Z");
        let d = decide(&i);
        assert_eq!(d.action, Action::Restart);
        assert_eq!(d.restart_handled.as_deref(), Some("2026-11-25T08:00:00Z"));
        i.last_restart_request = Some("2026-11-25T08:00:00Z");
        assert_eq!(
            decide(&i),
            Decision {
                action: Action::Nothing,
                restart_handled: None
            }
        );
    }

    #[test]
    fn a_restart_request_on_a_halted_vm_is_recorded_without_starting_it() {
        let mut i = input(RunStrategy::Halted, VmState::Stopped(R::Shutdown));
        i.restart_requested = Some("t1");
        let d = decide(&i);
        assert_eq!(d.action, Action::Nothing);
        assert_eq!(d.restart_handled.as_deref(), Some("t1"));
    }

    #[test]
    fn failed_and_deleting_vms_are_left_to_their_own_paths() {
        for s in [VmState::Failed, VmState::Deleting, VmState::Deleted] {
            assert_eq!(act(&input(RunStrategy::Always, s)), Action::Nothing);
        }
    }
}
