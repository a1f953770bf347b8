//! The Kubernetes side of restores on this host: a restore the operator handed to this node
//! (phase InProgress, the VM's lock taken, the snapshot's layer recorded) stops the guest,
//! puts a new empty layer on the snapshot's layer of every disk, removes the old active layer
//! when no snapshot needs it, and reports. The VM controller starts the guest again once the
//! operator released the lock.

use super::controller::{Context, Error, disk_names, settle, vm_of_name};
use super::files::{Origin, layer_id};
use super::restore::restore_offline;
use super::state::read_active;
use crate::domain_xml::name::domain_name;
use crate::hypervisor::Hypervisor as _;
use crate::lifecycle::VmState;
use crate::storage::layout;
use futures::StreamExt;
use ironvisor_crds::common::{condition_type, new_condition, set_condition};
use ironvisor_crds::restore::{
    RestorePhase, VirtualMachineRestore, VirtualMachineRestoreStatus, restore_reason,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

fn finished(
    mut s: VirtualMachineRestoreStatus,
    ok: bool,
    reason: &str,
    message: String,
) -> VirtualMachineRestoreStatus {
    let now = Time(jiff::Timestamp::now());
    s.phase = if ok {
        RestorePhase::Succeeded
    } else {
        RestorePhase::Failed
    };
    if ok {
        s.restore_time = Some(now.clone());
    }
    set_condition(
        &mut s.conditions,
        new_condition(condition_type::READY, ok, reason, message, None, now),
    );
    s
}

async fn write(
    ctx: &Context,
    r: &VirtualMachineRestore,
    status: &VirtualMachineRestoreStatus,
) -> Result<(), Error> {
    super::controller::apply_status(ctx, r, status).await
}

/// One reconcile of one restore.
pub async fn reconcile(r: Arc<VirtualMachineRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(status) = r.status.clone() else {
        return Ok(Action::await_change());
    };
    if status.node_name.as_deref() != Some(&ctx.node) || status.phase != RestorePhase::InProgress {
        return Ok(Action::await_change());
    }
    let ns = r.namespace().unwrap_or_default();
    let vm = vm_of_name(&ctx, &ns, &r.spec.vm_name, status.vm_uid.clone()).await?;
    let uid = r.uid().unwrap_or_default();
    let (Some(vm), Some(layer), Some(new_layer)) =
        (vm, status.layer.clone(), layer_id(Origin::Restore, &uid))
    else {
        let msg = format!("VM {} is gone; nothing was restored", r.spec.vm_name);
        write(
            &ctx,
            &r,
            &finished(status, false, restore_reason::VM_NOT_FOUND, msg),
        )
        .await?;
        ctx.metrics.restored(false, None);
        return Ok(Action::await_change());
    };
    let Some(vm_dir) = layout::vm_dir(&ctx.state_dir, vm.metadata.uid.as_deref().unwrap_or(""))
    else {
        return Ok(Action::await_change());
    };
    let domain = domain_name(&ns, &vm.name_any());
    // The operator handed it over: the VM was halted, or stopVM asked to stop it. Powered
    // off, not shut down: its disks are about to be replaced.
    if let Some(o) = ctx.libvirt.observe(&domain).await?
        && matches!(
            o.state,
            VmState::Running | VmState::Paused | VmState::Stopping
        )
    {
        ctx.libvirt.destroy(&domain).await?;
    }
    let disks = disk_names(&vm);
    let tree = ctx
        .layers
        .lock(vm.metadata.uid.as_deref().unwrap_or(""))
        .await;
    let restored = if read_active(&vm_dir) != new_layer {
        restore_offline(&vm_dir, &disks, &layer, &new_layer).await
    } else {
        Ok(())
    };
    // Released before the settle below, which takes it itself.
    drop(tree);
    if let Err(e) = restored {
        let msg = format!("the disks could not be returned to layer {layer}: {e}");
        write(
            &ctx,
            &r,
            &finished(status, false, restore_reason::FAILED, msg),
        )
        .await?;
        ctx.metrics.restored(false, since_created(&r));
        return Ok(Action::await_change());
    }
    if !settle(&ctx, &vm, None).await? {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let msg = format!(
        "the disks hold snapshot {}'s content (layer {layer})",
        r.spec.snapshot_name
    );
    write(
        &ctx,
        &r,
        &finished(status, true, restore_reason::SUCCEEDED, msg),
    )
    .await?;
    ctx.metrics.restored(true, since_created(&r));
    Ok(Action::await_change())
}

/// How long ago the restore was asked for (a restore's duration, stopping the VM included).
fn since_created(r: &VirtualMachineRestore) -> Option<Duration> {
    let created = r.metadata.creation_timestamp.as_ref()?.0;
    Duration::try_from(jiff::Timestamp::now().duration_since(created)).ok()
}

fn error_policy(r: Arc<VirtualMachineRestore>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(restore = %r.name_any(), error = %error, "restore reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Run the restore controller of this node until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let api = Api::<VirtualMachineRestore>::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("status.nodeName={}", ctx.node));
    Controller::new(api, cfg)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "restore reconcile not done");
            }
        })
        .await;
}
