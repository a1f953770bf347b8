//! `VirtualMachineRestore`: returns a VM's disks to one of its snapshots.
//!
//! The VM's other snapshots stay restorable: the disk chain becomes a tree. The spec is
//! written by users; the status by the operator and the agent of the VM's host.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A request to return a VM's disks to a snapshot.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "VirtualMachineRestore",
    doc = "Returns a VM's disks to one of its snapshots. Refused while the VM runs unless stopVM is true; the VM's other snapshots stay restorable.",
    plural = "virtualmachinerestores",
    singular = "virtualmachinerestore",
    shortname = "vmrestore",
    category = "ironvisor",
    category = "all",
    namespaced,
    status = "VirtualMachineRestoreStatus",
    printcolumn = r#"{"name":"VM","type":"string","jsonPath":".spec.vmName"}"#,
    printcolumn = r#"{"name":"Snapshot","type":"string","jsonPath":".spec.snapshotName"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    selectable = ".status.nodeName"
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self == oldSelf", "message": "a restore is immutable; create another one"}
]))]
pub struct VirtualMachineRestoreSpec {
    /// The VM whose disks are returned, in the same namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub vm_name: String,
    /// The snapshot (of that VM) to return to.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub snapshot_name: String,
    /// Stop a running VM first (it is powered off, not shut down: its disks are about to be
    /// replaced). Without it, a restore of a running VM is refused.
    #[serde(default, rename = "stopVM")]
    pub stop_vm: bool,
}

/// Phase of a restore.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    /// Waiting for the VM's lock, or for the VM to stop.
    #[default]
    Pending,
    /// The agent is returning the disks.
    InProgress,
    /// The disks hold the snapshot's content.
    Succeeded,
    /// Refused or failed (see the conditions); the disks are as they were.
    Failed,
}

impl RestorePhase {
    /// Whether the restore has finished one way or the other (the VM's lock is released).
    pub fn is_terminal(self) -> bool {
        matches!(self, RestorePhase::Succeeded | RestorePhase::Failed)
    }
}

/// Reasons of a restore's Ready condition.
pub mod restore_reason {
    /// The disks hold the snapshot's content.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Being restored by the agent.
    pub const IN_PROGRESS: &str = "InProgress";
    /// The VM runs and stopVM is not set.
    pub const VM_RUNNING: &str = "VMRunning";
    /// Another operation holds the VM.
    pub const VM_BUSY: &str = "VMBusy";
    /// The VM does not exist (or is not placed).
    pub const VM_NOT_FOUND: &str = "VMNotFound";
    /// The snapshot does not exist, is not ready, or is of another VM.
    pub const SNAPSHOT_NOT_READY: &str = "SnapshotNotReady";
    /// The agent failed.
    pub const FAILED: &str = "Failed";
}

/// Observed state of a restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestoreStatus {
    /// Where the restore stands.
    #[serde(default)]
    pub phase: RestorePhase,
    /// Host of the VM's disks (set by the operator when it hands the restore over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Uid of the VM: a later VM of the same name is another VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_uid: Option<String>,
    /// The snapshot's layer the disks return to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// When the disks were returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_time: Option<Time>,
    /// Ready (reason Succeeded, Pending, VMRunning, VMBusy, SnapshotNotReady, Failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
