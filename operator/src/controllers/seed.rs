//! The seed-copy controller: copies the cloud-init values a placed VM takes from Secrets into
//! `ironvisor-seed-<vm uid>` in `ironvisor-seeds`, the only Secrets agents may read, and
//! reports a missing source on the VM (`SeedReady=False`, a Warning Event).
//!
//! Owns the seed copies and the `SeedReady` condition (field manager
//! [`FIELD_MANAGER`], so its status applies never touch the scheduler's fields). Writes only
//! while this replica leads. A copy goes when its VM is deleted (the watch's delete event),
//! when the VM is no longer placed or references no Secret, and — at every resync — when
//! the API confirms by uid that its VM is gone (a copy left by a deletion this replica did
//! not see). Decisions come from the pure [`crate::seed`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ironvisor_crds::VirtualMachine;
use ironvisor_crds::common::{Condition, condition_status, find_condition};
use ironvisor_crds::labels;
use ironvisor_crds::seed as contract;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::error::Category;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::seed::{self, CopyStep, Decision, Fetched, Verdict};

pub mod access;
mod incoming;
mod seal;
mod watches;

use watches::SecretWatches;

const CONTROLLER: &str = "seed";
/// Field manager of the `SeedReady` condition.
pub const FIELD_MANAGER: &str = "ironvisor-operator/seed";

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A request to the API failed.
    #[error("API request failed")]
    Api(#[from] kube::Error),
    /// The VM has no uid (a malformed object).
    #[error("the VM has no uid")]
    NoUid,
    /// The copy could not be sealed to its host's key.
    #[error(transparent)]
    Seal(#[from] seal::SealError),
}

impl SeedError {
    /// Metric category.
    pub fn category(&self) -> Category {
        match self {
            SeedError::Api(e) => Category::of_kube(e),
            SeedError::NoUid => Category::InvalidSpec,
            SeedError::Seal(_) => Category::InvalidSpec,
        }
    }
}

/// Shared by every reconcile.
pub struct Ctx {
    client: Client,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    recorder: Recorder,
    resync: Duration,
    watches: SecretWatches,
}

fn copies(client: &Client) -> Api<Secret> {
    Api::namespaced(client.clone(), contract::NAMESPACE)
}

/// Delete the copies of the VM with `uid`, its placed host's and any incoming one (gone
/// already is fine). Whether the placed host's existed.
async fn remove_copy(client: &Client, uid: &str) -> Result<bool, kube::Error> {
    remove_incoming(client, uid).await?;
    remove_named(client, &contract::secret_name(uid)).await
}

/// Delete the incoming copy of the VM with `uid`; whether it existed.
async fn remove_incoming(client: &Client, uid: &str) -> Result<bool, kube::Error> {
    remove_named(client, &contract::incoming_secret_name(uid)).await
}

async fn remove_named(client: &Client, name: &str) -> Result<bool, kube::Error> {
    match copies(client).delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Write or remove the incoming copy as a live migration of the VM needs it.
async fn apply_incoming(
    ctx: &Ctx,
    vm: &VirtualMachine,
    uid: &str,
    main: &CopyStep,
) -> Result<(), SeedError> {
    let target = incoming::target(&ctx.client, vm).await?;
    let target = target.as_ref().map(|(n, k)| (n.as_str(), k.as_deref()));
    match seed::incoming(main, uid, target) {
        CopyStep::Write(copy) => {
            if write_copy(&ctx.client, &copy).await? {
                tracing::info!(vm = %ObjectRef::from_obj(vm), copy = %copy.name_any(), "incoming seed copy written for the migration target");
            }
        }
        CopyStep::Remove => {
            if remove_incoming(&ctx.client, uid).await? {
                tracing::info!(vm = %ObjectRef::from_obj(vm), "incoming seed copy removed: no migration moves the VM");
            }
        }
        CopyStep::Keep => {}
    }
    Ok(())
}

async fn fetch(client: &Client, ns: &str, name: &str) -> Result<Fetched, kube::Error> {
    match Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
    {
        Ok(s) => Ok(Fetched::Found(Box::new(s))),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Fetched::NotFound),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(Fetched::Forbidden),
        Err(e) => Err(e),
    }
}

/// Write the copy (its values sealed to its host's key) unless the one there is up to date.
async fn write_copy(client: &Client, desired: &Secret) -> Result<bool, SeedError> {
    let api = copies(client);
    let name = desired.name_any();
    if let Some(existing) = api.get_opt(&name).await?
        && seed::up_to_date(&existing, desired)
    {
        return Ok(false);
    }
    let mut sealed = desired.clone();
    seal::seal(&mut sealed)?;
    let mut body = serde_json::to_value(&sealed).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = json!("v1");
    body["kind"] = json!("Secret");
    let pp = PatchParams::apply(labels::OPERATOR_MANAGER).force();
    api.patch(&name, &pp, &Patch::Apply(body)).await?;
    Ok(true)
}

/// The `SeedReady` condition to write, or `None` when the VM already shows it.
fn condition(vm: &VirtualMachine, v: &Verdict, now: Time) -> Option<Condition> {
    let status = if v.ok {
        condition_status::TRUE
    } else {
        condition_status::FALSE
    };
    let prev = vm
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, seed::CONDITION));
    if prev.is_some_and(|c| c.status == status && c.reason == v.reason && c.message == v.message) {
        return None;
    }
    let last_transition_time = match prev {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now,
    };
    Some(Condition {
        type_: seed::CONDITION.into(),
        status: status.into(),
        reason: v.reason.into(),
        message: v.message.clone(),
        observed_generation: vm.metadata.generation,
        last_transition_time,
    })
}

/// Apply this controller's part of the VM status: the condition, or nothing (which drops a
/// condition it wrote before).
async fn apply_status(
    client: &Client,
    vm: &VirtualMachine,
    cond: Option<&Condition>,
) -> Result<(), kube::Error> {
    let ns = vm.namespace().unwrap_or_default();
    let conditions: Vec<&Condition> = cond.into_iter().collect();
    let body = json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": vm.name_any(), "namespace": ns},
        "status": {"conditions": conditions},
    });
    let api: Api<VirtualMachine> = Api::namespaced(client.clone(), &ns);
    api.patch_status(
        &vm.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}

async fn warn(ctx: &Ctx, vm: &VirtualMachine, v: &Verdict) {
    let ev = KubeEvent {
        type_: EventType::Warning,
        reason: v.reason.into(),
        note: Some(v.message.clone()),
        action: "CopySeed".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &vm.object_ref(&())).await {
        tracing::debug!(error = %e, "event not recorded");
    }
}

async fn apply_decision(
    ctx: &Ctx,
    vm: &VirtualMachine,
    uid: &str,
    d: Decision,
) -> Result<(), SeedError> {
    match &d.copy {
        CopyStep::Write(copy) => {
            if write_copy(&ctx.client, copy).await? {
                tracing::info!(vm = %ObjectRef::from_obj(vm), copy = %copy.name_any(), "seed copy written");
            }
        }
        CopyStep::Remove => {
            if remove_copy(&ctx.client, uid).await? {
                tracing::info!(vm = %ObjectRef::from_obj(vm), "seed copy removed: the VM is not placed or takes nothing from Secrets");
            }
        }
        CopyStep::Keep => {}
    }
    let had = vm
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, seed::CONDITION))
        .is_some();
    match &d.verdict {
        Some(v) => {
            if let Some(c) = condition(vm, v, Time(jiff::Timestamp::now())) {
                apply_status(&ctx.client, vm, Some(&c)).await?;
                if !v.ok {
                    tracing::warn!(vm = %ObjectRef::from_obj(vm), reason = v.reason, message = %v.message, "cloud-init Secret unavailable");
                    warn(ctx, vm, v).await;
                }
            }
        }
        None if had => apply_status(&ctx.client, vm, None).await?,
        None => {}
    }
    Ok(())
}

async fn reconcile(vm: Arc<VirtualMachine>, ctx: Arc<Ctx>) -> Result<Action, SeedError> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(3)));
    }
    let _timer = ctx.metrics.timer(CONTROLLER);
    let uid = vm.uid().ok_or(SeedError::NoUid)?;
    if vm.metadata.deletion_timestamp.is_some() {
        remove_copy(&ctx.client, &uid).await?;
        return Ok(Action::await_change());
    }
    let ns = vm.namespace().unwrap_or_default();
    let refs = contract::references(vm.spec.cloud_init.as_ref());
    if !refs.is_empty() {
        ctx.watches.ensure(&ns);
    }
    let host_key = match seed::placed_node(&vm) {
        Some(node) if !refs.is_empty() => seal::host_key(&ctx.client, node).await?,
        _ => None,
    };
    let mut fetched = Vec::with_capacity(refs.len());
    for (field, name) in refs {
        fetched.push((field, name, fetch(&ctx.client, &ns, name).await?));
    }
    let d = seed::decide(&vm, &fetched, host_key.as_deref());
    let shown = vm
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, seed::CONDITION));
    let lean = d.verdict.is_none() && shown.is_none();
    if lean {
        // Nothing from Secrets and never was: no request at all (most VMs). A copy left
        // behind anyway is the resync's to collect.
        return Ok(Action::requeue(ctx.resync));
    }
    // Refused reads usually mean the tenant controller has not bound the operator in this
    // namespace yet: look again soon rather than at the next resync.
    // A host that has not published its seed key yet is looked at again soon too.
    let refused = d.verdict.as_ref().is_some_and(|v| {
        v.reason == seed::reason::SECRET_NOT_READABLE
            || v.reason == seed::reason::WAITING_FOR_HOST_KEY
    });
    // The placed host's copy first: once a migration ended, the VM's new host can open it
    // before the incoming copy it used until then goes.
    let main = d.copy.clone();
    apply_decision(&ctx, &vm, &uid, d).await?;
    apply_incoming(&ctx, &vm, &uid, &main).await?;
    // A migration chooses its target without changing the VM: look again soon while one
    // holds it, so the target's copy is there when its agent prepares.
    let refused = refused || incoming::migrating(&vm);
    Ok(Action::requeue(if refused {
        Duration::from_secs(5)
    } else {
        ctx.resync
    }))
}

fn error_policy(_vm: Arc<VirtualMachine>, e: &SeedError, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "seed copy reconcile failed");
    ctx.metrics.error(CONTROLLER, e.category());
    Action::requeue(Duration::from_secs(5))
}

/// At every resync, while leading: remove each copy whose VM the API confirms is gone (404,
/// or a namesake with another uid), and stop Secret watches no VM needs any more.
async fn collect(ctx: &Ctx, store: &Store<VirtualMachine>) -> Result<(), kube::Error> {
    let vms = store.state();
    let needed: BTreeSet<String> = vms
        .iter()
        .filter(|v| !contract::references(v.spec.cloud_init.as_ref()).is_empty())
        .filter_map(|v| v.namespace())
        .collect();
    ctx.watches.retain(&needed);
    let list = copies(&ctx.client)
        .list(&ListParams::default().labels(contract::VM_UID_LABEL))
        .await?;
    for copy in list.items {
        let l = copy.labels();
        let (Some(uid), Some(ns)) = (
            l.get(contract::VM_UID_LABEL),
            l.get(contract::VM_NAMESPACE_LABEL),
        ) else {
            continue;
        };
        let Some(name) = copy.annotations().get(contract::VM_NAME_ANNOTATION) else {
            continue;
        };
        let api: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), ns);
        let found = api.get_opt(name).await?.and_then(|v| v.uid());
        if found.as_deref() != Some(uid.as_str()) {
            tracing::info!(vm = %format!("{ns}/{name}"), uid, "removing the seed copy of a VM that no longer exists");
            remove_copy(&ctx.client, uid).await?;
        }
    }
    Ok(())
}

/// Run until the process ends.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    recorder: Recorder,
    resync: Duration,
) {
    let (touched_tx, touched_rx) = mpsc::unbounded_channel();
    let (gone_tx, mut gone_rx) = mpsc::unbounded_channel::<String>();
    let (reader, writer) = reflector::store();
    let vms = watcher(
        Api::<VirtualMachine>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .inspect(move |ev| {
        if let Ok(watcher::Event::Delete(vm)) = ev
            && let Some(uid) = vm.uid()
        {
            let _ = gone_tx.send(uid);
        }
    })
    .touched_objects();
    let ctx = Arc::new(Ctx {
        watches: SecretWatches::new(client.clone(), touched_tx),
        client,
        metrics,
        leadership,
        recorder,
        resync,
    });
    // A touched Secret wakes every VM of its namespace that references it.
    let store = reader.clone();
    let secret_triggers = tokio_stream_of(touched_rx).flat_map(move |(ns, name)| {
        let hits: Vec<ObjectRef<VirtualMachine>> = store
            .state()
            .iter()
            .filter(|v| v.namespace().as_deref() == Some(ns.as_str()))
            .filter(|v| {
                contract::references(v.spec.cloud_init.as_ref())
                    .iter()
                    .any(|(_, s)| *s == name)
            })
            .map(|v| ObjectRef::from_obj(v.as_ref()))
            .collect();
        futures::stream::iter(hits)
    });
    let deletions = {
        let ctx = ctx.clone();
        async move {
            while let Some(uid) = gone_rx.recv().await {
                if !ctx.leadership.is_leader() {
                    continue; // the leader's resync collects it
                }
                match remove_copy(&ctx.client, &uid).await {
                    Ok(true) => tracing::info!(uid, "seed copy of a deleted VM removed"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(uid, error = %e, "removing a seed copy failed; the resync retries");
                        ctx.metrics.error(CONTROLLER, Category::of_kube(&e));
                    }
                }
            }
        }
    };
    let resyncs = {
        let ctx = ctx.clone();
        let store = reader.clone();
        async move {
            let mut tick = tokio::time::interval(ctx.resync);
            loop {
                tick.tick().await;
                if !ctx.leadership.is_leader() || store.wait_until_ready().await.is_err() {
                    continue;
                }
                if let Err(e) = collect(&ctx, &store).await {
                    tracing::warn!(error = %e, "collecting seed copies failed");
                    ctx.metrics.error(CONTROLLER, Category::of_kube(&e));
                }
            }
        }
    };
    let controller = Controller::for_stream(vms, reader)
        .reconcile_on(secret_triggers)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    tokio::join!(controller, deletions, resyncs);
}

/// An mpsc receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(conditions: serde_json::Value) -> VirtualMachine {
        serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "db", "namespace": "fin", "uid": "u1", "generation": 2},
            "spec": {"memory": {"size": "1Gi"}},
            "status": {"conditions": conditions},
        }))
        .expect("valid VM")
    }

    fn verdict(ok: bool, reason: &'static str, message: &str) -> Verdict {
        Verdict {
            ok,
            reason,
            message: message.into(),
        }
    }

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(100).expect("time"))
    }

    #[test]
    fn an_unchanged_condition_is_not_written_again_and_a_new_message_keeps_its_time() {
        let shown = vm(
            json!([{"type": "SeedReady", "status": "False", "reason": "SecretNotFound",
            "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]),
        );
        assert!(condition(&shown, &verdict(false, "SecretNotFound", "m"), now()).is_none());
        let c =
            condition(&shown, &verdict(false, "SecretNotFound", "m2"), now()).expect("new message");
        assert_eq!(c.last_transition_time.0.to_string(), "2026-01-01T00:00:00Z");
        let c = condition(&shown, &verdict(true, "Copied", "ok"), now()).expect("flipped");
        assert_eq!(c.last_transition_time, now());
        assert_eq!(c.observed_generation, Some(2));
    }
}
