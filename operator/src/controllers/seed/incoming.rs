//! The incoming seed copy of a VM that a live migration moves: while the VM's lock is held by
//! a migration that has chosen its target, the same values as the placed host's copy, sealed
//! to the target host's key, so the target's agent writes the seed ISO before the guest
//! arrives (the domain's CD-ROM path must exist there). Gone as soon as no migration moves
//! the VM (completed: the placed host's copy is then sealed to the new host; failed or
//! cancelled: the guest never left).

use ironvisor_crds::VirtualMachine;
use ironvisor_crds::migration::VirtualMachineMigration;
use ironvisor_crds::vm::OperationKind;
use kube::{Api, Client, ResourceExt};

/// The host a live migration is moving the VM to, and that host's published seed key (`None`
/// while it has published none), when a migration holds the VM's lock and has chosen its
/// target; `None` otherwise.
pub async fn target(
    client: &Client,
    vm: &VirtualMachine,
) -> Result<Option<(String, Option<String>)>, kube::Error> {
    let Some(op) = vm.status.as_ref().and_then(|s| s.operation.as_ref()) else {
        return Ok(None);
    };
    if op.kind != OperationKind::Migration {
        return Ok(None);
    }
    let ns = vm.namespace().unwrap_or_default();
    let m = Api::<VirtualMachineMigration>::namespaced(client.clone(), &ns)
        .get_opt(&op.name)
        .await?;
    let node = m
        .filter(|m| m.metadata.uid.as_deref() == Some(op.uid.as_str()))
        .and_then(|m| m.status)
        .filter(|s| !s.phase.is_terminal())
        .and_then(|s| s.target_node);
    let Some(node) = node else {
        return Ok(None);
    };
    let key = super::seal::host_key(client, &node).await?;
    Ok(Some((node, key)))
}

/// Whether the VM's lock is held by a migration (which may not have chosen its target yet).
pub fn migrating(vm: &VirtualMachine) -> bool {
    vm.status
        .as_ref()
        .and_then(|s| s.operation.as_ref())
        .is_some_and(|o| o.kind == OperationKind::Migration)
}
