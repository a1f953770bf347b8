//! The default roles and bindings kube-apiserver creates at start (its bootstrap policy),
//! limited to the kinds served here: `cluster-admin` bound to `system:masters`, the
//! aggregated `admin`/`edit`/`view`, discovery, basic-user (self reviews) and public info.
//!
//! Pure: the values; `lib.rs` stores the missing ones.

use serde_json::{Value, json};

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

fn meta(name: &str, labels: Value) -> Value {
    let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    if let (Some(l), Some(extra)) = (l.as_object_mut(), labels.as_object()) {
        l.extend(extra.clone());
    }
    json!({"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}})
}

fn role(name: &str, labels: Value, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": meta(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: Value, selector_label: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": meta(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {selector_label: "true"}}]},
        "rules": []})
}

fn binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": meta(name, json!({})),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects})
}

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 6] = [
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
    "get",
];

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let agg = |to: &[&str]| {
        let mut l = serde_json::Map::new();
        for t in to {
            l.insert(
                format!("rbac.authorization.k8s.io/aggregate-to-{t}"),
                json!("true"),
            );
        }
        Value::Object(l)
    };
    vec![
        role(
            "cluster-admin",
            json!({}),
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        aggregated(
            "admin",
            json!({}),
            "rbac.authorization.k8s.io/aggregate-to-admin",
        ),
        aggregated(
            "edit",
            agg(&["admin"]),
            "rbac.authorization.k8s.io/aggregate-to-edit",
        ),
        aggregated(
            "view",
            agg(&["edit"]),
            "rbac.authorization.k8s.io/aggregate-to-view",
        ),
        role(
            "system:aggregate-to-admin",
            agg(&["admin"]),
            json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": WRITE},
                   {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": READ},
                   {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]}]),
        ),
        role(
            "system:aggregate-to-edit",
            agg(&["admin", "edit"]),
            json!([{"apiGroups": [""], "resources": ["configmaps", "secrets", "serviceaccounts"], "verbs": WRITE},
                   {"apiGroups": [""], "resources": ["secrets"], "verbs": READ},
                   {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
                   {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": WRITE}]),
        ),
        role(
            "system:aggregate-to-view",
            agg(&["admin", "edit", "view"]),
            json!([{"apiGroups": [""], "resources": ["configmaps", "serviceaccounts", "events", "namespaces", "namespaces/status"], "verbs": READ},
                   {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": READ},
                   {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": READ}]),
        ),
        role(
            "system:discovery",
            json!({}),
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        role(
            "system:basic-user",
            json!({}),
            json!([{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                   {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
        ),
        role(
            "system:public-info-viewer",
            json!({}),
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        role(
            "system:auth-delegator",
            json!({}),
            json!([{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                   {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]),
        ),
    ]
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", "cluster-admin", &[super::MASTERS]),
        binding(
            "system:discovery",
            "system:discovery",
            &[super::AUTHENTICATED],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[super::AUTHENTICATED],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[super::AUTHENTICATED, super::UNAUTHENTICATED],
        ),
    ]
}
