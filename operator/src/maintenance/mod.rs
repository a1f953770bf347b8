//! Maintenance mode, the operator's half: a host whose `spec.maintenance` is true, or whose
//! Kubernetes Node of the same name is cordoned (`kubectl cordon|drain`), is drained. Placement
//! already skips it (`ironvisor_crds::maintenance::in_maintenance`); this controller moves each
//! running VM away by asking for a live migration ([`crate::migration::request`]), follows
//! them, and reports the progress in `status.maintenance` and the `MaintenanceReady`
//! condition (its own field manager, so the agent's status writes never touch them), with
//! Events for what blocks. When maintenance ends the status and condition are withdrawn;
//! migrations under way finish. Never writes a spec, never stops a VM.

mod facts;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ironvisor_crds::Hypervisor;
use ironvisor_crds::labels;
use ironvisor_crds::maintenance::{
    DRAIN_LABEL, MAINTENANCE_READY, MaintenancePhase, MaintenanceRequester, MaintenanceStatus,
};
use ironvisor_crds::migration::VirtualMachineMigration;
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::leader::Leadership;
use crate::migration::request::{self, MigrationRequest};
use plan::Verdict;

/// How soon a draining host is looked at again.
const DRAINING: Duration = Duration::from_secs(3);
/// How soon a drained host is looked at again (a stopped VM may be started there).
const DRAINED: Duration = Duration::from_secs(30);
/// The field manager of the maintenance status.
pub const MANAGER: &str = "ironvisor-operator-maintenance";

/// What the controller needs.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Only the leader acts.
    pub leadership: Leadership,
    /// Events on Hypervisors and VMs.
    pub recorder: Recorder,
}

/// Why a reconcile did not finish (retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused a read or write.
    #[error("maintenance API call")]
    Api(#[from] kube::Error),
}

/// Run the controller until the process ends. Nodes are watched to follow `kubectl cordon`;
/// where Nodes cannot be read, only `spec.maintenance` puts a host in maintenance.
pub async fn run(ctx: Ctx) {
    let client = ctx.client.clone();
    let on_host = |name: Option<String>| name.map(|n| ObjectRef::<Hypervisor>::new(&n));
    Controller::new(
        Api::<Hypervisor>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<VirtualMachine>::all(client.clone()),
        watcher::Config::default(),
        move |vm| on_host(vm.status.as_ref().and_then(|s| s.node_name.clone())),
    )
    .watches(
        Api::<VirtualMachineMigration>::all(client.clone()),
        watcher::Config::default().labels(DRAIN_LABEL),
        move |m| on_host(m.labels().get(DRAIN_LABEL).cloned()),
    )
    .watches_stream(
        watcher(Api::<Node>::all(client), watcher::Config::default())
            .default_backoff()
            .touched_objects(),
        |n| Some(ObjectRef::<Hypervisor>::new(&n.name_any())),
    )
    .run(reconcile, error_policy, Arc::new(ctx))
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "maintenance reconcile");
        }
    })
    .await;
}

fn error_policy(_: Arc<Hypervisor>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, source = ?std::error::Error::source(e), "maintenance reconcile failed");
    Action::requeue(DRAINING)
}

/// Whether the Node named `host` is cordoned. A Node that does not exist, or Nodes that
/// cannot be read (no such API, no permission), say no.
async fn node_cordoned(client: &Client, host: &str) -> bool {
    match Api::<Node>::all(client.clone()).get_opt(host).await {
        Ok(n) => n
            .and_then(|n| n.spec)
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        Err(e) => {
            tracing::debug!(error = %e, host, "Node not readable; maintenance by spec only");
            false
        }
    }
}

async fn reconcile(hv: Arc<Hypervisor>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(DRAINING));
    }
    let host = hv.name_any();
    // Fresh from the API, not the watch cache: a stale copy would restart `since` (and so
    // forget this drain's migrations) or miss the status just written.
    let Some(hv) = Api::<Hypervisor>::all(ctx.client.clone())
        .get_opt(&host)
        .await?
    else {
        return Ok(Action::await_change());
    };
    let requested = if hv.spec.maintenance {
        Some(MaintenanceRequester::Hypervisor)
    } else if node_cordoned(&ctx.client, &host).await {
        Some(MaintenanceRequester::Node)
    } else {
        None
    };
    let status = hv.status.as_ref();
    let prev = status.and_then(|s| s.maintenance.clone());
    let Some(by) = requested else {
        let has_condition =
            status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == MAINTENANCE_READY));
        if prev.is_some() || has_condition {
            withdraw(&ctx.client, &hv).await?;
            host_event(
                &ctx,
                &hv,
                false,
                "MaintenanceEnded",
                "the host left maintenance; it is schedulable again".into(),
            )
            .await;
        }
        return Ok(Action::await_change());
    };
    let since = prev
        .as_ref()
        .and_then(|p| p.since.clone())
        .unwrap_or_else(|| Time(jiff::Timestamp::now()));
    let now = drain(&ctx, &hv, by, since).await?;
    announce(&ctx, &hv, prev.as_ref(), &now).await;
    let ready = now.phase == MaintenancePhase::Ready;
    let condition = json!({
        "type": MAINTENANCE_READY,
        "status": if ready { "True" } else { "False" },
        "reason": if ready { "Drained" } else if now.vms_blocked > 0 { "Blocked" } else { "Draining" },
        "message": now.message,
        "lastTransitionTime": transition_time(&hv, ready),
        "observedGeneration": hv.metadata.generation,
    });
    apply_status(
        &ctx.client,
        &host,
        json!({ "maintenance": now, "conditions": [condition] }),
    )
    .await?;
    Ok(Action::requeue(if ready { DRAINED } else { DRAINING }))
}

/// The condition's transition time: kept unless its status flips.
fn transition_time(hv: &Hypervisor, ready: bool) -> Time {
    let want = if ready { "True" } else { "False" };
    hv.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == MAINTENANCE_READY))
        .filter(|c| c.status == want)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(jiff::Timestamp::now()))
}

/// Look at the VMs on the host, ask for the migrations that are due, return the progress.
async fn drain(
    ctx: &Ctx,
    hv: &Hypervisor,
    by: MaintenanceRequester,
    since: Time,
) -> Result<MaintenanceStatus, Error> {
    let host = hv.name_any();
    let on_host = ListParams::default().labels(&format!("{}={host}", labels::NODE));
    let vms = Api::<VirtualMachine>::all(ctx.client.clone())
        .list(&on_host)
        .await?
        .items;
    let migrations = Api::<VirtualMachineMigration>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let facts = facts::vm_facts(&host, Some(&since), &vms, &migrations);
    let mut verdicts: Vec<(&plan::VmFacts, Verdict)> = Vec::with_capacity(facts.len());
    for f in &facts {
        let mut v = plan::verdict(f);
        if let Verdict::Migrate(attempt) = v {
            v = evict(ctx, &host, f, attempt, &vms).await?;
        }
        verdicts.push((f, v));
    }
    let moved = facts::moved(&host, Some(&since), &migrations);
    Ok(plan::progress(by, Some(since), &verdicts, moved))
}

/// Ask for the live migration of one VM away from `host`.
async fn evict(
    ctx: &Ctx,
    host: &str,
    f: &plan::VmFacts,
    attempt: u32,
    vms: &[VirtualMachine],
) -> Result<Verdict, Error> {
    let req = MigrationRequest {
        namespace: f.namespace.clone(),
        vm: f.name.clone(),
        target: None,
        why: "drain",
        labels: [(DRAIN_LABEL.to_owned(), host.to_owned())].into(),
    };
    let m = request::create(&ctx.client, &req).await?;
    let name = m.name_any();
    let note = format!(
        "host {host} is in maintenance: live migration {name} moves the VM away (attempt {attempt})"
    );
    if let Some(vm) = vms
        .iter()
        .find(|v| v.namespace().as_deref() == Some(&f.namespace) && v.name_any() == f.name)
    {
        publish(ctx, &vm.object_ref(&()), false, "Evicting", note).await;
    }
    Ok(Verdict::Migrating(name))
}

/// Events for what changed: entering maintenance, newly blocked VMs, ready.
async fn announce(
    ctx: &Ctx,
    hv: &Hypervisor,
    prev: Option<&MaintenanceStatus>,
    now: &MaintenanceStatus,
) {
    if prev.is_none() {
        let by = match now.requested_by {
            MaintenanceRequester::Hypervisor => "spec.maintenance",
            MaintenanceRequester::Node => "its Node is cordoned",
        };
        host_event(
            ctx,
            hv,
            false,
            "Draining",
            format!("the host entered maintenance ({by}): {}", now.message),
        )
        .await;
    }
    for b in &now.blocked {
        let known = prev.is_some_and(|p| {
            p.blocked
                .iter()
                .any(|o| o.namespace == b.namespace && o.name == b.name && o.reason == b.reason)
        });
        if known {
            continue;
        }
        let note = format!("{}/{} blocks the drain: {}", b.namespace, b.name, b.reason);
        host_event(ctx, hv, true, "DrainBlocked", note.clone()).await;
        let vm = ObjectRef::<VirtualMachine>::new(&b.name).within(&b.namespace);
        publish(ctx, &vm.into(), true, "DrainBlocked", note).await;
    }
    let was_ready = prev.is_some_and(|p| p.phase == MaintenancePhase::Ready);
    if now.phase == MaintenancePhase::Ready && !was_ready {
        host_event(ctx, hv, false, "MaintenanceReady", now.message.clone()).await;
    }
}

async fn host_event(ctx: &Ctx, hv: &Hypervisor, warning: bool, reason: &str, note: String) {
    publish(ctx, &hv.object_ref(&()), warning, reason, note).await;
}

async fn publish(
    ctx: &Ctx,
    obj: &k8s_openapi::api::core::v1::ObjectReference,
    warning: bool,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Drain".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, obj).await {
        tracing::debug!(error = %e, "maintenance event not published");
    }
}

/// Remove `status.maintenance` and the MaintenanceReady condition (a merge patch guarded by
/// the resourceVersion read, so the agent's conditions written meanwhile are not lost).
async fn withdraw(client: &Client, hv: &Hypervisor) -> Result<(), Error> {
    let conditions: Vec<_> = hv
        .status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .filter(|c| c.type_ != MAINTENANCE_READY)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let body = json!({
        "metadata": { "resourceVersion": hv.metadata.resource_version },
        "status": { "maintenance": null, "conditions": conditions },
    });
    Api::<Hypervisor>::all(client.clone())
        .patch_status(
            &hv.name_any(),
            &PatchParams::apply(MANAGER),
            &Patch::Merge(&body),
        )
        .await?;
    Ok(())
}

/// Server-side apply of this manager's part of the Hypervisor's status.
async fn apply_status(client: &Client, host: &str, status: serde_json::Value) -> Result<(), Error> {
    let body = json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "Hypervisor",
        "status": status,
    });
    Api::<Hypervisor>::all(client.clone())
        .patch_status(
            host,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(())
}
