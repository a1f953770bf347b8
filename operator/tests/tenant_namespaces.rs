//! Which namespaces a Tenant may claim and which it may delete, against the devcluster: a
//! pre-existing namespace is adopted and outlives its tenant with its Secrets; only a
//! namespace the operator created is deleted; `default`, `kube-*` and the system namespace
//! cannot be claimed and are left untouched; of two tenants claiming one namespace the first
//! keeps it, even when the second is deleted.

mod common;

use common::{Env, Operator, eventually, fast_config};
use ironvisor_crds::Tenant;
use ironvisor_crds::labels;
use ironvisor_crds::tenant::NamespaceOrigin;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

const OWNERS: &str = "ironvisor-tenant-owners";

async fn create_tenant(env: &Env, name: &str, namespaces: &[&str], policy: &str) {
    let t: Tenant = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"namespaces": namespaces, "namespaceDeletionPolicy": policy,
                 "owners": [{"kind": "Group", "name": format!("{name}-admins")}]},
    }))
    .expect("valid tenant");
    env.tenants()
        .create(&PostParams::default(), &t)
        .await
        .expect("tenant created");
}

async fn ready(env: &Env, tenant: &str) -> Option<(String, String, String)> {
    let t = env.tenants().get(tenant).await.ok()?;
    let c = t
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

async fn origin(env: &Env, tenant: &str, ns: &str) -> Option<NamespaceOrigin> {
    let t = env.tenants().get(tenant).await.ok()?;
    t.status?
        .namespaces
        .into_iter()
        .find(|n| n.name == ns)?
        .origin
}

fn namespaces(env: &Env) -> Api<Namespace> {
    Api::all(env.client.clone())
}

async fn owners_bound(env: &Env, ns: &str) -> bool {
    let rbs: Api<RoleBinding> = Api::namespaced(env.client.clone(), ns);
    rbs.get_opt(OWNERS).await.ok().flatten().is_some()
}

/// A namespace with no trace of any tenant: no label, no operator annotation.
fn untouched(ns: &Namespace) -> bool {
    !ns.labels().contains_key(labels::TENANT)
        && !ns.annotations().contains_key(labels::NAMESPACE_CREATED_BY)
        && !ns.annotations().contains_key(labels::NAMESPACE_ADOPTED_BY)
}

async fn gone_or_terminating(env: &Env, ns: &str) -> bool {
    match namespaces(env).get_opt(ns).await {
        Ok(None) => true,
        Ok(Some(n)) => n.metadata.deletion_timestamp.is_some(),
        Err(_) => false,
    }
}

async fn delete_tenant(env: &Env, name: &str) {
    env.tenants()
        .delete(name, &Default::default())
        .await
        .expect("tenant deleted");
    eventually(&format!("tenant {name} is gone"), || async {
        env.tenants().get_opt(name).await.ok().flatten().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_namespace_outlives_its_tenant_with_its_secret_and_only_a_created_one_is_deleted()
 {
    let env = Env::start().await;
    env.namespace("legacy").await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "legacy");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "db-password"}, "stringData": {"password": "s3cret"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret created");
    let op = Operator::start(env.client.clone(), fast_config("op-1"));

    // Even with the harshest policy, only what the operator created may go.
    create_tenant(&env, "t", &["legacy", "fresh"], "Delete").await;
    eventually("t is Ready", || async {
        ready(&env, "t").await.is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    assert_eq!(
        origin(&env, "t", "legacy").await,
        Some(NamespaceOrigin::Adopted)
    );
    assert_eq!(
        origin(&env, "t", "fresh").await,
        Some(NamespaceOrigin::Created)
    );
    let legacy = namespaces(&env).get("legacy").await.unwrap();
    assert_eq!(
        legacy
            .annotations()
            .get(labels::NAMESPACE_ADOPTED_BY)
            .map(String::as_str),
        Some("t")
    );
    assert!(
        !legacy
            .annotations()
            .contains_key(labels::NAMESPACE_CREATED_BY)
    );
    let fresh = namespaces(&env).get("fresh").await.unwrap();
    assert_eq!(
        fresh
            .annotations()
            .get(labels::NAMESPACE_CREATED_BY)
            .map(String::as_str),
        Some("t")
    );
    assert!(owners_bound(&env, "legacy").await && owners_bound(&env, "fresh").await);

    delete_tenant(&env, "t").await;
    eventually("the namespace created for t is deleted", || async {
        gone_or_terminating(&env, "fresh").await
    })
    .await;
    let legacy = namespaces(&env)
        .get("legacy")
        .await
        .expect("legacy is kept");
    assert!(legacy.metadata.deletion_timestamp.is_none());
    assert!(untouched(&legacy), "released: {:?}", legacy.metadata);
    assert!(
        !owners_bound(&env, "legacy").await,
        "the owners' binding is removed"
    );
    let kept = secrets
        .get("db-password")
        .await
        .expect("the Secret is kept");
    assert_eq!(
        kept.data
            .unwrap_or_default()
            .get("password")
            .map(|b| b.0.as_slice()),
        Some(b"s3cret".as_slice())
    );

    op.stop().await;
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_and_system_namespaces_cannot_be_claimed_and_are_left_untouched() {
    let env = Env::start().await;
    let op = Operator::start(env.client.clone(), fast_config("op-1"));
    let reserved = ["default", "kube-system", "kube-public", "ironvisor-system"];
    create_tenant(
        &env,
        "greedy",
        &[reserved.as_slice(), &["own"]].concat(),
        "Delete",
    )
    .await;
    eventually("greedy is refused with NamespaceReserved", || async {
        ready(&env, "greedy").await.is_some_and(|(s, r, m)| {
            s == "False"
                && r == "NamespaceReserved"
                && m.contains("namespace default cannot belong to a tenant: it is Kubernetes' default namespace")
                && m.contains("namespace kube-system cannot belong to a tenant: kube-* namespaces are Kubernetes' own")
                && m.contains("namespace ironvisor-system cannot belong to a tenant: it is the Ironvisor control plane's namespace")
        })
    })
    .await;
    eventually("the claimable namespace is still taken", || async {
        origin(&env, "greedy", "own").await == Some(NamespaceOrigin::Created)
    })
    .await;
    for ns in reserved {
        let n = namespaces(&env).get(ns).await.expect("exists");
        assert!(untouched(&n), "{ns}: {:?}", n.metadata);
        assert!(!owners_bound(&env, ns).await, "{ns} has no owners' binding");
        assert_eq!(origin(&env, "greedy", ns).await, None);
    }

    delete_tenant(&env, "greedy").await;
    for ns in reserved {
        let n = namespaces(&env).get(ns).await.expect("still exists");
        assert!(
            n.metadata.deletion_timestamp.is_none(),
            "{ns} is not deleted"
        );
    }

    op.stop().await;
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_tenants_claiming_a_namespace_the_first_keeps_it_even_when_the_second_is_deleted() {
    let env = Env::start().await;
    let op = Operator::start(env.client.clone(), fast_config("op-1"));
    create_tenant(&env, "first", &["shared"], "DeleteEmpty").await;
    eventually("first is Ready", || async {
        ready(&env, "first")
            .await
            .is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    create_tenant(&env, "second", &["shared"], "Delete").await;
    eventually("second is told the namespace is taken", || async {
        ready(&env, "second").await.is_some_and(|(s, r, m)| {
            s == "False"
                && r == "NamespaceConflict"
                && m == "namespace shared is already owned by tenant first"
        })
    })
    .await;

    delete_tenant(&env, "second").await;
    let shared = namespaces(&env)
        .get("shared")
        .await
        .expect("shared is kept");
    assert!(shared.metadata.deletion_timestamp.is_none());
    assert_eq!(
        shared.labels().get(labels::TENANT).map(String::as_str),
        Some("first")
    );
    assert_eq!(
        shared
            .annotations()
            .get(labels::NAMESPACE_CREATED_BY)
            .map(String::as_str),
        Some("first")
    );
    assert!(owners_bound(&env, "shared").await);
    let rb: Api<RoleBinding> = Api::namespaced(env.client.clone(), "shared");
    let subjects = rb.get(OWNERS).await.unwrap().subjects.unwrap_or_default();
    assert_eq!(subjects[0].name, "first-admins");

    op.stop().await;
    env.cluster.shutdown().await;
}
