//! Backups: `BackupLocation` (cluster-scoped: where backups are written, a directory or NFS
//! export mounted on the hosts) and `VirtualMachineBackup` (namespaced: one export of a VM's
//! disks at a snapshot's instant, as standalone, checksummed qcow2 images plus the VM's
//! manifest).
//!
//! A backup's files live in `<location path>/ironvisor-backups/<backup uid>/`: the directory
//! name derives from the uid the API server gave the backup, never from a name a tenant
//! chose. A VM is restored from a backup by naming it as a disk source (`source.backup`),
//! on any host where the location is available.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::snapshot::Consistency;
use crate::vm::VirtualMachineSpec;

/// The directory under a location's path that holds Ironvisor's backups.
pub const BACKUPS_DIR: &str = "ironvisor-backups";

/// Label on the snapshot the operator takes for a backup of a VM: the backup's uid.
pub const BACKUP_UID_LABEL: &str = "ironvisor.io/backup-uid";

/// A place where backups are written: a directory every host that takes or restores backups
/// mounts at the same path (a local directory, or an NFS export mounted there).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "BackupLocation",
    doc = "Where backups are written: a directory mounted at the same path on the hosts (for example an NFS export). Each host's agent checks it is mounted and writable and reports it in the status.",
    plural = "backuplocations",
    singular = "backuplocation",
    shortname = "backuploc",
    category = "ironvisor",
    status = "BackupLocationStatus",
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.path"}"#,
    printcolumn = r#"{"name":"NFS","type":"string","jsonPath":".spec.nfs.server","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackupLocationSpec {
    /// Absolute path of the location on every host (where the NFS export is mounted).
    /// Immutable: backups already written stay where they are.
    #[schemars(length(min = 2, max = 1024), regex(pattern = r"^/[^\x00]*$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "path is immutable; create another location"},
        {"rule": "!self.matches('(^|/)[.][.](/|$)')", "message": "path must not contain a '..' component"}
    ]))]
    pub path: String,
    /// The NFS export mounted at `path`. When set, a host counts the location as available
    /// only while an NFS file system from this server is mounted exactly at `path` (so a
    /// missing mount never fills the host's own disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NfsExport>,
    /// Most bytes per second one backup reads and writes (e.g. `100Mi`), so backups do not
    /// saturate the storage network; left out, no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('1Mi')) >= 0",
         "message": "bandwidthLimit must be a quantity of at least 1Mi (bytes per second)"}
    ]))]
    pub bandwidth_limit: Option<Quantity>,
}

/// An NFS export.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NfsExport {
    /// The NFS server (host name or address), as in the mount's source `server:/export`.
    #[schemars(length(min = 1, max = 253))]
    pub server: String,
    /// The exported path on the server.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[^\x00]*$"))]
    pub export: String,
}

/// What the hosts found at a location.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupLocationStatus {
    /// One entry per host, written by that host's agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub hosts: Vec<LocationOnHost>,
}

/// A location as one host sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocationOnHost {
    /// The host.
    pub node: String,
    /// Whether backups can be written and read there now.
    pub available: bool,
    /// Why not (NotFound, NotADirectory, NotMounted, NotWritable), or Available.
    pub reason: String,
    /// What the agent found, for people.
    pub message: String,
    /// Free bytes on the file system, when available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<i64>,
    /// When the agent last looked.
    pub last_check_time: Time,
}

impl BackupLocation {
    /// Whether `node` reported the location available.
    pub fn available_on(&self, node: &str) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.hosts.iter().any(|h| h.node == node && h.available))
    }
}

/// A backup of a VM's disks: the disks at a snapshot's instant, each exported as a
/// standalone qcow2 image with its SHA-256, plus the VM's manifest, into a location.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "VirtualMachineBackup",
    doc = "A backup of a VM's disks into a BackupLocation: self-contained, checksummed qcow2 images and the VM's manifest, restorable on any host that mounts the location (as a disk source `backup`).",
    plural = "virtualmachinebackups",
    singular = "virtualmachinebackup",
    shortname = "vmbackup",
    shortname = "vmbackups",
    category = "ironvisor",
    category = "all",
    namespaced,
    status = "VirtualMachineBackupStatus",
    printcolumn = r#"{"name":"VM","type":"string","jsonPath":".status.vmName"}"#,
    printcolumn = r#"{"name":"Location","type":"string","jsonPath":".spec.location"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress","priority":1}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".status.size","description":"Storage the backup counts in the tenant's quota"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    selectable = ".status.nodeName"
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self == oldSelf", "message": "a backup is immutable; create another one"},
    {"rule": "has(self.vmName) != has(self.snapshotName)",
     "message": "set exactly one of vmName (a snapshot is taken for the backup) or snapshotName"}
]))]
pub struct VirtualMachineBackupSpec {
    /// The VM to back up, in the same namespace: the operator takes a snapshot of it for the
    /// backup and deletes that snapshot once the backup is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub vm_name: Option<String>,
    /// A ready snapshot in the same namespace to export (it is left in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub snapshot_name: Option<String>,
    /// The BackupLocation to write to.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub location: String,
}

/// Phase of a backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    /// Waiting for the snapshot, the VM's operation lock or the location.
    #[default]
    Pending,
    /// The agent of the VM's host is copying the disks.
    InProgress,
    /// Written and verified: it can be restored from.
    Succeeded,
    /// It could not be written (see the conditions); nothing of it is left in the location.
    Failed,
}

impl BackupPhase {
    /// Whether the backup has finished one way or the other (the VM's lock is released).
    pub fn is_terminal(self) -> bool {
        matches!(self, BackupPhase::Succeeded | BackupPhase::Failed)
    }
}

/// One disk in a backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDisk {
    /// The disk's name in the VM.
    pub name: String,
    /// The image's file name in the backup's directory (made by the agent: `disk-<n>.qcow2`).
    pub file: String,
    /// SHA-256 of the image file: checked before any restore.
    pub sha256: String,
    /// The disk's virtual size in bytes.
    pub virtual_size: i64,
    /// Bytes of the image file.
    pub bytes: i64,
}

/// Observed state of a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineBackupStatus {
    /// Where the backup stands.
    #[serde(default)]
    pub phase: BackupPhase,
    /// The VM backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_name: Option<String>,
    /// Uid of that VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_uid: Option<String>,
    /// The snapshot exported (for a backup of a VM, the one the operator took for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// The snapshot's layer the images are made from (on the VM's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The host that writes the backup (the VM's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// How consistent the disks are (the snapshot's consistency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// Storage the backup counts in the tenant's quota: the declared sizes of the disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// Bytes the images occupy in the location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// How far the copy got, e.g. `disk 1/2 (data): 43%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The images, each with its checksum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<BackupDisk>,
    /// The VM's spec when the snapshot was taken (also in the backup's `manifest.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_spec: Option<VirtualMachineSpec>,
    /// When the copy started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the backup was written and verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Ready (reason Succeeded, Pending, SnapshotPending, InProgress, VMBusy, VMNotFound,
    /// SnapshotNotReady, LocationNotFound, LocationUnavailable, QuotaExceeded, Failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Reasons of a backup's Ready condition.
pub mod backup_reason {
    /// Written and verified.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Waiting for the snapshot the operator took for the backup.
    pub const SNAPSHOT_PENDING: &str = "SnapshotPending";
    /// Being copied.
    pub const IN_PROGRESS: &str = "InProgress";
    /// Another operation holds the VM.
    pub const VM_BUSY: &str = "VMBusy";
    /// The VM does not exist (or is not placed).
    pub const VM_NOT_FOUND: &str = "VMNotFound";
    /// The snapshot does not exist, failed, or its VM is gone.
    pub const SNAPSHOT_NOT_READY: &str = "SnapshotNotReady";
    /// The BackupLocation does not exist.
    pub const LOCATION_NOT_FOUND: &str = "LocationNotFound";
    /// The VM's host does not report the location available.
    pub const LOCATION_UNAVAILABLE: &str = "LocationUnavailable";
    /// The tenant's storage quota has no room for the backup.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// The agent failed to write it.
    pub const FAILED: &str = "Failed";
}

impl VirtualMachineBackup {
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
    fn only_finished_phases_are_terminal() {
        use BackupPhase::*;
        for (p, t) in [
            (Pending, false),
            (InProgress, false),
            (Succeeded, true),
            (Failed, true),
        ] {
            assert_eq!(p.is_terminal(), t, "{p:?}");
        }
    }

    #[test]
    fn a_location_is_available_only_on_the_hosts_that_said_so() {
        let mut l = BackupLocation::new(
            "nfs",
            BackupLocationSpec {
                path: "/mnt/backups".into(),
                nfs: None,
                bandwidth_limit: None,
            },
        );
        let on = |node: &str, available| LocationOnHost {
            node: node.into(),
            available,
            reason: String::new(),
            message: String::new(),
            free_bytes: None,
            last_check_time: Time(Default::default()),
        };
        assert!(!l.available_on("a"));
        l.status = Some(BackupLocationStatus {
            hosts: vec![on("a", true), on("b", false)],
        });
        assert!(l.available_on("a"));
        assert!(!l.available_on("b"));
        assert!(!l.available_on("c"));
    }
}
