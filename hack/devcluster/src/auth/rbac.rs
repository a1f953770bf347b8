//! RBAC rule and subject matching, as kube-apiserver's `rbac/v1` helpers do it: verbs and
//! API groups with `*`, resources with `*`, `resource/subresource` and `*/subresource`,
//! resourceNames, nonResourceURLs with a trailing `*`.
//!
//! Pure; the index of roles and bindings lives in `rbac_index`.

use super::UserInfo;
use super::attributes::Attributes;
use serde_json::Value;

/// One `PolicyRule`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// `verbs`.
    pub verbs: Vec<String>,
    /// `apiGroups`.
    pub api_groups: Vec<String>,
    /// `resources`.
    pub resources: Vec<String>,
    /// `resourceNames`.
    pub resource_names: Vec<String>,
    /// `nonResourceURLs`.
    pub non_resource_urls: Vec<String>,
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    /// A rule from its JSON form.
    pub fn from_json(v: &Value) -> Self {
        Self {
            verbs: strs(&v["verbs"]),
            api_groups: strs(&v["apiGroups"]),
            resources: strs(&v["resources"]),
            resource_names: strs(&v["resourceNames"]),
            non_resource_urls: strs(&v["nonResourceURLs"]),
        }
    }

    /// The rules of a Role or ClusterRole object.
    pub fn list_from(role: &Value) -> Vec<Self> {
        role["rules"]
            .as_array()
            .map(|a| a.iter().map(Self::from_json).collect())
            .unwrap_or_default()
    }

    /// Whether this rule allows the request (kube-apiserver's `RuleAllows`).
    pub fn allows(&self, a: &Attributes) -> bool {
        if !self.verbs.iter().any(|v| v == "*" || *v == a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        self.api_groups
            .iter()
            .any(|g| g == "*" || *g == a.api_group)
            && self.resource_matches(&a.combined_resource(), &a.subresource)
            && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }

    fn resource_matches(&self, combined: &str, sub: &str) -> bool {
        self.resources.iter().any(|r| {
            r == "*"
                || r == combined
                || (!sub.is_empty()
                    && r.len() == sub.len() + 2
                    && r.starts_with("*/")
                    && r.ends_with(sub))
        })
    }
}

/// Whether a binding subject (JSON) names `user`. `default_ns` is the binding's namespace,
/// used for ServiceAccount subjects without one.
pub fn subject_applies(subject: &Value, user: &UserInfo, default_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => user.username == name,
        "Group" => user.in_group(name),
        "ServiceAccount" => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or(default_ns);
            !ns.is_empty() && user.username == super::sa_token::username(ns, name)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: "n".into(),
            ..Default::default()
        }
    }

    fn path(verb: &str, p: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: p.into(),
            ..Default::default()
        }
    }

    #[test]
    fn verbs_groups_and_resources_match_exactly_or_by_star() {
        let r = rule(
            json!({"verbs": ["get", "list"], "apiGroups": ["ironvisor.io"], "resources": ["virtualmachines"]}),
        );
        assert!(r.allows(&res("get", "ironvisor.io", "virtualmachines", "", "a")));
        assert!(!r.allows(&res("patch", "ironvisor.io", "virtualmachines", "", "a")));
        assert!(!r.allows(&res("get", "", "virtualmachines", "", "a")));
        assert!(!r.allows(&res("get", "ironvisor.io", "hypervisors", "", "a")));
        let star = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(star.allows(&res("deletecollection", "x.io", "foos", "status", "")));
    }

    #[test]
    fn a_subresource_needs_its_own_rule_or_a_star_slash_rule() {
        let main = rule(
            json!({"verbs": ["patch"], "apiGroups": ["ironvisor.io"], "resources": ["virtualmachines"]}),
        );
        assert!(!main.allows(&res(
            "patch",
            "ironvisor.io",
            "virtualmachines",
            "status",
            "a"
        )));
        let status = rule(
            json!({"verbs": ["patch"], "apiGroups": ["ironvisor.io"], "resources": ["virtualmachines/status"]}),
        );
        assert!(status.allows(&res(
            "patch",
            "ironvisor.io",
            "virtualmachines",
            "status",
            "a"
        )));
        assert!(!status.allows(&res("patch", "ironvisor.io", "virtualmachines", "", "a")));
        let any_status =
            rule(json!({"verbs": ["patch"], "apiGroups": ["*"], "resources": ["*/status"]}));
        assert!(any_status.allows(&res("patch", "ironvisor.io", "hypervisors", "status", "h")));
        assert!(!any_status.allows(&res("patch", "ironvisor.io", "hypervisors", "scale", "h")));
    }

    #[test]
    fn resource_names_limit_named_requests_and_never_match_a_list() {
        let r = rule(
            json!({"verbs": ["get", "list", "create"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}),
        );
        assert!(r.allows(&res("get", "", "secrets", "", "a")));
        assert!(!r.allows(&res("get", "", "secrets", "", "b")));
        assert!(!r.allows(&res("list", "", "secrets", "", "")));
        assert!(!r.allows(&res("create", "", "secrets", "", "")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix_and_never_resources() {
        let r = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/version", "/apis/*"]}));
        assert!(r.allows(&path("get", "/version")));
        assert!(r.allows(&path("get", "/apis/ironvisor.io/v1alpha1")));
        assert!(!r.allows(&path("get", "/versions")));
        assert!(!r.allows(&path("post", "/version")));
        assert!(!r.allows(&res("get", "", "version", "", "")));
        let any = rule(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
        assert!(any.allows(&path("put", "/anything")));
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts_by_namespace() {
        let u = UserInfo::new(
            "system:serviceaccount:s:agent",
            "",
            &["system:serviceaccounts".into()],
        );
        let sa = json!({"kind": "ServiceAccount", "name": "agent"});
        assert!(subject_applies(&sa, &u, "s"));
        assert!(!subject_applies(&sa, &u, "other"));
        assert!(!subject_applies(&sa, &u, ""));
        let sa_ns = json!({"kind": "ServiceAccount", "name": "agent", "namespace": "s"});
        assert!(subject_applies(&sa_ns, &u, ""));
        assert!(subject_applies(
            &json!({"kind": "Group", "name": "system:authenticated"}),
            &u,
            ""
        ));
        assert!(!subject_applies(
            &json!({"kind": "User", "name": "agent"}),
            &u,
            ""
        ));
    }
}
