//! `VirtualMachineSnapshot`: a point-in-time copy of all of a VM's disks.
//!
//! Disk-only: the guest's memory is not saved, so restoring a snapshot boots the guest from
//! its disks as after a power cut (or a clean freeze, see [`Consistency`]). The spec is
//! written by users; the status by the operator (lock, phase) and by the agent of the VM's
//! host (layers, sizes, consistency), each with its own field manager.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::vm::VirtualMachineSpec;

/// A snapshot of a VM's disks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "VirtualMachineSnapshot",
    doc = "A point-in-time copy of all of a VM's disks (disk-only: memory is not saved). Crash-consistent for a running VM, filesystem-consistent when a guest agent freezes the guest's filesystems.",
    plural = "virtualmachinesnapshots",
    singular = "virtualmachinesnapshot",
    shortname = "vmsnap",
    shortname = "vmsnaps",
    category = "ironvisor",
    category = "all",
    namespaced,
    status = "VirtualMachineSnapshotStatus",
    printcolumn = r#"{"name":"VM","type":"string","jsonPath":".spec.vmName","description":"The VM whose disks this snapshot holds"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.readyToUse","description":"Whether the snapshot can be restored or cloned from"}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".status.size","description":"Storage the snapshot counts in the tenant's quota"}"#,
    printcolumn = r#"{"name":"Consistency","type":"string","jsonPath":".status.consistency","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    selectable = ".spec.vmName",
    selectable = ".status.nodeName"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotSpec {
    /// The VM to snapshot, in the same namespace. Immutable.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "vmName is immutable; take another snapshot"}
    ]))]
    pub vm_name: String,
    /// What happens to the snapshot when its VM is deleted: Delete (the default: it goes
    /// with the VM) or Retain (it stays, and its storage stays counted in the quota).
    #[serde(default)]
    pub retain_policy: RetainPolicy,
    /// Freeze the guest's filesystems through the QEMU guest agent while the snapshot is
    /// taken: Auto (when an agent answers, the default), Required (fail without one), or
    /// Never (crash-consistent).
    #[serde(default)]
    pub freeze: FreezePolicy,
}

/// What happens to a snapshot when its VM is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RetainPolicy {
    /// The snapshot is deleted with its VM.
    #[default]
    Delete,
    /// The snapshot is kept (and counted) after its VM is deleted.
    Retain,
}

/// Whether the guest's filesystems are frozen for a snapshot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FreezePolicy {
    /// Freeze when a QEMU guest agent answers; crash-consistent otherwise.
    #[default]
    Auto,
    /// Fail the snapshot when no guest agent answers.
    Required,
    /// Never freeze: crash-consistent.
    Never,
}

/// How consistent a snapshot's disks are.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Consistency {
    /// Applications were quiesced by the guest agent's hooks as well (fsfreeze hooks).
    Application,
    /// The guest's filesystems were frozen (flushed and quiet) during the snapshot.
    FileSystem,
    /// All disks at one instant, as after a power cut: journaling filesystems recover.
    Crash,
    /// The VM was halted: the disks were closed cleanly or as the guest left them.
    Offline,
}

/// Phase of a snapshot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SnapshotPhase {
    /// Waiting for the VM's operation lock or its host.
    #[default]
    Pending,
    /// The agent is taking it.
    InProgress,
    /// Taken: it can be restored or cloned from.
    Succeeded,
    /// It could not be taken (see the conditions); nothing of it is left on the host.
    Failed,
    /// Being deleted: its layer is merged where the tree allows.
    Deleting,
}

impl SnapshotPhase {
    /// Whether the snapshot has finished one way or the other (the VM's lock is released).
    pub fn is_terminal(self) -> bool {
        matches!(self, SnapshotPhase::Succeeded | SnapshotPhase::Failed)
    }
}

/// One disk in a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDisk {
    /// The disk's name in the VM.
    pub name: String,
    /// The layer that holds the disk's content at the snapshot's instant (on the VM's host).
    pub layer: String,
    /// The disk's virtual size: what the layer counts in the storage quota.
    pub size: Quantity,
    /// Bytes the layer occupies on the host now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_bytes: Option<i64>,
}

/// Observed state of a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotStatus {
    /// Where the snapshot stands.
    #[serde(default)]
    pub phase: SnapshotPhase,
    /// Whether it can be restored or cloned from.
    #[serde(default)]
    pub ready_to_use: bool,
    /// Uid of the VM it was taken of: a later VM of the same name is another VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_uid: Option<String>,
    /// Host the layers are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// When the disks were frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    /// How consistent the disks are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// Storage the snapshot counts in the tenant's quota: the sum of its disks' sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// The disks, each with its layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<SnapshotDisk>,
    /// The VM's spec when the snapshot was taken (a restore may bring it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_spec: Option<VirtualMachineSpec>,
    /// Ready (reason Succeeded, Pending, InProgress, VMBusy, VMNotFound, QuotaExceeded,
    /// GuestAgentRequired, Failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Reasons of a snapshot's Ready condition.
pub mod snapshot_reason {
    /// Taken and usable.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Waiting for the operator.
    pub const PENDING: &str = "Pending";
    /// Being taken.
    pub const IN_PROGRESS: &str = "InProgress";
    /// Another operation holds the VM.
    pub const VM_BUSY: &str = "VMBusy";
    /// The VM does not exist (or is not placed on a host).
    pub const VM_NOT_FOUND: &str = "VMNotFound";
    /// The tenant's storage quota has no room for the snapshot's layers.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// freeze: Required, and no guest agent answered.
    pub const GUEST_AGENT_REQUIRED: &str = "GuestAgentRequired";
    /// The VM has as many snapshots as it may have.
    pub const TOO_MANY_SNAPSHOTS: &str = "TooManySnapshots";
    /// The agent failed to take it.
    pub const FAILED: &str = "Failed";
    /// A block job (the merge of a deleted snapshot) runs on a disk of the VM: the snapshot
    /// waits for it to end.
    pub const WAITING_FOR_BLOCK_JOB: &str = "WaitingForBlockJob";
}

impl VirtualMachineSnapshot {
    /// `namespace/name`, for messages and logs.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_snapshot_defaults_to_auto_freeze_and_going_with_its_vm() {
        let s: VirtualMachineSnapshotSpec =
            serde_json::from_value(serde_json::json!({"vmName": "web"})).unwrap();
        assert_eq!(s.retain_policy, RetainPolicy::Delete);
        assert_eq!(s.freeze, FreezePolicy::Auto);
    }

    #[test]
    fn only_finished_phases_are_terminal() {
        use SnapshotPhase::*;
        for (p, t) in [
            (Pending, false),
            (InProgress, false),
            (Succeeded, true),
            (Failed, true),
            (Deleting, false),
        ] {
            assert_eq!(p.is_terminal(), t, "{p:?}");
        }
    }
}
