//! Whether a snapshot goes with its VM: with `retainPolicy: Delete` (the default) the
//! snapshot gets an ownerReference to the VM it was taken of (by the uid recorded in its
//! status, never by name alone), so garbage collection deletes it in the background when
//! the VM goes. With `Retain` it has none: it stays, and its storage stays counted.
//!
//! The policy may change later: the reference follows it, both ways, but only while the VM
//! exists with the recorded uid and is not being deleted. Once the VM's deletion started, its
//! agent may have removed (Delete) or kept (Retain) the layers already, so the snapshot keeps
//! what it had; and a reference to a VM that is gone would have the collector delete the
//! snapshot at once, which a policy flip must never do.

use ironvisor_crds::snapshot::{RetainPolicy, VirtualMachineSnapshot};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

const VM_KIND: &str = "VirtualMachine";
const VM_API_VERSION: &str = "ironvisor.io/v1alpha1";

fn recorded_vm_uid(snap: &VirtualMachineSnapshot) -> Option<&str> {
    snap.status
        .as_ref()?
        .vm_uid
        .as_deref()
        .filter(|u| !u.is_empty())
}

/// The ownerReference `snap` should carry: to the VM `ns/spec.vmName` whose uid the status
/// recorded, for `Delete`; `None` for `Retain` or while no uid is recorded.
pub fn wanted_owner(snap: &VirtualMachineSnapshot) -> Option<OwnerReference> {
    if snap.spec.retain_policy == RetainPolicy::Retain {
        return None;
    }
    Some(OwnerReference {
        api_version: VM_API_VERSION.into(),
        kind: VM_KIND.into(),
        name: snap.spec.vm_name.clone(),
        uid: recorded_vm_uid(snap)?.to_owned(),
        // Not the snapshot's controller, and the VM's deletion never waits for it.
        controller: None,
        block_owner_deletion: None,
    })
}

/// Whether `r` points at the VM the snapshot was taken of (by the recorded uid).
fn is_vm_owner(r: &OwnerReference, vm_uid: &str) -> bool {
    r.kind == VM_KIND && r.api_version.starts_with("ironvisor.io/") && r.uid == vm_uid
}

/// The ownerReferences `snap` should have, when they differ from what it has: the VM's
/// reference added for `Delete`, removed for `Retain`; every other owner kept.
pub fn wanted_refs(snap: &VirtualMachineSnapshot) -> Option<Vec<OwnerReference>> {
    let vm_uid = recorded_vm_uid(snap)?;
    let refs = snap.metadata.owner_references.clone().unwrap_or_default();
    let has = refs.iter().any(|r| is_vm_owner(r, vm_uid));
    match wanted_owner(snap) {
        Some(want) if !has => {
            let mut refs = refs;
            refs.push(want);
            Some(refs)
        }
        None if has => Some(
            refs.into_iter()
                .filter(|r| !is_vm_owner(r, vm_uid))
                .collect(),
        ),
        _ => None,
    }
}

/// The merge patch that sets the snapshot's ownerReferences to `refs`. The resourceVersion
/// makes it fail on a concurrent change (the list is replaced whole); the next reconcile
/// then sees the new list.
pub fn refs_patch(snap: &VirtualMachineSnapshot, refs: &[OwnerReference]) -> serde_json::Value {
    serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": snap.metadata.resource_version,
    }})
}

/// Whether the VM (as the API has it under the snapshot's `vmName`) may have its reference
/// moved now: it is the VM the snapshot recorded and its deletion has not started.
pub fn may_move(
    snap: &VirtualMachineSnapshot,
    vm: Option<&ironvisor_crds::vm::VirtualMachine>,
) -> bool {
    vm.is_some_and(|vm| {
        vm.metadata.deletion_timestamp.is_none()
            && vm.metadata.uid.as_deref().is_some()
            && vm.metadata.uid.as_deref() == recorded_vm_uid(snap)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::snapshot::VirtualMachineSnapshotStatus;
    use ironvisor_crds::vm::VirtualMachine;

    fn snap(policy: &str, vm_uid: Option<&str>) -> VirtualMachineSnapshot {
        let mut s: VirtualMachineSnapshot = serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "s", "namespace": "team-a", "uid": "snap-uid", "resourceVersion": "7"},
            "spec": {"vmName": "web", "retainPolicy": policy},
        }))
        .unwrap();
        s.status = Some(VirtualMachineSnapshotStatus {
            vm_uid: vm_uid.map(str::to_owned),
            ..Default::default()
        });
        s
    }

    fn other_owner() -> OwnerReference {
        OwnerReference {
            api_version: "ironvisor.io/v1alpha1".into(),
            kind: "VirtualMachineBackup".into(),
            name: "nightly".into(),
            uid: "backup-uid".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }
    }

    fn vm(uid: &str, deleting: bool) -> VirtualMachine {
        let mut vm: VirtualMachine = serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": "team-a", "uid": uid},
            "spec": {"memory": {"size": "64Mi"}},
        }))
        .unwrap();
        if deleting {
            vm.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::from_second(1).unwrap(),
                ));
        }
        vm
    }

    #[test]
    fn the_default_policy_owns_the_snapshot_by_the_recorded_vm_uid() {
        let want = wanted_owner(&snap("Delete", Some("vm-uid-1"))).unwrap();
        assert_eq!(
            (want.kind.as_str(), want.name.as_str(), want.uid.as_str()),
            ("VirtualMachine", "web", "vm-uid-1")
        );
        assert_eq!(want.controller, None);
        let refs = wanted_refs(&snap("Delete", Some("vm-uid-1"))).expect("added");
        assert_eq!(refs, vec![want]);
    }

    #[test]
    fn a_retained_snapshot_has_no_owner() {
        let s = snap("Retain", Some("vm-uid-1"));
        assert_eq!(wanted_owner(&s), None);
        assert_eq!(wanted_refs(&s), None, "nothing to change");
    }

    #[test]
    fn no_owner_before_the_vm_uid_is_recorded() {
        assert_eq!(wanted_owner(&snap("Delete", None)), None);
        assert_eq!(wanted_owner(&snap("Delete", Some(""))), None);
        assert_eq!(wanted_refs(&snap("Delete", None)), None);
    }

    #[test]
    fn switching_to_retain_drops_the_vms_reference_and_keeps_other_owners() {
        let mut s = snap("Delete", Some("vm-uid-1"));
        let vm_ref = wanted_owner(&s).unwrap();
        s.metadata.owner_references = Some(vec![other_owner(), vm_ref]);
        assert_eq!(wanted_refs(&s), None, "Delete with its reference: settled");
        s.spec.retain_policy = RetainPolicy::Retain;
        let refs = wanted_refs(&s).expect("the VM's reference goes");
        assert_eq!(refs, vec![other_owner()]);
        let patch = refs_patch(&s, &refs);
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        assert_eq!(
            patch["metadata"]["ownerReferences"][0]["kind"],
            "VirtualMachineBackup"
        );
        s.metadata.owner_references = Some(refs);
        assert_eq!(wanted_refs(&s), None, "settled");
    }

    #[test]
    fn switching_back_to_delete_adds_it_again() {
        let mut s = snap("Retain", Some("vm-uid-1"));
        s.metadata.owner_references = Some(vec![other_owner()]);
        s.spec.retain_policy = RetainPolicy::Delete;
        let refs = wanted_refs(&s).expect("the VM's reference comes");
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0], other_owner());
        assert_eq!(refs[1].uid, "vm-uid-1");
    }

    #[test]
    fn an_owner_of_another_uid_is_not_the_wanted_one() {
        let mut s = snap("Delete", Some("vm-uid-2"));
        let old = wanted_owner(&snap("Delete", Some("vm-uid-1"))).unwrap();
        s.metadata.owner_references = Some(vec![old.clone()]);
        let refs = wanted_refs(&s).expect("added");
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1].uid, "vm-uid-2");
        // Retain drops only the recorded VM's reference: another uid's is not ours to judge.
        let mut s = snap("Retain", Some("vm-uid-2"));
        s.metadata.owner_references = Some(vec![old]);
        assert_eq!(wanted_refs(&s), None);
    }

    #[test]
    fn the_reference_moves_only_while_the_recorded_vm_lives() {
        let s = snap("Retain", Some("vm-uid-1"));
        assert!(may_move(&s, Some(&vm("vm-uid-1", false))));
        assert!(
            !may_move(&s, None),
            "the VM is gone: a reference would delete the snapshot"
        );
        assert!(
            !may_move(&s, Some(&vm("vm-uid-2", false))),
            "a namesake is another VM"
        );
        assert!(
            !may_move(&s, Some(&vm("vm-uid-1", true))),
            "its deletion started: its agent may have acted on the old policy already"
        );
    }
}
