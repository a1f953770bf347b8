//! The Tenant controller: namespaces, owners' RoleBindings, deletion, and the Tenant status.
//!
//! Owns the namespaces a tenant claims (created when missing, adopted when they exist;
//! labelled `ironvisor.io/tenant=<name>` and annotated with how the tenant holds them), the
//! RoleBinding `ironvisor-tenant-owners` to ClusterRole `ironvisor-admin` in each, and their
//! release on deletion: only a namespace the operator created for the tenant may be deleted
//! (per `namespaceDeletionPolicy`); an adopted one is released and kept with everything in
//! it. It never takes a namespace from another tenant (the earlier claim by
//! creationTimestamp wins, the later tenant gets a condition) and never touches `default`,
//! `kube-*` or the control plane's namespace. Usage comes from the scheduler loop's ledger.
//! Deciding is pure (`decide`); `reconcile` and `namespaces` do the I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ironvisor_crds::VirtualMachine;
use ironvisor_crds::labels;
use ironvisor_crds::tenant::{NamespaceOrigin, Tenant, TenantNamespaceStatus};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use crate::error::Category;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::quota::{Reserved, TenantNode, TenantTree};
use crate::units::Units;

mod decide;
mod namespaces;

pub use decide::{CleanupStep, NamespaceStep, cleanup_step, namespace_step, origin_of, status};

const CONTROLLER: &str = "tenant";
/// Name of the RoleBinding the controller keeps in each namespace of a tenant.
pub const ROLE_BINDING: &str = "ironvisor-tenant-owners";
/// Usage changes within this period reconcile the tenants once.
const USAGE_DEBOUNCE: Duration = Duration::from_millis(500);
/// The ClusterRole tenant owners are bound to.
pub const ADMIN_CLUSTER_ROLE: &str = "ironvisor-admin";

/// Errors of a tenant reconcile.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// A request to the API failed.
    #[error("API request failed")]
    Api(#[from] kube::Error),
    /// The finalizer helper failed.
    #[error("finalizer handling failed")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<TenantError>>),
}

impl TenantError {
    /// Metric category.
    pub fn category(&self) -> Category {
        match self {
            TenantError::Api(e) => Category::of_kube(e),
            TenantError::Finalizer(_) => Category::Api,
        }
    }
}

/// Shared by every reconcile.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Only the leader writes.
    pub leadership: Leadership,
    /// Tenant usage from the scheduler loop.
    pub usage: watch::Receiver<BTreeMap<String, Units>>,
    /// How often to reconcile anyway.
    pub resync: Duration,
    /// Namespaces no tenant may claim.
    pub reserved: Reserved,
    store: Option<Store<Tenant>>,
}

impl Ctx {
    /// A context; the store is attached by [`run`].
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        leadership: Leadership,
        usage: watch::Receiver<BTreeMap<String, Units>>,
        resync: Duration,
    ) -> Self {
        Self {
            client,
            metrics,
            leadership,
            usage,
            resync,
            reserved: Reserved::default(),
            store: None,
        }
    }

    /// Use `reserved` instead of the default reserved namespaces.
    pub fn with_reserved(mut self, reserved: Reserved) -> Self {
        self.reserved = reserved;
        self
    }

    fn tree(&self) -> TenantTree {
        let tenants = self.store.as_ref().map(|s| s.state()).unwrap_or_default();
        let nodes = tenants.iter().map(|t| TenantNode::from_tenant(t));
        TenantTree::with_reserved(nodes, self.reserved.clone())
    }
}

fn status_params() -> PatchParams {
    PatchParams::apply(labels::OPERATOR_MANAGER).force()
}

/// One namespace's status entry.
fn entry(
    name: &str,
    origin: Option<NamespaceOrigin>,
    message: Option<String>,
) -> TenantNamespaceStatus {
    TenantNamespaceStatus {
        name: name.to_owned(),
        ready: origin.is_some(),
        origin,
        message,
    }
}

async fn apply(t: Arc<Tenant>, ctx: &Ctx) -> Result<Action, TenantError> {
    let name = t.name_any();
    let tree = ctx.tree();
    let nss: Api<Namespace> = Api::all(ctx.client.clone());
    let mut statuses = Vec::new();
    let mut claimed = Vec::new();
    for ns in &t.spec.namespaces {
        // A reserved name is refused before anything is read or written there.
        if let Some(why) = tree.reserved().refusal(ns) {
            statuses.push(entry(ns, None, Some(why)));
            continue;
        }
        let existing = nss.get_opt(ns).await?;
        let label = existing
            .as_ref()
            .and_then(|n| n.labels().get(labels::TENANT).cloned());
        match namespace_step(&tree, &name, ns, label.as_deref()) {
            NamespaceStep::Conflict(msg) | NamespaceStep::Reserved(msg) => {
                statuses.push(entry(ns, None, Some(msg)));
            }
            NamespaceStep::Claim => {
                let origin = namespaces::claim(&ctx.client, &t, ns, existing).await?;
                statuses.push(entry(ns, Some(origin), None));
                claimed.push(ns.as_str());
            }
        }
    }
    // Namespaces dropped from the spec (or no longer claimable) are released, never deleted.
    for ns in namespaces::labelled(&ctx.client, &name).await? {
        if !claimed.contains(&ns.name_any().as_str()) {
            namespaces::release(&ctx.client, &ns.name_any()).await?;
        }
    }
    let usage = ctx.usage.borrow().get(&name).copied().unwrap_or_default();
    let st = status(&t, &tree, statuses, usage, jiff::Timestamp::now());
    if t.status.as_ref() == Some(&st) {
        // Usage moves with every admission; an unchanged status is not written again.
        return Ok(Action::requeue(ctx.resync));
    }
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let body = json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "status": st});
    api.patch_status(&name, &status_params(), &Patch::Apply(body))
        .await?;
    Ok(Action::requeue(ctx.resync))
}

/// The tenant is being deleted: each namespace labelled for it is deleted only when the
/// operator created it for this tenant and the policy says so; every other is released.
async fn cleanup(t: Arc<Tenant>, ctx: &Ctx) -> Result<Action, TenantError> {
    let name = t.name_any();
    let nss: Api<Namespace> = Api::all(ctx.client.clone());
    for ns in namespaces::labelled(&ctx.client, &name).await? {
        let ns_name = ns.name_any();
        let origin = if ctx.reserved.refusal(&ns_name).is_some() {
            NamespaceOrigin::Adopted
        } else {
            origin_of(&ns, &name)
        };
        let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), &ns_name);
        let holds_vms = !vms
            .list(&ListParams::default().limit(1))
            .await?
            .items
            .is_empty();
        match cleanup_step(t.spec.namespace_deletion_policy, origin, holds_vms) {
            CleanupStep::Delete => {
                tracing::info!(tenant = %name, namespace = %ns_name, "deleting the namespace created for a deleted tenant");
                nss.delete(&ns_name, &DeleteParams::background()).await?;
            }
            CleanupStep::Release => {
                tracing::info!(tenant = %name, namespace = %ns_name, ?origin, "releasing the namespace of a deleted tenant");
                namespaces::release(&ctx.client, &ns_name).await?;
            }
        }
    }
    Ok(Action::await_change())
}

async fn reconcile(t: Arc<Tenant>, ctx: Arc<Ctx>) -> Result<Action, TenantError> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(3)));
    }
    let _timer = ctx.metrics.timer(CONTROLLER);
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let inner = ctx.clone();
    finalizer(&api, labels::TENANT_FINALIZER, t, |ev| async move {
        match ev {
            Finalizer::Apply(t) => apply(t, &inner).await,
            Finalizer::Cleanup(t) => cleanup(t, &inner).await,
        }
    })
    .await
    .map_err(|e| TenantError::Finalizer(Box::new(e)))
}

fn error_policy(_t: Arc<Tenant>, e: &TenantError, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "tenant reconcile failed");
    ctx.metrics.error(CONTROLLER, e.category());
    Action::requeue(Duration::from_secs(5))
}

/// Run the controller until the process ends. Every tenant is reconciled again whenever the
/// scheduler's usage figures change.
pub async fn run(mut ctx: Ctx) {
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    ctx.store = Some(controller.store());
    let usage = ctx.usage.clone();
    let trigger = futures::stream::unfold(usage, |mut rx| async move {
        rx.changed().await.ok()?;
        // Usage moves with every admission of a burst: reconcile every tenant at most once
        // per debounce period, with the latest figures.
        tokio::time::sleep(USAGE_DEBOUNCE).await;
        rx.borrow_and_update();
        Some(((), rx))
    });
    controller
        .reconcile_all_on(trigger)
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|_| futures::future::ready(()))
        .await;
}
