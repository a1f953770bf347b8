//! Objects that hold a VM's layers, as the operator and an agent leave them: a retained
//! snapshot taken of the VM (phase Succeeded, its layer the disk's base) and a backup of it
//! being written. Their status is written as the operator and the agent write it, since
//! these tests are about the VM's cleanup, not about taking snapshots or backups (real ones
//! are in `snapshots.rs` and the system tests).

use ironvisor_crds::labels::OPERATOR_MANAGER;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};

fn api<K>(client: &Client, ns: &str) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(client.clone(), ns)
}

/// Create `object` and write `status` on it as the operator does (server-side apply).
pub async fn create_with_status(
    client: &Client,
    ns: &str,
    resource: kube::api::ApiResource,
    object: serde_json::Value,
    status: serde_json::Value,
) {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource);
    let obj: DynamicObject = serde_json::from_value(object).expect("object");
    let name = obj.metadata.name.clone().expect("name");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("created");
    let patch = serde_json::json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(OPERATOR_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .expect("status written");
}

/// A snapshot `name` of the VM `vm` (uid `vm_uid`) with `policy`, taken on `node`: its
/// layer is the base of disk `disk`.
pub async fn snapshot_taken(
    client: &Client,
    ns: &str,
    name: &str,
    policy: &str,
    (vm, vm_uid): (&str, &str),
    node: &str,
    disk: &str,
) {
    use ironvisor_crds::snapshot::VirtualMachineSnapshot;
    create_with_status(
        client,
        ns,
        kube::api::ApiResource::erase::<VirtualMachineSnapshot>(&()),
        serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachineSnapshot",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"vmName": vm, "retainPolicy": policy},
        }),
        serde_json::json!({
            "phase": "Succeeded",
            "readyToUse": true,
            "vmUid": vm_uid,
            "nodeName": node,
            "disks": [{"name": disk, "layer": "base", "size": "16Mi"}],
        }),
    )
    .await;
}

/// A backup `name` of the VM `vm` (uid `vm_uid`) in phase `phase`, written on `node`.
pub async fn backup_of(
    client: &Client,
    ns: &str,
    name: &str,
    (vm, vm_uid): (&str, &str),
    node: &str,
    phase: &str,
) {
    use ironvisor_crds::backup::VirtualMachineBackup;
    create_with_status(
        client,
        ns,
        kube::api::ApiResource::erase::<VirtualMachineBackup>(&()),
        serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachineBackup",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"vmName": vm, "location": "nowhere"},
        }),
        serde_json::json!({
            "phase": phase,
            "vmName": vm,
            "vmUid": vm_uid,
            "nodeName": node,
        }),
    )
    .await;
}

/// Set backup `name`'s phase, as its writer does when it ends.
pub async fn set_backup_phase(client: &Client, ns: &str, name: &str, phase: &str) {
    use ironvisor_crds::backup::VirtualMachineBackup;
    let patch = serde_json::json!({"status": {"phase": phase}});
    api::<VirtualMachineBackup>(client, ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("backup phase written");
}
