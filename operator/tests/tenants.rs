//! Tenant trees against the devcluster: namespaces created and labelled, owners bound, a
//! namespace claimed twice is an error on the later tenant, and a parent's quota bounds the
//! sum of its children.

mod common;

use common::{Env, Operator, eventually, fast_config};
use ironvisor_crds::labels;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::Api;
use serde_json::json;

async fn ready_condition(env: &Env, tenant: &str) -> Option<(String, String, String)> {
    let t = env.tenants().get(tenant).await.ok()?;
    let c = t
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_tree_gets_its_namespaces_and_the_parent_quota_bounds_the_children() {
    let env = Env::start().await;
    env.host("h1", 64, "256Gi", json!({})).await;
    let beats = env.keep_alive(&["h1"]);
    let op = Operator::start(env.client.clone(), fast_config("op-1"));

    env.tenant_only("org", &["org-ns"], None).await;
    env.tenant_only("team-a", &["ta"], Some("org")).await;
    env.tenant_only("team-b", &["tb"], Some("org")).await;
    env.quota("org-q", "org", json!({"vcpus": 4})).await;

    // Namespaces are created and labelled; owners are bound to ironvisor-admin.
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    for (tenant, ns) in [("org", "org-ns"), ("team-a", "ta"), ("team-b", "tb")] {
        eventually(&format!("{ns} exists labelled for {tenant}"), || async {
            namespaces.get(ns).await.ok().is_some_and(|n| {
                n.metadata
                    .labels
                    .is_some_and(|l| l.get(labels::TENANT).map(String::as_str) == Some(tenant))
            })
        })
        .await;
        let rbs: Api<RoleBinding> = Api::namespaced(env.client.clone(), ns);
        eventually(
            &format!("the owners of {tenant} are bound in {ns}"),
            || async {
                rbs.get("ironvisor-tenant-owners")
                    .await
                    .ok()
                    .is_some_and(|rb| {
                        rb.role_ref.name == "ironvisor-admin"
                            && rb
                                .subjects
                                .unwrap_or_default()
                                .iter()
                                .any(|s| s.kind == "Group" && s.name == format!("{tenant}-admins"))
                    })
            },
        )
        .await;
        eventually(&format!("{tenant} is Ready"), || async {
            ready_condition(&env, tenant)
                .await
                .is_some_and(|(s, _, _)| s == "True")
        })
        .await;
    }

    // The parent's quota bounds the children's sum.
    env.vm("ta", "a1", 3, "1Gi", json!({})).await;
    eventually("a1 is admitted", || async {
        env.node_of("ta", "a1").await.is_some()
    })
    .await;
    env.vm("tb", "b1", 2, "1Gi", json!({})).await;
    let want = "exceeded quota: org-q, requested: vcpus=2, used: vcpus=3, limited: vcpus=4";
    eventually("b1 waits on the parent's quota", || async {
        env.condition("tb", "b1", "Scheduled")
            .await
            .is_some_and(|(s, r, m)| s == "False" && r == "QuotaExceeded" && m == want)
    })
    .await;
    assert_eq!(env.node_of("tb", "b1").await, None);

    // A later tenant claiming ta is an error on it; ta stays team-a's.
    env.tenant_only("zz-intruder", &["ta"], None).await;
    eventually("the intruder reports the conflict", || async {
        ready_condition(&env, "zz-intruder")
            .await
            .is_some_and(|(s, r, _)| s == "False" && r == "NamespaceConflict")
    })
    .await;
    let ta = namespaces.get("ta").await.expect("ta");
    assert_eq!(
        ta.metadata
            .labels
            .unwrap_or_default()
            .get(labels::TENANT)
            .map(String::as_str),
        Some("team-a")
    );
    assert!(
        ready_condition(&env, "team-a")
            .await
            .is_some_and(|(s, _, _)| s == "True"),
        "the earlier tenant keeps its namespace"
    );

    beats.abort();
    op.stop().await;
    env.cluster.shutdown().await;
}
