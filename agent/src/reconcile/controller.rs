//! The Kubernetes side: watch the VMs placed on this node, run the [`Engine`] for each,
//! write the status by server-side apply, publish Events, keep the finalizer.

use super::backoff::{Backoff, Hold, RetryKey};
use super::engine::{Engine, EngineError};
use super::guard::VmObject;
use crate::metrics::ErrorCategory;
use futures::StreamExt;
use ironvisor_crds::common::{condition_status, condition_type, find_condition, scheduled_reason};
use ironvisor_crds::labels::{AGENT_FINALIZER, NODE, RESTART_REQUESTED_AT, agent_manager};
use ironvisor_crds::vm::{RunStrategy, VirtualMachine};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed VM lacks the identity needed to clean it up.
    #[error("the malformed VirtualMachine has no {0}")]
    Identity(&'static str),
    /// Host side.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The API server refused or failed a call.
    #[error("Kubernetes API call failed")]
    Kube(#[from] kube::Error),
    /// A clone disk could not be made.
    #[error(transparent)]
    Clone(#[from] crate::snapshot::clone::CloneError),
    /// A former template could not move off its linked clones' base.
    #[error(transparent)]
    Unfreeze(#[from] crate::snapshot::unfreeze::UnfreezeError),
    /// A deleted VM's disks are the base of linked clones: it stays until they are gone.
    /// An error, not an `Ok` requeue, because the finalizer helper removes the finalizer
    /// on any `Ok` from cleanup.
    #[error("linked clones read this VM's disks; it stays until they are deleted")]
    BaseInUse,
    /// The finalizer helper failed.
    #[error("finalizer step failed")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    fn category(&self) -> ErrorCategory {
        match self {
            Error::Engine(e) => e.category(),
            Error::Kube(_) => ErrorCategory::Kubernetes,
            Error::Identity(_) => ErrorCategory::InvalidSpec,
            Error::Clone(_) | Error::Unfreeze(_) | Error::BaseInUse => ErrorCategory::Storage,
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => ErrorCategory::Kubernetes,
            },
        }
    }
}

/// Everything a reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// This node.
    pub node: String,
    /// Host side.
    pub engine: Engine,
    /// Event recorder.
    pub recorder: Recorder,
    /// Full resync period.
    pub resync: Duration,
    /// Domain name → VM, to route libvirt events without a libvirt call.
    domains: Mutex<HashMap<String, ObjectRef<VmObject>>>,
    /// Per-VM pause after failures (in memory: an agent restart retries at once).
    pub backoff: Backoff,
    /// This host's seed key: opens the seed copies sealed to it.
    pub seed_key: crate::seed_key::SeedKey,
    /// Backup metrics (disks restored from backups), when the daemon registered them.
    pub backup_metrics: Option<crate::backup::metrics::BackupMetrics>,
}

impl Context {
    /// A context for `node`.
    pub fn new(
        client: Client,
        node: &str,
        engine: Engine,
        resync: Duration,
        seed_key: crate::seed_key::SeedKey,
    ) -> Self {
        let reporter = Reporter {
            controller: "ironvisor-agent".into(),
            instance: Some(node.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            node: node.to_owned(),
            engine,
            resync,
            domains: Mutex::default(),
            backoff: Backoff::default(),
            seed_key,
            backup_metrics: None,
        }
    }

    /// Label selector of this node's VMs.
    pub fn selector(&self) -> String {
        format!("{NODE}={}", self.node)
    }
}

/// Whether the operator lets `node` act on the VM: `status.nodeName` is `node` and the
/// Scheduled condition is True with reason `Scheduled`, or `ScheduledHalted` while the VM is
/// meant to be halted (placed with no compute reserved: the agent may stop it, never start
/// it). Both live in the status, which only the control plane writes. The node label never
/// counts: it only brings the VM into this agent's watch, and anyone who may edit the VM may
/// set it.
pub fn placement_confirmed(vm: &VirtualMachine, node: &str) -> bool {
    vm.status.as_ref().is_some_and(|s| {
        s.node_name.as_deref() == Some(node)
            && find_condition(&s.conditions, condition_type::SCHEDULED).is_some_and(|c| {
                c.status == condition_status::TRUE
                    && (c.reason == scheduled_reason::SCHEDULED
                        || (c.reason == scheduled_reason::SCHEDULED_HALTED
                            && vm.spec.run_strategy == RunStrategy::Halted))
            })
    })
}

/// Publish an Event about a VM; a failure is logged, never fatal.
pub(crate) async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    warning: bool,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, reference).await {
        tracing::warn!(object = ?reference.name, error = %e, "publishing an event failed");
    }
}

/// What a user changes to have a failing VM tried again at once.
fn retry_key(meta: &ObjectMeta) -> RetryKey {
    RetryKey {
        generation: meta.generation,
        restart_requested: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESTART_REQUESTED_AT).cloned()),
    }
}

async fn apply(vm: Arc<VirtualMachine>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = vm.namespace().unwrap_or_default();
    let name = vm.name_any();
    if !placement_confirmed(&vm, &ctx.node) {
        // Placed on another node while a guest still runs here: a second copy, stopped.
        super::leftovers::stop_if_placed_elsewhere(&vm, &ctx).await?;
        // Nothing is defined or started until the operator confirms; its status write
        // wakes the watch.
        tracing::debug!(vm = %vm.key(), "waiting for Scheduled=True from the operator");
        return Ok(Action::requeue(ctx.resync));
    }
    if crate::snapshot::restore_holds(&vm) {
        // A restore is replacing the disks: the guest stays off until it is done.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    if let Some(wait) = crate::backup::restore_disk::restore_for(&vm, &ctx).await {
        // A disk from a backup is not restored yet (Events say why).
        return Ok(Action::requeue(wait));
    }
    let uid = vm.uid().unwrap_or_default();
    let key = retry_key(&vm.metadata);
    if let Some(left) = ctx.backoff.wait_left(&uid, &key, Instant::now()) {
        // A resync or a libvirt event during the pause: the pause holds.
        tracing::debug!(vm = %vm.key(), ?left, "failed recently; waiting before the next attempt");
        return Ok(Action::requeue(left));
    }
    if let Some(wait) = super::clones::ensure(&ctx, &vm).await? {
        return Ok(wait);
    }
    super::clones::leave_clone_base(&ctx, &vm).await?;
    let ci = super::seed_copy::fetch(
        &ctx.client,
        &uid,
        vm.spec.cloud_init.as_ref(),
        &ctx.seed_key,
    )
    .await?;
    let now = Time(jiff::Timestamp::now());
    let outcome = ctx.engine.converge(&vm, &ci, now).await?;
    ctx.domains
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(outcome.domain.clone(), ObjectRef::new(&name).within(&ns));
    let api = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "status": outcome.status,
    });
    let params = PatchParams::apply(&agent_manager(&ctx.node)).force();
    api.patch_status(&name, &params, &Patch::Apply(&patch))
        .await?;
    let reference = vm.object_ref(&());
    for ev in outcome.events {
        publish(&ctx, &reference, ev.warning, ev.reason, ev.note).await;
    }
    let requeue = if outcome.retry {
        Some(
            ctx.backoff
                .failed(&uid, &key, Instant::now(), Hold::AllTriggers),
        )
    } else {
        ctx.backoff.succeeded(&uid);
        outcome.requeue
    };
    Ok(requeue.map_or(Action::requeue(ctx.resync), Action::requeue))
}

async fn cleanup(vm: Arc<VirtualMachine>, ctx: Arc<Context>) -> Result<Action, Error> {
    if super::clones::wait_for_clones(&ctx, &vm).await {
        return Err(Error::BaseInUse);
    }
    let uid = vm.uid().unwrap_or_default();
    let owner = super::engine::owner_of(&vm)?;
    super::release::release(&ctx, &owner, &vm.object_ref(&())).await?;
    ctx.backoff.succeeded(&uid);
    Ok(Action::await_change())
}

/// One reconcile of one VM; a malformed one gets its own path and never stops the others.
pub async fn reconcile(obj: Arc<VmObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.engine.metrics.reconcile_timer();
    let result = match &obj.0 {
        Ok(vm) => reconcile_vm(Arc::new(vm.clone()), &ctx).await,
        Err(m) => super::malformed::reconcile(m, &obj, &ctx).await,
    };
    if result.is_ok() {
        ctx.engine.metrics.reconcile_ok();
    }
    result
}

async fn reconcile_vm(vm: Arc<VirtualMachine>, ctx: &Arc<Context>) -> Result<Action, Error> {
    if placement_confirmed(&vm, &ctx.node) {
        announce_waiting_reset(&vm, ctx).await;
    }
    if migrating(&vm) && vm.metadata.deletion_timestamp.is_none() {
        // The migration's agents own the guest until the operator releases the lock: the
        // source must not restart a guest that just left, the target must not touch one
        // still arriving. (A deleted VM is cleaned up: that also ends its migration.)
        tracing::debug!(vm = %vm.key(), "a live migration holds the VM; leaving it alone");
        return Ok(Action::requeue(MIGRATION_RECHECK));
    }
    if !placement_confirmed(&vm, &ctx.node) && !vm.finalizers().iter().any(|f| f == AGENT_FINALIZER)
    {
        // Not placed here by the operator (a label alone, or not confirmed yet) and never
        // taken on: leave the object untouched, not even a finalizer. The operator's status
        // write wakes the watch.
        tracing::debug!(vm = %vm.key(), "not placed on this node by the operator; waiting");
        return Ok(Action::requeue(ctx.resync));
    }
    let ns = vm.namespace().unwrap_or_default();
    let api = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, AGENT_FINALIZER, vm, |event| async {
        match event {
            Finalizer::Apply(vm) => apply(vm, ctx.clone()).await,
            Finalizer::Cleanup(vm) => cleanup(vm, ctx.clone()).await,
        }
    })
    .await;
    match result {
        // A second cleanup from a cache that has not seen the deletion yet: the VM is gone,
        // which is what removing the finalizer was for.
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status)))
            if status.code == 404 =>
        {
            Ok(Action::await_change())
        }
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    }
}

/// A restart asked for while another operation holds the VM waits for it (a reset would pull
/// the guest from under a migration, snapshot or restore): say so on the VM, naming the
/// holder, rather than only in this agent's log. Repeats fold into one Event series.
async fn announce_waiting_reset(vm: &VirtualMachine, ctx: &Context) {
    let status = vm.status.as_ref();
    let asked = vm
        .annotations()
        .get(RESTART_REQUESTED_AT)
        .filter(|v| !v.is_empty());
    let handled = status.and_then(|s| s.last_restart_request.as_ref());
    let holder = status.and_then(|s| s.operation.as_ref());
    let (Some(asked), Some(_)) = (asked, holder) else {
        return;
    };
    if handled == Some(asked) {
        return;
    }
    if let Err(op) = crate::run_strategy::actionable_restart(Some(asked), holder) {
        let note = format!(
            "restart requested at {asked} waits: {} {} holds the VM since {}; the guest is \
             restarted once that has finished",
            op.kind.as_str(),
            op.name,
            op.since.0
        );
        publish(ctx, &vm.object_ref(&()), false, "RestartWaiting", note).await;
    }
}

/// How soon a VM held by a migration is looked at again.
const MIGRATION_RECHECK: Duration = Duration::from_secs(2);

/// Whether a live migration holds the VM's operation lock.
pub fn migrating(vm: &VirtualMachine) -> bool {
    vm.status
        .as_ref()
        .and_then(|s| s.operation.as_ref())
        .is_some_and(|o| o.kind == ironvisor_crds::vm::OperationKind::Migration)
}

/// Requeue a failed reconcile after a pause that grows with each failure of that VM in a
/// row; the error is counted by category.
/// When `error` is a deleted VM whose disks linked clones read (its finalizer kept): how
/// soon it is looked at again. A wait, not a failure: no error metric, no backoff; the
/// BaseInUse Event says why.
pub fn base_in_use_recheck(error: &Error) -> Option<Duration> {
    match error {
        Error::Finalizer(e) => match e.as_ref() {
            kube::runtime::finalizer::Error::CleanupFailed(Error::BaseInUse) => {
                Some(super::clones::BASE_IN_USE_RECHECK)
            }
            _ => None,
        },
        _ => None,
    }
}

pub fn error_policy(obj: Arc<VmObject>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Some(recheck) = base_in_use_recheck(error) {
        return Action::requeue(recheck);
    }
    ctx.engine.metrics.reconcile_error(error.category());
    let meta = obj.meta();
    let uid = meta.uid.clone().unwrap_or_default();
    let pause = ctx
        .backoff
        .failed(&uid, &retry_key(meta), Instant::now(), Hold::RequeueOnly);
    let vm = ObjectRef::from_obj(obj.as_ref());
    tracing::warn!(%vm, error = %super::failure::chain(error), retry_in = ?pause, "reconcile failed");
    Action::requeue(pause)
}

fn libvirt_triggers(
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<VmObject>> + Send + 'static {
    let rx = ctx.engine.hv.subscribe();
    futures::stream::unfold((rx, ctx), |(mut rx, ctx)| async move {
        loop {
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "libvirt events dropped; the resync repairs");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            let known = ctx
                .domains
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&ev.name)
                .cloned();
            let target = match known {
                Some(r) => Some(r),
                None => ctx
                    .engine
                    .owner_of_domain(&ev.name)
                    .await
                    .map(|(ns, name)| ObjectRef::new(&name).within(&ns)),
            };
            if let Some(r) = target {
                tracing::debug!(domain = ev.name, event = ev.event, "libvirt event");
                return Some((r, (rx, ctx)));
            }
        }
    })
}

/// Build the controller; its store serves the heartbeat's allocation figures.
pub fn controller(ctx: &Arc<Context>) -> Controller<VmObject> {
    let api = Api::<VmObject>::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default().labels(&ctx.selector()))
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    controller: Controller<VmObject>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let resync = ctx.resync;
    let ticks = futures::stream::unfold(tokio::time::interval(resync), |mut t| async move {
        t.tick().await;
        Some(((), t))
    });
    // After libvirtd comes back, every VM is looked at again at once.
    let reconnects = futures::stream::unfold(ctx.engine.hv.reconnected(), |mut rx| async move {
        match rx.recv().await {
            Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    });
    let ticks = futures::stream::select(ticks, reconnects);
    controller
        .reconcile_on(libvirt_triggers(ctx.clone()))
        .reconcile_all_on(ticks)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile not done");
            }
        })
        .await;
}

/// The VMs in the controller's cache that parse.
pub fn cached_vms(store: &Store<VmObject>) -> Vec<Arc<VirtualMachine>> {
    store
        .state()
        .iter()
        .filter_map(|o| o.0.as_ref().ok().map(|vm| Arc::new(vm.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::placement_confirmed;
    use ironvisor_crds::vm::VirtualMachine;

    fn vm_with(conditions: serde_json::Value) -> VirtualMachine {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "n", "labels": {"ironvisor.io/node": "h1"}},
            "spec": {"memory": {"size": "64Mi"}},
            "status": {"nodeName": "h1", "conditions": conditions},
        }))
        .unwrap()
    }

    fn confirmed(vm: &VirtualMachine) -> bool {
        placement_confirmed(vm, "h1")
    }

    fn scheduled(status: &str, reason: &str) -> serde_json::Value {
        serde_json::json!([{"type": "Scheduled", "status": status, "reason": reason,
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
    }

    #[test]
    fn only_scheduled_true_lets_the_agent_act_and_scheduled_halted_only_on_a_halted_vm() {
        assert!(confirmed(&vm_with(scheduled("True", "Scheduled"))));
        assert!(!confirmed(&vm_with(scheduled("False", "Scheduled"))));
        assert!(!confirmed(&vm_with(scheduled("True", "Pending"))));
        // Placed as halted: acted on only while the VM is meant to be halted.
        let mut halted = vm_with(scheduled("True", "ScheduledHalted"));
        assert!(!confirmed(&halted));
        halted.spec.run_strategy = ironvisor_crds::vm::RunStrategy::Halted;
        assert!(confirmed(&halted));
        assert!(!confirmed(&vm_with(serde_json::json!([]))));
        let mut no_status = vm_with(serde_json::json!([]));
        no_status.status = None;
        assert!(!confirmed(&no_status));
    }

    #[test]
    fn the_node_label_never_confirms_only_status_node_name_does() {
        let here = vm_with(scheduled("True", "Scheduled"));
        assert!(!placement_confirmed(&here, "h2"), "placed on h1, not h2");
        let mut elsewhere = here.clone();
        if let Some(s) = elsewhere.status.as_mut() {
            s.node_name = Some("h2".into());
        }
        assert!(!confirmed(&elsewhere), "labelled h1, placed on h2");
        let mut unplaced = here;
        if let Some(s) = unplaced.status.as_mut() {
            s.node_name = None;
        }
        assert!(
            !confirmed(&unplaced),
            "a label and a condition, no nodeName"
        );
    }
}
