//! The per-VM operation lock (`status.operation`): migrations, snapshots, restores, backups,
//! resizes and resets of one VM never overlap.
//!
//! [`acquire`] takes the lock for a holder or reports who holds it; [`release`] gives it back
//! (only the holder can). Both write the VM's status with its resourceVersion as a
//! precondition, so of two controllers racing for one VM exactly one wins, and the other sees
//! the winner on its retry. A holder that no longer exists (checked with the API, by uid)
//! holds nothing: its lock is taken over and the takeover is reported in the outcome.
//!
//! The decision is the pure [`decide`]; the module's other half talks to the API server.

mod api;

pub use api::{LockError, acquire, release};

use ironvisor_crds::vm::{OperationKind, VmOperation};

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

/// The message a refused or waiting operation shows, naming the holder.
pub fn busy_message(vm: &str, holder: &VmOperation) -> String {
    format!(
        "VM {vm} is busy: {} {} holds it since {}; this operation waits until it finishes \
         (or delete {} to cancel it)",
        holder.kind.as_str(),
        holder.name,
        holder.since.0,
        holder.name,
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
    }
}
