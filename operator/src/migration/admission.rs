//! Leaving `Pending`: a migration starts only while the policy's limits leave a place
//! (parallel migrations in the cluster and leaving its VM's host), then takes the VM's
//! operation lock and records the policy it runs by. Every migration goes through here —
//! a user's, a drain's, a rebalancing's ([`super::request`]) — so the limits hold for all.
//!
//! Admissions are serialised in this process (only the leader admits): the count of places
//! taken is read from the API after the previous admission's write, so two migrations never
//! take the last place together.

use ironvisor_crds::migration::{MigrationPhase, VirtualMachineMigration};
use ironvisor_crds::migration_policy::MigrationPolicy;
use ironvisor_crds::vm::VirtualMachine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{ACTIVE, Ctx, Error, condition, holder, policy, set_status};
use crate::oplock::{self, Acquired};

/// How soon a migration waiting for a place or for the VM's lock is tried again.
const WAITING_FOR_PLACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Admit `m` under the limits, take the VM's lock and move to `Scheduling`; or leave it
/// `Pending` saying what it waits for.
pub(super) async fn lock(
    m: &VirtualMachineMigration,
    ctx: &Ctx,
    vm: Option<&VirtualMachine>,
) -> Result<Action, Error> {
    let Some(vm) = vm else {
        return Ok(Action::requeue(ACTIVE));
    };
    let _one_at_a_time = ctx.admission.lock().await;
    let all = Api::<VirtualMachineMigration>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let policies = match Api::<MigrationPolicy>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        // The MigrationPolicy CRD not installed yet (an upgrade): the built-in defaults.
        Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let source = vm.status.as_ref().and_then(|s| s.node_name.clone());
    let me = m.uid().unwrap_or_default();
    let limits = policy::limits(&policies);
    if let Err(wait) = policy::admit(&all, &me, source.as_deref().unwrap_or_default(), limits) {
        pending(ctx, m, wait.reason, &wait.message).await?;
        return Ok(Action::requeue(WAITING_FOR_PLACE));
    }
    let ns = m.namespace().unwrap_or_default();
    let now = jiff::Timestamp::now();
    match oplock::acquire(&ctx.client, &ns, &m.spec.vm_name, &holder(m), now).await? {
        Acquired::Busy(op) => {
            let msg = oplock::busy_message(&m.spec.vm_name, &op);
            pending(ctx, m, "Busy", &msg).await?;
            Ok(Action::requeue(WAITING_FOR_PLACE))
        }
        Acquired::Held | Acquired::TookOver(_) => {
            let applied = policy::resolve(&policies, vm, m);
            let mut status = json!({
                "phase": "Scheduling",
                "vmUid": vm.metadata.uid,
                "sourceNode": source,
                "policy": applied,
                "conditions": condition("False", "Scheduling", "choosing a target host"),
            });
            // A retaken lock (lost before the copy) keeps the first start time.
            let phase = m.status.as_ref().map(|s| s.phase).unwrap_or_default();
            if phase == MigrationPhase::Pending {
                status["startTime"] = json!(Time(now));
            }
            set_status(ctx, m, status).await?;
            Ok(Action::requeue(ACTIVE))
        }
    }
}

/// Stay `Pending` with `reason`; written only when the reason or message changes (a waiting
/// migration is looked at every two seconds).
async fn pending(
    ctx: &Ctx,
    m: &VirtualMachineMigration,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let now = m.status.as_ref().and_then(|s| s.conditions.first());
    if now.is_some_and(|c| c.reason == reason && c.message == message) {
        return Ok(());
    }
    set_status(
        ctx,
        m,
        json!({ "phase": "Pending", "conditions": condition("False", reason, message) }),
    )
    .await
}
