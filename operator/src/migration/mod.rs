//! Live migration, the operator's half: for each `VirtualMachineMigration`, take the VM's
//! operation lock, choose the target ([`target`]), let the agents prepare and copy, move the
//! VM's placement (`status.nodeName` and the node label) once the source agent reports that
//! QEMU completed, and release the lock on every terminal phase. Deleting a migration
//! cancels it: the finalizer stays until the source agent has aborted QEMU's job.
//!
//! Quota: a migrating VM is one VM, counted once in its tenant's quota before, during and
//! after; a migration is never checked against the quota, so a full quota never blocks one.
//! Never writes the VM's spec; writes only `nodeName` and the label of the VM it holds.

pub mod request;
mod step;
pub mod target;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ironvisor_crds::Hypervisor;
use ironvisor_crds::labels;
use ironvisor_crds::migration::{
    MIGRATION_FINALIZER, MigrationPhase, SOURCE_LABEL, TARGET_LABEL, VirtualMachineMigration,
};
use ironvisor_crds::vm::{OperationKind, VirtualMachine};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::leader::Leadership;
use crate::oplock::{self, Acquired, Holder};
use crate::placement::Strategy;
use step::{Facts, Step};

/// How soon an active migration is looked at again (agents report in between).
const ACTIVE: Duration = Duration::from_secs(1);
/// How soon a migration waiting for the lock or a host is tried again.
const WAITING: Duration = Duration::from_secs(5);
/// The field manager of the operator's migration writes.
const MANAGER: &str = "ironvisor-operator-migration";

/// What the controller needs.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Only the leader acts.
    pub leadership: Leadership,
    /// Events on the VMs.
    pub recorder: Recorder,
    /// Placement strategy for choosing targets.
    pub strategy: Strategy,
}

/// Why a reconcile did not finish (retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused a read or write.
    #[error("migration API call")]
    Api(#[from] kube::Error),
    /// The VM's lock could not be decided.
    #[error("the VM's operation lock")]
    Lock(#[from] oplock::LockError),
    /// A cancelled migration waits for the source agent to abort QEMU's job.
    #[error("waiting for the source agent to abort the job")]
    WaitingForAbort,
    /// The finalizer helper failed.
    #[error("migration finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// Run the controller until the process ends.
pub async fn run(ctx: Ctx) {
    let api = Api::<VirtualMachineMigration>::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "migration reconcile");
            }
        })
        .await;
}

fn error_policy(_: Arc<VirtualMachineMigration>, e: &Error, _: Arc<Ctx>) -> Action {
    match e {
        Error::Finalizer(b)
            if matches!(
                **b,
                kube::runtime::finalizer::Error::CleanupFailed(Error::WaitingForAbort)
            ) =>
        {
            Action::requeue(ACTIVE)
        }
        _ => {
            tracing::warn!(error = %chain(e), "migration reconcile failed");
            Action::requeue(WAITING)
        }
    }
}

/// An error and its sources in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn reconcile(m: Arc<VirtualMachineMigration>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(WAITING));
    }
    let api = Api::<VirtualMachineMigration>::namespaced(
        ctx.client.clone(),
        &m.namespace().unwrap_or_default(),
    );
    finalizer(&api, MIGRATION_FINALIZER, m, |ev| async {
        match ev {
            Finalizer::Apply(m) => advance(&m, &ctx, false).await,
            Finalizer::Cleanup(m) => advance(&m, &ctx, true).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn holder(m: &VirtualMachineMigration) -> Holder {
    Holder {
        kind: OperationKind::Migration,
        name: m.name_any(),
        uid: m.uid().unwrap_or_default(),
    }
}

/// Look at the migration and its VM, decide the next step ([`step::next`]), take it.
async fn advance(m: &VirtualMachineMigration, ctx: &Ctx, deleting: bool) -> Result<Action, Error> {
    let ns = m.namespace().unwrap_or_default();
    let vm = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&m.spec.vm_name)
        .await?;
    let facts = Facts::read(m, vm.as_ref(), deleting);
    let next = step::next(&facts);
    tracing::debug!(migration = %format!("{ns}/{}", m.name_any()), ?next, "migration step");
    match next {
        Step::Lock => lock(m, ctx, vm.as_ref()).await,
        Step::Schedule => schedule(m, ctx, vm.as_ref()).await,
        Step::StartCopy => {
            set_status(ctx, m, json!({ "phase": "Migrating" })).await?;
            Ok(Action::requeue(ACTIVE))
        }
        Step::MoveVm => move_vm(m, ctx, vm.as_ref()).await,
        Step::Finish {
            phase,
            reason,
            message,
        } => finish(m, ctx, vm.as_ref(), phase, reason, &message).await,
        Step::Wait => Ok(Action::requeue(ACTIVE)),
        Step::WaitForAbort => Err(Error::WaitingForAbort),
        Step::Done => {
            release(m, ctx).await?;
            Ok(Action::await_change())
        }
    }
}

async fn set_status(ctx: &Ctx, m: &VirtualMachineMigration, status: Value) -> Result<(), Error> {
    let api = Api::<VirtualMachineMigration>::namespaced(
        ctx.client.clone(),
        &m.namespace().unwrap_or_default(),
    );
    api.patch_status(
        &m.name_any(),
        &PatchParams::apply(MANAGER),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

fn condition(status: &str, reason: &str, message: &str) -> Value {
    json!([{
        "type": "Ready", "status": status, "reason": reason, "message": message,
        "lastTransitionTime": Time(jiff::Timestamp::now()),
    }])
}

async fn vm_event(
    ctx: &Ctx,
    vm: Option<&VirtualMachine>,
    warning: bool,
    reason: &str,
    note: String,
) {
    let Some(vm) = vm else { return };
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Migrate".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &vm.object_ref(&())).await {
        tracing::debug!(error = %e, "migration event not published");
    }
}

async fn lock(
    m: &VirtualMachineMigration,
    ctx: &Ctx,
    vm: Option<&VirtualMachine>,
) -> Result<Action, Error> {
    let Some(vm) = vm else {
        return Ok(Action::requeue(ACTIVE));
    };
    let ns = m.namespace().unwrap_or_default();
    match oplock::acquire(
        &ctx.client,
        &ns,
        &m.spec.vm_name,
        &holder(m),
        jiff::Timestamp::now(),
    )
    .await?
    {
        Acquired::Busy(op) => {
            let msg = oplock::busy_message(&m.spec.vm_name, &op);
            set_status(
                ctx,
                m,
                json!({ "phase": "Pending", "conditions": condition("False", "Busy", &msg) }),
            )
            .await?;
            Ok(Action::requeue(WAITING))
        }
        Acquired::Held | Acquired::TookOver(_) => {
            let source = vm.status.as_ref().and_then(|s| s.node_name.clone());
            set_status(
                ctx,
                m,
                json!({
                    "phase": "Scheduling",
                    "vmUid": vm.metadata.uid,
                    "sourceNode": source,
                    "startTime": Time(jiff::Timestamp::now()),
                    "conditions": condition("False", "Scheduling", "choosing a target host"),
                }),
            )
            .await?;
            Ok(Action::requeue(ACTIVE))
        }
    }
}

async fn schedule(
    m: &VirtualMachineMigration,
    ctx: &Ctx,
    vm: Option<&VirtualMachine>,
) -> Result<Action, Error> {
    let (Some(vm), Some(source)) = (vm, m.status.as_ref().and_then(|s| s.source_node.clone()))
    else {
        return Ok(Action::requeue(ACTIVE));
    };
    let hvs = Api::<Hypervisor>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    match target::choose(
        &hvs,
        vm,
        &source,
        m.spec.target_node.as_deref(),
        ctx.strategy,
    ) {
        Err(no) => {
            set_status(
                ctx,
                m,
                json!({ "conditions": condition("False", "Unschedulable", &no.0) }),
            )
            .await?;
            Ok(Action::requeue(WAITING))
        }
        Ok(choice) => {
            let api = Api::<VirtualMachineMigration>::namespaced(
                ctx.client.clone(),
                &m.namespace().unwrap_or_default(),
            );
            let labels = json!({ "metadata": { "labels": { SOURCE_LABEL: source, TARGET_LABEL: choice.node } } });
            api.patch(
                &m.name_any(),
                &PatchParams::apply(MANAGER),
                &Patch::Merge(labels),
            )
            .await?;
            set_status(ctx, m, json!({
                "phase": "PreparingTarget",
                "targetNode": choice.node,
                "targetReason": choice.reason,
                "conditions": condition("False", "PreparingTarget", &format!("{} prepares the VM's directory and disks", choice.node)),
            }))
            .await?;
            let note = format!(
                "live migration {} from {source} to {}: {}",
                m.name_any(),
                choice.node,
                choice.reason
            );
            vm_event(ctx, Some(vm), false, "MigrationScheduled", note).await;
            Ok(Action::requeue(ACTIVE))
        }
    }
}

/// QEMU completed: the VM runs on the target. Move its placement there, then complete.
async fn move_vm(
    m: &VirtualMachineMigration,
    ctx: &Ctx,
    vm: Option<&VirtualMachine>,
) -> Result<Action, Error> {
    let status = m.status.clone().unwrap_or_default();
    let (Some(vm), Some(target)) = (vm, status.target_node.clone()) else {
        return Ok(Action::requeue(ACTIVE));
    };
    let api =
        Api::<VirtualMachine>::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    let uid = vm.metadata.uid.clone();
    // The uid as a precondition: a recreated namesake is never moved.
    api.patch_status(
        &vm.name_any(),
        &PatchParams::apply(MANAGER),
        &Patch::Merge(json!({
            "metadata": { "uid": uid }, "status": { "nodeName": target },
        })),
    )
    .await?;
    api.patch(
        &vm.name_any(),
        &PatchParams::apply(MANAGER),
        &Patch::Merge(json!({
            "metadata": { "uid": uid, "labels": { labels::NODE: target } },
        })),
    )
    .await?;
    let source = status.source.unwrap_or_default();
    let t = status.target.unwrap_or_default();
    let message = format!(
        "moved from {} to {target} in {} ms (QEMU's downtime {} ms)",
        status.source_node.unwrap_or_default(),
        source.elapsed_milliseconds.unwrap_or(0),
        t.downtime_milliseconds
            .map_or("not reported".into(), |d| d.to_string()),
    );
    finish(
        m,
        ctx,
        Some(vm),
        MigrationPhase::Completed,
        "Completed",
        &message,
    )
    .await
}

async fn finish(
    m: &VirtualMachineMigration,
    ctx: &Ctx,
    vm: Option<&VirtualMachine>,
    phase: MigrationPhase,
    reason: &'static str,
    message: &str,
) -> Result<Action, Error> {
    let ok = phase == MigrationPhase::Completed;
    set_status(
        ctx,
        m,
        json!({
            "phase": phase.as_str(),
            "completionTime": Time(jiff::Timestamp::now()),
            "conditions": condition(if ok { "True" } else { "False" }, reason, message),
        }),
    )
    .await?;
    release(m, ctx).await?;
    let event_reason = match phase {
        MigrationPhase::Completed => "Migrated",
        MigrationPhase::Cancelled => "MigrationCancelled",
        _ => "MigrationFailed",
    };
    vm_event(
        ctx,
        vm,
        !ok,
        event_reason,
        format!("{}: {message}", m.name_any()),
    )
    .await;
    Ok(Action::await_change())
}

/// Give the VM's lock back, if this migration holds it.
async fn release(m: &VirtualMachineMigration, ctx: &Ctx) -> Result<(), Error> {
    let ns = m.namespace().unwrap_or_default();
    match oplock::release(&ctx.client, &ns, &m.spec.vm_name, &holder(m)).await {
        Ok(_) => Ok(()),
        Err(oplock::LockError::Api {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
