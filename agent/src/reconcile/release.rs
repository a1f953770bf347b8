//! Letting a deleted VM go on this host, from its finalizer (a readable VM or a malformed
//! one): its domain always goes; its directory goes only when the API, asked by the VM's
//! uid, names nothing that still reads its layers (a retained snapshot, a backup being
//! written). Otherwise the directory stays whole, a `DisksKept` Event says why, and the
//! leftover sweep asks again every resync period. Never removes on inference: an API that
//! cannot answer is an error, and the finalizer stays until it can.

use super::controller::{Context, Error, publish};
use crate::domain_xml::Owner;
use crate::snapshot::retained::{DISKS_KEPT, Removal, holders_of};
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Resource, ResourceExt};

/// Remove the domain of the deleted VM `owner` and, when nothing holds its layers, its
/// directory. Says whether the directory was kept.
pub async fn release(
    ctx: &Context,
    owner: &Owner,
    reference: &ObjectReference,
) -> Result<bool, Error> {
    let vm = format!("{}/{}", owner.namespace, owner.name);
    let holders = holders_of(&ctx.client, &owner.namespace, &owner.uid, Removal::VmGone).await?;
    if holders.is_empty() {
        ctx.engine.remove_owned(owner).await?;
        tracing::info!(vm, "domain, disks and seed removed");
        return Ok(false);
    }
    ctx.engine.remove_keeping_disks(owner).await?;
    let held_by = holders.describe();
    tracing::info!(
        vm,
        held_by,
        "domain removed; its disks stay for what still reads them"
    );
    let note = format!(
        "the domain was removed; the VM's disks stay on {} for {held_by}, and are removed once \
         nothing holds them",
        ctx.node
    );
    publish(ctx, reference, false, DISKS_KEPT, note).await;
    Ok(true)
}

/// Whether the old directory here of `vm`, which now lives on another host, may go: no
/// snapshot's layers are in it (whatever its policy; the snapshot records this host) and no
/// backup of the VM is being written. When something holds them, a Warning `DisksKept` Event
/// on the VM says so, and the directory stays until the VM and those holders are deleted.
pub async fn moved_dir_free(ctx: &Context, vm: &VirtualMachine) -> Result<bool, kube::Error> {
    let (Some(uid), Some(ns)) = (vm.metadata.uid.as_deref(), vm.metadata.namespace.as_deref())
    else {
        return Ok(false);
    };
    let removal = Removal::VmMoved { node: &ctx.node };
    let holders = holders_of(&ctx.client, ns, uid, removal).await?;
    if holders.is_empty() {
        return Ok(true);
    }
    let held_by = holders.describe();
    tracing::warn!(vm = %format!("{ns}/{}", vm.name_any()), held_by, "the VM moved to another host, but its directory here holds layers others read: kept");
    let note = format!(
        "the VM's old directory on {} is kept: {held_by} read layers in it; it is removed once \
         the VM and those are deleted",
        ctx.node
    );
    publish(ctx, &vm.object_ref(&()), true, DISKS_KEPT, note).await;
    Ok(false)
}
