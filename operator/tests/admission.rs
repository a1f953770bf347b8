//! Admission and release against the devcluster: quota in VM units, the ResourceQuota-style
//! message, and VMs admitted by themselves, oldest first, when room appears.

mod common;

use common::{Env, Operator, eventually, fast_config};
use ironvisor_crds::vm::Phase;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

const NS: &str = "fin";

async fn is_admitted(env: &Env, name: &str) -> bool {
    let Some(node) = env.node_of(NS, name).await else {
        return false;
    };
    let Ok(vm) = env.vms(NS).get(name).await else {
        return false;
    };
    let status_node = vm.status.as_ref().and_then(|s| s.node_name.clone());
    let scheduled = env.condition(NS, name, "Scheduled").await;
    status_node.as_deref() == Some(node.as_str()) && scheduled.is_some_and(|(s, _, _)| s == "True")
}

async fn is_quota_blocked(env: &Env, name: &str, message: &str) -> bool {
    let Ok(vm) = env.vms(NS).get(name).await else {
        return false;
    };
    let Some(st) = vm.status.as_ref() else {
        return false;
    };
    let cond = st.conditions.iter().find(|c| c.type_ == "Scheduled");
    env.node_of(NS, name).await.is_none()
        && st.phase == Some(Phase::Pending)
        && st.printable_status.as_deref() == Some("QuotaExceeded")
        && cond.is_some_and(|c| {
            c.status == "False" && c.reason == "QuotaExceeded" && c.message == message
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_over_quota_waits_and_is_admitted_by_itself_when_room_appears() {
    let env = Env::start().await;
    env.tenant("finance", &[NS], None).await;
    env.quota("finance-compute", "finance", json!({"vcpus": 8}))
        .await;
    env.host("h1", 64, "256Gi", json!({})).await;
    let beat = env.keep_alive(&["h1"]);
    let op = Operator::start(env.client.clone(), fast_config("op-1"));

    for (name, cores) in [("a", 4), ("b", 2), ("c", 2)] {
        env.vm(NS, name, cores, "1Gi", json!({})).await;
        eventually(&format!("{name} is admitted"), || is_admitted(&env, name)).await;
    }
    assert_eq!(env.node_of(NS, "a").await.as_deref(), Some("h1"));

    env.vm(NS, "d", 4, "1Gi", json!({})).await;
    let msg_d =
        "exceeded quota: finance-compute, requested: vcpus=4, used: vcpus=8, limited: vcpus=8";
    eventually("d waits for quota", || is_quota_blocked(&env, "d", msg_d)).await;
    env.vm(NS, "e", 4, "1Gi", json!({})).await;
    eventually("e waits for quota", || is_quota_blocked(&env, "e", msg_d)).await;

    // Deleting a (4 vCPUs) makes room for one of the two: the older, d.
    env.vms(NS)
        .delete("a", &DeleteParams::default())
        .await
        .expect("a deleted");
    eventually("d is admitted after a is deleted", || {
        is_admitted(&env, "d")
    })
    .await;
    eventually("e still waits, now against the new usage", || {
        is_quota_blocked(&env, "e", msg_d)
    })
    .await;
    assert_eq!(env.admitted(NS).await, 3, "b, c, d");

    // Halting b and c frees 4 vCPUs: e fits.
    for name in ["b", "c"] {
        env.vms(NS)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"runStrategy": "Halted"}})),
            )
            .await
            .expect("halted");
    }
    eventually("e is admitted after b and c halt", || {
        is_admitted(&env, "e")
    })
    .await;

    // Full again (d + e = 8): f waits until the quota is raised.
    env.vm(NS, "f", 2, "1Gi", json!({})).await;
    let msg_f =
        "exceeded quota: finance-compute, requested: vcpus=2, used: vcpus=8, limited: vcpus=8";
    eventually("f waits for quota", || is_quota_blocked(&env, "f", msg_f)).await;
    env.quotas()
        .patch(
            "finance-compute",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"vcpus": 10}}})),
        )
        .await
        .expect("quota raised");
    eventually("f is admitted after the quota is raised", || {
        is_admitted(&env, "f")
    })
    .await;
    eventually("the quota's status.used says 10 vCPUs", || async {
        env.quotas()
            .get("finance-compute")
            .await
            .ok()
            .and_then(|q| q.status?.used)
            .is_some_and(|u| u.vcpus == 10 && u.virtual_machines == 5)
    })
    .await;

    beat.abort();
    op.stop().await;
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_over_quota_does_not_hold_back_a_smaller_younger_one() {
    let env = Env::start().await;
    env.tenant("finance", &[NS], None).await;
    env.quota("finance-compute", "finance", json!({"vcpus": 4}))
        .await;
    env.host("h1", 64, "256Gi", json!({})).await;
    let beat = env.keep_alive(&["h1"]);
    let op = Operator::start(env.client.clone(), fast_config("op-1"));

    env.vm(NS, "running", 3, "1Gi", json!({})).await;
    eventually("running is admitted", || is_admitted(&env, "running")).await;
    env.vm(NS, "old-big", 2, "1Gi", json!({})).await;
    let msg =
        "exceeded quota: finance-compute, requested: vcpus=2, used: vcpus=3, limited: vcpus=4";
    eventually("old-big waits for quota", || {
        is_quota_blocked(&env, "old-big", msg)
    })
    .await;
    // Within the same second old-big still comes first (ties go by name).
    env.vm(NS, "young-small", 1, "1Gi", json!({})).await;
    eventually("the younger, smaller VM is admitted past it", || {
        is_admitted(&env, "young-small")
    })
    .await;
    let msg =
        "exceeded quota: finance-compute, requested: vcpus=2, used: vcpus=4, limited: vcpus=4";
    eventually("old-big still waits, on the real limit", || {
        is_quota_blocked(&env, "old-big", msg)
    })
    .await;

    beat.abort();
    op.stop().await;
    env.cluster.shutdown().await;
}

async fn used_vcpus(env: &Env) -> Option<i64> {
    let q = env.quotas().get("finance-compute").await.ok()?;
    Some(q.status?.used?.vcpus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_beyond_the_quota_is_refused_and_the_vm_keeps_its_admitted_size() {
    use kube::ResourceExt;
    let env = Env::start().await;
    env.tenant("finance", &[NS], None).await;
    env.quota("finance-compute", "finance", json!({"vcpus": 4}))
        .await;
    env.host("h1", 64, "256Gi", json!({})).await;
    let beat = env.keep_alive(&["h1"]);
    let op = Operator::start(env.client.clone(), fast_config("op-1"));

    env.vm(NS, "db", 2, "1Gi", json!({})).await;
    eventually("db is admitted", || is_admitted(&env, "db")).await;
    let admitted = |vm: &ironvisor_crds::VirtualMachine| {
        let a = vm.status.as_ref()?.admitted.clone()?;
        Some(format!("vcpus={},memory={}", a.vcpus, a.memory.0))
    };
    let vm = env.vms(NS).get("db").await.expect("db");
    assert_eq!(
        admitted(&vm).as_deref(),
        Some("vcpus=2,memory=1Gi"),
        "the admitted size is recorded in the status"
    );

    let grow = |cores: u32| {
        let api = env.vms(NS);
        async move {
            api.patch(
                "db",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"cpu": {"cores": cores}}})),
            )
            .await
            .expect("resized");
        }
    };
    grow(6).await;
    // The tenant also claims, in the annotation older operators used, that 6 were admitted.
    env.vms(NS)
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "ironvisor.io/admitted": "vcpus=6,memory=1073741824,storage=0"}}})),
        )
        .await
        .expect("annotated");
    let msg = "resize to vcpus=6, memory=1Gi, storage=0 not admitted: exceeded quota: \
               finance-compute, requested: vcpus=4, used: vcpus=2, limited: vcpus=4; the VM \
               keeps its admitted size vcpus=2, memory=1Gi, storage=0";
    eventually("the resize is refused", || async {
        env.condition(NS, "db", "Scheduled").await
            == Some((
                "False".to_owned(),
                "ResizeQuotaExceeded".to_owned(),
                msg.to_owned(),
            ))
    })
    .await;
    let vm = env.vms(NS).get("db").await.expect("db");
    assert_eq!(env.node_of(NS, "db").await.as_deref(), Some("h1"));
    assert_eq!(admitted(&vm).as_deref(), Some("vcpus=2,memory=1Gi"));
    assert_eq!(vm.status.and_then(|s| s.vcpus), Some(2));
    eventually("the claimed admitted annotation is removed", || async {
        let vm = env.vms(NS).get("db").await.expect("db");
        !vm.annotations().contains_key("ironvisor.io/admitted")
    })
    .await;
    eventually("status.used still counts the admitted 2 vCPUs", || async {
        used_vcpus(&env).await == Some(2)
    })
    .await;

    // The quota is raised: the resize is admitted by itself.
    env.quotas()
        .patch(
            "finance-compute",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"vcpus": 8}}})),
        )
        .await
        .expect("quota raised");
    eventually("the resize is admitted", || async {
        is_admitted(&env, "db").await && used_vcpus(&env).await == Some(6)
    })
    .await;
    let vm = env.vms(NS).get("db").await.expect("db");
    assert_eq!(admitted(&vm).as_deref(), Some("vcpus=6,memory=1Gi"));
    assert_eq!(env.node_of(NS, "db").await.as_deref(), Some("h1"));

    beat.abort();
    op.stop().await;
    env.cluster.shutdown().await;
}
