//! The ClusterRole aggregation controller: writes into each ClusterRole with an
//! `aggregationRule` the union of the rules of the ClusterRoles its selectors pick, as
//! kube-apiserver's controller does, so `kubectl get clusterrole admin -o yaml` shows them.
//! Authorisation does not wait for it (the RBAC index resolves aggregation itself).
//!
//! Runs from the garbage-collection loop; writes only `rules` of aggregated roles.

use super::rbac::Rule;
use super::rbac_index::{KEYS, cluster_role_rules};
use crate::app::App;
use crate::store::Change;
use serde_json::{Value, json};

fn to_json(r: &Rule) -> Value {
    let mut v = json!({"verbs": r.verbs});
    for (k, list) in [
        ("apiGroups", &r.api_groups),
        ("resources", &r.resources),
        ("resourceNames", &r.resource_names),
        ("nonResourceURLs", &r.non_resource_urls),
    ] {
        if !list.is_empty() {
            v[k] = json!(list);
        }
    }
    v
}

/// One pass: brings every aggregated ClusterRole's `rules` up to date.
pub fn pass(app: &App) {
    let key = KEYS[1];
    let (roles, _) = app.store.list(key, None);
    if !roles.iter().any(|r| r["aggregationRule"].is_object()) {
        return;
    }
    let resolved = cluster_role_rules(&roles);
    for role in roles.iter().filter(|r| r["aggregationRule"].is_object()) {
        let name = role["metadata"]["name"].as_str().unwrap_or_default();
        let want: Vec<Value> = resolved
            .get(name)
            .map(|rs| rs.iter().map(to_json).collect())
            .unwrap_or_default();
        if role["rules"].as_array().cloned().unwrap_or_default() == want {
            continue;
        }
        let result = app.store.mutate(key, "", name, false, |cur| {
            let Some(cur) = cur else {
                return Ok(Change::Delete);
            };
            let mut o = cur.clone();
            o["rules"] = Value::Array(want.clone());
            Ok(Change::Put(o))
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, role = name, "aggregating a ClusterRole failed");
        }
    }
}
