//! Who may create VMs, with the real `manifests/rbac/user-roles.yaml` applied by kubectl to
//! the devcluster and each request made with the user's own token: Kubernetes' `edit` or
//! `admin` in a namespace gives no VMs there; a Tenant's owner, bound by the operator, may.

mod common;

use common::{Env, Operator, eventually, fast_config, vm_object};
use ironvisor_crds::VirtualMachine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn apply_user_roles(env: &Env) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    env.cluster.write_kubeconfig(&kc).expect("kubeconfig");
    let roles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/rbac/user-roles.yaml");
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["apply", "-f"])
        .arg(&roles)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn bind(env: &Env, ns: &str, user: &str, cluster_role: &str) {
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{user}-{cluster_role}"), "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &rb)
        .await
        .expect("binding created");
}

async fn create_vm_as(
    env: &Env,
    user: &str,
    groups: &[&str],
    ns: &str,
    name: &str,
) -> Result<(), String> {
    let client = env.cluster.client_for(user, groups).expect("client");
    let vms: Api<VirtualMachine> = Api::namespaced(client, ns);
    let vm = vm_object(ns, name, 1, "128Mi", json!({}));
    match vms.create(&PostParams::default(), &vm).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(format!("{} {}", e.code, e.message)),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_edit_gives_no_vms_but_a_tenant_owner_may_create_them() {
    let env = Env::start().await;
    apply_user_roles(&env);
    let op = Operator::start(env.client.clone(), fast_config("op-1"));
    env.tenant_only("acme", &["acme"], None).await;
    env.tenant_only("other", &["other"], None).await;
    let rbs: Api<RoleBinding> = Api::namespaced(env.client.clone(), "acme");
    eventually("the operator binds acme's owners", || async {
        rbs.get_opt("ironvisor-tenant-owners")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    bind(&env, "acme", "eddie", "edit").await;
    bind(&env, "acme", "adam", "admin").await;

    for user in ["eddie", "adam"] {
        let err = create_vm_as(&env, user, &[], "acme", user)
            .await
            .expect_err("Kubernetes' roles give no VMs");
        assert_eq!(
            err,
            format!(
                "403 virtualmachines.ironvisor.io is forbidden: User \"{user}\" cannot create \
                 resource \"virtualmachines\" in API group \"ironvisor.io\" in the namespace \"acme\""
            )
        );
    }

    // A member of the owners' group: VMs and the Secrets cloud-init reads, in acme only.
    create_vm_as(&env, "olga", &["acme-admins"], "acme", "web")
        .await
        .expect("an owner creates a VM");
    let olga = env.cluster.client_for("olga", &["acme-admins"]).unwrap();
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "cloud-init"}, "stringData": {"userdata": "#cloud-config\n"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(olga, "acme")
        .create(&PostParams::default(), &secret)
        .await
        .expect("an owner creates a Secret");
    let err = create_vm_as(&env, "olga", &["acme-admins"], "other", "web")
        .await
        .expect_err("not in another tenant's namespace");
    assert!(err.starts_with("403 "), "{err}");

    op.stop().await;
    env.cluster.shutdown().await;
}
