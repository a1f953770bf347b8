//! The per-VM operation lock: at most one long operation (a migration, a snapshot, a restore,
//! a resize, a reset, a backup) acts on a VM at a time.
//!
//! The lock is `status.operation`, written only by the operator (a ValidatingAdmissionPolicy
//! keeps agents and tenants from changing it) with the VM's resourceVersion as a
//! precondition, so two controllers racing for one VM cannot both win. The holder is the
//! object that drives the operation, named with its uid: a holder that no longer exists (or a
//! namesake with another uid) holds nothing, and the lock can be taken over.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The operation holding a VM's lock.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmOperation {
    /// What kind of operation holds the VM.
    pub kind: OperationKind,
    /// Name of the object driving it, in the VM's namespace (the VM itself for a resize or a
    /// reset).
    pub name: String,
    /// Uid of that object: the lock belongs to this object, not to a later namesake.
    pub uid: String,
    /// When the operation took the lock.
    pub since: Time,
}

/// Kinds of operations that are serialised on one VM.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum OperationKind {
    /// A live migration (`VirtualMachineMigration`).
    Migration,
    /// A snapshot being taken (`VirtualMachineSnapshot`).
    Snapshot,
    /// Disks being returned to a snapshot (`VirtualMachineRestore`).
    Restore,
    /// A backup being exported (`VirtualMachineBackup`).
    Backup,
    /// A grown spec being admitted and applied (held by the VM itself).
    Resize,
    /// A reset (`ivctl restart`, held by the VM itself).
    Reset,
}

impl OperationKind {
    /// The kind as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Migration => "Migration",
            OperationKind::Snapshot => "Snapshot",
            OperationKind::Restore => "Restore",
            OperationKind::Backup => "Backup",
            OperationKind::Resize => "Resize",
            OperationKind::Reset => "Reset",
        }
    }

    /// The plural of the custom resource that drives this kind of operation, when it is not
    /// the VM itself.
    pub fn holder_plural(self) -> Option<&'static str> {
        match self {
            OperationKind::Migration => Some("virtualmachinemigrations"),
            OperationKind::Snapshot => Some("virtualmachinesnapshots"),
            OperationKind::Restore => Some("virtualmachinerestores"),
            OperationKind::Backup => Some("virtualmachinebackups"),
            OperationKind::Resize | OperationKind::Reset => None,
        }
    }
}

impl std::fmt::Display for VmOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}
