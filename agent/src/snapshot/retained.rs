//! Snapshots kept after their VM (`retainPolicy: Retain`): their layers live in the VM's
//! directory (a layer and every layer below it), so a deleted VM's directory stays while
//! the API names a retained snapshot of that VM (by the VM's uid, never its name). The
//! directory goes with the leftover sweep once the last one is deleted.

use ironvisor_crds::snapshot::{RetainPolicy, SnapshotPhase, VirtualMachineSnapshot};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

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

/// The names of the snapshots in `ns` that keep the layers of the VM with uid `vm_uid`,
/// as the API has them now.
pub async fn retained_of(client: &Client, ns: &str, vm_uid: &str) -> kube::Result<Vec<String>> {
    let api = Api::<VirtualMachineSnapshot>::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| keeps_layers_of(s, vm_uid))
        .map(|s| s.name_any())
        .collect())
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
}
