//! The migration's next step from what the API shows: the migration's status (the
//! operator's, the target agent's and the source agent's parts) and its VM. Pure; every
//! transition is tested below.

use ironvisor_crds::migration::{MigrationPhase, SourceState, VirtualMachineMigration};
use ironvisor_crds::vm::{OperationKind, Phase, VirtualMachine};

/// What the decision looks at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// The operator's phase.
    pub phase: MigrationPhase,
    /// The migration is being deleted (cancel).
    pub deleting: bool,
    /// The VM exists and is the one the migration locked (or, before locking, any).
    pub vm_present: bool,
    /// The VM runs (phase Running, placed on a host).
    pub vm_running: bool,
    /// The VM's lock is held by this migration.
    pub holds_lock: bool,
    /// The target agent is ready.
    pub target_ready: bool,
    /// The target agent refused, saying why.
    pub target_refused: Option<String>,
    /// The source agent's report.
    pub source: Option<(SourceState, Option<String>)>,
    /// The VM is already placed on the target (a move written before a restart).
    pub vm_on_target: bool,
    /// A disk of the VM is a linked clone: it reads its source's files on this host.
    pub linked_clone: bool,
    /// Deleted longer than [`ABORT_TIMEOUT`] ago (the source agent has not confirmed the
    /// abort: its host is down or its agent stopped).
    pub abort_overdue: bool,
    /// Snapshots of the VM whose layers are on its host (taken, being taken or being
    /// deleted): the disks' backing chains hold them, which a migration does not carry.
    pub snapshots_on_host: usize,
    /// A cold restart elsewhere (`mode: Restart`), not a live migration.
    pub restart: bool,
    /// Restart mode: the target agent stopped the paused copy that arrived, so the guest
    /// boots afresh once placed there.
    pub cold_boot_ready: bool,
}

/// How long a cancel waits for the source agent to confirm QEMU's job was aborted (an
/// abort takes seconds; an agent that is gone never confirms).
pub const ABORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Facts {
    /// Read the facts from the objects.
    pub fn read(
        m: &VirtualMachineMigration,
        vm: Option<&VirtualMachine>,
        deleting: bool,
        now: jiff::Timestamp,
    ) -> Self {
        let s = m.status.clone().unwrap_or_default();
        let vm = vm.filter(|v| s.vm_uid.is_none() || v.metadata.uid == s.vm_uid);
        let vs = vm.and_then(|v| v.status.clone()).unwrap_or_default();
        let uid = m.metadata.uid.as_deref();
        Facts {
            phase: s.phase,
            deleting,
            vm_present: vm.is_some(),
            vm_running: vs.phase == Some(Phase::Running) && vs.node_name.is_some(),
            holds_lock: vs
                .operation
                .as_ref()
                .is_some_and(|o| o.kind == OperationKind::Migration && Some(o.uid.as_str()) == uid),
            target_ready: s.target.as_ref().is_some_and(|t| t.ready),
            target_refused: s.target.as_ref().and_then(|t| t.message.clone()),
            source: s.source.as_ref().map(|x| (x.state, x.message.clone())),
            vm_on_target: s.target_node.is_some() && vs.node_name == s.target_node,
            linked_clone: vm.is_some_and(|v| v.spec.has_linked_clone()),
            abort_overdue: m.metadata.deletion_timestamp.as_ref().is_some_and(|t| {
                now.duration_since(t.0).as_secs() >= ABORT_TIMEOUT.as_secs() as i64
            }),
            snapshots_on_host: 0,
            restart: m.spec.restarts(),
            cold_boot_ready: s.target.as_ref().is_some_and(|t| t.cold_boot_ready),
        }
    }
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Take the VM's lock (then Scheduling).
    Lock,
    /// Choose the target (then PreparingTarget).
    Schedule,
    /// The target is ready: let the source copy (Migrating).
    StartCopy,
    /// QEMU completed: move the VM's placement, then Completed.
    MoveVm,
    /// End in a terminal phase with a reason; release the lock.
    Finish {
        /// Failed, Cancelled or Completed.
        phase: MigrationPhase,
        /// The condition's reason.
        reason: &'static str,
        /// What happened.
        message: String,
    },
    /// Agents are at work: look again soon.
    Wait,
    /// Deleted during the copy: wait for the source agent's abort.
    WaitForAbort,
    /// Terminal: make sure the lock is released; nothing else.
    Done,
}

fn finish(phase: MigrationPhase, reason: &'static str, message: impl Into<String>) -> Step {
    Step::Finish {
        phase,
        reason,
        message: message.into(),
    }
}

/// The next step.
pub fn next(f: &Facts) -> Step {
    use MigrationPhase::*;
    if f.phase.is_terminal() {
        return Step::Done;
    }
    let cancelled = || {
        finish(
            Cancelled,
            "Cancelled",
            "cancelled; the VM runs on its source as before",
        )
    };
    match f.phase {
        Pending | Scheduling | PreparingTarget if f.deleting => cancelled(),
        _ if !f.vm_present => finish(
            Failed,
            "VmGone",
            "the VM was deleted (or recreated) during the migration",
        ),
        Pending if !f.vm_running => finish(
            Failed,
            "VmNotRunning",
            "only a running VM can be live-migrated",
        ),
        Pending if f.linked_clone => finish(
            Failed,
            "LinkedClone",
            "a linked clone reads its source's disk files on its host and cannot move; \
             clone it again with mode: Full to get a VM that can",
        ),
        Pending if f.snapshots_on_host > 0 => finish(
            Failed,
            "SnapshotsOnHost",
            format!(
                "the VM has {} snapshot(s) whose disk layers are on its host, which a migration \
                 does not carry yet; back them up (VirtualMachineBackup) if they must be kept, \
                 delete them, then migrate again",
                f.snapshots_on_host
            ),
        ),
        Pending => Step::Lock,
        _ if !f.holds_lock && f.phase != Migrating => Step::Lock,
        Scheduling => Step::Schedule,
        PreparingTarget => match &f.target_refused {
            Some(why) => finish(Failed, "TargetNotReady", why.clone()),
            None if f.target_ready => Step::StartCopy,
            None => Step::Wait,
        },
        Migrating => match &f.source {
            // A restart's copy arrives paused: the target stops it before the VM is placed
            // there, so the target's VM controller boots it afresh (never resumes it).
            Some((SourceState::Succeeded, _)) if f.restart && !f.cold_boot_ready => Step::Wait,
            Some((SourceState::Succeeded, _)) => Step::MoveVm,
            Some((SourceState::Failed, msg)) => finish(
                Failed,
                "MigrationFailed",
                format!(
                    "{}; the VM runs on its source as before",
                    msg.as_deref().unwrap_or("the copy failed")
                ),
            ),
            Some((SourceState::Aborted, _)) => cancelled(),
            _ if f.vm_on_target => Step::MoveVm,
            _ if f.deleting && f.abort_overdue => finish(
                Failed,
                "AbortTimedOut",
                format!(
                    "the source host's agent did not confirm the abort within {} s (host down \
                     or agent stopped); the VM stays placed on its source",
                    ABORT_TIMEOUT.as_secs()
                ),
            ),
            _ if f.deleting => Step::WaitForAbort,
            _ => Step::Wait,
        },
        Completed | Failed | Cancelled => Step::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MigrationPhase::*;

    fn running(phase: MigrationPhase) -> Facts {
        Facts {
            phase,
            vm_present: true,
            vm_running: true,
            holds_lock: phase != Pending,
            ..Facts::default()
        }
    }

    fn phase_of(s: &Step) -> Option<MigrationPhase> {
        match s {
            Step::Finish { phase, .. } => Some(*phase),
            _ => None,
        }
    }

    #[test]
    fn a_restart_moves_the_vm_only_once_the_target_stopped_the_paused_copy() {
        let copied = Facts {
            restart: true,
            source: Some((SourceState::Succeeded, None)),
            ..running(Migrating)
        };
        assert_eq!(next(&copied), Step::Wait);
        let ready = Facts {
            cold_boot_ready: true,
            ..copied.clone()
        };
        assert_eq!(next(&ready), Step::MoveVm);
        let live = Facts {
            restart: false,
            ..copied
        };
        assert_eq!(
            next(&live),
            Step::MoveVm,
            "a live migration does not wait for it"
        );
    }

    #[test]
    fn the_happy_path_goes_lock_schedule_prepare_copy_move() {
        assert_eq!(next(&running(Pending)), Step::Lock);
        assert_eq!(next(&running(Scheduling)), Step::Schedule);
        assert_eq!(next(&running(PreparingTarget)), Step::Wait);
        let ready = Facts {
            target_ready: true,
            ..running(PreparingTarget)
        };
        assert_eq!(next(&ready), Step::StartCopy);
        assert_eq!(next(&running(Migrating)), Step::Wait);
        let running_job = Facts {
            source: Some((SourceState::Running, None)),
            ..running(Migrating)
        };
        assert_eq!(next(&running_job), Step::Wait);
        let done = Facts {
            source: Some((SourceState::Succeeded, None)),
            ..running(Migrating)
        };
        assert_eq!(next(&done), Step::MoveVm);
    }

    #[test]
    fn failures_end_failed_with_libvirts_message_and_the_vm_on_its_source() {
        let failed = Facts {
            source: Some((
                SourceState::Failed,
                Some("operation failed: job 'migration out' failed".into()),
            )),
            ..running(Migrating)
        };
        match next(&failed) {
            Step::Finish {
                phase: Failed,
                reason: "MigrationFailed",
                message,
            } => {
                assert!(message.contains("job 'migration out' failed"), "{message}");
                assert!(message.contains("runs on its source"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let refused = Facts {
            target_refused: Some("no --migration-uri".into()),
            ..running(PreparingTarget)
        };
        assert_eq!(phase_of(&next(&refused)), Some(Failed));
        let stopped = Facts {
            vm_running: false,
            ..running(Pending)
        };
        assert_eq!(phase_of(&next(&stopped)), Some(Failed));
        let gone = Facts {
            vm_present: false,
            ..running(Migrating)
        };
        assert_eq!(phase_of(&next(&gone)), Some(Failed));
    }

    #[test]
    fn delete_cancels_at_once_before_the_copy_and_after_the_abort_during_it() {
        for p in [Pending, Scheduling, PreparingTarget] {
            let f = Facts {
                deleting: true,
                ..running(p)
            };
            assert_eq!(phase_of(&next(&f)), Some(Cancelled), "{p:?}");
        }
        let copying = Facts {
            deleting: true,
            source: Some((SourceState::Running, None)),
            ..running(Migrating)
        };
        assert_eq!(next(&copying), Step::WaitForAbort);
        let aborted = Facts {
            source: Some((SourceState::Aborted, None)),
            ..copying.clone()
        };
        assert_eq!(phase_of(&next(&aborted)), Some(Cancelled));
        // Too late to cancel: QEMU completed, so the VM is moved.
        let completed = Facts {
            source: Some((SourceState::Succeeded, None)),
            ..copying
        };
        assert_eq!(next(&completed), Step::MoveVm);
    }

    #[test]
    fn a_linked_clone_is_refused_before_it_is_locked() {
        let mut f = running(Pending);
        f.linked_clone = true;
        assert!(matches!(
            next(&f),
            Step::Finish {
                reason: "LinkedClone",
                ..
            }
        ));
    }

    #[test]
    fn a_vm_with_snapshot_layers_on_its_host_is_refused_before_it_is_locked() {
        let mut f = running(Pending);
        f.snapshots_on_host = 2;
        match next(&f) {
            Step::Finish {
                phase,
                reason,
                message,
            } => {
                assert_eq!((phase, reason), (Failed, "SnapshotsOnHost"));
                assert!(message.contains("2 snapshot(s)"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Once the migration runs, a snapshot cannot start (the lock): no refusal mid-way.
        let mut copying = running(Migrating);
        copying.snapshots_on_host = 1;
        assert_eq!(next(&copying), Step::Wait);
    }

    #[test]
    fn a_cancel_the_source_never_confirms_fails_after_the_abort_timeout() {
        let waiting = Facts {
            deleting: true,
            source: Some((SourceState::Running, None)),
            ..running(Migrating)
        };
        assert_eq!(next(&waiting), Step::WaitForAbort);
        let overdue = Facts {
            abort_overdue: true,
            ..waiting.clone()
        };
        match next(&overdue) {
            Step::Finish {
                phase: Failed,
                reason: "AbortTimedOut",
                message,
            } => assert!(message.contains("stays placed on its source"), "{message}"),
            other => panic!("{other:?}"),
        }
        // A confirmation that came late still wins: completed means moved.
        let completed = Facts {
            source: Some((SourceState::Succeeded, None)),
            ..overdue
        };
        assert_eq!(next(&completed), Step::MoveVm);
    }

    #[test]
    fn the_abort_timeout_runs_from_the_deletion() {
        let mut m = VirtualMachineMigration::new(
            "m",
            serde_json::from_value(serde_json::json!({"vmName": "v"})).unwrap(),
        );
        let at = |s| jiff::Timestamp::from_second(s).unwrap();
        m.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            at(1000),
        ));
        assert!(!Facts::read(&m, None, true, at(1059)).abort_overdue);
        assert!(Facts::read(&m, None, true, at(1060)).abort_overdue);
        m.metadata.deletion_timestamp = None;
        assert!(!Facts::read(&m, None, false, at(9999)).abort_overdue);
    }

    #[test]
    fn terminal_phases_only_release_the_lock() {
        for p in [Completed, Failed, Cancelled] {
            assert_eq!(next(&running(p)), Step::Done);
            assert_eq!(
                next(&Facts {
                    deleting: true,
                    ..running(p)
                }),
                Step::Done
            );
        }
    }

    #[test]
    fn a_lost_lock_before_the_copy_is_taken_again() {
        let f = Facts {
            holds_lock: false,
            ..running(Scheduling)
        };
        assert_eq!(next(&f), Step::Lock);
    }
}
