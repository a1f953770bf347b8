//! Live migration, the operator's half: for each `VirtualMachineMigration`, take the VM's
//! operation lock, choose the target ([`target`]), let the agents prepare and copy, move the
//! VM's placement (`status.nodeName` and the node label) once the source agent reports that
//! QEMU completed, and release the lock on every terminal phase. Deleting a migration
//! cancels it: the finalizer stays until the source agent has aborted QEMU's job.
//!
//! Quota: a migrating VM is one VM, counted once in its tenant's quota before, during and
//! after; a migration is never checked against the quota, so a full quota never blocks one.
//! Never writes the VM's spec; writes only `nodeName` and the label of the VM it holds.

mod admission;
pub mod metrics;
pub mod policy;
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
use ironvisor_crds::snapshot::{SnapshotPhase, VirtualMachineSnapshot};
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
use crate::oplock::{self, Holder};
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
    /// The operator's metrics (the migration series).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Serialises admissions under the policy's limits ([`admission`]).
    pub admission: tokio::sync::Mutex<()>,
    /// Completed migrations whose downtime is in the histogram (by uid; the target agent
    /// may report it after the phase is written, so it is observed at the first sight).
    pub downtime_seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Ctx {
    /// The controller's context with empty admission and downtime state.
    pub fn new(
        client: Client,
        leadership: Leadership,
        recorder: Recorder,
        strategy: Strategy,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Ctx {
            client,
            leadership,
            recorder,
            strategy,
            metrics,
            admission: tokio::sync::Mutex::new(()),
            downtime_seen: std::sync::Mutex::default(),
        }
    }

    /// Put a completed migration's downtime in the histogram once.
    fn observe_downtime(&self, m: &VirtualMachineMigration, phase: MigrationPhase) {
        let ms = m
            .status
            .as_ref()
            .and_then(|s| s.target.as_ref())
            .and_then(|t| t.downtime_milliseconds);
        let (Some(ms), MigrationPhase::Completed) = (ms, phase) else {
            return;
        };
        let mut seen = self.downtime_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 10_000 {
            seen.clear();
        }
        if seen.insert(m.uid().unwrap_or_default()) {
            self.metrics.migrations.downtime_ms(ms);
        }
    }
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

/// How often the gauges of running migrations are refreshed.
const GAUGES: Duration = Duration::from_secs(10);

/// Run the controller until the process ends.
pub async fn run(ctx: Ctx) {
    let ctx = Arc::new(ctx);
    let api = Api::<VirtualMachineMigration>::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "migration reconcile");
            }
        });
    tokio::join!(controller, refresh_gauges(&ctx));
}

/// Keep the gauges of running migrations current while leading.
async fn refresh_gauges(ctx: &Ctx) {
    let api = Api::<VirtualMachineMigration>::all(ctx.client.clone());
    loop {
        tokio::time::sleep(GAUGES).await;
        if !ctx.leadership.is_leader() {
            continue;
        }
        match api.list(&ListParams::default()).await {
            Ok(l) => ctx
                .metrics
                .migrations
                .set_active(&l.items, jiff::Timestamp::now()),
            Err(e) => tracing::debug!(error = %e, "migration gauges not refreshed"),
        }
    }
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

pub(crate) fn holder(m: &VirtualMachineMigration) -> Holder {
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
    let mut facts = Facts::read(m, vm.as_ref(), deleting, jiff::Timestamp::now());
    if facts.phase == MigrationPhase::Pending
        && let Some(vm) = &vm
    {
        facts.snapshots_on_host = snapshots_on_host(ctx, vm).await?;
    }
    let next = step::next(&facts);
    tracing::debug!(migration = %format!("{ns}/{}", m.name_any()), ?next, "migration step");
    match next {
        Step::Lock => admission::lock(m, ctx, vm.as_ref()).await,
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
            ctx.observe_downtime(m, facts.phase);
            release(m, ctx).await?;
            Ok(Action::await_change())
        }
    }
}

/// Snapshots of `vm` (by uid) whose layers are on its host.
async fn snapshots_on_host(ctx: &Ctx, vm: &VirtualMachine) -> Result<usize, Error> {
    let ns = vm.namespace().unwrap_or_default();
    let list = Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns)
        .list(&Default::default())
        .await?;
    Ok(list.items.iter().filter(|s| layers_on_host(s, vm)).count())
}

/// Whether snapshot `s` of `vm` (by uid) has disk layers on the VM's current host: taken,
/// being taken or being deleted there. A live migration carries the top layer only, so such
/// a VM is refused (and the rebalancer leaves it alone).
pub(crate) fn layers_on_host(s: &VirtualMachineSnapshot, vm: &VirtualMachine) -> bool {
    let (Some(uid), Some(node)) = (
        vm.metadata.uid.as_deref(),
        vm.status.as_ref().and_then(|s| s.node_name.as_deref()),
    ) else {
        return false;
    };
    s.status.as_ref().is_some_and(|s| {
        s.vm_uid.as_deref() == Some(uid)
            && s.node_name.as_deref() == Some(node)
            && matches!(
                s.phase,
                SnapshotPhase::InProgress | SnapshotPhase::Succeeded | SnapshotPhase::Deleting
            )
    })
}

pub(crate) async fn set_status(
    ctx: &Ctx,
    m: &VirtualMachineMigration,
    status: Value,
) -> Result<(), Error> {
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

pub(crate) fn condition(status: &str, reason: &str, message: &str) -> Value {
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
    let in_flight = incoming(ctx, m).await?;
    match target::choose(
        &hvs,
        vm,
        &source,
        m.spec.target_node.as_deref(),
        ctx.strategy,
        &in_flight,
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

/// What the other migrations past scheduling bring to each target: their VMs are not
/// placed there yet (the agents report only placed VMs), so their room is reserved here.
async fn incoming(ctx: &Ctx, me: &VirtualMachineMigration) -> Result<target::InFlight, Error> {
    let all = Api::<VirtualMachineMigration>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut vms = Vec::new();
    for m in all.iter().filter(|m| m.uid() != me.uid()) {
        let s = m.status.clone().unwrap_or_default();
        let (Some(t), true) = (
            s.target_node,
            matches!(
                s.phase,
                MigrationPhase::PreparingTarget | MigrationPhase::Migrating
            ),
        ) else {
            continue;
        };
        let api = Api::<VirtualMachine>::namespaced(
            ctx.client.clone(),
            &m.namespace().unwrap_or_default(),
        );
        if let Some(vm) = api.get_opt(&m.spec.vm_name).await? {
            vms.push((t, vm));
        }
    }
    Ok(target::in_flight(&vms))
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
    let from = status.source_node.unwrap_or_default();
    let took = source.elapsed_milliseconds.unwrap_or(0);
    let message = if m.spec.restarts() {
        format!(
            "restarted on {target}: shut down on {from}, moved with its disks in {took} ms, \
             booting afresh"
        )
    } else {
        format!(
            "moved from {from} to {target} in {took} ms (QEMU's downtime {} ms)",
            t.downtime_milliseconds
                .map_or("not reported".into(), |d| d.to_string()),
        )
    };
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
    let seconds = m
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| jiff::Timestamp::now().duration_since(t.0).as_secs_f64());
    ctx.metrics.migrations.ended(phase, seconds);
    ctx.observe_downtime(m, phase);
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
