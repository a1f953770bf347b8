//! The Tenant controller: namespaces, owners' RoleBindings, deletion, and the Tenant status.
//!
//! Owns the namespaces a tenant claims (created when missing, labelled
//! `ironvisor.io/tenant=<name>`), the RoleBinding `ironvisor-tenant-owners` to ClusterRole
//! `ironvisor-admin` in each, and their release on deletion per `namespaceDeletionPolicy`.
//! It never takes a namespace from another tenant: the earlier claim (by creationTimestamp)
//! wins and the later tenant gets a condition. Usage comes from the scheduler loop's ledger.
//! Deciding is pure (`namespace_step`, `cleanup_step`, `status`); `reconcile` does the I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ironvisor_crds::VirtualMachine;
use ironvisor_crds::common::{Condition, condition_status, condition_type, set_condition};
use ironvisor_crds::labels;
use ironvisor_crds::tenant::{
    NamespaceDeletionPolicy, Tenant, TenantNamespaceStatus, TenantStatus,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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
use crate::quota::{TenantNode, TenantTree};
use crate::units::Units;

const CONTROLLER: &str = "tenant";
/// Name of the RoleBinding the controller keeps in each namespace of a tenant.
pub const ROLE_BINDING: &str = "ironvisor-tenant-owners";
/// Usage changes within this period reconcile the tenants once.
const USAGE_DEBOUNCE: Duration = Duration::from_millis(500);
/// The ClusterRole tenant owners are bound to.
pub const ADMIN_CLUSTER_ROLE: &str = "ironvisor-admin";

/// What to do with one claimed namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceStep {
    /// Create it (or label it) for this tenant and bind the owners.
    Claim,
    /// Leave it alone: it belongs to another tenant.
    Conflict(String),
}

/// Decide for one namespace. `label` is the namespace's current tenant label, if it exists.
/// A label naming a tenant that no longer exists is stale and may be overwritten.
pub fn namespace_step(
    tree: &TenantTree,
    tenant: &str,
    namespace: &str,
    label: Option<&str>,
) -> NamespaceStep {
    match tree.owner_of(namespace) {
        Some(owner) if owner != tenant => {
            return NamespaceStep::Conflict(format!(
                "namespace {namespace} is already owned by tenant {owner}"
            ));
        }
        _ => {}
    }
    match label {
        Some(other) if other != tenant && tree.contains(other) => NamespaceStep::Conflict(format!(
            "namespace {namespace} is labelled for tenant {other}"
        )),
        _ => NamespaceStep::Claim,
    }
}

/// What to do with a namespace when its tenant is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupStep {
    /// Delete the namespace.
    Delete,
    /// Keep it; remove the tenant label and the owners' RoleBinding.
    Release,
}

/// Decide for one namespace of a deleted tenant.
pub fn cleanup_step(policy: NamespaceDeletionPolicy, holds_vms: bool) -> CleanupStep {
    match policy {
        NamespaceDeletionPolicy::Delete => CleanupStep::Delete,
        NamespaceDeletionPolicy::DeleteEmpty if !holds_vms => CleanupStep::Delete,
        NamespaceDeletionPolicy::DeleteEmpty | NamespaceDeletionPolicy::Retain => {
            CleanupStep::Release
        }
    }
}

/// The Tenant's status.
pub fn status(
    t: &Tenant,
    tree: &TenantTree,
    namespaces: Vec<TenantNamespaceStatus>,
    usage: Units,
    now: jiff::Timestamp,
) -> TenantStatus {
    let mut conditions = t
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let problems: Vec<String> = tree
        .problems(&t.name_any())
        .iter()
        .map(ToString::to_string)
        .collect();
    let not_ready: Vec<String> = namespaces
        .iter()
        .filter(|n| !n.ready)
        .map(|n| {
            n.message
                .clone()
                .unwrap_or_else(|| format!("namespace {} is not ready", n.name))
        })
        .collect();
    let mut all: Vec<String> = problems;
    for m in not_ready {
        if !all.contains(&m) {
            all.push(m);
        }
    }
    let (ok, reason, message) = if all.is_empty() {
        (
            true,
            "Reconciled",
            format!("{} namespace(s) ready", namespaces.len()),
        )
    } else if all
        .iter()
        .any(|m| m.contains("already owned") || m.contains("labelled for"))
    {
        (false, "NamespaceConflict", all.join("; "))
    } else {
        (false, "Invalid", all.join("; "))
    };
    set_condition(
        &mut conditions,
        Condition {
            type_: condition_type::READY.into(),
            status: if ok {
                condition_status::TRUE
            } else {
                condition_status::FALSE
            }
            .into(),
            reason: reason.into(),
            message,
            observed_generation: t.metadata.generation,
            last_transition_time: Time(now),
        },
    );
    TenantStatus {
        namespaces,
        usage: Some(usage.to_usage()),
        conditions,
        observed_generation: t.metadata.generation,
    }
}

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
            store: None,
        }
    }

    fn tree(&self) -> TenantTree {
        let tenants = self.store.as_ref().map(|s| s.state()).unwrap_or_default();
        TenantTree::new(tenants.iter().map(|t| {
            TenantNode {
                name: t.name_any(),
                parent: t.spec.parent.clone(),
                namespaces: t.spec.namespaces.clone(),
                created: t
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|c| c.0)
                    .unwrap_or_default(),
            }
        }))
    }
}

fn pp() -> PatchParams {
    PatchParams::apply(labels::OPERATOR_MANAGER).force()
}

async fn claim(client: &Client, t: &Tenant, ns: &str) -> Result<(), kube::Error> {
    let name = t.name_any();
    let nss: Api<Namespace> = Api::all(client.clone());
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {labels::TENANT: name}}});
    nss.patch(ns, &pp(), &Patch::Apply(body)).await?;
    let subjects: Vec<serde_json::Value> = t
        .spec
        .owners
        .iter()
        .map(|s| {
            let mut v = json!({"kind": s.kind.as_str(), "name": s.name});
            match &s.namespace {
                Some(n) => v["namespace"] = json!(n),
                None => v["apiGroup"] = json!("rbac.authorization.k8s.io"),
            }
            v
        })
        .collect();
    let rb = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": ROLE_BINDING, "namespace": ns, "labels": {labels::TENANT: name}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ADMIN_CLUSTER_ROLE},
        "subjects": subjects,
    });
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    rbs.patch(ROLE_BINDING, &pp(), &Patch::Apply(rb)).await?;
    super::seed::access::grant(client, ns, &name).await
}

async fn release(client: &Client, ns: &str) -> Result<(), kube::Error> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let body = json!({"metadata": {"labels": {labels::TENANT: null}}});
    nss.patch(ns, &PatchParams::default(), &Patch::Merge(body))
        .await?;
    super::seed::access::revoke(client, ns).await?;
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    match rbs.delete(ROLE_BINDING, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn labelled_namespaces(client: &Client, tenant: &str) -> Result<Vec<String>, kube::Error> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let list = nss
        .list(&ListParams::default().labels(&format!("{}={tenant}", labels::TENANT)))
        .await?;
    Ok(list.items.iter().map(|n| n.name_any()).collect())
}

async fn apply(t: Arc<Tenant>, ctx: &Ctx) -> Result<Action, TenantError> {
    let name = t.name_any();
    let tree = ctx.tree();
    let nss: Api<Namespace> = Api::all(ctx.client.clone());
    let mut statuses = Vec::new();
    for ns in &t.spec.namespaces {
        let existing = nss.get_opt(ns).await?;
        let label = existing
            .as_ref()
            .and_then(|n| n.labels().get(labels::TENANT).cloned());
        match namespace_step(&tree, &name, ns, label.as_deref()) {
            NamespaceStep::Conflict(msg) => statuses.push(TenantNamespaceStatus {
                name: ns.clone(),
                ready: false,
                message: Some(msg),
            }),
            NamespaceStep::Claim => {
                claim(&ctx.client, &t, ns).await?;
                statuses.push(TenantNamespaceStatus {
                    name: ns.clone(),
                    ready: true,
                    message: None,
                });
            }
        }
    }
    // Namespaces dropped from the spec are released, never deleted.
    for ns in labelled_namespaces(&ctx.client, &name).await? {
        if !t.spec.namespaces.contains(&ns) {
            release(&ctx.client, &ns).await?;
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
    api.patch_status(&name, &pp(), &Patch::Apply(body)).await?;
    Ok(Action::requeue(ctx.resync))
}

async fn cleanup(t: Arc<Tenant>, ctx: &Ctx) -> Result<Action, TenantError> {
    let name = t.name_any();
    let nss: Api<Namespace> = Api::all(ctx.client.clone());
    for ns in labelled_namespaces(&ctx.client, &name).await? {
        let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), &ns);
        let holds_vms = !vms
            .list(&ListParams::default().limit(1))
            .await?
            .items
            .is_empty();
        match cleanup_step(t.spec.namespace_deletion_policy, holds_vms) {
            CleanupStep::Delete => {
                tracing::info!(tenant = %name, namespace = %ns, "deleting namespace of deleted tenant");
                nss.delete(&ns, &DeleteParams::background()).await?;
            }
            CleanupStep::Release => release(&ctx.client, &ns).await?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::tree::tests::node;
    use ironvisor_crds::tenant::TenantSpec;

    fn tree() -> TenantTree {
        TenantTree::new([
            node("early", None, &["shared", "a"], 1),
            node("late", None, &["shared", "b"], 2),
        ])
    }

    #[test]
    fn a_namespace_claimed_earlier_by_another_tenant_is_a_conflict_not_a_takeover() {
        assert_eq!(
            namespace_step(&tree(), "late", "shared", None),
            NamespaceStep::Conflict("namespace shared is already owned by tenant early".into())
        );
        assert_eq!(
            namespace_step(&tree(), "early", "shared", None),
            NamespaceStep::Claim
        );
    }

    #[test]
    fn a_namespace_labelled_for_a_live_tenant_is_not_relabelled_but_a_stale_label_is() {
        assert_eq!(
            namespace_step(&tree(), "late", "b", Some("early")),
            NamespaceStep::Conflict("namespace b is labelled for tenant early".into())
        );
        assert_eq!(
            namespace_step(&tree(), "late", "b", Some("deleted-tenant")),
            NamespaceStep::Claim
        );
    }

    #[test]
    fn deletion_policy_decides_per_namespace() {
        use NamespaceDeletionPolicy::*;
        assert_eq!(cleanup_step(DeleteEmpty, false), CleanupStep::Delete);
        assert_eq!(cleanup_step(DeleteEmpty, true), CleanupStep::Release);
        assert_eq!(cleanup_step(Delete, true), CleanupStep::Delete);
        assert_eq!(cleanup_step(Retain, false), CleanupStep::Release);
    }

    #[test]
    fn the_later_tenant_gets_a_namespace_conflict_condition() {
        let t = Tenant::new(
            "late",
            TenantSpec {
                namespaces: vec!["shared".into(), "b".into()],
                ..Default::default()
            },
        );
        let ns = vec![
            TenantNamespaceStatus {
                name: "shared".into(),
                ready: false,
                message: Some("namespace shared is already owned by tenant early".into()),
            },
            TenantNamespaceStatus {
                name: "b".into(),
                ready: true,
                message: None,
            },
        ];
        let s = status(
            &t,
            &tree(),
            ns,
            Units::default(),
            jiff::Timestamp::from_second(0).unwrap(),
        );
        let c = &s.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NamespaceConflict")
        );
        assert_eq!(
            c.message,
            "namespace shared is already owned by tenant early"
        );
    }

    #[test]
    fn a_tenant_with_all_namespaces_ready_is_ready_and_shows_its_usage() {
        let t = Tenant::new(
            "early",
            TenantSpec {
                namespaces: vec!["a".into()],
                ..Default::default()
            },
        );
        let ns = vec![TenantNamespaceStatus {
            name: "a".into(),
            ready: true,
            message: None,
        }];
        let s = status(
            &t,
            &tree(),
            ns,
            Units {
                vms: 3,
                vcpus: 6,
                memory: 3 << 30,
                storage: 0,
            },
            jiff::Timestamp::from_second(0).unwrap(),
        );
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.usage.unwrap().virtual_machines, 3);
    }
}
