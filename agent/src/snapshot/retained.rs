//! What keeps a deleted VM's directory: snapshots kept after their VM (`retainPolicy:
//! Retain`), whose layers live in the VM's directory (a layer and every layer below it), and
//! backups still copying a snapshot of that VM. Asked of the API by the VM's uid (never its
//! name) before any path removes a VM's directory: the VM's finalizer (a readable or a
//! malformed VM), the leftover sweep, and a migration's source and target. While anything
//! holds the layers only the domain goes; the directory goes with the leftover sweep once
//! nothing does. An API that cannot answer is an error: the caller keeps the directory.
//!
//! (Linked clones reading the VM's disks are found on the host instead, by their pins:
//! [`super::pins::ensure_unused`].)

use ironvisor_crds::backup::{BackupPhase, VirtualMachineBackup};
use ironvisor_crds::snapshot::{RetainPolicy, SnapshotPhase, VirtualMachineSnapshot};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

/// The Event reason on a deleted VM whose directory stays for what still reads it.
pub const DISKS_KEPT: &str = "DisksKept";

/// Whether `snap` keeps the layers of the VM with uid `vm_uid` after that VM is deleted:
/// a `Retain` snapshot of that very VM that holds (or is taking) a layer.
pub fn keeps_layers_of(snap: &VirtualMachineSnapshot, vm_uid: &str) -> bool {
    let Some(st) = snap.status.as_ref() else {
        return false;
    };
    snap.spec.retain_policy == RetainPolicy::Retain
        && !vm_uid.is_empty()
        && st.vm_uid.as_deref() == Some(vm_uid)
        && matches!(
            st.phase,
            SnapshotPhase::InProgress | SnapshotPhase::Succeeded | SnapshotPhase::Deleting
        )
}

/// Whether `backup` is still copying a snapshot's layers of the VM with uid `vm_uid`.
pub fn reads_layers_of(backup: &VirtualMachineBackup, vm_uid: &str) -> bool {
    backup.status.as_ref().is_some_and(|st| {
        st.phase == BackupPhase::InProgress
            && !vm_uid.is_empty()
            && st.vm_uid.as_deref() == Some(vm_uid)
    })
}

/// What the API names that still reads a VM's layers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holders {
    /// Snapshots of the VM with layers in its directory.
    pub snapshots: Vec<String>,
    /// Backups of the VM being written.
    pub backups: Vec<String>,
}

impl Holders {
    /// Whether nothing holds the layers: the directory may go.
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty() && self.backups.is_empty()
    }

    /// For an Event or a log: who holds the layers.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.snapshots.is_empty() {
            parts.push(format!("snapshots {}", self.snapshots.join(", ")));
        }
        if !self.backups.is_empty() {
            parts.push(format!("backups being written {}", self.backups.join(", ")));
        }
        parts.join("; ")
    }
}

/// Whether `snap`, a snapshot of the VM with uid `vm_uid`, holds a layer in that VM's
/// directory on `node` (any retain policy): what a VM that moved to another host leaves
/// behind in its old directory.
pub fn has_layers_on(snap: &VirtualMachineSnapshot, vm_uid: &str, node: &str) -> bool {
    snap.status.as_ref().is_some_and(|st| {
        !vm_uid.is_empty()
            && st.vm_uid.as_deref() == Some(vm_uid)
            && st.node_name.as_deref() == Some(node)
            && matches!(
                st.phase,
                SnapshotPhase::InProgress | SnapshotPhase::Succeeded | SnapshotPhase::Deleting
            )
    })
}

/// Why a VM's directory is about to be removed, which decides what may still hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal<'a> {
    /// The VM is gone: retained snapshots and backups being written hold its layers
    /// (snapshots that go with the VM go too).
    VmGone,
    /// The VM lives on (on another host now): every snapshot whose layers are on this
    /// `node` holds them, whatever its policy.
    VmMoved {
        /// This host.
        node: &'a str,
    },
}

/// What holds the layers of the VM with uid `vm_uid` in namespace `ns` against `removal`,
/// as the API has it now.
pub async fn holders_of(
    client: &Client,
    ns: &str,
    vm_uid: &str,
    removal: Removal<'_>,
) -> kube::Result<Holders> {
    let lp = ListParams::default();
    let snapshots = Api::<VirtualMachineSnapshot>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|s| match removal {
            Removal::VmGone => keeps_layers_of(s, vm_uid),
            Removal::VmMoved { node } => has_layers_on(s, vm_uid, node),
        })
        .map(|s| s.name_any())
        .collect();
    let backups = Api::<VirtualMachineBackup>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|b| reads_layers_of(b, vm_uid))
        .map(|b| b.name_any())
        .collect();
    Ok(Holders { snapshots, backups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::snapshot::VirtualMachineSnapshotStatus;

    fn snap(policy: &str, vm_uid: &str, phase: SnapshotPhase) -> VirtualMachineSnapshot {
        let mut s: VirtualMachineSnapshot = serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "s", "namespace": "team-a"},
            "spec": {"vmName": "web", "retainPolicy": policy},
        }))
        .unwrap();
        s.status = Some(VirtualMachineSnapshotStatus {
            vm_uid: Some(vm_uid.into()),
            phase,
            ..Default::default()
        });
        s
    }

    #[test]
    fn a_retained_snapshot_of_the_vm_keeps_its_layers() {
        assert!(keeps_layers_of(
            &snap("Retain", "u1", SnapshotPhase::Succeeded),
            "u1"
        ));
        assert!(keeps_layers_of(
            &snap("Retain", "u1", SnapshotPhase::InProgress),
            "u1"
        ));
    }

    #[test]
    fn a_default_snapshot_goes_with_the_vm() {
        assert!(!keeps_layers_of(
            &snap("Delete", "u1", SnapshotPhase::Succeeded),
            "u1"
        ));
    }

    #[test]
    fn another_vms_uid_or_a_failed_snapshot_keeps_nothing() {
        // A new VM of the same name has another uid.
        assert!(!keeps_layers_of(
            &snap("Retain", "u1", SnapshotPhase::Succeeded),
            "u2"
        ));
        assert!(!keeps_layers_of(
            &snap("Retain", "", SnapshotPhase::Succeeded),
            ""
        ));
        assert!(!keeps_layers_of(
            &snap("Retain", "u1", SnapshotPhase::Failed),
            "u1"
        ));
        assert!(!keeps_layers_of(
            &snap("Retain", "u1", SnapshotPhase::Pending),
            "u1"
        ));
    }

    fn backup(vm_uid: &str, phase: BackupPhase) -> VirtualMachineBackup {
        let mut b: VirtualMachineBackup = serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachineBackup",
            "metadata": {"name": "b", "namespace": "team-a"},
            "spec": {"vmName": "web", "location": "nfs"},
        }))
        .unwrap();
        b.status = Some(ironvisor_crds::backup::VirtualMachineBackupStatus {
            vm_uid: Some(vm_uid.into()),
            phase,
            ..Default::default()
        });
        b
    }

    #[test]
    fn a_backup_being_written_of_the_vm_holds_its_layers_until_it_ends() {
        assert!(reads_layers_of(
            &backup("u1", BackupPhase::InProgress),
            "u1"
        ));
        assert!(!reads_layers_of(
            &backup("u1", BackupPhase::Succeeded),
            "u1"
        ));
        assert!(!reads_layers_of(&backup("u1", BackupPhase::Failed), "u1"));
        assert!(!reads_layers_of(
            &backup("u1", BackupPhase::InProgress),
            "u2"
        ));
        assert!(!reads_layers_of(&backup("", BackupPhase::InProgress), ""));
    }

    #[test]
    fn the_holders_are_named_for_the_event() {
        let none = Holders::default();
        assert!(none.is_empty());
        let h = Holders {
            snapshots: vec!["keep".into(), "old".into()],
            backups: vec!["nightly".into()],
        };
        assert!(!h.is_empty());
        assert_eq!(
            h.describe(),
            "snapshots keep, old; backups being written nightly"
        );
    }

    #[test]
    fn a_vm_that_moved_leaves_every_snapshot_layer_on_its_old_host_held() {
        let mut s = snap("Delete", "u1", SnapshotPhase::Succeeded);
        s.status.as_mut().unwrap().node_name = Some("h1".into());
        assert!(has_layers_on(&s, "u1", "h1"), "whatever its policy");
        assert!(!has_layers_on(&s, "u1", "h2"), "its layers are on h1");
        assert!(!has_layers_on(&s, "u2", "h1"));
        s.status.as_mut().unwrap().phase = SnapshotPhase::Failed;
        assert!(!has_layers_on(&s, "u1", "h1"));
    }
}
