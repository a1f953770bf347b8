//! Leader election between two operator replicas on the devcluster, with the binary's default
//! timing: exactly one leads and writes; when the leader dies the standby takes over within
//! ~15 s and placement continues.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Operator, eventually, eventually_within};
use ironvisor_operator::run::{LEADER_LEASE, RunConfig};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

const NS: &str = "le";

fn config(identity: &str) -> RunConfig {
    RunConfig {
        resync: Duration::from_secs(1),
        ..RunConfig::new(identity)
    }
}

async fn holder(env: &Env) -> Option<String> {
    let api: Api<Lease> =
        Api::namespaced(env.client.clone(), ironvisor_crds::labels::SYSTEM_NAMESPACE);
    api.get(LEADER_LEASE).await.ok()?.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_the_standby_takes_over_within_fifteen_seconds() {
    let env = Env::start().await;
    env.tenant(NS, &[NS], None).await;
    env.host("h1", 64, "256Gi", json!({})).await;
    let beats = env.keep_alive(&["h1"]);
    let a = Operator::start(env.client.clone(), config("op-a"));
    eventually("op-a holds the Lease", || async {
        holder(&env).await.as_deref() == Some("op-a")
    })
    .await;
    let b = Operator::start(env.client.clone(), config("op-b"));
    env.vm(NS, "first", 1, "1Gi", json!({})).await;
    eventually("first is placed", || async {
        env.node_of(NS, "first").await.is_some()
    })
    .await;
    // Over three seconds, exactly one replica says it leads, and it is op-a.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(a.metrics.leader.get(), 1, "op-a leads");
        assert_eq!(b.metrics.leader.get(), 0, "op-b stands by");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(holder(&env).await.as_deref(), Some("op-a"));

    // The leader dies without releasing; a VM created now waits for the standby.
    a.kill().await;
    let died = Instant::now();
    env.vm(NS, "second", 1, "1Gi", json!({})).await;
    eventually_within("op-b places second", Duration::from_secs(20), || async {
        env.node_of(NS, "second").await.is_some()
    })
    .await;
    let takeover = died.elapsed();
    eprintln!("takeover after the leader died: {takeover:?}");
    assert!(takeover <= Duration::from_secs(15), "took {takeover:?}");
    assert_eq!(holder(&env).await.as_deref(), Some("op-b"));
    assert_eq!(b.metrics.leader.get(), 1);

    beats.abort();
    b.stop().await;
    env.cluster.shutdown().await;
}
