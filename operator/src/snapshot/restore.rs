//! Hands restores to the VM's host: refuses one while the VM runs unless `stopVM` is set,
//! checks that the snapshot is ready and of this very VM, takes the VM's operation lock for
//! the restore (the agent then keeps the guest off), records the host, the VM's uid and the
//! snapshot's layer (phase InProgress), and gives the lock back once the agent finished.
//! Never touches the VM's spec: a restore returns the disks only (see docs/snapshots.md).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ironvisor_crds::restore::{
    RestorePhase, VirtualMachineRestore, VirtualMachineRestoreStatus, restore_reason,
};
use ironvisor_crds::snapshot::{SnapshotPhase, VirtualMachineSnapshot};
use ironvisor_crds::vm::{OperationKind, Phase, RunStrategy, VirtualMachine};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::controller::Error;
use crate::leader::Leadership;
use crate::oplock::{self, Acquired, Holder};
use crate::status_write::{self, set_ready};

const WAIT: Duration = Duration::from_secs(5);

/// What the restore controller needs.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Only the leader writes.
    pub leadership: Leadership,
}

fn holder(r: &VirtualMachineRestore) -> Holder {
    Holder {
        kind: OperationKind::Restore,
        name: r.name_any(),
        uid: r.uid().unwrap_or_default(),
    }
}

async fn write(
    ctx: &Ctx,
    r: &VirtualMachineRestore,
    mut s: VirtualMachineRestoreStatus,
    phase: RestorePhase,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    s.phase = phase;
    set_ready(
        &mut s.conditions,
        phase == RestorePhase::Succeeded,
        reason,
        message,
        None,
    );
    status_write::apply(&ctx.client, r, &s).await?;
    Ok(())
}

/// Whether the guest runs or is meant to (a restore would race its next start).
fn runs(vm: &VirtualMachine) -> bool {
    let phase = vm.status.as_ref().and_then(|s| s.phase);
    vm.spec.run_strategy != RunStrategy::Halted
        || matches!(
            phase,
            Some(Phase::Running | Phase::Starting | Phase::Stopping)
        )
}

async fn start(r: &VirtualMachineRestore, ctx: &Ctx) -> Result<Action, Error> {
    let ns = r.namespace().unwrap_or_default();
    let status = r.status.clone().unwrap_or_default();
    let vm = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&r.spec.vm_name)
        .await?;
    let Some((vm, node)) = vm.and_then(|v| {
        let n = v.status.as_ref()?.node_name.clone()?;
        Some((v, n))
    }) else {
        let msg = format!("VM {} does not exist or is not placed", r.spec.vm_name);
        write(
            ctx,
            r,
            status,
            RestorePhase::Pending,
            restore_reason::VM_NOT_FOUND,
            msg,
        )
        .await?;
        return Ok(Action::requeue(WAIT));
    };
    let snap = Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&r.spec.snapshot_name)
        .await?;
    let layer = snap.as_ref().and_then(|s| {
        let st = s.status.as_ref()?;
        let ours = st.vm_uid == vm.metadata.uid && st.phase == SnapshotPhase::Succeeded;
        ours.then(|| st.disks.first().map(|d| d.layer.clone()))?
    });
    let Some(layer) = layer else {
        let msg = format!(
            "snapshot {} does not exist, is not ready, or is not of VM {}",
            r.spec.snapshot_name, r.spec.vm_name
        );
        let reason = restore_reason::SNAPSHOT_NOT_READY;
        write(ctx, r, status, RestorePhase::Failed, reason, msg).await?;
        return Ok(Action::await_change());
    };
    if runs(&vm) && !r.spec.stop_vm {
        let msg = format!(
            "VM {} is running (or set to run): stop it first (ivctl stop {}), or set \
             stopVM: true to have it powered off for the restore",
            r.spec.vm_name, r.spec.vm_name
        );
        write(
            ctx,
            r,
            status,
            RestorePhase::Failed,
            restore_reason::VM_RUNNING,
            msg,
        )
        .await?;
        return Ok(Action::await_change());
    }
    let now = jiff::Timestamp::now();
    match oplock::acquire(&ctx.client, &ns, &r.spec.vm_name, &holder(r), now).await? {
        Acquired::Busy(op) => {
            let msg = oplock::busy_message(&vm.key(), &op);
            write(
                ctx,
                r,
                status,
                RestorePhase::Pending,
                restore_reason::VM_BUSY,
                msg,
            )
            .await?;
            Ok(Action::requeue(WAIT))
        }
        Acquired::Held | Acquired::TookOver(_) => {
            let mut s = status;
            s.node_name = Some(node.clone());
            s.vm_uid = vm.metadata.uid.clone();
            s.layer = Some(layer);
            let msg = format!("the agent of {node} is returning the disks");
            let reason = restore_reason::IN_PROGRESS;
            write(ctx, r, s, RestorePhase::InProgress, reason, msg).await?;
            Ok(Action::await_change())
        }
    }
}

async fn reconcile(r: Arc<VirtualMachineRestore>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    let phase = r.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if phase.is_terminal() || r.metadata.deletion_timestamp.is_some() {
        let ns = r.namespace().unwrap_or_default();
        oplock::release(&ctx.client, &ns, &r.spec.vm_name, &holder(&r)).await?;
        return Ok(Action::await_change());
    }
    match phase {
        RestorePhase::Pending => start(&r, &ctx).await,
        _ => Ok(Action::await_change()),
    }
}

fn error_policy(r: Arc<VirtualMachineRestore>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(restore = %r.name_any(), error = %e, "restore step failed; retrying");
    Action::requeue(WAIT)
}

/// Run until the process ends; every restore is looked at again when this replica leads.
pub async fn run(ctx: Ctx) {
    let api = Api::<VirtualMachineRestore>::all(ctx.client.clone());
    let leads = ctx.leadership.terms();
    Controller::new(api, watcher::Config::default())
        .reconcile_all_on(leads)
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|_| futures::future::ready(()))
        .await;
}
