//! The Tenant controller's writes to Namespaces and RoleBindings: claim (create or adopt,
//! label, annotate, bind the owners) and release (unlabel, unannotate, unbind). Never
//! deletes anything but the owners' RoleBinding; deleting a namespace is the caller's
//! decision ([`super::decide::cleanup_step`]).

use ironvisor_crds::labels;
use ironvisor_crds::tenant::{NamespaceOrigin, Tenant};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::decide::origin_of;
use super::{ADMIN_CLUSTER_ROLE, ROLE_BINDING};

fn apply_params() -> PatchParams {
    PatchParams::apply(labels::OPERATOR_MANAGER).force()
}

fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(labels::OPERATOR_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// The label and annotations a namespace of `tenant` carries for `origin` (`null` removes).
fn marks(tenant: &str, origin: NamespaceOrigin) -> Value {
    let (created, adopted) = match origin {
        NamespaceOrigin::Created => (json!(tenant), Value::Null),
        NamespaceOrigin::Adopted => (Value::Null, json!(tenant)),
    };
    json!({
        "labels": {labels::TENANT: tenant},
        "annotations": {labels::NAMESPACE_CREATED_BY: created, labels::NAMESPACE_ADOPTED_BY: adopted},
    })
}

/// Whether `ns` already carries exactly the marks of `tenant` and `origin`.
fn marked(ns: &Namespace, tenant: &str, origin: NamespaceOrigin) -> bool {
    let ann = ns.annotations();
    let (created, adopted) = (
        ann.get(labels::NAMESPACE_CREATED_BY),
        ann.get(labels::NAMESPACE_ADOPTED_BY),
    );
    ns.labels().get(labels::TENANT).map(String::as_str) == Some(tenant)
        && match origin {
            NamespaceOrigin::Created => {
                created.map(String::as_str) == Some(tenant) && adopted.is_none()
            }
            NamespaceOrigin::Adopted => {
                adopted.map(String::as_str) == Some(tenant) && created.is_none()
            }
        }
}

/// Create the namespace for the tenant, or adopt it when it exists (`existing`, or created
/// by someone else since it was read): label it, record how the tenant holds it in the
/// operator's annotation, bind the owners, and let the operator read the Secrets there
/// (for seed copies). Returns how the tenant holds it.
pub async fn claim(
    client: &Client,
    t: &Tenant,
    ns: &str,
    existing: Option<Namespace>,
) -> Result<NamespaceOrigin, kube::Error> {
    let name = t.name_any();
    let nss: Api<Namespace> = Api::all(client.clone());
    let existing = match existing {
        Some(n) => Some(n),
        None => {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": ns,
                "labels": {labels::TENANT: name},
                "annotations": {labels::NAMESPACE_CREATED_BY: name},
            }});
            let body: Namespace = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
            let pp = PostParams {
                field_manager: Some(labels::OPERATOR_MANAGER.into()),
                ..PostParams::default()
            };
            match nss.create(&pp, &body).await {
                Ok(_) => {
                    tracing::info!(tenant = %name, namespace = %ns, "namespace created for tenant");
                    None
                }
                // Created by someone else since it was read: it is not ours to delete.
                Err(kube::Error::Api(e)) if e.code == 409 => nss.get_opt(ns).await?,
                Err(e) => return Err(e),
            }
        }
    };
    let origin = match &existing {
        None => NamespaceOrigin::Created,
        Some(n) => origin_of(n, &name),
    };
    if let Some(n) = existing.filter(|n| !marked(n, &name, origin)) {
        if origin == NamespaceOrigin::Adopted && n.labels().get(labels::TENANT) != Some(&name) {
            tracing::info!(tenant = %name, namespace = %ns, "existing namespace adopted by tenant");
        }
        let body = json!({"metadata": marks(&name, origin)});
        nss.patch(ns, &merge_params(), &Patch::Merge(body)).await?;
    }
    bind_owners(client, t, ns).await?;
    crate::controllers::seed::access::grant(client, ns, &name).await?;
    Ok(origin)
}

/// The RoleBinding of the tenant's owners to `ironvisor-admin` in `ns`.
async fn bind_owners(client: &Client, t: &Tenant, ns: &str) -> Result<(), kube::Error> {
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
    let rb = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": ROLE_BINDING, "namespace": ns, "labels": {labels::TENANT: t.name_any()}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ADMIN_CLUSTER_ROLE},
        "subjects": subjects,
    });
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    rbs.patch(ROLE_BINDING, &apply_params(), &Patch::Apply(rb))
        .await?;
    Ok(())
}

/// Give a namespace back: remove the tenant label, the operator's annotations, the
/// owners' RoleBinding and the operator's own Secret reads there. Everything else in it (VMs, Secrets) stays.
pub async fn release(client: &Client, ns: &str) -> Result<(), kube::Error> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let body = json!({"metadata": {
        "labels": {labels::TENANT: null},
        "annotations": {labels::NAMESPACE_CREATED_BY: null, labels::NAMESPACE_ADOPTED_BY: null},
    }});
    nss.patch(ns, &merge_params(), &Patch::Merge(body)).await?;
    crate::controllers::seed::access::revoke(client, ns).await?;
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    match rbs.delete(ROLE_BINDING, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The namespaces labelled for `tenant`.
pub async fn labelled(client: &Client, tenant: &str) -> Result<Vec<Namespace>, kube::Error> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let list = nss
        .list(&ListParams::default().labels(&format!("{}={tenant}", labels::TENANT)))
        .await?;
    Ok(list.items)
}
