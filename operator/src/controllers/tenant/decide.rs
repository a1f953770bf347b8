//! What the Tenant controller decides, with no I/O: whether a tenant may claim a namespace,
//! what happens to a namespace when its tenant goes, and the Tenant's status.

use ironvisor_crds::common::{Condition, condition_status, condition_type, set_condition};
use ironvisor_crds::labels;
use ironvisor_crds::tenant::{
    NamespaceDeletionPolicy, NamespaceOrigin, Tenant, TenantNamespaceStatus, TenantStatus,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::quota::{TenantTree, TreeProblem};
use crate::units::Units;

/// What to do with one claimed namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceStep {
    /// Create it (or label it) for this tenant and bind the owners.
    Claim,
    /// Leave it alone: it belongs to another tenant.
    Conflict(String),
    /// Leave it alone: no tenant may own it (`default`, `kube-*`, the system namespace).
    Reserved(String),
}

/// Decide for one namespace. `label` is the namespace's current tenant label, if it exists.
/// A label naming a tenant that no longer exists is stale and may be overwritten.
pub fn namespace_step(
    tree: &TenantTree,
    tenant: &str,
    namespace: &str,
    label: Option<&str>,
) -> NamespaceStep {
    if let Some(why) = tree.reserved().refusal(namespace) {
        return NamespaceStep::Reserved(why);
    }
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

/// How `tenant` holds an existing namespace, from the operator's annotation on it: Created
/// only when the operator recorded that it created it for this very tenant. Anything else —
/// no annotation, another tenant's, a namespace labelled by an operator from before the
/// annotation existed — is Adopted, so it is never deleted.
pub fn origin_of(ns: &Namespace, tenant: &str) -> NamespaceOrigin {
    match ns.annotations().get(labels::NAMESPACE_CREATED_BY) {
        Some(t) if t == tenant => NamespaceOrigin::Created,
        _ => NamespaceOrigin::Adopted,
    }
}

/// What to do with a namespace when its tenant is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupStep {
    /// Delete the namespace.
    Delete,
    /// Keep it; remove the tenant label, the operator's annotation and the owners'
    /// RoleBinding.
    Release,
}

/// Decide for one namespace of a deleted tenant: only a namespace the operator created for
/// it may be deleted, and then per the policy; an adopted one is always released.
pub fn cleanup_step(
    policy: NamespaceDeletionPolicy,
    origin: NamespaceOrigin,
    holds_vms: bool,
) -> CleanupStep {
    if origin == NamespaceOrigin::Adopted {
        return CleanupStep::Release;
    }
    match policy {
        NamespaceDeletionPolicy::Delete => CleanupStep::Delete,
        NamespaceDeletionPolicy::DeleteEmpty if !holds_vms => CleanupStep::Delete,
        NamespaceDeletionPolicy::DeleteEmpty | NamespaceDeletionPolicy::Retain => {
            CleanupStep::Release
        }
    }
}

/// The Ready condition's reason and message for a tenant with `problems`: reserved
/// namespaces first, then namespaces owned by others, then the rest of the tree's problems.
fn verdict(
    tree_problems: &[TreeProblem],
    namespaces: &[TenantNamespaceStatus],
) -> (bool, &'static str, String) {
    let mut all: Vec<String> = tree_problems.iter().map(ToString::to_string).collect();
    for n in namespaces.iter().filter(|n| !n.ready) {
        let m = n
            .message
            .clone()
            .unwrap_or_else(|| format!("namespace {} is not ready", n.name));
        if !all.contains(&m) {
            all.push(m);
        }
    }
    if all.is_empty() {
        let msg = format!("{} namespace(s) ready", namespaces.len());
        return (true, "Reconciled", msg);
    }
    let reason = if tree_problems
        .iter()
        .any(|p| matches!(p, TreeProblem::NamespaceReserved(_)))
    {
        "NamespaceReserved"
    } else if namespaces.iter().any(|n| !n.ready)
        || tree_problems
            .iter()
            .any(|p| matches!(p, TreeProblem::NamespaceClaimed { .. }))
    {
        "NamespaceConflict"
    } else {
        "Invalid"
    };
    (false, reason, all.join("; "))
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
    let (ok, reason, message) = verdict(&tree.problems(&t.name_any()), &namespaces);
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

    fn ns_status(name: &str, ready: bool, message: Option<&str>) -> TenantNamespaceStatus {
        TenantNamespaceStatus {
            name: name.into(),
            ready,
            origin: ready.then_some(NamespaceOrigin::Created),
            message: message.map(Into::into),
        }
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
    fn kubernetes_and_system_namespaces_are_refused_whatever_their_labels() {
        for ns in ["default", "kube-system", "kube-public", "ironvisor-system"] {
            let step = namespace_step(&tree(), "early", ns, None);
            assert!(
                matches!(&step, NamespaceStep::Reserved(m) if m.contains("cannot belong to a tenant")),
                "{ns}: {step:?}"
            );
        }
    }

    fn namespace(annotations: serde_json::Value) -> Namespace {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "x", "annotations": annotations}}),
        )
        .expect("valid namespace")
    }

    #[test]
    fn only_the_operators_record_for_this_tenant_makes_a_namespace_created() {
        let created = namespace(serde_json::json!({labels::NAMESPACE_CREATED_BY: "t"}));
        assert_eq!(origin_of(&created, "t"), NamespaceOrigin::Created);
        assert_eq!(origin_of(&created, "other"), NamespaceOrigin::Adopted);
        let adopted = namespace(serde_json::json!({labels::NAMESPACE_ADOPTED_BY: "t"}));
        assert_eq!(origin_of(&adopted, "t"), NamespaceOrigin::Adopted);
        assert_eq!(
            origin_of(&namespace(serde_json::json!({})), "t"),
            NamespaceOrigin::Adopted
        );
    }

    #[test]
    fn deletion_policy_decides_only_for_created_namespaces() {
        use NamespaceDeletionPolicy::*;
        use NamespaceOrigin::*;
        assert_eq!(
            cleanup_step(DeleteEmpty, Created, false),
            CleanupStep::Delete
        );
        assert_eq!(
            cleanup_step(DeleteEmpty, Created, true),
            CleanupStep::Release
        );
        assert_eq!(cleanup_step(Delete, Created, true), CleanupStep::Delete);
        assert_eq!(cleanup_step(Retain, Created, false), CleanupStep::Release);
        for policy in [Delete, DeleteEmpty, Retain] {
            for holds_vms in [false, true] {
                assert_eq!(
                    cleanup_step(policy, Adopted, holds_vms),
                    CleanupStep::Release,
                    "{policy:?} {holds_vms}"
                );
            }
        }
    }

    fn tenant(name: &str, namespaces: &[&str]) -> Tenant {
        Tenant::new(
            name,
            TenantSpec {
                namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            },
        )
    }

    fn ready(s: &TenantStatus) -> (&str, &str, &str) {
        let c = &s.conditions[0];
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn the_later_tenant_gets_a_namespace_conflict_condition() {
        let ns = vec![
            ns_status(
                "shared",
                false,
                Some("namespace shared is already owned by tenant early"),
            ),
            ns_status("b", true, None),
        ];
        let at = jiff::Timestamp::from_second(0).unwrap();
        let s = status(
            &tenant("late", &["shared", "b"]),
            &tree(),
            ns,
            Units::default(),
            at,
        );
        assert_eq!(
            ready(&s),
            (
                "False",
                "NamespaceConflict",
                "namespace shared is already owned by tenant early"
            )
        );
    }

    #[test]
    fn a_tenant_claiming_a_reserved_namespace_gets_namespace_reserved() {
        let t = tenant("t", &["default", "mine"]);
        let tree = TenantTree::new([node("t", None, &["default", "mine"], 1)]);
        let why = tree.reserved().refusal("default").unwrap();
        let ns = vec![
            ns_status("default", false, Some(&why)),
            ns_status("mine", true, None),
        ];
        let at = jiff::Timestamp::from_second(0).unwrap();
        let s = status(&t, &tree, ns, Units::default(), at);
        assert_eq!(ready(&s), ("False", "NamespaceReserved", why.as_str()));
    }

    #[test]
    fn a_tenant_with_all_namespaces_ready_is_ready_and_shows_its_usage() {
        let ns = vec![ns_status("a", true, None)];
        let usage = Units {
            vms: 3,
            vcpus: 6,
            memory: 3 << 30,
            storage: 0,
        };
        let at = jiff::Timestamp::from_second(0).unwrap();
        let s = status(&tenant("early", &["a"]), &tree(), ns, usage, at);
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.usage.unwrap().virtual_machines, 3);
    }
}
