//! What a served resource is: names, scope, verbs, printer columns, schema.
//!
//! Owns the catalogue of built-in kinds and the translation of a CustomResourceDefinition into
//! served resources. It holds no objects and does no I/O.

use serde_json::Value;

/// A printer column (`additionalPrinterColumns` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: String,
    /// Optional format (`name`, ...).
    pub format: String,
    /// Description shown by `kubectl get -o wide` documentation.
    pub description: String,
    /// 0 = shown by default; >0 only with `-o wide`.
    pub priority: i64,
    /// The JSONPath (kubectl style, e.g. `.spec.memory.size`).
    pub json_path: String,
}

/// One served resource of one group/version.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group; empty for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Namespaced or cluster scoped.
    pub namespaced: bool,
    /// Short names.
    pub short_names: Vec<String>,
    /// Categories (e.g. `all`).
    pub categories: Vec<String>,
    /// Whether a `/status` subresource is served.
    pub status_subresource: bool,
    /// Printer columns; empty means the default columns for the kind.
    pub columns: Vec<PrinterColumn>,
    /// The OpenAPI v3 schema of the object, when known (CRDs).
    pub schema: Option<Value>,
    /// JSONPaths of CRD `selectableFields` (e.g. `.spec.nodeName`).
    pub selectable_fields: Vec<String>,
    /// The version objects are stored at (CRDs with several versions).
    pub storage_version: String,
    /// True for custom resources.
    pub custom: bool,
}

impl ResourceInfo {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key of the resource: `plural.group` (same object across versions).
    pub fn storage_key(&self) -> String {
        if !self.custom && self.plural == "events" {
            // Both Event APIs share one storage, as in a real cluster.
            return "events.".into();
        }
        format!("{}.{}", self.plural, self.group)
    }

    /// The verbs announced in discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// The `List` kind name.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        status_subresource: status,
        columns: vec![],
        schema: None,
        selectable_fields: vec![],
        storage_version: version.into(),
        custom: false,
    }
}

/// The built-in kinds this control plane serves.
pub fn builtins() -> Vec<ResourceInfo> {
    vec![
        builtin("", "v1", "Namespace", "namespaces", false, &["ns"], true),
        builtin("", "v1", "ConfigMap", "configmaps", true, &["cm"], false),
        builtin("", "v1", "Secret", "secrets", true, &[], false),
        builtin(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            &["sa"],
            false,
        ),
        builtin("", "v1", "Event", "events", true, &["ev"], false),
        // Nodes and Pods as a kubelet and the scheduler would leave them: stored objects with
        // their real field selectors, so `kubectl cordon|uncordon|drain` work (no kubelet, so
        // no Pod ever runs).
        ResourceInfo {
            selectable_fields: vec![".spec.unschedulable".into()],
            ..builtin("", "v1", "Node", "nodes", false, &["no"], true)
        },
        ResourceInfo {
            selectable_fields: vec![".spec.nodeName".into(), ".status.phase".into()],
            ..builtin("", "v1", "Pod", "pods", true, &["po"], true)
        },
        // Services and EndpointSlices as stored objects (no proxy, no IP allocation): the
        // aggregator resolves an APIService's Service through its EndpointSlices.
        builtin("", "v1", "Service", "services", true, &["svc"], true),
        builtin(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
            &[],
            false,
        ),
        builtin(
            "apiregistration.k8s.io",
            "v1",
            "APIService",
            "apiservices",
            false,
            &[],
            true,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            true,
            &["ev"],
            false,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
            false,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
            false,
            &[],
            true,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            false,
            &[],
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            true,
        ),
    ]
}

/// The resources a CRD object serves (one per served version); empty when it is malformed.
pub fn from_crd(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let (Some(kind), Some(plural)) = (names["kind"].as_str(), names["plural"].as_str()) else {
        return vec![];
    };
    if group.is_empty() {
        return vec![];
    }
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_string();
    versions
        .iter()
        .filter(|v| v["served"].as_bool() != Some(false))
        .filter_map(|v| {
            let version = v["name"].as_str()?;
            let columns = v["additionalPrinterColumns"]
                .as_array()
                .map(|cols| cols.iter().filter_map(column_from).collect())
                .unwrap_or_default();
            let selectable_fields = v["selectableFields"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f["jsonPath"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            Some(ResourceInfo {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
                plural: plural.into(),
                singular: singular.clone(),
                namespaced,
                short_names: strs(&names["shortNames"]),
                categories: strs(&names["categories"]),
                status_subresource: v["subresources"]["status"].is_object(),
                columns,
                schema: v["schema"]["openAPIV3Schema"]
                    .as_object()
                    .map(|_| v["schema"]["openAPIV3Schema"].clone()),
                selectable_fields,
                storage_version: storage_version.clone(),
                custom: true,
            })
        })
        .collect()
}

fn column_from(c: &Value) -> Option<PrinterColumn> {
    Some(PrinterColumn {
        name: c["name"].as_str()?.to_string(),
        type_: c["type"].as_str().unwrap_or("string").to_string(),
        format: c["format"].as_str().unwrap_or_default().to_string(),
        description: c["description"].as_str().unwrap_or_default().to_string(),
        priority: c["priority"].as_i64().unwrap_or(0),
        json_path: c["jsonPath"].as_str()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_crd_serves_one_resource_per_served_version() {
        let crd = json!({"spec": {"group": "x.io", "scope": "Namespaced",
            "names": {"kind": "Foo", "plural": "foos", "shortNames": ["f"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "A", "type": "string", "jsonPath": ".spec.a"}]},
                {"name": "v0", "served": false, "storage": false}]}});
        let r = from_crd(&crd);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].singular, "foo");
        assert!(r[0].status_subresource);
        assert_eq!(r[0].columns[0].json_path, ".spec.a");
        assert_eq!(r[0].short_names, vec!["f"]);
    }
}
