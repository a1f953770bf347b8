//! The operator's read access to Secrets: only in namespaces a Tenant owns.
//!
//! The tenant controller calls [`grant`] for each namespace it claims and [`revoke`] for each
//! it releases. The RoleBinding binds the operator's own ServiceAccount to the ClusterRole
//! [`SEED_READER_ROLE`] (get, list, watch Secrets); the operator may create it because its
//! ClusterRole holds `bind` on that one role (RBAC's escalation check), not because it can
//! read Secrets anywhere. A namespace no Tenant owns never gets the binding, so the operator
//! cannot read its Secrets.

use ironvisor_crds::labels;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

/// The ClusterRole (in `manifests/rbac/operator.yaml`) that lets the operator read Secrets,
/// and the name of the RoleBinding to it in each tenant namespace.
pub const SEED_READER_ROLE: &str = "ironvisor-operator-seed-reader";

/// The ServiceAccount the operator runs as (`manifests/rbac/operator.yaml`).
pub const OPERATOR_SERVICE_ACCOUNT: &str = "ironvisor-operator";

/// The RoleBinding giving the operator Secret reads in `namespace` of `tenant`.
pub fn role_binding(namespace: &str, tenant: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": SEED_READER_ROLE, "namespace": namespace,
                     "labels": {labels::TENANT: tenant}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": SEED_READER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT,
                      "namespace": labels::SYSTEM_NAMESPACE}],
    })
}

/// Let the operator read the Secrets of `namespace`, which `tenant` owns.
pub async fn grant(client: &Client, namespace: &str, tenant: &str) -> Result<(), kube::Error> {
    let api: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    let pp = PatchParams::apply(labels::OPERATOR_MANAGER).force();
    api.patch(
        SEED_READER_ROLE,
        &pp,
        &Patch::Apply(role_binding(namespace, tenant)),
    )
    .await?;
    Ok(())
}

/// Take the operator's Secret reads in `namespace` away (no Tenant owns it any more).
pub async fn revoke(client: &Client, namespace: &str) -> Result<(), kube::Error> {
    let api: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    match api.delete(SEED_READER_ROLE, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_names_only_the_operator_account_and_the_seed_reader_role() {
        let rb = role_binding("fin", "acme");
        assert_eq!(rb["roleRef"]["name"], SEED_READER_ROLE);
        assert_eq!(rb["roleRef"]["kind"], "ClusterRole");
        assert_eq!(
            rb["subjects"],
            json!([{"kind": "ServiceAccount", "name": "ironvisor-operator", "namespace": "ironvisor-system"}])
        );
        assert_eq!(rb["metadata"]["namespace"], "fin");
    }
}
