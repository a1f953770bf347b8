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
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
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

/// Observed state of a restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestoreStatus {
    /// Where the restore stands.
    #[serde(default)]
    pub phase: RestorePhase,
    /// When the disks were returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_time: Option<Time>,
    /// Ready (reason Succeeded, Pending, VMRunning, VMBusy, SnapshotNotReady, Failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
