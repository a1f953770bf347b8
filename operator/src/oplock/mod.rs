//! The per-VM operation lock (`status.operation`): migrations, snapshots, restores, backups,
//! resizes and resets of one VM never overlap.
//!
//! [`acquire`] takes the lock for a holder or reports who holds it; [`release`] gives it back
//! (only the holder can). A reset asked for and not yet acted on by the VM's agent holds a
//! free VM too ([`pending_reset`]): resets and the other operations never overlap either
//! way. Both write the VM's status with its resourceVersion as a precondition, so of two
//! controllers racing for one VM exactly one wins, and the other sees the winner on its
//! retry. A holder that no longer exists (checked with the API, by uid)
//! holds nothing: its lock is taken over and the takeover is reported in the outcome.
//!
//! The decision is the pure [`decide`]; the module's other half talks to the API server.

mod api;

pub use api::{LockError, acquire, release};

use ironvisor_crds::labels::RESTART_REQUESTED_AT;
use ironvisor_crds::vm::{OperationKind, Phase, VirtualMachine, VmOperation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

/// Who asks for the lock: the object driving the operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The kind of operation.
    pub kind: OperationKind,
    /// The driving object's name (in the VM's namespace; the VM's own for resize and reset).
    pub name: String,
    /// The driving object's uid.
    pub uid: String,
}

impl Holder {
    /// Whether this holder is the one recorded in `op` (by uid; the name is informative).
    pub fn holds(&self, op: &VmOperation) -> bool {
        op.uid == self.uid && op.kind == self.kind
    }
}

/// What [`acquire`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Acquired {
    /// The holder holds the lock (it was free, or already the holder's).
    Held,
    /// The holder holds the lock, taken over from an operation whose object no longer exists.
    TookOver(VmOperation),
    /// Another operation holds the VM: wait for it or refuse, saying which.
    Busy(VmOperation),
}

/// What to do about the lock, given its current holder and whether that holder still exists.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Already the asker's: nothing to write.
    AlreadyHeld,
    /// Free: write the asker in.
    Take,
    /// Held by an operation whose object is gone: write the asker in over it.
    TakeOver(VmOperation),
    /// Held by a live operation: leave it.
    Busy(VmOperation),
}

/// The lock decision. `current_alive` says whether the current holder's object still exists
/// with the recorded uid; it is consulted only when someone else holds the lock.
pub fn decide(current: Option<&VmOperation>, asker: &Holder, current_alive: bool) -> Decision {
    match current {
        None => Decision::Take,
        Some(op) if asker.holds(op) => Decision::AlreadyHeld,
        Some(op) if current_alive => Decision::Busy(op.clone()),
        Some(op) => Decision::TakeOver(op.clone()),
    }
}

/// A reset of the running VM that was asked for (`ironvisor.io/restartedAt`, e.g. by `ivctl
/// restart`) and that its agent has not acted on yet (`status.lastRestartRequest` differs),
/// as the operation it is: held by the VM itself, since the request (its timestamp) or `now`.
/// The agent resets a guest only while no other operation holds the VM, so a pending reset
/// keeps a free VM for itself ([`reset_goes_first`]): no operation starts under a reset about
/// to happen, and none waits for ever behind one (the agent acts within a reconcile).
pub fn pending_reset(vm: &VirtualMachine, now: jiff::Timestamp) -> Option<VmOperation> {
    let asked = vm
        .annotations()
        .get(RESTART_REQUESTED_AT)
        .filter(|v| !v.is_empty())?;
    let status = vm.status.as_ref()?;
    if status.last_restart_request.as_ref() == Some(asked) || status.phase != Some(Phase::Running) {
        return None;
    }
    Some(VmOperation {
        kind: OperationKind::Reset,
        name: vm.name_any(),
        uid: vm.metadata.uid.clone().unwrap_or_default(),
        since: Time(asked.parse().unwrap_or(now)),
    })
}

/// A free VM with a pending reset is busy with that reset for every other operation.
pub fn reset_goes_first(d: Decision, asker: &Holder, pending: Option<VmOperation>) -> Decision {
    match (d, pending) {
        (Decision::Take, Some(reset)) if asker.kind != OperationKind::Reset => {
            Decision::Busy(reset)
        }
        (d, _) => d,
    }
}

/// The message a refused or waiting operation shows, naming the holder and the way out.
pub fn busy_message(vm: &str, holder: &VmOperation) -> String {
    let way_out = match holder.kind {
        OperationKind::Reset => "it goes on once the VM's agent has restarted the guest".into(),
        OperationKind::Resize => "it goes on once the resize is applied".into(),
        _ => format!("or delete {} to cancel it", holder.name),
    };
    format!(
        "VM {vm} is busy: {} {} holds it since {}; this operation waits until it finishes \
         ({way_out})",
        holder.kind.as_str(),
        holder.name,
        holder.since.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn op(kind: OperationKind, name: &str, uid: &str) -> VmOperation {
        VmOperation {
            kind,
            name: name.into(),
            uid: uid.into(),
            since: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    fn asker() -> Holder {
        Holder {
            kind: OperationKind::Snapshot,
            name: "before-upgrade".into(),
            uid: "u-snap".into(),
        }
    }

    #[test]
    fn a_free_vm_is_taken() {
        assert_eq!(decide(None, &asker(), true), Decision::Take);
    }

    #[test]
    fn the_holder_asking_again_holds_it_already() {
        let mine = op(OperationKind::Snapshot, "before-upgrade", "u-snap");
        assert_eq!(decide(Some(&mine), &asker(), true), Decision::AlreadyHeld);
        assert_eq!(decide(Some(&mine), &asker(), false), Decision::AlreadyHeld);
    }

    #[test]
    fn a_live_other_operation_keeps_the_vm() {
        let mig = op(OperationKind::Migration, "m1", "u-mig");
        assert_eq!(
            decide(Some(&mig), &asker(), true),
            Decision::Busy(mig.clone())
        );
    }

    #[test]
    fn a_namesake_with_another_uid_does_not_hold_it() {
        // Same name and kind, other uid: a recreated object is another operation.
        let old = op(OperationKind::Snapshot, "before-upgrade", "u-old");
        assert_eq!(
            decide(Some(&old), &asker(), true),
            Decision::Busy(old.clone())
        );
        assert_eq!(
            decide(Some(&old), &asker(), false),
            Decision::TakeOver(old.clone())
        );
    }

    #[test]
    fn a_gone_holder_is_taken_over() {
        let mig = op(OperationKind::Migration, "m1", "u-mig");
        assert_eq!(
            decide(Some(&mig), &asker(), false),
            Decision::TakeOver(mig.clone())
        );
    }

    #[test]
    fn the_busy_message_names_the_holder_and_the_way_out() {
        let mig = op(OperationKind::Migration, "m1", "u-mig");
        let m = busy_message("web", &mig);
        assert!(m.contains("Migration m1 holds it"), "{m}");
        assert!(m.contains("delete m1"), "{m}");
        let m = busy_message("web", &op(OperationKind::Reset, "web", "u-vm"));
        assert!(m.contains("Reset web holds it"), "{m}");
        assert!(
            m.contains("once the VM's agent has restarted the guest"),
            "{m}"
        );
        assert!(
            !m.contains("delete"),
            "a reset is not cancelled by deleting: {m}"
        );
    }

    fn vm(annotation: Option<&str>, handled: Option<&str>, phase: &str) -> VirtualMachine {
        let mut v = serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": "t", "uid": "u-vm"},
            "spec": {"memory": {"size": "64Mi"}},
            "status": {"phase": phase},
        });
        if let Some(a) = annotation {
            v["metadata"]["annotations"] = serde_json::json!({"ironvisor.io/restartedAt": a});
        }
        if let Some(h) = handled {
            v["status"]["lastRestartRequest"] = serde_json::json!(h);
        }
        serde_json::from_value(v).expect("a VM")
    }

    #[test]
    fn a_reset_not_yet_acted_on_holds_a_running_vm() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let asked = "2026-11-30T10:00:00Z";
        let r = pending_reset(&vm(Some(asked), None, "Running"), now).expect("pending");
        assert_eq!(
            (r.kind, r.name.as_str(), r.uid.as_str()),
            (OperationKind::Reset, "web", "u-vm")
        );
        assert_eq!(r.since.0.to_string(), asked);
        let older = vm(Some(asked), Some("2026-11-29T10:00:00Z"), "Running");
        assert!(pending_reset(&older, now).is_some(), "a newer request");
        // Acted on, never asked, or a VM not running (nothing to reset): no reset holds it.
        assert_eq!(
            pending_reset(&vm(Some(asked), Some(asked), "Running"), now),
            None
        );
        assert_eq!(pending_reset(&vm(None, None, "Running"), now), None);
        assert_eq!(pending_reset(&vm(Some(""), None, "Running"), now), None);
        assert_eq!(pending_reset(&vm(Some(asked), None, "Stopped"), now), None);
        // A request that is not a timestamp still holds it, since now.
        let odd = pending_reset(&vm(Some("again"), None, "Running"), now).expect("pending");
        assert_eq!(odd.since.0, now);
    }

    #[test]
    fn a_pending_reset_goes_before_any_other_operation_on_a_free_vm_only() {
        let reset = op(OperationKind::Reset, "web", "u-vm");
        let snap = asker();
        assert_eq!(
            reset_goes_first(Decision::Take, &snap, Some(reset.clone())),
            Decision::Busy(reset.clone())
        );
        assert_eq!(
            reset_goes_first(Decision::Take, &snap, None),
            Decision::Take
        );
        // The holder keeps what it holds; a dead holder is still taken over (the reset
        // itself waits for a holder, so it must not keep a dead one in place).
        assert_eq!(
            reset_goes_first(Decision::AlreadyHeld, &snap, Some(reset.clone())),
            Decision::AlreadyHeld
        );
        let dead = op(OperationKind::Migration, "m1", "u-mig");
        assert_eq!(
            reset_goes_first(Decision::TakeOver(dead.clone()), &snap, Some(reset.clone())),
            Decision::TakeOver(dead)
        );
        let resetter = Holder {
            kind: OperationKind::Reset,
            name: "web".into(),
            uid: "u-vm".into(),
        };
        assert_eq!(
            reset_goes_first(Decision::Take, &resetter, Some(reset)),
            Decision::Take
        );
    }
}
