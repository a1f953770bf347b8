//! A claim naming a pool that does not exist, against the devcluster with the operator
//! running as its ServiceAccount under the real `manifests/rbac`: the claim is Pending with
//! reason PoolNotFound and a Warning Event saying which pool and what to do; once the pool
//! is created the pool controller serves it; when the pool is deleted under the Bound
//! claim, the claim is Released with reason PoolNotFound and its console rights go.
//! The test plays the VM's agent (it writes the desktop's status).

mod common;

use std::time::Duration;

use common::{Env, Operator, eventually_within, fast_config, install_manifests};
use ironvisor_crds::desktop::{DesktopClaim, DesktopPool, POOL_LABEL};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::Role;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const NS: &str = "team-a";
const WAIT: Duration = Duration::from_secs(30);

fn ready(c: &DesktopClaim) -> Option<(String, String, String)> {
    let s = c.status.as_ref()?;
    let r = s.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((
        format!("{:?}", s.phase),
        r.reason.clone(),
        r.message.clone(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_of_a_missing_pool_says_pool_not_found_until_the_pool_exists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = Env::start().await;
    install_manifests(&env, dir.path());
    env.tenant("team-a", &[NS], None).await;
    env.host("h1", 8, "16Gi", json!({})).await;
    let _alive = env.keep_alive(&["h1"]);
    let token = env
        .cluster
        .service_account_token("ironvisor-system", "ironvisor-operator", None)
        .expect("the operator's ServiceAccount exists");
    let op_client = env.cluster.client_with_token(&token).expect("client");
    let _op = Operator::start(op_client, fast_config("op-1"));

    let claims: Api<DesktopClaim> = Api::namespaced(env.client.clone(), NS);
    let claim: DesktopClaim = serde_json::from_value(json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopClaim",
        "metadata": {"name": "typo"}, "spec": {"poolName": "office", "user": "alice"}}))
    .unwrap();
    claims.create(&PostParams::default(), &claim).await.unwrap();
    eventually_within("the claim says PoolNotFound", WAIT, || async {
        let c = claims.get("typo").await.unwrap();
        matches!(ready(&c), Some((p, r, _)) if p == "Pending" && r == "PoolNotFound")
    })
    .await;
    let (_, _, message) = ready(&claims.get("typo").await.unwrap()).unwrap();
    assert!(message.contains("\"office\""), "{message}");
    assert!(
        message.contains("kubectl get desktoppools -n team-a"),
        "{message}"
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), NS);
    eventually_within("a PoolNotFound Event on the claim", WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("PoolNotFound")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("typo")
                    && e.type_.as_deref() == Some("Warning")
            })
    })
    .await;

    // The pool appears: its controller takes the claim and binds it to a new desktop.
    let pools: Api<DesktopPool> = Api::namespaced(env.client.clone(), NS);
    let pool: DesktopPool = serde_json::from_value(json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "DesktopPool",
        "metadata": {"name": "office"},
        "spec": {"size": 1, "template": {"spec": {"cpu": {"cores": 1}, "memory": {"size": "64Mi"}}}}}))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.unwrap();
    let vms = env.vms(NS);
    let lp = ListParams::default().labels(&format!("{POOL_LABEL}=office"));
    let deadline = tokio::time::Instant::now() + WAIT;
    let desktop = loop {
        if let Some(vm) = vms.list(&lp).await.unwrap().items.first() {
            break vm.name_any();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pool made no desktop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // As its agent: the desktop runs on a host.
    vms.patch_status(
        &desktop,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "nodeName": "h1"}})),
    )
    .await
    .unwrap();
    eventually_within("the claim is bound", WAIT, || async {
        let c = claims.get("typo").await.unwrap();
        matches!(ready(&c), Some((p, r, _)) if p == "Bound" && r == "Bound")
    })
    .await;
    let uid = claims.get("typo").await.unwrap().uid().unwrap();
    let roles: Api<Role> = Api::namespaced(env.client.clone(), NS);
    let access = format!("ironvisor-desktop-{uid}");
    assert!(roles.get_opt(&access).await.unwrap().is_some());

    // The pool is deleted under the bound claim: Released, PoolNotFound, no console right.
    pools
        .delete("office", &DeleteParams::default())
        .await
        .unwrap();
    eventually_within("the claim is released", WAIT, || async {
        let c = claims.get("typo").await.unwrap();
        matches!(ready(&c), Some((p, r, _)) if p == "Released" && r == "PoolNotFound")
    })
    .await;
    eventually_within("the console right is gone", WAIT, || async {
        roles.get_opt(&access).await.unwrap().is_none()
    })
    .await;
}
