//! Namespaces no tenant may claim.
//!
//! Owns one pure rule: Kubernetes' own namespaces (`default`, `kube-*`) and the control
//! plane's (`ironvisor-system`, `ironvisor-seeds` where the seed copies of every tenant's
//! cloud-init Secrets live, and the namespace the operator runs in when that differs) never
//! belong to a tenant. A Tenant listing one gets a refusal and the operator touches
//! nothing there: no label, no RoleBinding, no deletion.

use std::collections::BTreeSet;

use ironvisor_crds::labels;

/// The namespaces tenants cannot claim, besides `default` and `kube-*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    system: BTreeSet<String>,
}

impl Default for Reserved {
    /// `ironvisor-system` and `ironvisor-seeds` (a tenant owning it would read every VM's
    /// seed copy).
    fn default() -> Self {
        Self {
            system: BTreeSet::from([
                labels::SYSTEM_NAMESPACE.to_owned(),
                ironvisor_crds::seed::NAMESPACE.to_owned(),
            ]),
        }
    }
}

impl Reserved {
    /// Also reserve the namespace the operator runs in (its pod's namespace), if it is known.
    pub fn with_own_namespace(mut self, own: Option<&str>) -> Self {
        if let Some(ns) = own.filter(|n| !n.is_empty()) {
            self.system.insert(ns.to_owned());
        }
        self
    }

    /// Why `namespace` cannot belong to a tenant, or `None` when it can.
    pub fn refusal(&self, namespace: &str) -> Option<String> {
        if namespace == "default" {
            return Some(
                "namespace default cannot belong to a tenant: it is Kubernetes' default \
                 namespace, where anyone may be sent; list a namespace of the tenant's own"
                    .to_owned(),
            );
        }
        if namespace.starts_with("kube-") {
            return Some(format!(
                "namespace {namespace} cannot belong to a tenant: kube-* namespaces are \
                 Kubernetes' own"
            ));
        }
        if self.system.contains(namespace) {
            return Some(format!(
                "namespace {namespace} cannot belong to a tenant: it is the Ironvisor \
                 control plane's namespace"
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_and_control_plane_namespaces_are_refused_with_the_reason() {
        let r = Reserved::default().with_own_namespace(Some("ops"));
        for ns in [
            "default",
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "kube-anything",
            "ironvisor-system",
            "ironvisor-seeds",
            "ops",
        ] {
            assert!(r.refusal(ns).is_some(), "{ns} must be refused");
        }
        assert!(
            r.refusal("kube-system")
                .unwrap()
                .contains("Kubernetes' own")
        );
        assert!(r.refusal("ops").unwrap().contains("control plane"));
        for ns in [
            "finance",
            "kubernetes",
            "defaults",
            "my-default",
            "ironvisor",
        ] {
            assert_eq!(r.refusal(ns), None, "{ns} may be claimed");
        }
        assert_eq!(Reserved::default().refusal("ops"), None);
    }
}
