//! The VM status the agent owns, and the Events a change deserves: pure functions of what
//! was there before and what the reconcile observed and did.

use super::failure::truncate;
use crate::lifecycle::{StopReason, VmState};
use ironvisor_crds::common::{
    Condition, condition_status, condition_type, find_condition, set_condition,
};
use ironvisor_crds::vm::{InterfaceStatus, Phase, VirtualMachineStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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

/// A failure to show in the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// CamelCase reason (InvalidSpec, StorageFailed, ImageChecksumMismatch, DomainConflict,
    /// StartFailed, DefineFailed).
    pub reason: &'static str,
    /// Message.
    pub message: String,
    /// Retried with backoff (a start QEMU refused), rather than waiting for a spec change.
    pub retried: bool,
}

impl Failure {
    /// A failure only a change of the spec (or of the host's images) can end.
    pub fn permanent(reason: &'static str, message: String) -> Self {
        Self {
            reason,
            message,
            retried: false,
        }
    }
}

/// Longest Event note: the API server refuses notes over 1 KiB.
const MAX_NOTE: usize = 1000;

/// The `ImagesReady` condition: whether every image the VM needs is on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagesCondition {
    /// All images are available.
    pub ready: bool,
    /// Available, Downloading, DownloadFailed, ChecksumMismatch, InvalidDigest,
    /// ImageUnavailable.
    pub reason: &'static str,
    /// Progress or what failed.
    pub message: String,
}

impl ImagesCondition {
    /// Every image is available.
    pub fn available() -> Self {
        Self {
            ready: true,
            reason: "Available",
            message: "every image the VM needs is on the host".into(),
        }
    }

    /// Not (yet) available, for `reason`.
    pub fn not_ready(reason: &'static str, message: String) -> Self {
        Self {
            ready: false,
            reason,
            message,
        }
    }
}

/// What the new status is computed from.
#[derive(Clone, Debug)]
pub struct StatusInput<'a> {
    /// The status before this reconcile.
    pub prev: &'a VirtualMachineStatus,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// State after the reconcile acted.
    pub state: VmState,
    /// Domain UUID.
    pub domain_uuid: Option<String>,
    /// The agent started the guest in this reconcile.
    pub started_now: bool,
    /// The start was an automatic restart after the guest stopped on its own.
    pub auto_restart: bool,
    /// The restart annotation value handled by this reconcile.
    pub restart_handled: Option<String>,
    /// The running guest booted from an older definition.
    pub restart_required: bool,
    /// Interfaces.
    pub interfaces: Vec<InterfaceStatus>,
    /// A permanent failure, if any.
    pub failure: Option<Failure>,
    /// The images condition, when this reconcile learnt it (else the previous one stays).
    pub images: Option<ImagesCondition>,
    /// Now.
    pub now: Time,
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    ironvisor_crds::common::new_condition(type_, ok, reason, message, generation, now.clone())
}

/// The status fields the agent owns (the operator's `nodeName`, `vcpus` and Scheduled
/// condition are left out, so server-side apply leaves them to the operator).
pub fn agent_status(i: &StatusInput<'_>) -> VirtualMachineStatus {
    let phase = if i.failure.is_some() {
        Phase::Failed
    } else {
        i.state.phase()
    };
    let prev_conditions: Vec<Condition> = i
        .prev
        .conditions
        .iter()
        .filter(|c| {
            c.type_ == condition_type::READY
                || c.type_ == condition_type::RESTART_REQUIRED
                || c.type_ == condition_type::IMAGES_READY
        })
        .cloned()
        .collect();
    let mut conditions = prev_conditions;
    let (ready, reason, message) = match (&i.failure, i.state) {
        (Some(f), _) => (false, f.reason, f.message.clone()),
        (None, VmState::Running) => (true, "Running", "the guest is running".to_owned()),
        (None, VmState::Paused) => (false, "Paused", "the guest is paused".to_owned()),
        (None, VmState::Stopped(StopReason::Crashed)) => {
            (false, "Crashed", "the guest crashed".to_owned())
        }
        (None, s) => (
            false,
            phase.as_str(),
            format!("the guest is {}", s.as_str()),
        ),
    };
    set_condition(
        &mut conditions,
        condition(
            condition_type::READY,
            ready,
            reason,
            message,
            i.generation,
            &i.now,
        ),
    );
    let (rr, rr_reason, rr_msg) = if i.restart_required && i.state.is_up() {
        (
            true,
            "SpecChanged",
            "the spec changed in a way that needs a restart; restart the VM to apply it".to_owned(),
        )
    } else {
        (
            false,
            "UpToDate",
            "the guest runs the current definition".to_owned(),
        )
    };
    set_condition(
        &mut conditions,
        condition(
            condition_type::RESTART_REQUIRED,
            rr,
            rr_reason,
            rr_msg,
            i.generation,
            &i.now,
        ),
    );
    if let Some(img) = &i.images {
        set_condition(
            &mut conditions,
            condition(
                condition_type::IMAGES_READY,
                img.ready,
                img.reason,
                img.message.clone(),
                i.generation,
                &i.now,
            ),
        );
    }
    let started_at = if i.started_now {
        Some(i.now.clone())
    } else {
        i.prev.started_at.clone()
    };
    let started_at = match (started_at, i.state.is_up()) {
        // Adopted a running guest the status never saw start: it runs since at least now.
        (None, true) => Some(i.now.clone()),
        (s, _) => s,
    };
    let restart_count = i.prev.restart_count.unwrap_or(0) + i64::from(i.auto_restart);
    VirtualMachineStatus {
        phase: Some(phase),
        printable_status: Some(match &i.failure {
            Some(f) => f.reason.to_owned(),
            None => phase.as_str().to_owned(),
        }),
        node_name: None,
        vcpus: None,
        conditions,
        observed_generation: i.generation,
        domain_uuid: i.domain_uuid.clone(),
        started_at,
        restart_count: Some(restart_count),
        last_restart_request: i
            .restart_handled
            .clone()
            .or_else(|| i.prev.last_restart_request.clone()),
        interfaces: i.interfaces.clone(),
    }
}

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
    if prev_phase == Some(Phase::Failed) && new.phase != Some(Phase::Failed) {
        let was = find_condition(&prev.conditions, condition_type::READY)
            .map_or("Failed", |c| c.reason.as_str());
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

    fn now(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    fn input(prev: &VirtualMachineStatus, state: VmState) -> StatusInput<'_> {
        StatusInput {
            prev,
            generation: Some(4),
            state,
            domain_uuid: Some("uuid".into()),
            started_now: false,
            auto_restart: false,
            restart_handled: None,
            restart_required: false,
            interfaces: vec![],
            failure: None,
            images: None,
            now: now(100),
        }
    }

    #[test]
    fn a_started_guest_is_running_and_ready_with_started_at() {
        let prev = VirtualMachineStatus::default();
        let mut i = input(&prev, VmState::Running);
        i.started_now = true;
        let s = agent_status(&i);
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.started_at, Some(now(100)));
        assert_eq!(s.observed_generation, Some(4));
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert!(
            s.node_name.is_none() && s.vcpus.is_none(),
            "operator fields are never written"
        );
    }

    #[test]
    fn ready_keeps_its_transition_time_while_it_holds() {
        let prev = agent_status(&input(&VirtualMachineStatus::default(), VmState::Running));
        let mut i = input(&prev, VmState::Running);
        i.now = now(500);
        let s = agent_status(&i);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.last_transition_time, now(100));
    }

    #[test]
    fn a_spec_change_on_a_running_guest_sets_restart_required() {
        let prev = VirtualMachineStatus::default();
        let mut i = input(&prev, VmState::Running);
        i.restart_required = true;
        let s = agent_status(&i);
        let rr = s
            .conditions
            .iter()
            .find(|c| c.type_ == "RestartRequired")
            .unwrap();
        assert_eq!(
            (rr.status.as_str(), rr.reason.as_str()),
            ("True", "SpecChanged")
        );
        i.state = VmState::Stopped(StopReason::Shutdown);
        let s = agent_status(&i);
        let rr = s
            .conditions
            .iter()
            .find(|c| c.type_ == "RestartRequired")
            .unwrap();
        assert_eq!(
            rr.status, "False",
            "a stopped guest boots the new definition anyway"
        );
    }

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
    fn images_ready_is_set_when_known_and_kept_otherwise() {
        let prev = VirtualMachineStatus::default();
        let mut i = input(&prev, VmState::Pending);
        i.images = Some(ImagesCondition::not_ready(
            "Downloading",
            "downloading root: 1.0 of 4.0 MiB".into(),
        ));
        let s = agent_status(&i);
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == "ImagesReady")
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Downloading")
        );
        assert_eq!(s.phase, Some(Phase::Scheduled), "still waiting, not failed");
        let later = agent_status(&input(&s, VmState::Running));
        assert!(later.conditions.iter().any(|c| c.type_ == "ImagesReady"));
    }

    #[test]
    fn automatic_restarts_are_counted_and_the_restart_request_is_recorded() {
        let prev = VirtualMachineStatus {
            restart_count: Some(2),
            ..Default::default()
        };
        let mut i = input(&prev, VmState::Running);
        i.auto_restart = true;
        i.restart_handled = Some("t1".into());
        let s = agent_status(&i);
        assert_eq!(s.restart_count, Some(3));
        assert_eq!(s.last_restart_request.as_deref(), Some("t1"));
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
