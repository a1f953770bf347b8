//! A tenant edits its own VMs' metadata against the devcluster, as an attacker would: the
//! `ironvisor.io/node` label is not a placement (no quota or capacity bypass), and a label
//! changed or removed on a placed VM is put back from the status.

mod common;

use common::{Env, Operator, eventually, fast_config, vm_object};
use ironvisor_crds::vm::Phase;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

const NS: &str = "fin";

async fn used_vcpus(env: &Env) -> Option<i64> {
    let q = env.quotas().get("fin-q").await.ok()?;
    Some(q.status?.used?.vcpus)
}

async fn status_node(env: &Env, name: &str) -> Option<String> {
    env.vms(NS).get(name).await.ok()?.status?.node_name
}

async fn set_label(env: &Env, name: &str, node: Option<&str>) {
    env.vms(NS)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"ironvisor.io/node": node}}})),
        )
        .await
        .expect("label edited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_set_node_label_bypasses_neither_quota_nor_a_cordon_and_is_undone() {
    let env = Env::start().await;
    env.tenant("fin", &[NS], None).await;
    env.quota("fin-q", "fin", json!({"vcpus": 2})).await;
    env.host("h1", 64, "256Gi", json!({})).await;
    env.host("cordoned", 128, "512Gi", json!({"unschedulable": true}))
        .await;
    let beat = env.keep_alive(&["h1", "cordoned"]);
    let op = Operator::start(env.client.clone(), fast_config("op-1"));

    // The attack: 64 vCPUs against a quota of 2, labelled onto the cordoned host.
    let mut big = vm_object(NS, "big", 64, "1Gi", json!({}));
    big.metadata.labels = Some([("ironvisor.io/node".into(), "cordoned".into())].into());
    env.vms(NS)
        .create(&PostParams::default(), &big)
        .await
        .expect("big created");
    let msg = "exceeded quota: fin-q, requested: vcpus=64, used: vcpus=0, limited: vcpus=2";
    eventually("big waits for quota and its label is removed", || async {
        let Ok(vm) = env.vms(NS).get("big").await else {
            return false;
        };
        let st = vm.status.clone().unwrap_or_default();
        let blocked = st.conditions.iter().any(|c| {
            c.type_ == "Scheduled"
                && c.status == "False"
                && c.reason == "QuotaExceeded"
                && c.message == msg
        });
        blocked
            && st.phase == Some(Phase::Pending)
            && st.node_name.is_none()
            && st.admitted.is_none()
            && env.node_of(NS, "big").await.is_none()
    })
    .await;
    eventually("quota used stays 0", || async {
        used_vcpus(&env).await == Some(0)
    })
    .await;
    // And it stays so: nothing places it later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.node_of(NS, "big").await, None);
    assert_eq!(status_node(&env, "big").await, None);
    assert_eq!(used_vcpus(&env).await, Some(0));

    // A VM that fits, labelled onto the cordoned host: admitted as any other, on h1.
    let mut small = vm_object(NS, "small", 2, "1Gi", json!({}));
    small.metadata.labels = Some([("ironvisor.io/node".into(), "cordoned".into())].into());
    env.vms(NS)
        .create(&PostParams::default(), &small)
        .await
        .expect("small created");
    eventually("small is placed on h1, label copied", || async {
        status_node(&env, "small").await.as_deref() == Some("h1")
            && env.node_of(NS, "small").await.as_deref() == Some("h1")
    })
    .await;

    // The tenant moves the label, then removes it: the operator puts it back each time.
    for edit in [Some("cordoned"), None] {
        set_label(&env, "small", edit).await;
        eventually(&format!("label {edit:?} is rewritten to h1"), || async {
            env.node_of(NS, "small").await.as_deref() == Some("h1")
        })
        .await;
        assert_eq!(status_node(&env, "small").await.as_deref(), Some("h1"));
    }
    eventually("quota used counts small only", || async {
        used_vcpus(&env).await == Some(2)
    })
    .await;

    beat.abort();
    op.stop().await;
    env.cluster.shutdown().await;
}
