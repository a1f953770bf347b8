//! Console access to a claimed desktop: one Role and RoleBinding per Bound claim, granting
//! its user `get` on `virtualmachines/console` and `virtualmachines/vnc`
//! (subresources.ironvisor.io) and on the VM itself, for that one VM (resourceNames), and
//! nothing else. They are owned by the claim (garbage-collected with it) and deleted as soon
//! as the claim is no longer Bound.

use std::collections::BTreeMap;

use ironvisor_crds::console::SUBRESOURCE_GROUP;
use ironvisor_crds::desktop::{ACCESS_LABEL, DesktopClaim, POOL_LABEL};
use ironvisor_crds::labels::OPERATOR_MANAGER;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

/// The name of a claim's Role and RoleBinding.
pub fn access_name(claim_uid: &str) -> String {
    format!("ironvisor-desktop-{claim_uid}")
}

/// One Bound claim's access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The claim.
    pub claim: String,
    /// Its uid.
    pub uid: String,
    /// Its user.
    pub user: String,
    /// Its desktop.
    pub vm: String,
}

fn meta(pool: &str, g: &Grant, ns: &str) -> Value {
    json!({
        "name": access_name(&g.uid),
        "namespace": ns,
        "labels": {POOL_LABEL: pool, ACCESS_LABEL: g.uid},
        "ownerReferences": [{
            "apiVersion": DesktopClaim::api_version(&()),
            "kind": DesktopClaim::kind(&()),
            "name": g.claim,
            "uid": g.uid,
        }],
    })
}

/// The Role of a grant: the desktop's consoles and the VM, by name, read-only.
pub fn role(pool: &str, g: &Grant, ns: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta(pool, g, ns),
        "rules": [
            {"apiGroups": [SUBRESOURCE_GROUP],
             "resources": ["virtualmachines/console", "virtualmachines/vnc"],
             "verbs": ["get"], "resourceNames": [g.vm]},
            {"apiGroups": ["ironvisor.io"], "resources": ["virtualmachines"],
             "verbs": ["get"], "resourceNames": [g.vm]},
        ],
    })
}

/// The RoleBinding of a grant: the Role to the claim's user.
pub fn binding(pool: &str, g: &Grant, ns: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta(pool, g, ns),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": access_name(&g.uid)},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": g.user}],
    })
}

/// Make the pool's Roles and RoleBindings in `ns` exactly `grants`.
pub async fn sync(
    client: &Client,
    ns: &str,
    pool: &str,
    grants: &[Grant],
) -> Result<(), kube::Error> {
    let roles = Api::<Role>::namespaced(client.clone(), ns);
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{POOL_LABEL}={pool}"));
    let wanted: BTreeMap<String, &Grant> =
        grants.iter().map(|g| (access_name(&g.uid), g)).collect();
    let pp = PatchParams::apply(OPERATOR_MANAGER).force();
    let existing: BTreeMap<String, Role> = roles
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|r| (r.name_any(), r))
        .collect();
    for (name, g) in &wanted {
        let current_vm = existing.get(name).and_then(|r| {
            r.rules
                .as_ref()?
                .first()?
                .resource_names
                .as_ref()?
                .first()
                .cloned()
        });
        if current_vm.as_deref() != Some(g.vm.as_str()) {
            roles
                .patch(name, &pp, &Patch::Apply(role(pool, g, ns)))
                .await?;
            bindings
                .patch(name, &pp, &Patch::Apply(binding(pool, g, ns)))
                .await?;
        }
    }
    let dp = DeleteParams::default();
    for b in bindings.list(&lp).await?.items {
        if !wanted.contains_key(&b.name_any()) {
            gone(bindings.delete(&b.name_any(), &dp).await.map(|_| ()))?;
        }
    }
    for name in existing.keys().filter(|n| !wanted.contains_key(*n)) {
        gone(roles.delete(name, &dp).await.map(|_| ()))?;
    }
    Ok(())
}

fn gone(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            claim: "alice-desk".into(),
            uid: "u-1".into(),
            user: "alice@example.com".into(),
            vm: "office-ab12c".into(),
        }
    }

    #[test]
    fn the_role_grants_only_the_desktops_consoles_and_the_vm_by_name() {
        let r = role("office", &grant(), "team-a");
        let rules = r["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        for rule in rules {
            assert_eq!(rule["verbs"], json!(["get"]));
            assert_eq!(rule["resourceNames"], json!(["office-ab12c"]));
        }
        assert_eq!(rules[0]["apiGroups"], json!(["subresources.ironvisor.io"]));
        assert_eq!(r["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(r["metadata"]["ownerReferences"][0]["kind"], "DesktopClaim");
    }

    #[test]
    fn the_binding_names_the_claims_user_only() {
        let b = binding("office", &grant(), "team-a");
        assert_eq!(
            b["subjects"],
            json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice@example.com"}])
        );
        assert_eq!(b["roleRef"]["name"], "ironvisor-desktop-u-1");
    }
}
