//! What the pool controller decides from: its desktops and claims, reduced to the facts the
//! decisions need, read from the API objects (pure conversions, no I/O).

use std::time::Duration;

use ironvisor_crds::console::ConsoleStatus;
use ironvisor_crds::desktop::{
    Assignment, BOUND_AT_ANNOTATION, CLAIM_LABEL, CLAIM_UID_ANNOTATION, ClaimPhase,
    DIRTY_ANNOTATION, DesktopClaim, DesktopPool, OWNER_ANNOTATION,
};
use ironvisor_crds::restore::{RestorePhase, VirtualMachineRestore};
use ironvisor_crds::snapshot::{SnapshotPhase, VirtualMachineSnapshot};
use ironvisor_crds::vm::{Phase, RunStrategy, VirtualMachine};
use jiff::Timestamp;
use kube::ResourceExt;

/// The pool's settings, as decisions need them.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolFacts {
    /// Dedicated or Floating.
    pub assignment: Assignment,
    /// Most desktops.
    pub size: u32,
    /// Started, unclaimed desktops to keep.
    pub min_spare: u32,
    /// Most live claims per user.
    pub max_per_user: u32,
    /// Power off a claimed desktop idle this long.
    pub idle_timeout: Option<Duration>,
    /// Why the template cannot make this pool's desktops, if it cannot.
    pub invalid: Option<String>,
}

impl PoolFacts {
    /// The facts of `pool`.
    pub fn of(pool: &DesktopPool) -> Self {
        let spec = &pool.spec;
        let mut invalid = None;
        if spec.assignment == Assignment::Floating && spec.template.spec.disks.is_empty() {
            invalid = Some(
                "a Floating pool's template needs at least one disk: a reset returns the \
                 disks to the desktop's clean snapshot"
                    .to_owned(),
            );
        }
        let idle_timeout = spec.idle_timeout().unwrap_or_else(|e| {
            invalid = Some(e.to_string());
            None
        });
        Self {
            assignment: spec.assignment,
            size: spec.size,
            min_spare: spec.min_spare.min(spec.size),
            max_per_user: spec.max_per_user.max(1),
            idle_timeout,
            invalid,
        }
    }
}

/// Where a desktop's clean snapshot (Floating pools) stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clean {
    /// Not taken yet.
    Missing,
    /// Being taken.
    Pending,
    /// Taken: the desktop can be reset to it.
    Ready,
    /// It failed (the snapshot's message).
    Failed(String),
}

/// Where a desktop's reset (a restore to its clean snapshot) stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reset {
    /// No restore exists.
    None,
    /// Being restored.
    InProgress,
    /// The disks are clean again.
    Succeeded,
    /// It failed (the restore's message).
    Failed(String),
}

/// One desktop VM of the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Desktop {
    /// The VM's name.
    pub name: String,
    /// The claim it is bound to: (name, uid).
    pub claim: Option<(String, String)>,
    /// Dedicated pools: the user it belongs to.
    pub owner: Option<String>,
    /// Floating pools: it was used and waits for its reset.
    pub dirty: bool,
    /// Its runStrategy is Halted.
    pub halted: bool,
    /// Its lifecycle phase.
    pub phase: Option<Phase>,
    /// Admitted and placed on a host.
    pub placed: bool,
    /// Why admission refuses it (the VM's own message), when it does.
    pub refused: Option<String>,
    /// When it was bound to its claim.
    pub bound_at: Option<Timestamp>,
    /// When its guest last started.
    pub started_at: Option<Timestamp>,
    /// Console connections as its agent reports them.
    pub console: Option<ConsoleStatus>,
    /// Floating pools: its clean snapshot.
    pub clean: Clean,
    /// Floating pools: its reset.
    pub reset: Reset,
    /// Being deleted.
    pub deleting: bool,
}

impl Desktop {
    /// Whether the guest runs.
    pub fn running(&self) -> bool {
        self.phase == Some(Phase::Running)
    }

    /// Whether no claim holds it and no user owns it.
    pub fn unassigned(&self) -> bool {
        self.claim.is_none() && self.owner.is_none() && !self.deleting
    }

    /// Whether it can be given to a claim now (placed; Floating: clean and resettable).
    pub fn usable(&self, assignment: Assignment) -> bool {
        let clean =
            assignment == Assignment::Dedicated || (self.clean == Clean::Ready && !self.dirty);
        self.placed && self.refused.is_none() && clean && !self.deleting
    }
}

/// One claim on the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// The admission-checked user.
    pub user: String,
    /// When it was created (claims are served oldest first).
    pub created: Timestamp,
    /// The phase the operator last wrote.
    pub phase: ClaimPhase,
    /// The desktop the operator last wrote.
    pub vm_name: Option<String>,
}

impl Claim {
    /// The facts of `c`.
    pub fn of(c: &DesktopClaim) -> Self {
        let status = c.status.clone().unwrap_or_default();
        Self {
            name: c.name_any(),
            uid: c.uid().unwrap_or_default(),
            user: c.spec.user.clone(),
            created: c
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH),
            phase: status.phase,
            vm_name: status.vm_name,
        }
    }
}

/// The name of a desktop's clean snapshot.
pub fn clean_snapshot_name(vm: &str) -> String {
    format!("{vm}-clean")
}

/// The name of a desktop's reset (restore).
pub fn reset_name(vm: &str) -> String {
    format!("{vm}-reset")
}

fn time(s: Option<&String>) -> Option<Timestamp> {
    s.and_then(|t| t.parse().ok())
}

/// The message of a VM's condition that refuses it for quota, if one does.
fn quota_refusal(vm: &VirtualMachine) -> Option<String> {
    let status = vm.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| c.reason == "QuotaExceeded" && c.status == "False")
        .map(|c| c.message.clone())
}

/// The facts of a desktop VM, with its clean snapshot and reset when they exist.
pub fn desktop(
    vm: &VirtualMachine,
    snapshot: Option<&VirtualMachineSnapshot>,
    restore: Option<&VirtualMachineRestore>,
) -> Desktop {
    let labels = vm.labels();
    let ann = vm.annotations();
    let status = vm.status.clone().unwrap_or_default();
    let claim = labels.get(CLAIM_LABEL).map(|n| {
        (
            n.clone(),
            ann.get(CLAIM_UID_ANNOTATION).cloned().unwrap_or_default(),
        )
    });
    let clean = match snapshot.and_then(|s| s.status.as_ref()) {
        None if snapshot.is_none() => Clean::Missing,
        None => Clean::Pending,
        Some(s) => match s.phase {
            SnapshotPhase::Succeeded if s.ready_to_use => Clean::Ready,
            SnapshotPhase::Failed => Clean::Failed(ready_message(&s.conditions)),
            _ => Clean::Pending,
        },
    };
    let reset = match restore {
        None => Reset::None,
        // On its way out: it still holds the VM.
        Some(r) if r.metadata.deletion_timestamp.is_some() => Reset::InProgress,
        Some(r) => match r.status.as_ref() {
            Some(s) if s.phase == RestorePhase::Succeeded => Reset::Succeeded,
            Some(s) if s.phase == RestorePhase::Failed => {
                Reset::Failed(ready_message(&s.conditions))
            }
            _ => Reset::InProgress,
        },
    };
    Desktop {
        name: vm.name_any(),
        claim,
        owner: ann.get(OWNER_ANNOTATION).cloned(),
        dirty: ann.contains_key(DIRTY_ANNOTATION),
        halted: vm.spec.run_strategy == RunStrategy::Halted,
        phase: status.phase,
        placed: status.node_name.is_some(),
        refused: quota_refusal(vm),
        bound_at: time(ann.get(BOUND_AT_ANNOTATION)),
        started_at: status.started_at.as_ref().map(|t| t.0),
        console: status.console.clone(),
        clean,
        reset,
        deleting: vm.metadata.deletion_timestamp.is_some(),
    }
}

fn ready_message(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}
