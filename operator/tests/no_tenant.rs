//! Namespaces no Tenant owns, against the devcluster: a VM there waits with
//! `Scheduled=False NoTenant`, a Warning Event and the decision counted; creating a Tenant
//! for the namespace admits it; with a default tenant named, such VMs are admitted and
//! counted against the default tenant's quota.

mod common;

use common::{Env, Operator, eventually, fast_config};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;

const NS: &str = "stray";

async fn warning_events(env: &Env, ns: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), ns);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_in_a_namespace_no_tenant_owns_waits_with_no_tenant_until_a_tenant_claims_it() {
    let env = Env::start().await;
    env.namespace(NS).await;
    env.host("h1", 16, "64Gi", json!({})).await;
    let beats = env.keep_alive(&["h1"]);
    let op = Operator::start(env.client.clone(), fast_config("op-1"));

    env.vm(NS, "web", 1, "1Gi", json!({})).await;
    let want = "namespace stray belongs to no Tenant, so no new VM is admitted there: create a \
                Tenant that lists stray in spec.namespaces, or have the administrator name a \
                default tenant (ironvisor-operator --default-tenant)";
    eventually("web waits with NoTenant", || async {
        env.condition(NS, "web", "Scheduled")
            .await
            .is_some_and(|(s, r, m)| s == "False" && r == "NoTenant" && m == want)
    })
    .await;
    eventually("a Warning Event says why", || async {
        warning_events(&env, NS, "NoTenant").await == vec![want.to_owned()]
    })
    .await;
    let text = op.metrics.render().expect("metrics");
    assert!(
        text.contains(r#"ironvisor_admission_decisions_total{decision="NoTenant"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ironvisor_vms_pending{reason="NoTenant"} 1"#),
        "{text}"
    );
    assert_eq!(env.node_of(NS, "web").await, None);
    let vm = env.vms(NS).get("web").await.expect("web");
    assert_eq!(vm.status.and_then(|s| s.node_name), None, "not placed");

    // The fix the message names: a Tenant listing the namespace.
    env.tenant_only("strays", &[NS], None).await;
    env.quota("strays-q", "strays", json!({"vcpus": 4})).await;
    eventually(
        "web is admitted once a tenant owns its namespace",
        || async { env.node_of(NS, "web").await.as_deref() == Some("h1") },
    )
    .await;
    eventually("and counted against that tenant's quota", || async {
        let q = env.quotas().get("strays-q").await.ok();
        q.and_then(|q| q.status?.used).is_some_and(|u| u.vcpus == 1)
    })
    .await;

    // The tenant goes: the running VM is reported, never stopped or unplaced.
    env.tenants()
        .delete("strays", &Default::default())
        .await
        .expect("tenant deleted");
    eventually("web reports Tenant=False NoTenant", || async {
        env.condition(NS, "web", "Tenant")
            .await
            .is_some_and(|(s, r, m)| s == "False" && r == "NoTenant" && m.contains("keeps running"))
    })
    .await;
    assert_eq!(
        env.condition(NS, "web", "Scheduled")
            .await
            .map(|c| (c.0, c.1)),
        Some(("True".into(), "Scheduled".into())),
        "still admitted: its agent keeps it running"
    );
    assert_eq!(env.node_of(NS, "web").await.as_deref(), Some("h1"));
    eventually("a Warning Event reports the running VM", || async {
        let notes = warning_events(&env, NS, "RunningWithoutTenant").await;
        notes.len() == 1 && notes[0].contains("keeps running")
    })
    .await;

    beats.abort();
    op.stop().await;
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_default_tenant_such_vms_are_admitted_and_counted_against_it() {
    let env = Env::start().await;
    env.namespace(NS).await;
    env.host("h1", 16, "64Gi", json!({})).await;
    let beats = env.keep_alive(&["h1"]);
    env.tenant_only("legacy", &[], None).await;
    env.quota("legacy-q", "legacy", json!({"vcpus": 3})).await;
    let cfg = ironvisor_operator::run::RunConfig {
        default_tenant: Some("legacy".into()),
        ..fast_config("op-1")
    };
    let op = Operator::start(env.client.clone(), cfg);

    env.vm(NS, "a", 2, "1Gi", json!({})).await;
    eventually("a is admitted under the default tenant", || async {
        env.node_of(NS, "a").await.as_deref() == Some("h1")
    })
    .await;
    eventually("and counted against its quota", || async {
        let q = env.quotas().get("legacy-q").await.ok();
        q.and_then(|q| q.status?.used).is_some_and(|u| u.vcpus == 2)
    })
    .await;
    // The default tenant's quota bounds them as any tenant's does.
    env.vm(NS, "b", 2, "1Gi", json!({})).await;
    let want = "exceeded quota: legacy-q, requested: vcpus=2, used: vcpus=2, limited: vcpus=3";
    eventually("b waits on the default tenant's quota", || async {
        env.condition(NS, "b", "Scheduled")
            .await
            .is_some_and(|(s, r, m)| s == "False" && r == "QuotaExceeded" && m == want)
    })
    .await;

    beats.abort();
    op.stop().await;
    env.cluster.shutdown().await;
}
