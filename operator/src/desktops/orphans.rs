//! Claims whose pool does not exist: the pool controller only runs for pools that exist, so
//! this controller watches claims (and pools, to notice a pool deleted under its claims) and
//! gives such a claim a status saying so — `Pending` with reason `PoolNotFound` while it
//! waits (a pool of that name created later serves it: the pool controller takes it from
//! there), `Released` with the same reason when its pool was deleted while it was Bound —
//! and a Warning Event when it starts to say so. It never touches a claim whose pool exists.

use std::sync::Arc;

use futures::StreamExt;
use ironvisor_crds::desktop::{ClaimPhase, DesktopClaim, DesktopPool, desktop_reason};
use ironvisor_crds::labels::OPERATOR_MANAGER;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::decide::ClaimOutcome;
use super::{Ctx, Error, access, status};

/// What the status of `claim` should say, its pool being absent; `None`: leave it (Released
/// and Failed are final).
pub fn outcome(claim: &DesktopClaim) -> Option<ClaimOutcome> {
    let st = claim.status.clone().unwrap_or_default();
    let pool = &claim.spec.pool_name;
    let ns = claim.namespace().unwrap_or_default();
    let (phase, vm, message) = match st.phase {
        p if p.is_terminal() => return None,
        ClaimPhase::Bound => (
            ClaimPhase::Released,
            st.vm_name,
            format!(
                "desktop pool {pool:?} was deleted, and its desktops with it; delete this claim \
                 and claim a desktop of another pool (kubectl get desktoppools -n {ns})"
            ),
        ),
        _ => (
            ClaimPhase::Pending,
            None,
            format!(
                "desktop pool {pool:?} does not exist in namespace {ns}: check the name \
                 (kubectl get desktoppools -n {ns}); this claim is served once a pool of that \
                 name exists, or delete it and claim from an existing pool"
            ),
        ),
    };
    Some(ClaimOutcome {
        name: claim.name_any(),
        phase,
        vm,
        reason: desktop_reason::POOL_NOT_FOUND,
        message,
    })
}

fn reason_of(claim: &DesktopClaim) -> Option<&str> {
    let st = claim.status.as_ref()?;
    st.conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.as_str())
}

async fn reconcile(claim: Arc<DesktopClaim>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() || claim.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = claim.namespace().unwrap_or_default();
    let pool = &claim.spec.pool_name;
    // Read now, not from a cache: a pool that has just appeared belongs to its controller.
    if Api::<DesktopPool>::namespaced(ctx.client.clone(), &ns)
        .get_opt(pool)
        .await?
        .is_some()
    {
        return Ok(Action::await_change());
    }
    let Some(o) = outcome(&claim) else {
        return Ok(Action::await_change());
    };
    let next = status::claim_status(&claim, &o, Time(jiff::Timestamp::now()));
    if claim.status.as_ref() == Some(&next) {
        return Ok(Action::await_change());
    }
    if o.phase == ClaimPhase::Released {
        // The console rights of the deleted pool's claims go with it.
        access::sync(&ctx.client, &ns, pool, &[]).await?;
    }
    // Guarded by the resourceVersion read: a pool controller that bound the claim meanwhile
    // (its pool just created) wins, and the next pass finds the pool.
    let body = json!({
        "metadata": {"resourceVersion": claim.metadata.resource_version},
        "status": next,
    });
    match Api::<DesktopClaim>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &claim.name_any(),
            &PatchParams::apply(OPERATOR_MANAGER),
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
            return Ok(Action::requeue(super::decide::BUSY));
        }
        Err(e) => return Err(e.into()),
    }
    if reason_of(&claim) != Some(desktop_reason::POOL_NOT_FOUND) {
        let ev = Event {
            type_: EventType::Warning,
            reason: desktop_reason::POOL_NOT_FOUND.into(),
            note: Some(o.message.clone()),
            action: "Claim".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &claim.object_ref(&())).await {
            tracing::debug!(error = %e, "PoolNotFound event not published");
        }
    }
    Ok(Action::await_change())
}

fn error_policy(claim: Arc<DesktopClaim>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(claim = %claim.name_any(), error = %crate::desktops::chain(e), "desktop claim pass failed; retrying");
    Action::requeue(super::decide::BUSY)
}

/// Run until the process ends; every claim is looked at again when this replica leads.
pub async fn run(ctx: Arc<Ctx>) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<DesktopClaim>::all(client.clone()),
        watcher::Config::default(),
    );
    let claims = controller.store();
    let leads = ctx.leadership.terms();
    controller
        .watches(
            Api::<DesktopPool>::all(client),
            watcher::Config::default(),
            move |pool| {
                let (ns, name) = (pool.namespace(), pool.name_any());
                claims
                    .state()
                    .into_iter()
                    .filter(|c| c.namespace() == ns && c.spec.pool_name == name)
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_all_on(leads)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(status: serde_json::Value) -> DesktopClaim {
        let mut c: DesktopClaim = serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopClaim",
            "metadata": {"name": "c", "namespace": "team-a", "generation": 1},
            "spec": {"poolName": "ofice", "user": "alice"},
            "status": status,
        }))
        .unwrap();
        if c.status.as_ref().is_some_and(|s| s == &Default::default()) {
            c.status = None;
        }
        c
    }

    #[test]
    fn a_claim_of_a_missing_pool_is_pending_with_pool_not_found_saying_which_and_what_to_do() {
        let o = outcome(&claim(json!({}))).unwrap();
        assert_eq!(o.phase, ClaimPhase::Pending);
        assert_eq!(o.reason, "PoolNotFound");
        assert!(o.message.contains("\"ofice\""), "{}", o.message);
        assert!(o.message.contains("team-a"), "{}", o.message);
        assert!(
            o.message.contains("kubectl get desktoppools -n team-a"),
            "{}",
            o.message
        );
        let s = status::claim_status(
            &claim(json!({})),
            &o,
            Time("2026-11-30T10:00:00Z".parse().unwrap()),
        );
        assert_eq!(s.phase, ClaimPhase::Pending);
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert_eq!(s.conditions[0].reason, "PoolNotFound");
        assert_eq!(s.conditions[0].status, "False");
    }

    #[test]
    fn a_bound_claim_whose_pool_was_deleted_is_released() {
        let o = outcome(&claim(json!({"phase": "Bound", "vmName": "ofice-1"}))).unwrap();
        assert_eq!(o.phase, ClaimPhase::Released);
        assert_eq!(o.vm.as_deref(), Some("ofice-1"));
        assert!(o.message.contains("was deleted"), "{}", o.message);
    }

    #[test]
    fn released_and_failed_claims_are_left_as_they_are() {
        for phase in ["Released", "Failed"] {
            assert_eq!(outcome(&claim(json!({"phase": phase}))), None, "{phase}");
        }
    }

    #[test]
    fn saying_it_again_changes_nothing() {
        let c0 = claim(json!({}));
        let o = outcome(&c0).unwrap();
        let first = status::claim_status(&c0, &o, Time("2026-11-30T10:00:00Z".parse().unwrap()));
        let mut c1 = c0.clone();
        c1.status = Some(first.clone());
        let again = status::claim_status(&c1, &o, Time("2026-11-30T10:05:00Z".parse().unwrap()));
        assert_eq!(again, first, "no write, no second Event");
    }
}
