//! Hands snapshots to the VM's host: checks the storage quota, takes the VM's operation lock
//! for the snapshot, records the host, the VM's uid and spec and the size in the status
//! (phase InProgress), and gives the lock back once the agent finished (Succeeded or
//! Failed). Only the leader writes. The agent takes the snapshot; this never touches disks.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ironvisor_crds::quantity::format_bytes;
use ironvisor_crds::snapshot::{
    SnapshotPhase, VirtualMachineSnapshot, VirtualMachineSnapshotStatus, snapshot_reason,
};
use ironvisor_crds::vm::{OperationKind, VirtualMachine};
use ironvisor_crds::{Quota, Tenant};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::owner;
use super::quota::{SnapshotRefusal, admit_snapshot, snapshot_demand};
use crate::leader::Leadership;
use crate::oplock::{self, Acquired, Holder, LockError};
use crate::quota::{Ledger, QuotaEntry, Reserved, TenantNode, TenantTree};
use crate::status_write::{self, set_ready};
use crate::units::{Limits, Units};

/// How soon a waiting snapshot is looked at again (the lock holder may have finished).
const WAIT: Duration = Duration::from_secs(5);

/// What the snapshot controller needs.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Only the leader writes.
    pub leadership: Leadership,
    /// Namespaces no tenant may own.
    pub reserved: Reserved,
    /// The tenant of namespaces no tenant owns.
    pub default_tenant: Option<String>,
}

/// Why a snapshot step failed (retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call.
    #[error("Kubernetes API call failed")]
    Kube(#[from] kube::Error),
    /// The VM's lock could not be written.
    #[error(transparent)]
    Lock(#[from] LockError),
}

fn holder(snap: &VirtualMachineSnapshot) -> Holder {
    Holder {
        kind: OperationKind::Snapshot,
        name: snap.name_any(),
        uid: snap.uid().unwrap_or_default(),
    }
}

async fn write(
    ctx: &Ctx,
    snap: &VirtualMachineSnapshot,
    status: &VirtualMachineSnapshotStatus,
) -> Result<(), Error> {
    status_write::apply(&ctx.client, snap, status).await?;
    Ok(())
}

fn with_ready(
    mut s: VirtualMachineSnapshotStatus,
    phase: SnapshotPhase,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> VirtualMachineSnapshotStatus {
    s.phase = phase;
    s.observed_generation = generation;
    let ok = phase == SnapshotPhase::Succeeded;
    set_ready(&mut s.conditions, ok, reason, message, generation);
    s
}

/// A ledger of the tenants' storage: admitted VMs, snapshots that hold layers and backups
/// that hold images (all but the object `except`).
pub(crate) async fn storage_ledger(ctx: &Ctx, except: &str) -> Result<Ledger, Error> {
    let lp = ListParams::default();
    let tenants = Api::<Tenant>::all(ctx.client.clone())
        .list(&lp)
        .await?
        .items;
    let tree = TenantTree::with_reserved(
        tenants.iter().map(TenantNode::from_tenant),
        ctx.reserved.clone(),
    );
    let quotas = Api::<Quota>::all(ctx.client.clone())
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter_map(|q| {
            Some(QuotaEntry {
                name: q.name_any(),
                tenant: q.spec.tenant.clone(),
                limits: Limits::parse(&q.spec.hard).ok()?,
            })
        })
        .collect();
    let mut ledger = Ledger::new(tree, quotas).with_default_tenant(ctx.default_tenant.clone());
    for vm in Api::<VirtualMachine>::all(ctx.client.clone())
        .list(&lp)
        .await?
        .items
    {
        let admitted = vm
            .status
            .as_ref()
            .and_then(|s| s.admitted.as_ref())
            .and_then(Units::from_admitted);
        if let Some(u) = admitted {
            ledger.add(&vm.namespace().unwrap_or_default(), u.non_compute());
        }
    }
    for s in Api::<VirtualMachineSnapshot>::all(ctx.client.clone())
        .list(&lp)
        .await?
        .items
    {
        let holds = s.status.as_ref().is_some_and(|st| {
            matches!(
                st.phase,
                SnapshotPhase::InProgress | SnapshotPhase::Succeeded | SnapshotPhase::Deleting
            )
        });
        let spec = s.status.as_ref().and_then(|st| st.vm_spec.as_ref());
        if let (true, Some(spec), false) = (holds, spec, s.uid().as_deref() == Some(except))
            && let Ok(u) = snapshot_demand(spec)
        {
            ledger.add(&s.namespace().unwrap_or_default(), u);
        }
    }
    crate::backup::quota::count_backups(&ctx.client, &mut ledger, except).await?;
    Ok(ledger)
}

/// A snapshot that has not been handed to a host yet.
async fn start(snap: &VirtualMachineSnapshot, ctx: &Ctx) -> Result<Action, Error> {
    let ns = snap.namespace().unwrap_or_default();
    let status = snap.status.clone().unwrap_or_default();
    let generation = snap.metadata.generation;
    let vm = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&snap.spec.vm_name)
        .await?;
    let placed = vm
        .as_ref()
        .and_then(|v| v.status.as_ref()?.node_name.clone().map(|n| (v, n)));
    let Some((vm, node)) = placed else {
        let msg = format!(
            "VM {} does not exist or is not placed on a host yet",
            snap.spec.vm_name
        );
        write(
            ctx,
            snap,
            &with_ready(
                status,
                SnapshotPhase::Pending,
                snapshot_reason::VM_NOT_FOUND,
                msg,
                generation,
            ),
        )
        .await?;
        return Ok(Action::requeue(WAIT));
    };
    let ledger = storage_ledger(ctx, &snap.uid().unwrap_or_default()).await?;
    let demand = match admit_snapshot(&ledger, &ns, &vm.spec) {
        Ok(d) => d,
        Err(refusal) => {
            let reason = match refusal {
                SnapshotRefusal::Exceeded(_) => snapshot_reason::QUOTA_EXCEEDED,
                _ => snapshot_reason::FAILED,
            };
            let s = with_ready(
                status,
                SnapshotPhase::Failed,
                reason,
                refusal.to_string(),
                generation,
            );
            write(ctx, snap, &s).await?;
            return Ok(Action::await_change());
        }
    };
    match oplock::acquire(
        &ctx.client,
        &ns,
        &snap.spec.vm_name,
        &holder(snap),
        jiff::Timestamp::now(),
    )
    .await?
    {
        Acquired::Busy(op) => {
            let msg = oplock::busy_message(&vm.key(), &op);
            write(
                ctx,
                snap,
                &with_ready(
                    status,
                    SnapshotPhase::Pending,
                    snapshot_reason::VM_BUSY,
                    msg,
                    generation,
                ),
            )
            .await?;
            Ok(Action::requeue(WAIT))
        }
        Acquired::Held | Acquired::TookOver(_) => {
            let mut s = status;
            s.node_name = Some(node.clone());
            s.vm_uid = vm.metadata.uid.clone();
            s.vm_spec = Some(vm.spec.clone());
            s.size = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                format_bytes(demand.storage),
            ));
            let msg = format!("the agent of {node} is taking the snapshot");
            write(
                ctx,
                snap,
                &with_ready(
                    s,
                    SnapshotPhase::InProgress,
                    snapshot_reason::IN_PROGRESS,
                    msg,
                    generation,
                ),
            )
            .await?;
            Ok(Action::await_change())
        }
    }
}

/// Keep the snapshot's ownerReference to its VM in step with its `retainPolicy` (see
/// [`super::owner`]): added for Delete, removed for Retain, while the recorded VM lives.
async fn own(snap: &VirtualMachineSnapshot, ctx: &Ctx) -> Result<(), Error> {
    let Some(refs) = owner::wanted_refs(snap) else {
        return Ok(());
    };
    let ns = snap.namespace().unwrap_or_default();
    let vm = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&snap.spec.vm_name)
        .await?;
    if !owner::may_move(snap, vm.as_ref()) {
        tracing::debug!(snapshot = %snap.key(), "its VM is gone or being deleted: its ownerReferences stay as they are");
        return Ok(());
    }
    let api = Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns);
    api.patch(
        &snap.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&owner::refs_patch(snap, &refs)),
    )
    .await?;
    tracing::info!(snapshot = %snap.key(), policy = ?snap.spec.retain_policy, "ownerReference to the VM set for the retain policy");
    Ok(())
}

async fn reconcile(snap: Arc<VirtualMachineSnapshot>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    let phase = snap.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let ns = snap.namespace().unwrap_or_default();
    if snap.metadata.deletion_timestamp.is_none() {
        own(&snap, &ctx).await?;
    }
    if phase.is_terminal() || snap.metadata.deletion_timestamp.is_some() {
        oplock::release(&ctx.client, &ns, &snap.spec.vm_name, &holder(&snap)).await?;
        return Ok(Action::await_change());
    }
    match phase {
        SnapshotPhase::Pending => start(&snap, &ctx).await,
        _ => Ok(Action::await_change()),
    }
}

fn error_policy(snap: Arc<VirtualMachineSnapshot>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(snapshot = %snap.key(), error = %e, "snapshot step failed; retrying");
    Action::requeue(WAIT)
}

/// Run until the process ends; every snapshot is looked at again when this replica leads.
pub async fn run(ctx: Ctx) {
    let api = Api::<VirtualMachineSnapshot>::all(ctx.client.clone());
    let leads = ctx.leadership.terms();
    Controller::new(api, watcher::Config::default())
        .reconcile_all_on(leads)
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|_| futures::future::ready(()))
        .await;
}
