//! The usage controller: checkpoints every tenant's `UsageReport` from the agents' run logs
//! ([`crate::usage`] does the arithmetic), keeps the usage finalizer on placed VMs so a
//! deletion is accounted to its request time even while the operator is down, and keeps
//! tenant owners' read access to their own reports. Only the leader writes.
//!
//! It runs as one level-triggered pass over everything, on a timer and soon after any VM
//! changes; a pass that fails half-way is simply run again (every write is conditional on the
//! version it was computed from, and accrual is idempotent).

mod access;
pub mod facts;
pub mod reports;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use ironvisor_crds::pricing::PRICE_LIST;
use ironvisor_crds::usage::{USAGE_FINALIZER, USAGE_NAMESPACE};
use ironvisor_crds::{Hypervisor, PriceList, PriceListSpec, Tenant, VirtualMachine};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::error::Category;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::usage::pricing::Pricing;
use crate::usage::{Clock, Month, NameTooLong};
use facts::{VmRecord, ancestors, group_by_tenant, tenants_of_namespaces, vm_record};
use reports::TenantFacts;

/// The metrics' controller label.
pub const CONTROLLER: &str = "usage";

/// What the usage controller needs.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Only the leader writes.
    pub leadership: Leadership,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// A full pass at least this often.
    pub interval: Duration,
    /// The tenant of VMs in namespaces no Tenant owns.
    pub default_tenant: Option<String>,
    /// How right-sizing judges the VMs' measured use.
    pub rightsizing: crate::usage::rightsizing::Policy,
}

/// Why a pass failed (it is run again).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The API server refused or failed a call.
    #[error("{0} failed")]
    Api(String, #[source] kube::Error),
    /// A report disappeared between two reads.
    #[error("usage report {0} vanished while it was being written; the next pass recreates it")]
    Vanished(String),
    /// A tenant's name is too long for report names.
    #[error(transparent)]
    Name(#[from] NameTooLong),
}

impl UsageError {
    /// The metrics category.
    pub fn category(&self) -> Category {
        match self {
            UsageError::Api(_, kube::Error::Api(s)) if s.code == 409 => Category::Conflict,
            UsageError::Api(..) | UsageError::Vanished(_) => Category::Api,
            UsageError::Name(_) => Category::InvalidSpec,
        }
    }
}

async fn list_vms(client: &Client) -> Result<Vec<VmRecord>, UsageError> {
    let api: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<VirtualMachine>(&()));
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| UsageError::Api("listing VirtualMachines".into(), e))?;
    Ok(list.items.iter().filter_map(vm_record).collect())
}

async fn list_tenants(client: &Client) -> Result<Vec<Tenant>, UsageError> {
    let api: Api<Tenant> = Api::all(client.clone());
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| UsageError::Api("listing Tenants".into(), e))
}

async fn price_list(client: &Client) -> Result<Option<PriceListSpec>, UsageError> {
    let api: Api<PriceList> = Api::all(client.clone());
    api.get_opt(PRICE_LIST)
        .await
        .map(|p| p.map(|p| p.spec))
        .map_err(|e| UsageError::Api(format!("reading PriceList {PRICE_LIST}"), e))
}

/// Host → class, by the price list's host class label on the Hypervisors.
async fn host_classes(
    client: &Client,
    spec: &PriceListSpec,
) -> Result<BTreeMap<String, String>, UsageError> {
    let Some(label) = &spec.host_class_label else {
        return Ok(BTreeMap::new());
    };
    let api: Api<Hypervisor> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels(label))
        .await
        .map_err(|e| UsageError::Api("listing Hypervisors' host classes".into(), e))?;
    Ok(list
        .items
        .iter()
        .filter_map(|h| Some((h.name_any(), h.labels().get(label)?.clone())))
        .collect())
}

async fn namespace_tenants(client: &Client) -> Result<BTreeMap<String, String>, UsageError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let lp = ListParams::default().labels(ironvisor_crds::labels::TENANT);
    let list = api
        .list(&lp)
        .await
        .map_err(|e| UsageError::Api("listing tenant namespaces".into(), e))?;
    Ok(tenants_of_namespaces(&list.items))
}

/// Put the usage finalizer on placed VMs, and take it off deleting VMs once `accounted`
/// (their usage is checkpointed up to the deletion request) or when no tenant counts them.
async fn keep_finalizers(
    client: &Client,
    vms: &[VmRecord],
    settled: impl Fn(&VmRecord) -> bool,
) -> Result<(), UsageError> {
    for vm in vms {
        let has = vm.has_usage_finalizer();
        let finalizers: Vec<String> = match (vm.deleting_at.is_some(), has) {
            (false, false) if vm.placed => {
                let mut f = vm.finalizers.clone();
                f.push(USAGE_FINALIZER.to_owned());
                f
            }
            (true, true) if settled(vm) => vm
                .finalizers
                .iter()
                .filter(|f| *f != USAGE_FINALIZER)
                .cloned()
                .collect(),
            _ => continue,
        };
        let api: Api<VirtualMachine> = Api::namespaced(client.clone(), &vm.namespace);
        // The resourceVersion makes the write conditional: another finalizer's change in
        // between is a conflict, not a lost update.
        let body =
            json!({"metadata": {"finalizers": finalizers, "resourceVersion": vm.resource_version}});
        match api
            .patch(&vm.name, &PatchParams::default(), &Patch::Merge(body))
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => {
                return Err(UsageError::Api(
                    format!(
                        "updating the usage finalizer of {}/{}",
                        vm.namespace, vm.name
                    ),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// One full pass: checkpoint every tenant, roll up, grant access, settle finalizers.
pub async fn pass(ctx: &Ctx) -> Result<(), UsageError> {
    // Whole seconds: the API keeps times to the second, and so does the accounting.
    let now = ctx.clock.now();
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let vms = list_vms(&ctx.client).await?;
    let tenants = list_tenants(&ctx.client).await?;
    let ns_tenant = namespace_tenants(&ctx.client).await?;
    let parents: BTreeMap<String, Option<String>> = tenants
        .iter()
        .map(|t| (t.name_any(), t.spec.parent.clone()))
        .collect();
    let groups = group_by_tenant(&vms, &ns_tenant, &parents, ctx.default_tenant.as_deref());
    let price_list = price_list(&ctx.client).await?;
    let pricing = match &price_list {
        Some(spec) => Some(Pricing::new(spec, host_classes(&ctx.client, spec).await?)),
        None => None,
    };
    let mut settled: BTreeMap<String, bool> = BTreeMap::new();
    let mut first_error = None;
    for (tenant, members) in &groups {
        let chain = ancestors(tenant, &parents);
        let f = TenantFacts {
            tenant,
            ancestors: &chain,
            vms: members,
            pricing: pricing.as_ref(),
            policy: &ctx.rightsizing,
        };
        // One tenant's failure (a conflict, a name too long) holds back its VMs' finalizers
        // only; the other tenants are still accounted.
        let status = match reports::checkpoint(&ctx.client, &f, now, ctx.interval).await {
            Ok(report) => Some(report.status.unwrap_or_default()),
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "checkpointing the tenant's usage failed; retried next pass");
                first_error.get_or_insert(e);
                None
            }
        };
        for vm in members {
            let done = vm.run_log.is_empty()
                || status
                    .as_ref()
                    .is_some_and(|s| s.vms.iter().any(|e| e.uid == vm.uid && e.deleted));
            settled.insert(vm.uid.clone(), done);
        }
    }
    let all_reports = reports::all(&ctx.client).await?;
    let names = report_names(&all_reports);
    let prices = price_list.as_ref().map(reports::Prices::of);
    // The previous month too: the first pass of a month closes it (its last seconds accrued
    // into its reports' own usage), and its totals must follow. Earlier months never change.
    let month = Month::of(now);
    for (period, metrics) in [
        (month.prev().label(), None),
        (month.label(), Some(&ctx.metrics.usage)),
    ] {
        let of_period = all_reports
            .iter()
            .filter(|r| r.spec.period == period)
            .cloned()
            .collect();
        reports::write_roll_ups(&ctx.client, of_period, prices.as_ref(), metrics).await?;
    }
    for t in &tenants {
        let all = names.get(&t.name_any()).cloned().unwrap_or_default();
        access::grant(&ctx.client, t, &all).await?;
    }
    access::revoke_gone(&ctx.client, &parents).await?;
    keep_finalizers(&ctx.client, &vms, |vm| {
        settled.get(&vm.uid).copied().unwrap_or(true)
    })
    .await?;
    first_error.map_or(Ok(()), Err)
}

fn report_names(reports: &[ironvisor_crds::UsageReport]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in reports {
        out.entry(r.spec.tenant.clone())
            .or_default()
            .push(r.name_any());
    }
    out
}

async fn ensure_namespace(client: &Client) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(USAGE_NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => tracing::warn!(error = %e, "cannot create the usage reports' namespace"),
    }
}

/// Run the usage controller forever.
pub async fn run(ctx: Ctx) {
    let vms: Api<DynamicObject> = Api::all_with(
        ctx.client.clone(),
        &ApiResource::erase::<VirtualMachine>(&()),
    );
    let mut changes = watcher(vms, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut leadership = ctx.leadership.clone();
    let mut ensured = false;
    loop {
        if ctx.leadership.is_leader() {
            if !ensured {
                ensure_namespace(&ctx.client).await;
                ensured = true;
            }
            let _timer = ctx.metrics.timer(CONTROLLER);
            if let Err(e) = pass(&ctx).await {
                ctx.metrics.error(CONTROLLER, e.category());
                tracing::warn!(error = %e, "usage accounting pass failed; it runs again");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.interval) => {}
            Some(_) = changes.next() => {
                // Let a burst of changes settle into one pass.
                tokio::time::sleep(Duration::from_millis(500)).await;
                while let Some(Some(_)) = changes.next().now_or_never() {}
            }
            () = leadership.acquired(), if !ctx.leadership.is_leader() => {}
        }
    }
}
