//! Local APIServices, as kube-apiserver registers them: one per group/version the devcluster
//! serves itself (built-ins and CRDs), without a service, so `kubectl get apiservices` lists
//! them as `Local`. Built-in ones carry `kube-aggregator.kubernetes.io/automanaged: onstart`,
//! CRD ones `true`; automanaged ones whose group/version is no longer served are removed.
//!
//! Writes only automanaged APIServices; never touches one someone else created.

use super::apiservice::KEY;
use crate::app::{App, Params, Target};
use crate::store::Change;
use serde_json::{Value, json};

/// The label kube-aggregator marks its own APIServices with.
pub const AUTOMANAGED: &str = "kube-aggregator.kubernetes.io/automanaged";

/// kube-apiserver's discovery priorities of the built-in groups served here (group, version
/// priority); CRD groups get 1000/100 as kube's CRD registration controller gives them.
fn priorities(group: &str) -> (i64, i64) {
    match group {
        "" => (18000, 1),
        "events.k8s.io" => (17750, 15),
        "rbac.authorization.k8s.io" => (17000, 15),
        "admissionregistration.k8s.io" | "apiextensions.k8s.io" => (16700, 15),
        "coordination.k8s.io" => (16500, 15),
        "discovery.k8s.io" => (16200, 15),
        "apiregistration.k8s.io" => (18000, 15),
        _ => (1000, 100),
    }
}

/// The local APIService object for `group/version`.
pub fn object(group: &str, version: &str, builtin: bool) -> Value {
    let (gp, vp) = priorities(group);
    json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": format!("{version}.{group}"),
            "labels": {AUTOMANAGED: if builtin { "onstart" } else { "true" }}},
        "spec": {"group": group, "version": version, "groupPriorityMinimum": gp,
            "versionPriority": vp}})
}

/// Creates the missing local APIServices and removes automanaged ones no longer served.
pub fn reconcile(app: &App) {
    let reg = app.registry();
    let Some(served) = reg.find("apiregistration.k8s.io", "v1", "apiservices") else {
        return;
    };
    let mut wanted: Vec<(String, String, bool)> = vec![];
    for s in reg.all() {
        let gv = (s.info.group.clone(), s.info.version.clone(), !s.info.custom);
        if !wanted.iter().any(|w| w.0 == gv.0 && w.1 == gv.1) {
            wanted.push(gv);
        }
    }
    let t = Target {
        served,
        namespace: None,
        name: None,
        subresource: None,
    };
    let p = Params::from_query(&Default::default());
    for (g, v, builtin) in &wanted {
        if app.store.get(KEY, "", &format!("{v}.{g}")).is_some() {
            continue;
        }
        let body = object(g, v, *builtin).to_string();
        if let Err(e) = crate::ops::create(app, &t, body.as_bytes(), &p, "kube-aggregator") {
            tracing::debug!(error = %e, group = g, version = v, "registering a local APIService failed");
        }
    }
    for o in app.store.list(KEY, None).0 {
        let managed = o["metadata"]["labels"][AUTOMANAGED].is_string();
        let (g, v) = (
            o["spec"]["group"].as_str().unwrap_or_default(),
            o["spec"]["version"].as_str().unwrap_or_default(),
        );
        if !managed || wanted.iter().any(|w| w.0 == g && w.1 == v) {
            continue;
        }
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let _ = app.store.mutate(KEY, "", name, false, |cur| {
            Ok(match cur {
                Some(_) => Change::Delete,
                None => Change::Unchanged(Value::Null),
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::apiservice::{ApiService, available_column, service_column};

    #[test]
    fn a_local_apiservice_is_well_formed_and_shows_as_local() {
        let o = object("", "v1", true);
        assert_eq!(o["metadata"]["name"], "v1.");
        let s = ApiService::from_object(&o).unwrap();
        assert!(s.service.is_none());
        assert_eq!(service_column(&o), "Local");
        assert_eq!(available_column(&o), "Unknown");
        assert_eq!(
            object("ironvisor.io", "v1alpha1", false)["metadata"]["labels"][AUTOMANAGED],
            "true"
        );
    }
}
