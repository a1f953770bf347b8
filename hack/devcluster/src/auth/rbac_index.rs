//! The RBAC authoriser: an index of the stored roles and bindings (rebuilt only when one of
//! them changes), with each binding's rules resolved in advance, aggregated ClusterRoles
//! included. A request visits the ClusterRoleBindings and its namespace's RoleBindings, never
//! the other namespaces', as kube-apiserver's RBAC authoriser does.
//!
//! Owns the decision and the kube-apiserver wording of a refusal; pure over its input objects.

use super::attributes::Attributes;
use super::rbac::{Rule, subject_applies};
use super::{MASTERS, UserInfo};
use crate::error::ApiError;
use crate::selectors::LabelSelector;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Storage keys of the four RBAC kinds: roles, cluster roles, role bindings, cluster role bindings.
pub const KEYS: [&str; 4] = [
    "roles.rbac.authorization.k8s.io",
    "clusterroles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
];

/// A binding with its role's rules resolved.
#[derive(Debug)]
struct Binding {
    subjects: Vec<Value>,
    namespace: String,
    rules: Arc<Vec<Rule>>,
}

/// Roles and bindings, ready to answer requests.
#[derive(Debug, Default)]
pub struct RbacIndex {
    /// The key versions this index was built at.
    pub stamp: Vec<u64>,
    cluster: Vec<Binding>,
    namespaced: HashMap<String, Vec<Binding>>,
    cluster_roles: HashMap<String, Arc<Vec<Rule>>>,
    roles: HashMap<(String, String), Arc<Vec<Rule>>>,
}

/// The rules of every ClusterRole, aggregation resolved (a role with an `aggregationRule` has
/// the union of the rules of the roles its selectors match, recursively, as the apiserver's
/// aggregation controller keeps them).
pub fn cluster_role_rules(roles: &[Arc<Value>]) -> HashMap<String, Arc<Vec<Rule>>> {
    let by_name: HashMap<&str, &Value> = roles
        .iter()
        .map(|r| (r["metadata"]["name"].as_str().unwrap_or_default(), &**r))
        .collect();
    let mut out = HashMap::new();
    for name in by_name.keys() {
        let mut seen = HashSet::new();
        let rules = resolve(name, &by_name, &mut seen);
        out.insert(name.to_string(), Arc::new(dedup(rules)));
    }
    out
}

fn resolve<'a>(
    name: &'a str,
    roles: &HashMap<&'a str, &'a Value>,
    seen: &mut HashSet<&'a str>,
) -> Vec<Rule> {
    let Some(role) = roles.get(name) else {
        return vec![];
    };
    if !seen.insert(name) {
        return vec![];
    }
    let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() else {
        return Rule::list_from(role);
    };
    let selectors: Vec<LabelSelector> = selectors.iter().map(LabelSelector::from_json).collect();
    let mut names: Vec<&&str> = roles
        .iter()
        .filter(|(n, r)| {
            **n != name
                && selectors
                    .iter()
                    .any(|s| s.matches(&r["metadata"]["labels"]))
        })
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names
        .into_iter()
        .flat_map(|n| resolve(n, roles, seen))
        .collect()
}

fn dedup(rules: Vec<Rule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = vec![];
    for r in rules {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

impl RbacIndex {
    /// Builds the index from the stored objects (`KEYS` order).
    pub fn build(
        stamp: Vec<u64>,
        roles: &[Arc<Value>],
        cluster_roles: &[Arc<Value>],
        role_bindings: &[Arc<Value>],
        cluster_role_bindings: &[Arc<Value>],
    ) -> Self {
        let cr = cluster_role_rules(cluster_roles);
        let r: HashMap<(String, String), Arc<Vec<Rule>>> = roles
            .iter()
            .map(|o| {
                let (ns, name) = crate::store::ns_name(o);
                ((ns, name), Arc::new(Rule::list_from(o)))
            })
            .collect();
        let empty = Arc::new(vec![]);
        let rules_of = |b: &Value, ns: &str| -> Arc<Vec<Rule>> {
            let name = b["roleRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let found = match b["roleRef"]["kind"].as_str() {
                Some("ClusterRole") => cr.get(&name).cloned(),
                Some("Role") => r.get(&(ns.to_string(), name)).cloned(),
                _ => None,
            };
            found.unwrap_or_else(|| empty.clone())
        };
        let binding = |b: &Value, ns: &str| Binding {
            subjects: b["subjects"].as_array().cloned().unwrap_or_default(),
            namespace: ns.to_string(),
            rules: rules_of(b, ns),
        };
        let cluster = cluster_role_bindings
            .iter()
            .map(|b| binding(b, ""))
            .collect();
        let mut namespaced: HashMap<String, Vec<Binding>> = HashMap::new();
        for b in role_bindings {
            let (ns, _) = crate::store::ns_name(b);
            let bd = binding(b, &ns);
            namespaced.entry(ns).or_default().push(bd);
        }
        Self {
            stamp,
            cluster,
            namespaced,
            cluster_roles: cr,
            roles: r,
        }
    }

    /// The rules of the role a `roleRef` names (`Role` in `ns` or `ClusterRole`).
    pub fn role_rules(&self, kind: &str, ns: &str, name: &str) -> Vec<Rule> {
        let found = match kind {
            "ClusterRole" => self.cluster_roles.get(name),
            "Role" => self.roles.get(&(ns.to_string(), name.to_string())),
            _ => None,
        };
        found.map(|r| r.to_vec()).unwrap_or_default()
    }

    /// Whether RBAC allows the request. Members of `system:masters` are always allowed.
    pub fn allows(&self, user: &UserInfo, a: &Attributes) -> bool {
        if user.in_group(MASTERS) {
            return true;
        }
        let visit = |bs: &[Binding]| {
            bs.iter().any(|b| {
                b.subjects
                    .iter()
                    .any(|s| subject_applies(s, user, &b.namespace))
                    && b.rules.iter().any(|r| r.allows(a))
            })
        };
        if visit(&self.cluster) {
            return true;
        }
        !a.namespace.is_empty()
            && self
                .namespaced
                .get(&a.namespace)
                .is_some_and(|bs| visit(bs))
    }

    /// The rules that apply to `user` in `namespace` (cluster-wide ones included), for
    /// SelfSubjectRulesReview.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<Rule> {
        let mut out = vec![];
        let bound = self
            .cluster
            .iter()
            .chain(self.namespaced.get(namespace).into_iter().flatten());
        for b in bound {
            if b.subjects
                .iter()
                .any(|s| subject_applies(s, user, &b.namespace))
            {
                out.extend(b.rules.iter().cloned());
            }
        }
        dedup(out)
    }
}

/// kube-apiserver's `forbiddenMessage`.
pub fn forbidden_reason(user: &UserInfo, a: &Attributes) -> String {
    let u = &user.username;
    if !a.resource_request {
        return format!("User {u:?} cannot {} path {:?}", a.verb, a.path);
    }
    let r = a.combined_resource();
    if a.namespace.is_empty() {
        format!(
            "User {u:?} cannot {} resource {r:?} in API group {:?} at the cluster scope",
            a.verb, a.api_group
        )
    } else {
        format!(
            "User {u:?} cannot {} resource {r:?} in API group {:?} in the namespace {:?}",
            a.verb, a.api_group, a.namespace
        )
    }
}

/// The 403 Forbidden status kube-apiserver answers a refused request with.
pub fn forbidden(user: &UserInfo, a: &Attributes) -> ApiError {
    let reason = forbidden_reason(user, a);
    if !a.resource_request || a.resource.is_empty() {
        return ApiError::forbidden_resource("", "", "", format!("forbidden: {reason}"));
    }
    let gr = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if a.name.is_empty() {
        format!("{gr} is forbidden: {reason}")
    } else {
        format!("{gr} {:?} is forbidden: {reason}", a.name)
    };
    ApiError::forbidden_resource(&a.api_group, &a.resource, &a.name, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arc(v: Value) -> Arc<Value> {
        Arc::new(v)
    }

    fn vm_attrs(verb: &str, ns: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            namespace: ns.into(),
            api_group: "ironvisor.io".into(),
            resource: "virtualmachines".into(),
            name: "x".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_aggregated_role_unions_the_roles_its_selectors_pick() {
        let roles = vec![
            arc(
                json!({"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-agg": "true"}}]}, "rules": []}),
            ),
            arc(
                json!({"metadata": {"name": "a", "labels": {"to-agg": "true"}}, "rules": [{"verbs": ["get"], "apiGroups": ["ironvisor.io"], "resources": ["virtualmachines"]}]}),
            ),
            arc(
                json!({"metadata": {"name": "b", "labels": {"to-agg": "false"}}, "rules": [{"verbs": ["delete"], "apiGroups": ["ironvisor.io"], "resources": ["virtualmachines"]}]}),
            ),
        ];
        let rules = cluster_role_rules(&roles);
        assert_eq!(rules["agg"].len(), 1);
        assert_eq!(rules["agg"][0].verbs, vec!["get"]);
    }

    #[test]
    fn a_role_binding_grants_only_in_its_namespace_and_masters_bypass() {
        let role = arc(json!({"metadata": {"name": "vm-reader", "namespace": "t1"},
            "rules": [{"verbs": ["get"], "apiGroups": ["ironvisor.io"], "resources": ["virtualmachines"]}]}));
        let rb = arc(json!({"metadata": {"name": "rb", "namespace": "t1"},
            "roleRef": {"kind": "Role", "name": "vm-reader", "apiGroup": "rbac.authorization.k8s.io"},
            "subjects": [{"kind": "User", "name": "alice"}]}));
        let idx = RbacIndex::build(vec![], &[role], &[], &[rb], &[]);
        let alice = UserInfo::new("alice", "", &[]);
        assert!(idx.allows(&alice, &vm_attrs("get", "t1")));
        assert!(!idx.allows(&alice, &vm_attrs("get", "t2")));
        assert!(!idx.allows(&alice, &vm_attrs("patch", "t1")));
        assert!(idx.allows(&UserInfo::admin(), &vm_attrs("patch", "t2")));
        assert!(!idx.allows(&UserInfo::new("bob", "", &[]), &vm_attrs("get", "t1")));
    }

    #[test]
    fn refusals_are_worded_as_kube_apiserver_words_them() {
        let e = forbidden(&UserInfo::new("u", "", &[]), &vm_attrs("patch", "n"));
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "virtualmachines.ironvisor.io \"x\" is forbidden: User \"u\" cannot patch resource \"virtualmachines\" in API group \"ironvisor.io\" in the namespace \"n\""
        );
        let list = Attributes {
            verb: "list".into(),
            resource_request: true,
            resource: "namespaces".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden(&UserInfo::anonymous(), &list).message,
            "namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
        );
        let path = Attributes {
            verb: "get".into(),
            path: "/version".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden(&UserInfo::anonymous(), &path).message,
            "forbidden: User \"system:anonymous\" cannot get path \"/version\""
        );
    }
}
