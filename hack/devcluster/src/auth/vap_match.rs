//! Which admission requests a ValidatingAdmissionPolicy's `matchConstraints` (and a binding's
//! `matchResources`) select: `resourceRules` and `excludeResourceRules` by operation, group,
//! version, resource (`*`, `foos/status`, `foos/*`, `*/status`, `*/*`), scope and
//! resourceNames; `namespaceSelector`; `objectSelector`.
//!
//! Pure.

use crate::selectors::LabelSelector;
use serde_json::Value;

/// What is being admitted, for matching.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `CREATE`, `UPDATE`, `DELETE`.
    pub operation: &'a str,
    /// API group.
    pub group: &'a str,
    /// API version.
    pub version: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Subresource, "" for the main resource.
    pub subresource: &'a str,
    /// Object name.
    pub name: &'a str,
    /// Whether the resource is namespaced.
    pub namespaced: bool,
    /// The new object (null on DELETE).
    pub object: &'a Value,
    /// The old object (null on CREATE).
    pub old_object: &'a Value,
    /// The labels of the request's namespace (or of the object, for a Namespace).
    pub namespace_labels: &'a Value,
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn any_or(list: &[&str], want: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == want)
}

/// kube's admission resource matching, with subresources.
fn resource_matches(rules: &[&str], resource: &str, sub: &str) -> bool {
    rules.iter().any(|r| {
        let (rr, rs) = r.split_once('/').unwrap_or((r, ""));
        match (rr, rs) {
            ("*", "*") => true,
            ("*", "") => sub.is_empty(),
            (r, "") => r == resource && sub.is_empty(),
            ("*", s) => s == sub,
            (r, "*") => r == resource && !sub.is_empty(),
            (r, s) => r == resource && s == sub,
        }
    })
}

/// Whether one `NamedRuleWithOperations` matches.
pub fn rule_matches(rule: &Value, r: &Request<'_>) -> bool {
    let scope = rule["scope"].as_str().unwrap_or("*");
    let scope_ok = match scope {
        "Cluster" => !r.namespaced,
        "Namespaced" => r.namespaced,
        _ => true,
    };
    let names = strs(&rule["resourceNames"]);
    scope_ok
        && any_or(&strs(&rule["operations"]), r.operation)
        && any_or(&strs(&rule["apiGroups"]), r.group)
        && any_or(&strs(&rule["apiVersions"]), r.version)
        && resource_matches(&strs(&rule["resources"]), r.resource, r.subresource)
        && (names.is_empty() || names.contains(&r.name))
}

/// Whether `matchResources` (a policy's constraints or a binding's) selects the request.
/// An absent or empty `resourceRules` matches everything (as a binding's empty matchResources
/// does); a policy must have rules, which the caller checks.
pub fn resources_match(m: &Value, r: &Request<'_>) -> bool {
    if !m.is_object() {
        return true;
    }
    let included = match m["resourceRules"].as_array() {
        Some(rules) if !rules.is_empty() => rules.iter().any(|x| rule_matches(x, r)),
        _ => true,
    };
    let excluded = m["excludeResourceRules"]
        .as_array()
        .is_some_and(|rules| rules.iter().any(|x| rule_matches(x, r)));
    included && !excluded && namespace_matches(m, r) && object_matches(m, r)
}

fn namespace_matches(m: &Value, r: &Request<'_>) -> bool {
    let sel = &m["namespaceSelector"];
    if !sel.is_object() {
        return true;
    }
    let is_namespace = r.group.is_empty() && r.resource == "namespaces";
    if !r.namespaced && !is_namespace {
        // Cluster-scoped objects other than namespaces are never skipped by it.
        return true;
    }
    LabelSelector::from_json(sel).matches(r.namespace_labels)
}

fn object_matches(m: &Value, r: &Request<'_>) -> bool {
    let sel = &m["objectSelector"];
    if !sel.is_object() {
        return true;
    }
    let s = LabelSelector::from_json(sel);
    [r.object, r.old_object]
        .iter()
        .filter(|o| !o.is_null())
        .any(|o| s.matches(&o["metadata"]["labels"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req<'a>(op: &'a str, sub: &'a str, labels: &'a Value) -> Request<'a> {
        Request {
            operation: op,
            group: "ironvisor.io",
            version: "v1alpha1",
            resource: "virtualmachines",
            subresource: sub,
            name: "vm",
            namespaced: true,
            object: &Value::Null,
            old_object: &Value::Null,
            namespace_labels: labels,
        }
    }

    #[test]
    fn resources_with_subresources_match_as_the_apiserver_matches_them() {
        assert!(resource_matches(
            &["virtualmachines"],
            "virtualmachines",
            ""
        ));
        assert!(!resource_matches(
            &["virtualmachines"],
            "virtualmachines",
            "status"
        ));
        assert!(resource_matches(
            &["virtualmachines/status"],
            "virtualmachines",
            "status"
        ));
        assert!(resource_matches(
            &["virtualmachines/*"],
            "virtualmachines",
            "status"
        ));
        assert!(!resource_matches(
            &["virtualmachines/*"],
            "virtualmachines",
            ""
        ));
        assert!(resource_matches(&["*/status"], "hypervisors", "status"));
        assert!(!resource_matches(&["*"], "hypervisors", "status"));
        assert!(resource_matches(&["*/*"], "hypervisors", "status"));
    }

    #[test]
    fn operations_exclusions_and_namespace_selectors_narrow_the_match() {
        let m = json!({"resourceRules": [{"apiGroups": ["ironvisor.io"], "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"], "resources": ["virtualmachines"]}],
            "namespaceSelector": {"matchLabels": {"tenant": "yes"}}});
        let yes = json!({"tenant": "yes"});
        let no = json!({});
        assert!(resources_match(&m, &req("UPDATE", "", &yes)));
        assert!(!resources_match(&m, &req("DELETE", "", &yes)));
        assert!(!resources_match(&m, &req("UPDATE", "status", &yes)));
        assert!(!resources_match(&m, &req("UPDATE", "", &no)));
        let mut ex = m.clone();
        ex["excludeResourceRules"] = json!([{"apiGroups": ["*"], "apiVersions": ["*"],
            "operations": ["*"], "resources": ["*"], "resourceNames": ["vm"]}]);
        assert!(!resources_match(&ex, &req("UPDATE", "", &yes)));
    }
}
