//! The VM status the agent owns: a pure function of what was there before and what the
//! reconcile observed and did. The Events a change deserves are in [`super::events`].

use crate::lifecycle::{StopReason, VmState};
use ironvisor_crds::common::{Condition, condition_type, set_condition};
use ironvisor_crds::vm::{InterfaceStatus, Phase, VirtualMachineStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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

/// The `ImagesReady` condition: whether every image the VM needs is on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagesCondition {
    /// All images are available.
    pub ready: bool,
    /// Available, Downloading, SeedPending (the operator has not copied the cloud-init
    /// Secret yet), DownloadFailed, ChecksumMismatch, InvalidDigest,
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
    let phase = match &i.failure {
        // A guest that still runs (its redefinition was refused) is not Failed.
        Some(f) if f.retried && i.state.is_up() => i.state.phase(),
        Some(_) => Phase::Failed,
        None => i.state.phase(),
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
        admitted: None,
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
        audited: None,
        operation: None,
        run_log: run_log(i),
        // Written by the utilization sampler under its own field manager.
        utilization: None,
        // Written by the console port under its own field manager (`console::counter`).
        console: None,
    }
}

/// The run log with this reconcile's fact appended when it is new: whether the guest is up,
/// at the size the operator admitted, on the host it placed the VM on.
fn run_log(i: &StatusInput<'_>) -> Vec<ironvisor_crds::usage::RunRecord> {
    let record = match (&i.prev.admitted, &i.prev.node_name) {
        (Some(size), Some(node)) => {
            ironvisor_crds::usage::run_record(i.now.clone(), i.state.is_up(), size, node)
        }
        _ => None,
    };
    match record {
        Some(r) => ironvisor_crds::usage::append_run_record(&i.prev.run_log, r),
        None => i.prev.run_log.clone(),
    }
}

/// Inputs for the status and event tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A timestamp `s` seconds after the epoch.
    pub(crate) fn now(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    /// A reconcile of a VM with status `prev` that ended in `state`, nothing else happening.
    pub(crate) fn input(prev: &VirtualMachineStatus, state: VmState) -> StatusInput<'_> {
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
}

#[cfg(test)]
mod tests {
    use super::fixtures::{input, now};
    use super::*;

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
            s.node_name.is_none() && s.vcpus.is_none() && s.admitted.is_none(),
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

    #[test]
    fn a_refused_redefinition_of_a_running_guest_keeps_it_running_but_not_ready() {
        let prev = VirtualMachineStatus::default();
        let mut i = input(&prev, VmState::Running);
        i.failure = Some(Failure {
            reason: "DefineFailed",
            message: "libvirt refused the domain definition: bad".into(),
            retried: true,
        });
        let s = agent_status(&i);
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.printable_status.as_deref(), Some("DefineFailed"));
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "DefineFailed")
        );
        i.state = VmState::Stopped(StopReason::NeverStarted);
        assert_eq!(
            agent_status(&i).phase,
            Some(Phase::Failed),
            "not running: Failed"
        );
        i.state = VmState::Running;
        i.failure = Some(Failure::permanent("InvalidSpec", "bad".into()));
        assert_eq!(
            agent_status(&i).phase,
            Some(Phase::Failed),
            "a permanent failure is Failed whatever runs"
        );
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
    fn starts_and_stops_of_a_placed_vm_are_recorded_in_the_run_log_at_their_time() {
        let prev = VirtualMachineStatus {
            node_name: Some("host-a".into()),
            admitted: Some(ironvisor_crds::vm::AdmittedSize {
                vcpus: 2,
                memory: k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
                storage: k8s_openapi::apimachinery::pkg::api::resource::Quantity("0".into()),
                host_ports: None,
            }),
            ..Default::default()
        };
        let up = agent_status(&input(&prev, VmState::Running));
        let prev = VirtualMachineStatus {
            run_log: up.run_log.clone(),
            ..prev
        };
        let mut i = input(&prev, VmState::Running);
        i.now = now(150);
        assert_eq!(
            agent_status(&i).run_log.len(),
            1,
            "still running: nothing new"
        );
        let mut i = input(&prev, VmState::Stopped(StopReason::Shutdown));
        i.now = now(200);
        let log = agent_status(&i).run_log;
        let facts: Vec<(bool, Time, i64, &str)> = log
            .iter()
            .map(|r| (r.running, r.at.clone(), r.memory_mib, r.node.as_str()))
            .collect();
        assert_eq!(
            facts,
            vec![
                (true, now(100), 1024, "host-a"),
                (false, now(200), 1024, "host-a")
            ]
        );
    }

    #[test]
    fn a_vm_not_yet_admitted_has_no_run_log() {
        let s = agent_status(&input(&VirtualMachineStatus::default(), VmState::Running));
        assert!(s.run_log.is_empty());
    }
}
