//! What the usage controller reads, reduced to what accounting needs: each VM's identity,
//! run log, deletion time and usage finalizer; which tenant owns which namespace; each
//! tenant's ancestors. Pure; a VM whose status does not parse contributes no facts rather
//! than stopping the others.

use std::collections::BTreeMap;

use ironvisor_crds::labels;
use ironvisor_crds::usage::{RunRecord, USAGE_FINALIZER};
use ironvisor_crds::utilization::VmUtilization;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::DynamicObject;

/// One VM as accounting sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmRecord {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
    /// `metadata.resourceVersion` (for the finalizer patch's optimistic concurrency).
    pub resource_version: Option<String>,
    /// `metadata.finalizers`.
    pub finalizers: Vec<String>,
    /// `metadata.deletionTimestamp`.
    pub deleting_at: Option<Timestamp>,
    /// `status.nodeName` is set: the VM is placed and may start holding resources.
    pub placed: bool,
    /// `status.runLog`.
    pub run_log: Vec<RunRecord>,
    /// `status.utilization` (absent or unreadable: not measured).
    pub utilization: Option<VmUtilization>,
}

impl VmRecord {
    /// Whether the usage finalizer is on the VM.
    pub fn has_usage_finalizer(&self) -> bool {
        self.finalizers.iter().any(|f| f == USAGE_FINALIZER)
    }
}

/// A VM from the API as plain JSON; None without namespace or uid.
pub fn vm_record(o: &DynamicObject) -> Option<VmRecord> {
    let status = o.data.get("status");
    let run_log = status
        .and_then(|s| s.get("runLog"))
        .and_then(|l| serde_json::from_value::<Vec<RunRecord>>(l.clone()).ok())
        .unwrap_or_default();
    let utilization = status
        .and_then(|s| s.get("utilization"))
        .and_then(|u| serde_json::from_value::<VmUtilization>(u.clone()).ok());
    let placed = status
        .and_then(|s| s.get("nodeName"))
        .and_then(|n| n.as_str())
        .is_some_and(|n| !n.is_empty());
    Some(VmRecord {
        namespace: o.namespace()?,
        name: o.name_any(),
        uid: o.uid()?,
        resource_version: o.resource_version(),
        finalizers: o.finalizers().to_vec(),
        deleting_at: o.metadata.deletion_timestamp.as_ref().map(|t| t.0),
        placed,
        run_log,
        utilization,
    })
}

/// Namespace → owning tenant, from the namespaces' tenant label.
pub fn tenants_of_namespaces(namespaces: &[Namespace]) -> BTreeMap<String, String> {
    namespaces
        .iter()
        .filter_map(|ns| {
            let t = ns.labels().get(labels::TENANT)?;
            Some((ns.name_any(), t.clone()))
        })
        .collect()
}

/// The chain of parents of `tenant`, nearest first; stops at a missing parent or a loop.
pub fn ancestors(tenant: &str, parents: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = parents.get(tenant).cloned().flatten();
    while let Some(p) = cur {
        if p == tenant || out.contains(&p) {
            break;
        }
        cur = parents.get(&p).cloned().flatten();
        out.push(p);
    }
    out
}

/// The VMs of each tenant: every tenant in `parents` (with or without VMs), and the
/// default tenant for VMs of namespaces no tenant owns. VMs of no tenant are left out.
pub fn group_by_tenant<'a>(
    vms: &'a [VmRecord],
    ns_tenant: &BTreeMap<String, String>,
    parents: &BTreeMap<String, Option<String>>,
    default_tenant: Option<&str>,
) -> BTreeMap<String, Vec<&'a VmRecord>> {
    let mut out: BTreeMap<String, Vec<&VmRecord>> =
        parents.keys().map(|t| (t.clone(), Vec::new())).collect();
    for vm in vms {
        let tenant = ns_tenant
            .get(&vm.namespace)
            .map(String::as_str)
            .or(default_tenant);
        if let Some(t) = tenant {
            out.entry(t.to_owned()).or_default().push(vm);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parents(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(t, p)| (t.to_string(), p.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn ancestors_follow_parents_and_stop_at_loops_and_missing_ones() {
        let p = parents(&[
            ("org", None),
            ("dept", Some("org")),
            ("proj", Some("dept")),
            ("a", Some("b")),
            ("b", Some("a")),
            ("orphan", Some("gone")),
        ]);
        assert_eq!(ancestors("proj", &p), vec!["dept", "org"]);
        assert_eq!(ancestors("org", &p), Vec::<String>::new());
        assert_eq!(ancestors("a", &p), vec!["b"]);
        assert_eq!(ancestors("orphan", &p), vec!["gone"]);
    }

    #[test]
    fn a_vm_with_a_garbled_run_log_has_no_facts_but_is_still_seen() {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "v", "namespace": "ns", "uid": "u1",
                         "finalizers": [USAGE_FINALIZER],
                         "deletionTimestamp": "2026-11-05T10:00:00Z"},
            "status": {"nodeName": "h", "runLog": [{"at": "not a time"}]}
        }))
        .unwrap();
        let r = vm_record(&o).unwrap();
        assert!(r.run_log.is_empty() && r.placed && r.has_usage_finalizer());
        assert_eq!(r.deleting_at, Some("2026-11-05T10:00:00Z".parse().unwrap()));
    }

    #[test]
    fn vms_go_to_their_namespaces_tenant_or_the_default_one() {
        let vm = |ns: &str| VmRecord {
            namespace: ns.into(),
            name: "v".into(),
            uid: ns.into(),
            resource_version: None,
            finalizers: vec![],
            deleting_at: None,
            placed: true,
            run_log: vec![],
            utilization: None,
        };
        let vms = [vm("fin"), vm("loose")];
        let ns: BTreeMap<String, String> = [("fin".to_string(), "finance".to_string())].into();
        let p = parents(&[("finance", None), ("idle", None)]);
        let g = group_by_tenant(&vms, &ns, &p, None);
        assert_eq!(g["finance"].len(), 1);
        assert!(
            g["idle"].is_empty(),
            "a tenant without VMs still gets a report"
        );
        assert!(!g.values().flatten().any(|v| v.namespace == "loose"));
        let g = group_by_tenant(&vms, &ns, &p, Some("legacy"));
        assert_eq!(g["legacy"][0].namespace, "loose");
    }
}
