//! Whether a snapshot goes with its VM: with `retainPolicy: Delete` (the default) the
//! snapshot gets an ownerReference to the VM it was taken of (by the uid recorded in its
//! status, never by name alone), so garbage collection deletes it in the background when
//! the VM goes. With `Retain` it has none: it stays, and its storage stays counted.

use ironvisor_crds::snapshot::{RetainPolicy, VirtualMachineSnapshot};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// The ownerReference `snap` should carry: to the VM `ns/spec.vmName` whose uid the status
/// recorded, for `Delete`; `None` for `Retain` or while no uid is recorded.
pub fn wanted_owner(snap: &VirtualMachineSnapshot) -> Option<OwnerReference> {
    if snap.spec.retain_policy == RetainPolicy::Retain {
        return None;
    }
    let uid = snap.status.as_ref()?.vm_uid.clone()?;
    if uid.is_empty() {
        return None;
    }
    Some(OwnerReference {
        api_version: "ironvisor.io/v1alpha1".into(),
        kind: "VirtualMachine".into(),
        name: snap.spec.vm_name.clone(),
        uid,
        // Not the snapshot's controller, and the VM's deletion never waits for it.
        controller: None,
        block_owner_deletion: None,
    })
}

/// Whether `snap` already carries the wanted ownerReference (or needs none).
pub fn has_wanted_owner(snap: &VirtualMachineSnapshot) -> bool {
    match wanted_owner(snap) {
        None => true,
        Some(want) => snap
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == want.uid && r.kind == want.kind),
    }
}

/// The merge patch that adds `want` to the snapshot's ownerReferences (keeping others).
pub fn owner_patch(snap: &VirtualMachineSnapshot, want: OwnerReference) -> serde_json::Value {
    let mut refs = snap.metadata.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != want.uid);
    refs.push(want);
    serde_json::json!({"metadata": {"ownerReferences": refs}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::snapshot::VirtualMachineSnapshotStatus;

    fn snap(policy: &str, vm_uid: Option<&str>) -> VirtualMachineSnapshot {
        let mut s: VirtualMachineSnapshot = serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "s", "namespace": "team-a", "uid": "snap-uid"},
            "spec": {"vmName": "web", "retainPolicy": policy},
        }))
        .unwrap();
        s.status = Some(VirtualMachineSnapshotStatus {
            vm_uid: vm_uid.map(str::to_owned),
            ..Default::default()
        });
        s
    }

    #[test]
    fn the_default_policy_owns_the_snapshot_by_the_recorded_vm_uid() {
        let want = wanted_owner(&snap("Delete", Some("vm-uid-1"))).unwrap();
        assert_eq!(
            (want.kind.as_str(), want.name.as_str(), want.uid.as_str()),
            ("VirtualMachine", "web", "vm-uid-1")
        );
        assert_eq!(want.controller, None);
    }

    #[test]
    fn a_retained_snapshot_has_no_owner() {
        let s = snap("Retain", Some("vm-uid-1"));
        assert_eq!(wanted_owner(&s), None);
        assert!(has_wanted_owner(&s));
    }

    #[test]
    fn no_owner_before_the_vm_uid_is_recorded() {
        assert_eq!(wanted_owner(&snap("Delete", None)), None);
        assert_eq!(wanted_owner(&snap("Delete", Some(""))), None);
    }

    #[test]
    fn an_owner_of_another_uid_is_not_the_wanted_one() {
        let mut s = snap("Delete", Some("vm-uid-2"));
        let mut old = wanted_owner(&snap("Delete", Some("vm-uid-1"))).unwrap();
        old.name = "web".into();
        s.metadata.owner_references = Some(vec![old]);
        assert!(!has_wanted_owner(&s));
        let patch = owner_patch(&s, wanted_owner(&s).unwrap());
        let refs = patch["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1]["uid"], "vm-uid-2");
        s.metadata.owner_references =
            serde_json::from_value(patch["metadata"]["ownerReferences"].clone()).unwrap();
        assert!(has_wanted_owner(&s));
    }
}
