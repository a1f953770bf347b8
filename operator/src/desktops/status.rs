//! Writes what a pass decided into the pool's and the claims' status (server-side apply,
//! field manager `ironvisor-operator`), only when it changes.

use ironvisor_crds::common::{condition_type, new_condition, set_condition};
use ironvisor_crds::desktop::{
    ClaimPhase, DesktopClaim, DesktopClaimStatus, DesktopPool, DesktopPoolStatus, desktop_reason,
};
use ironvisor_crds::labels::OPERATOR_MANAGER;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::decide::{ClaimOutcome, PoolOutcome};

/// The pool's next status (conditions keep their transition time unless they flip).
pub fn pool_status(pool: &DesktopPool, o: &PoolOutcome, now: Time) -> DesktopPoolStatus {
    let mut s = pool.status.clone().unwrap_or_default();
    s.total = o.total;
    s.spare = o.spare;
    s.claimed = o.claimed;
    s.running = o.running;
    s.observed_generation = pool.metadata.generation;
    let ok = o.reason == desktop_reason::READY;
    set_condition(
        &mut s.conditions,
        new_condition(
            condition_type::READY,
            ok,
            o.reason,
            o.message.clone(),
            pool.metadata.generation,
            now,
        ),
    );
    s
}

/// A claim's next status.
pub fn claim_status(claim: &DesktopClaim, o: &ClaimOutcome, now: Time) -> DesktopClaimStatus {
    let mut s = claim.status.clone().unwrap_or_default();
    if o.phase == ClaimPhase::Bound && (s.phase != ClaimPhase::Bound || s.vm_name != o.vm) {
        s.bound_time = Some(now.clone());
    }
    s.phase = o.phase;
    s.user = Some(claim.spec.user.clone());
    s.vm_name = o.vm.clone();
    let ok = o.phase == ClaimPhase::Bound;
    set_condition(
        &mut s.conditions,
        new_condition(
            condition_type::READY,
            ok,
            o.reason,
            o.message.clone(),
            claim.metadata.generation,
            now,
        ),
    );
    s
}

/// Write the pool's status when it changed.
pub async fn write_pool(
    client: &Client,
    pool: &DesktopPool,
    s: DesktopPoolStatus,
) -> Result<(), kube::Error> {
    if pool.status.as_ref() == Some(&s) {
        return Ok(());
    }
    let api = Api::<DesktopPool>::namespaced(client.clone(), &pool.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopPool", "status": s});
    api.patch_status(
        &pool.name_any(),
        &PatchParams::apply(OPERATOR_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Write a claim's status when it changed.
pub async fn write_claim(
    client: &Client,
    claim: &DesktopClaim,
    s: DesktopClaimStatus,
) -> Result<(), kube::Error> {
    if claim.status.as_ref() == Some(&s) {
        return Ok(());
    }
    let api =
        Api::<DesktopClaim>::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopClaim", "status": s});
    match api
        .patch_status(
            &claim.name_any(),
            &PatchParams::apply(OPERATOR_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        // Released by its user meanwhile.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> DesktopClaim {
        serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopClaim",
            "metadata": {"name": "c", "namespace": "n", "generation": 1},
            "spec": {"poolName": "office", "user": "alice"},
        }))
        .unwrap()
    }

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn a_bound_claim_keeps_its_bound_time_and_records_its_user() {
        let o = ClaimOutcome {
            name: "c".into(),
            phase: ClaimPhase::Bound,
            vm: Some("office-1".into()),
            reason: desktop_reason::BOUND,
            message: "bound to desktop office-1".into(),
        };
        let mut c = claim();
        let first = claim_status(&c, &o, t("2026-11-30T10:00:00Z"));
        assert_eq!(first.bound_time, Some(t("2026-11-30T10:00:00Z")));
        assert_eq!(first.user.as_deref(), Some("alice"));
        c.status = Some(first.clone());
        let again = claim_status(&c, &o, t("2026-11-30T11:00:00Z"));
        assert_eq!(again, first, "nothing changed, nothing to write");
    }
}
