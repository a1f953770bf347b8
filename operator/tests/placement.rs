//! Placement against the devcluster with simulated hosts: every filter, the kube-scheduler
//! style Unschedulable message, anti-affinity spread, nodeName pins, spread vs bin-pack.

mod common;

use common::{Env, Operator, eventually, eventually_within, fast_config};
use ironvisor_operator::placement::Strategy;
use serde_json::json;
use std::time::Duration;

const NS: &str = "apps";

fn plain(unschedulable: bool) -> serde_json::Value {
    json!({"unschedulable": unschedulable, "overcommit": {"cpu": 1.0, "memory": 1.0}})
}

async fn placed_on(env: &Env, name: &str) -> String {
    eventually(&format!("{name} is placed"), || async {
        env.node_of(NS, name).await.is_some()
    })
    .await;
    env.node_of(NS, name).await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_turns_hosts_away_and_the_message_counts_them() {
    let env = Env::start().await;
    env.tenant(NS, &[NS], None).await;
    env.host("cordoned", 16, "32Gi", plain(true)).await;
    env.host("stale", 16, "32Gi", plain(false)).await;
    let small_spec = json!({"overcommit": {"cpu": 1.0, "memory": 1.0}});
    env.host("small", 2, "2Gi", small_spec).await;
    env.host("big-a", 16, "32Gi", plain(false)).await;
    env.host("big-b", 16, "32Gi", plain(false)).await;
    for (host, zone) in [("small", "a"), ("big-a", "a"), ("big-b", "b")] {
        env.hypervisors()
            .patch(
                host,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"labels": {"zone": zone}}})),
            )
            .await
            .expect("labelled");
    }
    let beats = env.keep_alive(&["cordoned", "small", "big-a", "big-b"]);
    let op = Operator::start(env.client.clone(), fast_config("op-1"));

    // The stale host's heartbeat stands still: after the grace period it is lost.
    eventually_within(
        "the stale host is marked lost",
        Duration::from_secs(15),
        || async {
            env.hypervisors()
                .get("stale")
                .await
                .ok()
                .and_then(|h| {
                    h.status?
                        .conditions
                        .into_iter()
                        .find(|c| c.type_ == "Ready")
                })
                .is_some_and(|c| c.status == "False" && c.reason == "HostLost")
        },
    )
    .await;

    // Nothing fits 64 vCPUs: one count per filter.
    env.vm(NS, "huge", 64, "1Gi", json!({})).await;
    let want = "0/5 hosts available: 3 insufficient vcpus, 1 not ready, 1 unschedulable";
    eventually("huge is unschedulable with the counts", || async {
        env.condition(NS, "huge", "Scheduled")
            .await
            .is_some_and(|(s, r, m)| s == "False" && r == "Unschedulable" && m == want)
    })
    .await;
    let vm = env.vms(NS).get("huge").await.expect("huge");
    assert_eq!(
        vm.status.and_then(|s| s.printable_status).as_deref(),
        Some("Unschedulable")
    );

    // nodeSelector.
    env.vm(NS, "in-b", 1, "1Gi", json!({"nodeSelector": {"zone": "b"}}))
        .await;
    assert_eq!(placed_on(&env, "in-b").await, "big-b");
    // Capacity: zone a has small (2 Gi) and big-a; 8 Gi fits only big-a.
    env.vm(
        NS,
        "fat-a",
        1,
        "8Gi",
        json!({"nodeSelector": {"zone": "a"}}),
    )
    .await;
    assert_eq!(placed_on(&env, "fat-a").await, "big-a");
    // nodeName pins, even to the host spread would not choose.
    env.vm(NS, "pinned", 1, "1Gi", json!({"nodeName": "small"}))
        .await;
    assert_eq!(placed_on(&env, "pinned").await, "small");
    // A pin to a cordoned host waits.
    env.vm(
        NS,
        "pinned-cordoned",
        1,
        "1Gi",
        json!({"nodeName": "cordoned"}),
    )
    .await;
    eventually("the pin to a cordoned host is unschedulable", || async {
        env.condition(NS, "pinned-cordoned", "Scheduled")
            .await
            .is_some_and(|(s, r, m)| {
                s == "False" && r == "Unschedulable" && m.starts_with("0/5 hosts available")
            })
    })
    .await;

    // Anti-affinity: three VMs of one group land on three different schedulable hosts.
    let mut hosts = Vec::new();
    for i in 0..3 {
        let name = format!("web-{i}");
        env.vm(NS, &name, 1, "512Mi", json!({"antiAffinityGroup": "web"}))
            .await;
        hosts.push(placed_on(&env, &name).await);
    }
    hosts.sort();
    assert_eq!(hosts, ["big-a", "big-b", "small"]);

    beats.abort();
    op.stop().await;
    env.cluster.shutdown().await;
}

async fn four_vms_on_two_hosts(strategy: Strategy) -> Vec<String> {
    let env = Env::start().await;
    env.tenant(NS, &[NS], None).await;
    for h in ["h1", "h2"] {
        env.host(h, 16, "32Gi", plain(false)).await;
    }
    let beats = env.keep_alive(&["h1", "h2"]);
    let mut cfg = fast_config("op-1");
    cfg.strategy = strategy;
    let op = Operator::start(env.client.clone(), cfg);
    let mut placed = Vec::new();
    for i in 0..4 {
        let name = format!("vm-{i}");
        env.vm(NS, &name, 2, "2Gi", json!({})).await;
        placed.push(placed_on(&env, &name).await);
    }
    beats.abort();
    op.stop().await;
    env.cluster.shutdown().await;
    placed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_alternates_between_equal_hosts_and_binpack_fills_one() {
    let mut spread = four_vms_on_two_hosts(Strategy::Spread).await;
    spread.sort();
    assert_eq!(spread, ["h1", "h1", "h2", "h2"]);
    let binpack = four_vms_on_two_hosts(Strategy::BinPack).await;
    assert!(
        binpack.iter().all(|h| h == &binpack[0]),
        "bin-pack keeps one host: {binpack:?}"
    );
}
