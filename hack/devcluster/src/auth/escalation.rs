//! RBAC escalation prevention, as kube-apiserver's RBAC storage does it: a user may write a
//! Role or ClusterRole only with rules it already holds (or the `escalate` verb on it), and a
//! binding only to a role whose rules it holds (or the `bind` verb on that role). Aggregation
//! rules need `escalate`. Members of `system:masters` are exempt.
//!
//! Pure over the index.

use super::attributes::Attributes;
use super::rbac::Rule;
use super::rbac_index::RbacIndex;
use super::{MASTERS, UserInfo};
use crate::error::ApiError;
use serde_json::Value;

const GROUP: &str = "rbac.authorization.k8s.io";

fn attrs(verb: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        resource_request: true,
        namespace: ns.into(),
        api_group: GROUP.into(),
        api_version: "v1".into(),
        resource: resource.into(),
        name: name.into(),
        ..Default::default()
    }
}

/// The rules of `servant` that `owner` does not cover, one atomic rule per entry.
pub fn uncovered(owner: &[Rule], servant: &[Rule]) -> Vec<Rule> {
    let mut missing = vec![];
    for r in servant {
        let names: Vec<&str> = if r.resource_names.is_empty() {
            vec![""]
        } else {
            r.resource_names.iter().map(String::as_str).collect()
        };
        for verb in &r.verbs {
            for url in &r.non_resource_urls {
                let a = Attributes {
                    verb: verb.clone(),
                    path: url.clone(),
                    ..Default::default()
                };
                if !owner.iter().any(|o| o.allows(&a)) {
                    missing.push(Rule {
                        verbs: vec![verb.clone()],
                        non_resource_urls: vec![url.clone()],
                        ..Default::default()
                    });
                }
            }
            for g in &r.api_groups {
                for res in &r.resources {
                    let (resource, sub) = res.split_once('/').unwrap_or((res, ""));
                    for n in &names {
                        let a = Attributes {
                            verb: verb.clone(),
                            resource_request: true,
                            api_group: g.clone(),
                            resource: resource.into(),
                            subresource: sub.into(),
                            name: n.to_string(),
                            ..Default::default()
                        };
                        if !owner.iter().any(|o| o.allows(&a)) {
                            missing.push(Rule {
                                verbs: vec![verb.clone()],
                                api_groups: vec![g.clone()],
                                resources: vec![res.clone()],
                                resource_names: if n.is_empty() {
                                    vec![]
                                } else {
                                    vec![n.to_string()]
                                },
                                ..Default::default()
                            });
                        }
                    }
                }
            }
        }
    }
    missing
}

fn show(r: &Rule) -> String {
    let q = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !r.non_resource_urls.is_empty() {
        return format!(
            "{{NonResourceURLs:[{}], Verbs:[{}]}}",
            q(&r.non_resource_urls),
            q(&r.verbs)
        );
    }
    let names = if r.resource_names.is_empty() {
        String::new()
    } else {
        format!(", ResourceNames:[{}]", q(&r.resource_names))
    };
    format!(
        "{{APIGroups:[{}], Resources:[{}]{names}, Verbs:[{}]}}",
        q(&r.api_groups),
        q(&r.resources),
        q(&r.verbs)
    )
}

fn refuse(resource: &str, name: &str, why: String) -> ApiError {
    ApiError::forbidden_resource(
        GROUP,
        resource,
        name,
        format!("{resource}.{GROUP} {name:?} is forbidden: {why}"),
    )
}

fn not_held(user: &UserInfo, resource: &str, name: &str, missing: &[Rule]) -> ApiError {
    let groups = user
        .groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    let list = missing.iter().map(show).collect::<Vec<_>>().join("\n");
    refuse(
        resource,
        name,
        format!(
            "user {:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{list}",
            user.username
        ),
    )
}

/// Checks a write of an RBAC object (`resource` plural, namespace `ns`) by `user`.
pub fn check(
    index: &RbacIndex,
    user: &UserInfo,
    resource: &str,
    ns: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if user.in_group(MASTERS) {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let owner = index.rules_for(user, ns);
    match resource {
        "roles" | "clusterroles" => {
            if index.allows(user, &attrs("escalate", resource, ns, name)) {
                return Ok(());
            }
            let agg = &obj["aggregationRule"];
            if agg.is_object() && old.is_none_or(|o| &o["aggregationRule"] != agg) {
                return Err(refuse(
                    resource,
                    name,
                    "must have cluster-admin privileges to use the aggregationRule".into(),
                ));
            }
            let missing = uncovered(&owner, &Rule::list_from(obj));
            if missing.is_empty() {
                Ok(())
            } else {
                Err(not_held(user, resource, name, &missing))
            }
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = obj["roleRef"]["kind"].as_str().unwrap_or_default();
            let role = obj["roleRef"]["name"].as_str().unwrap_or_default();
            let (role_res, role_ns) = if kind == "Role" {
                ("roles", ns)
            } else {
                ("clusterroles", "")
            };
            if index.allows(user, &attrs("bind", role_res, role_ns, role))
                || index.allows(user, &attrs("bind", role_res, ns, role))
            {
                return Ok(());
            }
            let missing = uncovered(&owner, &index.role_rules(kind, ns, role));
            if missing.is_empty() {
                Ok(())
            } else {
                Err(not_held(user, resource, name, &missing))
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    #[test]
    fn a_role_is_covered_only_by_rules_that_allow_each_of_its_parts() {
        let owner = vec![rule(
            json!({"verbs": ["get", "list"], "apiGroups": ["ironvisor.io"], "resources": ["virtualmachines", "virtualmachines/status"]}),
        )];
        let same = vec![rule(
            json!({"verbs": ["get"], "apiGroups": ["ironvisor.io"], "resources": ["virtualmachines/status"], "resourceNames": ["a"]}),
        )];
        assert!(uncovered(&owner, &same).is_empty());
        let more = vec![rule(
            json!({"verbs": ["get", "delete"], "apiGroups": ["ironvisor.io"], "resources": ["virtualmachines"]}),
        )];
        let missing = uncovered(&owner, &more);
        assert_eq!(missing.len(), 1);
        assert_eq!(
            show(&missing[0]),
            "{APIGroups:[\"ironvisor.io\"], Resources:[\"virtualmachines\"], Verbs:[\"delete\"]}"
        );
        let star = vec![rule(
            json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]}),
        )];
        assert_eq!(uncovered(&owner, &star).len(), 1);
    }
}
