//! Tenant owners' read access to their own usage reports: in the reports' namespace, a Role
//! per tenant that may `get` exactly that tenant's reports by name, bound to the tenant's
//! owners. Nothing else there is readable to them, so no tenant reads another's figures.

use ironvisor_crds::Tenant;
use ironvisor_crds::labels;
use ironvisor_crds::usage::USAGE_NAMESPACE;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::UsageError;

/// Name of a tenant's Role and RoleBinding in [`USAGE_NAMESPACE`].
pub fn role_name(tenant: &str) -> String {
    format!("ironvisor-usage-{tenant}")
}

/// The Role letting `tenant`'s owners get its reports `report_names`; None for no names
/// (a rule without `resourceNames` would grant every report).
pub fn role(tenant: &str, report_names: &[String]) -> Option<Value> {
    if report_names.is_empty() {
        return None;
    }
    Some(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": role_name(tenant), "namespace": USAGE_NAMESPACE,
                     "labels": {labels::TENANT: tenant}},
        "rules": [{"apiGroups": [ironvisor_crds::GROUP], "resources": ["usagereports"],
                   "verbs": ["get"], "resourceNames": report_names}],
    }))
}

/// The RoleBinding of `t`'s owners to its Role.
pub fn binding(t: &Tenant) -> Value {
    let subjects: Vec<Value> = t
        .spec
        .owners
        .iter()
        .map(|s| {
            let mut v = json!({"kind": s.kind.as_str(), "name": s.name});
            match &s.namespace {
                Some(n) => v["namespace"] = json!(n),
                None => v["apiGroup"] = json!("rbac.authorization.k8s.io"),
            }
            v
        })
        .collect();
    let name = role_name(&t.name_any());
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": USAGE_NAMESPACE,
                     "labels": {labels::TENANT: t.name_any()}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": subjects,
    })
}

/// Keep `t`'s owners able to read its reports `report_names` (and only those).
pub async fn grant(client: &Client, t: &Tenant, report_names: &[String]) -> Result<(), UsageError> {
    let params = PatchParams::apply(labels::OPERATOR_MANAGER).force();
    let tenant = t.name_any();
    let Some(role) = role(&tenant, report_names) else {
        return Ok(());
    };
    let name = role_name(&tenant);
    let err = |e| {
        UsageError::Api(
            format!("granting tenant {tenant}'s owners its usage reports"),
            e,
        )
    };
    let roles: Api<Role> = Api::namespaced(client.clone(), USAGE_NAMESPACE);
    roles
        .patch(&name, &params, &Patch::Apply(role))
        .await
        .map_err(err)?;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), USAGE_NAMESPACE);
    bindings
        .patch(&name, &params, &Patch::Apply(binding(t)))
        .await
        .map_err(err)?;
    Ok(())
}

/// Remove the access of tenants no longer in `tenants` (their reports stay for the books).
pub async fn revoke_gone<V>(
    client: &Client,
    tenants: &std::collections::BTreeMap<String, V>,
) -> Result<(), UsageError> {
    let roles: Api<Role> = Api::namespaced(client.clone(), USAGE_NAMESPACE);
    let lp = kube::api::ListParams::default().labels(labels::TENANT);
    let list = roles
        .list(&lp)
        .await
        .map_err(|e| UsageError::Api("listing usage access Roles".into(), e))?;
    for r in list.items {
        if let Some(t) = r.labels().get(labels::TENANT)
            && !tenants.contains_key(t)
        {
            revoke(client, t).await?;
        }
    }
    Ok(())
}

/// Remove a deleted tenant's access (its reports stay for the books).
async fn revoke(client: &Client, tenant: &str) -> Result<(), UsageError> {
    let name = role_name(tenant);
    let err = |e| UsageError::Api(format!("revoking tenant {tenant}'s usage access"), e);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), USAGE_NAMESPACE);
    match bindings.delete(&name, &DeleteParams::default()).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(err(e)),
    }
    let roles: Api<Role> = Api::namespaced(client.clone(), USAGE_NAMESPACE);
    match roles.delete(&name, &DeleteParams::default()).await {
        Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironvisor_crds::common::{Subject, SubjectKind};

    #[test]
    fn the_role_names_the_tenants_reports_only_and_binds_its_owners() {
        assert!(
            role("finance", &[]).is_none(),
            "never a rule over every report"
        );
        let r = role(
            "finance",
            &["finance.2026-10".into(), "finance.2026-11".into()],
        )
        .unwrap();
        assert_eq!(r["rules"][0]["verbs"], json!(["get"]));
        assert_eq!(
            r["rules"][0]["resourceNames"],
            json!(["finance.2026-10", "finance.2026-11"])
        );
        let mut t = Tenant::new("finance", Default::default());
        t.spec.owners = vec![Subject {
            kind: SubjectKind::User,
            name: "alice".into(),
            namespace: None,
        }];
        let b = binding(&t);
        assert_eq!(b["subjects"][0]["name"], "alice");
        assert_eq!(b["roleRef"]["kind"], "Role");
        assert_eq!(b["roleRef"]["name"], "ironvisor-usage-finance");
    }
}
