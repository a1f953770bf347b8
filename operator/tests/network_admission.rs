//! Network admission through the real operator against the devcluster: a bridge the Tenant
//! does not allow, a privileged host port, a host port already forwarded on the only host,
//! and a MAC another VM of the tenant uses are each refused in the VM's Scheduled condition;
//! allowing the bridge on the Tenant admits the waiting VM.

mod common;

use common::{Env, Operator, eventually, fast_config, vm_object};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const NS: &str = "fin";

/// The Scheduled condition's (status, reason, message), once written.
async fn scheduled(env: &Env, name: &str) -> Option<(String, String, String)> {
    let vm = env.vms(NS).get(name).await.ok()?;
    let c = vm
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Scheduled")?;
    Some((c.status, c.reason, c.message))
}

async fn create(env: &Env, name: &str, extra: serde_json::Value) {
    env.vms(NS)
        .create(
            &PostParams::default(),
            &vm_object(NS, name, 1, "256Mi", extra),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} created: {e}"));
}

async fn refused_with(env: &Env, name: &str, reason: &str, message: &str) {
    eventually(&format!("{name} is refused with {reason}"), || async {
        scheduled(env, name)
            .await
            .is_some_and(|(s, r, m)| s == "False" && r == reason && m.contains(message))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_host_ports_and_macs_are_checked_before_a_vm_is_placed() {
    let env = Env::start().await;
    env.tenant("fin", &[NS], None).await;
    env.host("h1", 64, "256Gi", json!({})).await;
    let _beat = env.keep_alive(&["h1"]);
    let _op = Operator::start(env.client.clone(), fast_config("op-net"));

    create(
        &env,
        "lan",
        json!({"networks": [{"name": "lan", "bridge": {"name": "br-fin"}}]}),
    )
    .await;
    refused_with(
        &env,
        "lan",
        "NetworkNotAllowed",
        "bridge \"br-fin\" is not allowed for tenant fin (its spec.allowedBridges: none)",
    )
    .await;

    create(
        &env,
        "web80",
        json!({"networks": [{"name": "u", "user": {"portForwards": [{"hostPort": 80, "guestPort": 80}]}}]}),
    )
    .await;
    refused_with(
        &env,
        "web80",
        "HostPortNotAllowed",
        "host port 80/TCP is below 1024",
    )
    .await;

    let forward = json!({"networks": [{"name": "u", "macAddress": "52:54:00:00:fe:01",
        "user": {"portForwards": [{"hostPort": 30022, "guestPort": 22}]}}]});
    create(&env, "ssh-a", forward.clone()).await;
    eventually("ssh-a is placed", || async {
        scheduled(&env, "ssh-a")
            .await
            .is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    create(
        &env,
        "ssh-b",
        json!({"networks": [{"name": "u", "user": {"portForwards": [{"hostPort": 30022, "guestPort": 22}]}}]}),
    )
    .await;
    refused_with(
        &env,
        "ssh-b",
        "Unschedulable",
        "0/1 hosts available: 1 host port already forwarded by another VM",
    )
    .await;
    create(
        &env,
        "same-mac",
        json!({"networks": [{"name": "u", "macAddress": "52:54:00:00:FE:01", "user": {}}]}),
    )
    .await;
    refused_with(
        &env,
        "same-mac",
        "DuplicateMac",
        "macAddress 52:54:00:00:fe:01 is already used by VM fin/ssh-a in tenant fin",
    )
    .await;

    // A placed VM edited to forward ssh-a's port: refused, and it keeps what it holds.
    create(
        &env,
        "web",
        json!({"networks": [{"name": "u", "user": {}}]}),
    )
    .await;
    eventually("web is placed", || async {
        scheduled(&env, "web")
            .await
            .is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let recorded = env.vms(NS).get("web").await.unwrap().status.unwrap();
    assert_eq!(recorded.admitted.unwrap().host_ports, Some(vec![]));
    env.vms(NS)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"networks": [{"name": "u",
                "user": {"portForwards": [{"hostPort": 30022, "guestPort": 22}]}}]}})),
        )
        .await
        .expect("web edited");
    eventually("web's edit is not admitted", || async {
        scheduled(&env, "web").await.is_some_and(|(s, r, m)| {
            s == "False"
                && r == "ChangeNotAdmitted"
                && m.contains("host port TCP/30022 is already forwarded by another VM on host h1")
        })
    })
    .await;
    let ssh_a = env.vms(NS).get("ssh-a").await.unwrap().status.unwrap();
    let a_ports = ssh_a.admitted.unwrap().host_ports.unwrap();
    assert_eq!((a_ports[0].port, a_ports.len()), (30022, 1));

    // The cluster administrator allows the bridge: the waiting VM is admitted.
    env.tenants()
        .patch(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"allowedBridges": ["br-fin"]}})),
        )
        .await
        .expect("tenant patched");
    eventually("lan is placed once its bridge is allowed", || async {
        scheduled(&env, "lan")
            .await
            .is_some_and(|(s, r, _)| s == "True" && r == "Scheduled")
    })
    .await;
}

async fn used_vcpus(env: &Env) -> Option<i64> {
    Some(env.quotas().get("fin-q").await.ok()?.status?.used?.vcpus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_vm_edited_onto_a_disallowed_bridge_runs_on_as_admitted_and_the_change_waits() {
    let env = Env::start().await;
    env.tenant("fin", &[NS], None).await;
    env.quota("fin-q", "fin", json!({"vcpus": 8})).await;
    env.host("h1", 64, "256Gi", json!({})).await;
    let _beat = env.keep_alive(&["h1"]);
    let _op = Operator::start(env.client.clone(), fast_config("op-net-edit"));

    create(
        &env,
        "app",
        json!({"networks": [{"name": "u", "user": {}}]}),
    )
    .await;
    eventually("app is placed and counted", || async {
        scheduled(&env, "app")
            .await
            .is_some_and(|(s, r, _)| s == "True" && r == "Scheduled")
            && used_vcpus(&env).await == Some(1)
    })
    .await;

    // The tenant edits the running VM onto a bridge its Tenant does not allow.
    env.vms(NS)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"networks": [{"name": "lan", "bridge": {"name": "br-other"}}]}}),
            ),
        )
        .await
        .expect("edited");
    refused_with(
        &env,
        "app",
        "ChangeNotAdmitted",
        "the edited spec is not admitted (NetworkNotAllowed: bridge \"br-other\" is not allowed for tenant fin",
    )
    .await;
    let vm = env.vms(NS).get("app").await.expect("app");
    let status = vm.status.expect("status");
    assert_eq!(status.node_name.as_deref(), Some("h1"), "still placed");
    // Its compute stays reserved and counted while it runs.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(used_vcpus(&env).await, Some(1));

    // Reverted: admitted again.
    env.vms(NS)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"networks": [{"name": "u", "user": {}}]}})),
        )
        .await
        .expect("reverted");
    eventually("app is admitted again", || async {
        scheduled(&env, "app")
            .await
            .is_some_and(|(s, r, _)| s == "True" && r == "Scheduled")
    })
    .await;
    assert_eq!(used_vcpus(&env).await, Some(1));
}
