//! A leader Lease renewed into the future is not trusted: an intruder who rewrites the Lease
//! every 300 ms with itself as holder and a renewTime an hour ahead (what a compromised host
//! could do before the admission policies) does not keep the operator out. The operator
//! takes the Lease one lease duration after it first saw the forged record, and places VMs.
//! (The policies in manifests/policies/ keep agents from writing this Lease at all; this is
//! the operator's own defence.)

mod common;

use std::time::Duration;

use common::{Env, Operator, eventually_within, fast_config};
use ironvisor_operator::run::LEADER_LEASE;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const NS: &str = "lf";

fn forged() -> serde_json::Value {
    let future = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEADER_LEASE},
        "spec": {
            "holderIdentity": "intruder",
            "leaseDurationSeconds": 3600,
            "renewTime": MicroTime(future),
        },
    })
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get(LEADER_LEASE).await.ok()?.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_renewed_into_the_future_does_not_keep_the_operator_out() {
    let env = Env::start().await;
    env.tenant("lf", &[NS], None).await;
    env.host("h1", 64, "256Gi", json!({})).await;
    let beats = env.keep_alive(&["h1"]);
    let leases: Api<Lease> =
        Api::namespaced(env.client.clone(), ironvisor_crds::labels::SYSTEM_NAMESPACE);
    let pp = PatchParams::apply("intruder").force();
    leases
        .patch(LEADER_LEASE, &pp, &Patch::Apply(forged()))
        .await
        .expect("forge the Lease");
    let intruder = {
        let leases = leases.clone();
        tokio::spawn(async move {
            loop {
                // Rewrite only while the intruder still holds it: the test is whether the
                // operator can take it, not a tug of war after it did.
                if holder(&leases).await.as_deref() == Some("intruder") {
                    let _ = leases
                        .patch(LEADER_LEASE, &pp, &Patch::Apply(forged()))
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    // fast_config: lease duration 3 s, retry 0.5 s.
    let op = Operator::start(env.client.clone(), fast_config("op"));
    eventually_within(
        "the operator holds the Lease",
        Duration::from_secs(10),
        || async { holder(&leases).await.as_deref() == Some("op") },
    )
    .await;
    env.vm(NS, "after", 1, "1Gi", json!({})).await;
    eventually_within("the VM is placed", Duration::from_secs(10), || async {
        env.node_of(NS, "after").await.is_some()
    })
    .await;
    assert_eq!(op.metrics.leader.get(), 1);
    intruder.abort();
    beats.abort();
    op.stop().await;
}
