//! The operator's writes of its part of a namespaced object's status: the Ready condition
//! ([`set_ready`], pure) and one server-side apply with the operator's field manager
//! ([`apply`]). Shared by the snapshot, restore, backup and schedule controllers, whose
//! statuses differ only in their phase type.

use ironvisor_crds::common::{condition_type, new_condition, set_condition};
use ironvisor_crds::labels::OPERATOR_MANAGER;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource, ResourceExt};

/// Set the Ready condition (`True` only when `ok`), keeping its `lastTransitionTime` unless
/// its status flips.
pub fn set_ready(
    conditions: &mut Vec<Condition>,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) {
    let now = Time(jiff::Timestamp::now());
    set_condition(
        conditions,
        new_condition(condition_type::READY, ok, reason, message, generation, now),
    );
}

/// The server-side apply body that sets `status` on an object of kind `K`.
pub fn body<K: Resource<DynamicType = ()>>(status: &impl serde::Serialize) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })
}

/// Apply `status` as the operator's part of `obj`'s status (forced: the operator owns the
/// fields it writes).
pub async fn apply<K>(client: &Client, obj: &K, status: &impl serde::Serialize) -> kube::Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(OPERATOR_MANAGER).force(),
        &Patch::Apply(&body::<K>(status)),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::common::find_condition;
    use ironvisor_crds::restore::VirtualMachineRestore;

    #[test]
    fn the_body_names_the_kind_and_carries_the_status() {
        let b = body::<VirtualMachineRestore>(&serde_json::json!({"phase": "Pending"}));
        assert_eq!(b["apiVersion"], "ironvisor.io/v1alpha1");
        assert_eq!(b["kind"], "VirtualMachineRestore");
        assert_eq!(b["status"]["phase"], "Pending");
    }

    #[test]
    fn ready_keeps_its_transition_time_until_it_flips() {
        let mut c = Vec::new();
        set_ready(&mut c, false, "Pending", "waiting".into(), Some(2));
        let first = find_condition(&c, condition_type::READY).unwrap().clone();
        assert_eq!(
            (first.status.as_str(), first.observed_generation),
            ("False", Some(2))
        );
        let mut old = first.clone();
        old.last_transition_time = Time(jiff::Timestamp::from_second(5).unwrap());
        c = vec![old.clone()];
        set_ready(&mut c, false, "VMBusy", "busy".into(), None);
        let again = find_condition(&c, condition_type::READY).unwrap();
        assert_eq!(again.reason, "VMBusy");
        assert_eq!(again.last_transition_time, old.last_transition_time);
        set_ready(&mut c, true, "Succeeded", "done".into(), None);
        let done = find_condition(&c, condition_type::READY).unwrap();
        assert_eq!(done.status, "True");
        assert_ne!(done.last_transition_time, old.last_transition_time);
        assert_eq!(c.len(), 1);
    }
}
