//! What a drain does with each VM on the host, and the progress it reports. Pure: the VMs
//! and their migrations in, verdicts and the `status.maintenance` out; every case is tested
//! below.

use ironvisor_crds::maintenance::{
    BLOCKED_LISTED, BlockedVm, DrainStrategy, MaintenancePhase, MaintenanceRequester,
    MaintenanceStatus,
};
use ironvisor_crds::vm::{Phase, RunStrategy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Live migrations a drain tries per VM before it reports the VM as blocking.
pub const MAX_ATTEMPTS: u32 = 3;

/// What the drain looks at for one VM placed on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct VmFacts {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name.
    pub name: String,
    /// Its lifecycle phase.
    pub phase: Option<Phase>,
    /// Its run strategy.
    pub run_strategy: RunStrategy,
    /// Its drain policy.
    pub strategy: DrainStrategy,
    /// A migration of the VM that has not ended (whoever created it).
    pub active_migration: Option<String>,
    /// Migrations this drain made for the VM that failed or were cancelled.
    pub failed_attempts: u32,
    /// The last one's reason.
    pub last_failure: Option<String>,
    /// A disk is a linked clone: it reads its base's files on this host and cannot move.
    pub linked_clone: bool,
}

/// What to do about one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Create a live migration away (the attempt's number, from 1).
    Migrate(u32),
    /// A migration is under way (its name).
    Migrating(String),
    /// It stays running and keeps the drain from completing (why, and what to do).
    Blocked(String),
    /// It is starting or stopping: looked at again when it settles.
    Waiting(String),
    /// Stopped: it stays with its disks and does not block.
    Stopped,
}

/// The verdict for one VM.
pub fn verdict(v: &VmFacts) -> Verdict {
    if let Some(m) = &v.active_migration {
        return Verdict::Migrating(m.clone());
    }
    match v.phase {
        Some(Phase::Stopped | Phase::Failed) | None => return Verdict::Stopped,
        Some(p) if v.run_strategy == RunStrategy::Halted => {
            return if p == Phase::Scheduled {
                Verdict::Stopped
            } else {
                Verdict::Waiting(format!(
                    "the VM is being stopped ({}); it stays once stopped",
                    p.as_str()
                ))
            };
        }
        Some(Phase::Running) => {}
        Some(Phase::Unknown) => {
            return Verdict::Blocked(
                "the VM's state is unknown (the host does not report); it is moved once the \
                 host reports again"
                    .into(),
            );
        }
        Some(p) => {
            return Verdict::Waiting(format!(
                "the VM is {}; it is moved once it runs",
                p.as_str()
            ));
        }
    }
    if v.strategy == DrainStrategy::None {
        return Verdict::Blocked(
            "drainStrategy None: the VM stays running on this host; stop it, move it \
             (ivctl migrate) or change its drainStrategy to LiveMigrate"
                .into(),
        );
    }
    if v.linked_clone {
        return Verdict::Blocked(
            "a linked clone reads its base's files on this host and cannot live-migrate; stop \
             it, or re-create it as a full copy (source mode Full) that can move"
                .into(),
        );
    }
    if v.failed_attempts >= MAX_ATTEMPTS {
        return Verdict::Blocked(format!(
            "{} live migrations failed (last: {}); fix the cause, then drain again \
             (ivctl host undrain, ivctl host drain) or move it with ivctl migrate",
            v.failed_attempts,
            v.last_failure.as_deref().unwrap_or("no reason given"),
        ));
    }
    Verdict::Migrate(v.failed_attempts + 1)
}

/// The host's drain status from the verdicts of its VMs. `moved` counts the VMs this drain
/// has moved away so far.
pub fn progress(
    requested_by: MaintenanceRequester,
    since: Option<Time>,
    verdicts: &[(&VmFacts, Verdict)],
    moved: u32,
) -> MaintenanceStatus {
    let count = |f: fn(&Verdict) -> bool| {
        u32::try_from(verdicts.iter().filter(|(_, v)| f(v)).count()).unwrap_or(u32::MAX)
    };
    let migrating = count(|v| matches!(v, Verdict::Migrating(_) | Verdict::Migrate(_)));
    let blocked_n = count(|v| matches!(v, Verdict::Blocked(_)));
    let waiting = count(|v| matches!(v, Verdict::Waiting(_)));
    let stopped = count(|v| matches!(v, Verdict::Stopped));
    let remaining = migrating + blocked_n + waiting;
    let blocked: Vec<BlockedVm> = verdicts
        .iter()
        .filter_map(|(f, v)| match v {
            Verdict::Blocked(why) => Some(BlockedVm {
                namespace: f.namespace.clone(),
                name: f.name.clone(),
                reason: why.clone(),
            }),
            _ => None,
        })
        .take(BLOCKED_LISTED)
        .collect();
    let phase = if remaining == 0 {
        MaintenancePhase::Ready
    } else {
        MaintenancePhase::Draining
    };
    let message = if remaining == 0 {
        format!(
            "no running VM left ({moved} moved away, {stopped} stopped VMs stay with their disks)"
        )
    } else {
        let mut m = format!(
            "{remaining} running VMs left: {migrating} migrating, {waiting} waiting, {blocked_n} blocked"
        );
        if let Some(b) = blocked.first() {
            m.push_str(&format!("; {}/{}: {}", b.namespace, b.name, b.reason));
        }
        m
    };
    MaintenanceStatus {
        requested_by,
        phase,
        since,
        vms_remaining: remaining,
        vms_migrating: migrating,
        vms_blocked: blocked_n,
        vms_stopped: stopped,
        vms_moved: moved,
        blocked,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str) -> VmFacts {
        VmFacts {
            namespace: "t".into(),
            name: name.into(),
            phase: Some(Phase::Running),
            run_strategy: RunStrategy::Always,
            strategy: DrainStrategy::LiveMigrate,
            active_migration: None,
            failed_attempts: 0,
            last_failure: None,
            linked_clone: false,
        }
    }

    #[test]
    fn a_running_vm_is_live_migrated_and_followed_while_its_migration_runs() {
        let v = running("a");
        assert_eq!(verdict(&v), Verdict::Migrate(1));
        let moving = VmFacts {
            active_migration: Some("a-drain-x".into()),
            ..v
        };
        assert_eq!(verdict(&moving), Verdict::Migrating("a-drain-x".into()));
    }

    #[test]
    fn a_vm_with_drain_strategy_none_blocks_with_the_way_out() {
        let v = VmFacts {
            strategy: DrainStrategy::None,
            ..running("db")
        };
        match verdict(&v) {
            Verdict::Blocked(why) => {
                assert!(why.contains("drainStrategy None"), "{why}");
                assert!(why.contains("ivctl migrate"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_running_linked_clone_blocks_at_once_and_a_stopped_one_stays() {
        let v = VmFacts {
            linked_clone: true,
            ..running("c")
        };
        match verdict(&v) {
            Verdict::Blocked(why) => assert!(why.contains("full copy"), "{why}"),
            other => panic!("{other:?}"),
        }
        let stopped = VmFacts {
            phase: Some(Phase::Stopped),
            ..v
        };
        assert_eq!(verdict(&stopped), Verdict::Stopped);
    }

    #[test]
    fn failed_migrations_are_retried_then_reported_with_the_last_reason() {
        let v = VmFacts {
            failed_attempts: 2,
            last_failure: Some("target refused".into()),
            ..running("a")
        };
        assert_eq!(verdict(&v), Verdict::Migrate(3));
        let v = VmFacts {
            failed_attempts: MAX_ATTEMPTS,
            ..v
        };
        match verdict(&v) {
            Verdict::Blocked(why) => assert!(why.contains("last: target refused"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stopped_vms_stay_and_settling_ones_are_waited_for() {
        for p in [Some(Phase::Stopped), Some(Phase::Failed), None] {
            let v = VmFacts {
                phase: p,
                ..running("s")
            };
            assert_eq!(verdict(&v), Verdict::Stopped, "{p:?}");
        }
        let halted = VmFacts {
            phase: Some(Phase::Scheduled),
            run_strategy: RunStrategy::Halted,
            ..running("h")
        };
        assert_eq!(verdict(&halted), Verdict::Stopped);
        let halting = VmFacts {
            phase: Some(Phase::Running),
            run_strategy: RunStrategy::Halted,
            ..running("h")
        };
        assert!(
            matches!(verdict(&halting), Verdict::Waiting(w) if w.contains("being stopped")),
            "a VM being halted is not migrated"
        );
        let starting = VmFacts {
            phase: Some(Phase::Starting),
            ..running("b")
        };
        assert!(matches!(verdict(&starting), Verdict::Waiting(w) if w.contains("Starting")));
        let unknown = VmFacts {
            phase: Some(Phase::Unknown),
            ..running("u")
        };
        assert!(matches!(verdict(&unknown), Verdict::Blocked(_)));
    }

    #[test]
    fn progress_counts_and_is_ready_only_when_no_running_vm_is_left() {
        let (a, b, c) = (
            running("a"),
            VmFacts {
                strategy: DrainStrategy::None,
                ..running("b")
            },
            VmFacts {
                phase: Some(Phase::Stopped),
                ..running("c")
            },
        );
        let vs: Vec<(&VmFacts, Verdict)> =
            [&a, &b, &c].into_iter().map(|f| (f, verdict(f))).collect();
        let s = progress(MaintenanceRequester::Hypervisor, None, &vs, 4);
        assert_eq!(s.phase, MaintenancePhase::Draining);
        assert_eq!(
            (
                s.vms_remaining,
                s.vms_migrating,
                s.vms_blocked,
                s.vms_stopped,
                s.vms_moved
            ),
            (2, 1, 1, 1, 4)
        );
        assert_eq!(s.blocked.len(), 1);
        assert_eq!(s.blocked[0].name, "b");
        assert!(
            s.message.contains("t/b: drainStrategy None"),
            "{}",
            s.message
        );
        let only_stopped = [(&c, verdict(&c))];
        let s = progress(MaintenanceRequester::Node, None, &only_stopped, 6);
        assert_eq!(s.phase, MaintenancePhase::Ready);
        assert!(
            s.message.contains("6 moved away, 1 stopped"),
            "{}",
            s.message
        );
    }

    #[test]
    fn the_blocked_list_is_bounded_but_the_count_is_exact() {
        let many: Vec<VmFacts> = (0..40)
            .map(|i| VmFacts {
                strategy: DrainStrategy::None,
                ..running(&format!("v{i}"))
            })
            .collect();
        let vs: Vec<(&VmFacts, Verdict)> = many.iter().map(|f| (f, verdict(f))).collect();
        let s = progress(MaintenanceRequester::Hypervisor, None, &vs, 0);
        assert_eq!(s.vms_blocked, 40);
        assert_eq!(s.blocked.len(), BLOCKED_LISTED);
    }
}
