//! VDI desktop pools: keeps each `DesktopPool`'s desktops (ordinary VirtualMachines it owns)
//! and binds its `DesktopClaim`s to them.
//!
//! One reconcile per pool, as a pipeline: fetch (the pool's VMs, confirmed by the pool's uid
//! in their controller ownerReference; its claims; the desktops' clean snapshots and
//! resets) → [`view`] (pure) → [`decide`] (pure) → [`apply`] the steps → [`access`] (the
//! per-claim console Roles) → [`status`]. Level-triggered: a binding lives in the desktop
//! VM's labels, so a pass interrupted at any point is finished by the next one. Only the
//! leader writes. It never edits a VM the pool does not own, and never a claim's spec.

pub mod access;
pub mod apply;
pub mod decide;
pub mod orphans;
pub mod status;
pub mod view;

#[cfg(test)]
mod decide_tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ironvisor_crds::desktop::{ClaimPhase, DesktopClaim, DesktopPool, POOL_LABEL};
use ironvisor_crds::restore::VirtualMachineRestore;
use ironvisor_crds::snapshot::VirtualMachineSnapshot;
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::leader::Leadership;

/// What the pool controller needs.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Only the leader writes.
    pub leadership: Leadership,
    /// Events (a claim whose pool does not exist).
    pub recorder: Recorder,
}

/// Why a pass failed (retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a read or a status write.
    #[error("Kubernetes API call failed")]
    Kube(#[from] kube::Error),
    /// A step failed.
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
}

/// How often a quiet pool is looked at anyway.
const RESYNC: Duration = Duration::from_secs(60);

/// Everything a pass reads.
struct Facts {
    vms: Vec<VirtualMachine>,
    claims: Vec<DesktopClaim>,
    snapshots: BTreeMap<String, VirtualMachineSnapshot>,
    restores: BTreeMap<String, VirtualMachineRestore>,
}

async fn fetch(ctx: &Ctx, pool: &DesktopPool) -> Result<Facts, Error> {
    let ns = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    let uid = pool.uid();
    let lp = ListParams::default().labels(&format!("{POOL_LABEL}={name}"));
    let vms = Api::<VirtualMachine>::namespaced(ctx.client.clone(), &ns)
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|vm| {
            vm.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
        })
        .collect();
    let claims = Api::<DesktopClaim>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| c.spec.pool_name == name && c.metadata.deletion_timestamp.is_none())
        .collect();
    let snapshots = Api::<VirtualMachineSnapshot>::namespaced(ctx.client.clone(), &ns)
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|s| (s.spec.vm_name.clone(), s))
        .collect();
    let restores = Api::<VirtualMachineRestore>::namespaced(ctx.client.clone(), &ns)
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|r| (r.spec.vm_name.clone(), r))
        .collect();
    Ok(Facts {
        vms,
        claims,
        snapshots,
        restores,
    })
}

/// The snapshot or restore of a desktop, when it is the one the pool made (by name).
fn own<'a, T: ResourceExt>(by_vm: &'a BTreeMap<String, T>, vm: &str, name: &str) -> Option<&'a T> {
    by_vm.get(vm).filter(|o| o.name_any() == name)
}

async fn reconcile(pool: Arc<DesktopPool>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() || pool.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let facts = fetch(&ctx, &pool).await?;
    let desktops: Vec<view::Desktop> = facts
        .vms
        .iter()
        .map(|vm| {
            let n = vm.name_any();
            let snap = own(&facts.snapshots, &n, &view::clean_snapshot_name(&n));
            let restore = own(&facts.restores, &n, &view::reset_name(&n));
            view::desktop(vm, snap, restore)
        })
        .collect();
    let claims: Vec<view::Claim> = facts.claims.iter().map(view::Claim::of).collect();
    let facts_of_pool = view::PoolFacts::of(&pool);
    let plan = decide::decide(&facts_of_pool, &desktops, &claims, jiff::Timestamp::now());
    let uids: BTreeMap<String, String> = facts
        .vms
        .iter()
        .map(|v| (v.name_any(), v.uid().unwrap_or_default()))
        .collect();
    let target = apply::Target {
        client: &ctx.client,
        pool: &pool,
        uids: &uids,
    };
    for step in &plan.steps {
        tracing::info!(pool = %pool.name_any(), ?step, "desktop pool step");
        target.apply(step).await?;
    }
    let now = Time(jiff::Timestamp::now());
    let by_name: BTreeMap<String, &DesktopClaim> =
        facts.claims.iter().map(|c| (c.name_any(), c)).collect();
    // Console rights first: a claim reads Bound only once its user can connect.
    let grants: Vec<access::Grant> = plan
        .claims
        .iter()
        .filter_map(|o| {
            let claim = by_name.get(&o.name)?;
            let vm = o.vm.clone().filter(|_| o.phase == ClaimPhase::Bound)?;
            Some(access::Grant {
                claim: o.name.clone(),
                uid: claim.uid().unwrap_or_default(),
                user: claim.spec.user.clone(),
                vm,
            })
        })
        .collect();
    let ns = pool.namespace().unwrap_or_default();
    access::sync(&ctx.client, &ns, &pool.name_any(), &grants).await?;
    for o in &plan.claims {
        let Some(claim) = by_name.get(&o.name) else {
            continue;
        };
        let next = status::claim_status(claim, o, now.clone());
        status::write_claim(&ctx.client, claim, next).await?;
    }
    status::write_pool(
        &ctx.client,
        &pool,
        status::pool_status(&pool, &plan.pool, now),
    )
    .await?;
    Ok(Action::requeue(plan.requeue.unwrap_or(RESYNC).min(RESYNC)))
}

/// The error and its causes on one line.
fn chain(e: &Error) -> String {
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push_str(&format!(": {s}"));
        src = s.source();
    }
    chain
}

fn error_policy(pool: Arc<DesktopPool>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(pool = %pool.name_any(), error = %chain(e), "desktop pool pass failed; retrying");
    Action::requeue(decide::BUSY)
}

fn pool_of_label<K: ResourceExt>(o: K) -> Option<ObjectRef<DesktopPool>> {
    let pool = o.labels().get(POOL_LABEL)?;
    Some(ObjectRef::new(pool).within(&o.namespace()?))
}

/// Run until the process ends: the pools, and the claims whose pool does not exist
/// ([`orphans`]); every pool and claim is looked at again when this replica leads.
pub async fn run(ctx: Ctx) {
    let ctx = Arc::new(ctx);
    tokio::join!(pools(ctx.clone()), orphans::run(ctx));
}

async fn pools(ctx: Arc<Ctx>) {
    let client = ctx.client.clone();
    let pools = Api::<DesktopPool>::all(client.clone());
    let labelled = watcher::Config::default().labels(POOL_LABEL);
    let leads = ctx.leadership.terms();
    Controller::new(pools, watcher::Config::default())
        .owns(Api::<VirtualMachine>::all(client.clone()), labelled.clone())
        .watches(
            Api::<DesktopClaim>::all(client.clone()),
            watcher::Config::default(),
            |c| Some(ObjectRef::new(&c.spec.pool_name).within(&c.namespace()?)),
        )
        .watches(
            Api::<VirtualMachineSnapshot>::all(client.clone()),
            labelled.clone(),
            pool_of_label,
        )
        .watches(
            Api::<VirtualMachineRestore>::all(client),
            labelled,
            pool_of_label,
        )
        .reconcile_all_on(leads)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
