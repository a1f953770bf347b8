use super::*;
use serde_json::json;

fn now() -> Timestamp {
    "2026-11-30T10:00:00Z".parse().unwrap()
}

fn at(secs_ago: i64) -> String {
    (now() - SignedDuration::from_secs(secs_ago)).to_string()
}

fn hv(name: &str, sampled_secs_ago: i64, millicores: u64, vms: serde_json::Value) -> Hypervisor {
    serde_json::from_value(json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "Hypervisor",
        "metadata": {"name": name},
        "spec": {},
        "status": {
            "capacity": {"vcpus": 2, "memory": "4Gi"},
            "allocatable": {"vcpus": 8, "memory": "4Gi"},
            "allocated": {"vcpus": 0, "memory": "0"},
            "acceleration": "tcg",
            "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReporting",
                            "message": "", "lastTransitionTime": at(600)}],
            "load": {"sampledAt": at(sampled_secs_ago), "intervalMilliseconds": 10000,
                     "cpus": 2, "cpuMillicores": millicores, "cpuPercent": 0,
                     "memoryBytes": 0, "memoryPercent": 0, "vms": vms}
        }
    }))
    .unwrap()
}

/// JSON merge patch (RFC 7386) of `patch` into `v`.
fn merge(v: &mut serde_json::Value, patch: &serde_json::Value) {
    match (v, patch) {
        (serde_json::Value::Object(o), serde_json::Value::Object(p)) => {
            for (k, pv) in p {
                merge(o.entry(k.clone()).or_insert(serde_json::Value::Null), pv);
            }
        }
        (v, p) => *v = p.clone(),
    }
}

fn vm(name: &str, node: &str, extra: serde_json::Value) -> VirtualMachine {
    let mut v = json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"cpu": {"cores": 1}, "memory": {"size": "128Mi"}},
        "status": {"phase": "Running", "nodeName": node}
    });
    merge(&mut v, &extra);
    serde_json::from_value(v).unwrap()
}

fn migration(
    name: &str,
    vm: &str,
    created_secs_ago: i64,
    status: serde_json::Value,
    ours: bool,
) -> VirtualMachineMigration {
    let labels = if ours {
        json!({MADE_BY_LABEL: MADE_BY_REBALANCER})
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachineMigration",
        "metadata": {"name": name, "namespace": "ns", "labels": labels,
                     "creationTimestamp": at(created_secs_ago)},
        "spec": {"vmName": vm},
        "status": status
    }))
    .unwrap()
}

fn settings(budget: u32) -> Settings {
    Settings {
        cpu_weight: 1.0,
        memory_weight: 0.0,
        threshold: 20.0,
        min_improvement: 5.0,
        budget,
        cooldown: SignedDuration::from_mins(30),
        now: now(),
    }
}

fn policy() -> RebalancePolicy {
    RebalancePolicy::new("default", Default::default())
}

#[test]
fn only_ready_schedulable_hosts_with_a_fresh_load_take_part() {
    let mut cordoned = hv("c", 5, 0, json!([]));
    cordoned.spec.unschedulable = true;
    let hosts = [
        hv(
            "a",
            5,
            1500,
            json!([{"namespace": "ns", "name": "x", "cpuMillicores": 900, "memoryBytes": 1}]),
        ),
        hv("b", 90, 0, json!([])),
        cordoned,
        hv("d", 5, 0, json!([])),
    ];
    let vms = [
        vm("x", "a", json!({})),
        vm("y", "b", json!({})),
        vm("z", "a", json!({"status": {"phase": "Stopped"}})),
    ];
    let i = build(&policy(), &hosts, &vms, &[], &[], settings(4));
    let names: Vec<&str> = i.hosts.iter().map(|h| h.snapshot.name.as_str()).collect();
    assert_eq!(names, vec!["a", "d"], "b is stale, c cordoned");
    assert_eq!(i.vms.len(), 1, "only running VMs on taking-part hosts");
    assert_eq!(i.vms[0].cpu_millicores, 900);
    assert_eq!(i.vms[0].memory_bytes, 1);
    assert_eq!(i.hosts[0].cpu_millicores, 1500);
    assert_eq!(i.hosts[0].memory_bytes, 4 << 30);
}

#[test]
fn a_linked_clone_excludes_every_other_host_and_a_full_copy_none() {
    let hosts = [hv("a", 5, 0, json!([])), hv("b", 5, 0, json!([]))];
    let disk = |mode: &str| {
        json!({"spec": {"disks": [{"name": "d", "size": "64Mi",
            "source": {"vm": {"name": "tpl", "disk": "d", "mode": mode}}}]}})
    };
    let vms = [
        vm("linked", "a", disk("Linked")),
        vm("full", "a", disk("Full")),
    ];
    let i = build(&policy(), &hosts, &vms, &[], &[], settings(4));
    let by = |n: &str| i.vms.iter().find(|v| v.name == n).unwrap().clone();
    assert_eq!(by("linked").excluded, ["a", "b"]);
    assert!(by("full").excluded.is_empty());
}

#[test]
fn snapshots_with_layers_on_the_vms_host_are_counted_by_uid_others_not() {
    let hosts = [hv("a", 5, 0, json!([])), hv("b", 5, 0, json!([]))];
    let vms = [
        vm("snapped", "a", json!({"metadata": {"uid": "u-1"}})),
        vm("plain", "a", json!({"metadata": {"uid": "u-2"}})),
    ];
    let snap = |name: &str, uid: &str, node: &str, phase: &str| -> VirtualMachineSnapshot {
        serde_json::from_value(json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"vmName": "snapped"},
            "status": {"phase": phase, "vmUid": uid, "nodeName": node}
        }))
        .unwrap()
    };
    let snaps = [
        snap("s1", "u-1", "a", "Succeeded"),
        snap("s2", "u-1", "a", "Deleting"),
        // Another host's layers (a VM of the same name before), a failed one, no uid match.
        snap("s3", "u-1", "b", "Succeeded"),
        snap("s4", "u-1", "a", "Failed"),
        snap("s5", "u-9", "a", "Succeeded"),
    ];
    let i = build(&policy(), &hosts, &vms, &[], &snaps, settings(4));
    let by = |n: &str| i.vms.iter().find(|v| v.name == n).unwrap().clone();
    assert_eq!(by("snapped").snapshots_on_host, 2);
    assert_eq!(by("plain").snapshots_on_host, 0);
}

#[test]
fn opt_out_annotation_lock_and_earlier_migrations_are_carried_to_the_vm() {
    let hosts = [hv("a", 5, 0, json!([])), hv("b", 5, 0, json!([]))];
    let vms = [
        vm(
            "out",
            "a",
            json!({"metadata": {"annotations": {OPT_OUT_ANNOTATION: "false"}}}),
        ),
        vm(
            "busy",
            "a",
            json!({"status": {"operation": {"kind": "Snapshot", "name": "s", "uid": "u", "since": at(3)}}}),
        ),
        vm("moved", "a", json!({})),
    ];
    let done = json!({"phase": "Completed", "completionTime": at(200)});
    let migs = [migration("m1", "moved", 300, done, false)];
    let i = build(&policy(), &hosts, &vms, &migs, &[], settings(4));
    let by = |n: &str| i.vms.iter().find(|v| v.name == n).unwrap().clone();
    assert!(by("out").opted_out);
    assert!(!by("moved").opted_out && !by("moved").busy);
    assert!(by("busy").busy);
    assert_eq!(
        by("moved").last_moved,
        Some(now() - SignedDuration::from_secs(300))
    );
    assert_eq!(
        i.settings.budget, 4,
        "a user's migration is no rebalancer move"
    );
}

#[test]
fn the_budget_counts_the_rebalancers_moves_of_the_last_hour_from_status_and_labels() {
    let hosts = [hv("a", 5, 0, json!([]))];
    let done = json!({"phase": "Completed", "completionTime": at(1000)});
    let migs = [
        migration("r1", "x", 1200, done.clone(), true),
        migration("r0", "w", 4000, done, true),
    ];
    let mut p = policy();
    p.status = Some(ironvisor_crds::rebalance::RebalancePolicyStatus {
        recent_moves: vec![
            RecentMove {
                namespace: "ns".into(),
                vm: "x".into(),
                migration: "r1".into(),
                time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    now() - SignedDuration::from_secs(1200),
                ),
            },
            RecentMove {
                namespace: "ns".into(),
                vm: "gone".into(),
                migration: "deleted".into(),
                time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    now() - SignedDuration::from_secs(60),
                ),
            },
        ],
        ..Default::default()
    });
    let i = build(&p, &hosts, &[], &migs, &[], settings(3));
    assert_eq!(
        i.moves_in_last_hour, 2,
        "r1 once, the deleted one from the status; r0 is older"
    );
    assert_eq!(i.settings.budget, 1);
    let kept: Vec<&str> = i.recent.iter().map(|r| r.migration.as_str()).collect();
    assert_eq!(kept, vec!["r1", "deleted"]);
}

#[test]
fn evaluation_waits_for_running_migrations_and_for_load_measured_after_one_ended() {
    let hosts = [hv("a", 5, 0, json!([])), hv("b", 5, 0, json!([]))];
    let running = migration(
        "m",
        "x",
        30,
        json!({"phase": "Migrating", "sourceNode": "a", "targetNode": "b"}),
        true,
    );
    assert_eq!(
        settled(&hosts, &[running], now()),
        Err(Wait::MigrationRunning("ns/m".into()))
    );
    // Ended 8 s ago: the 10 s interval sampled 5 s ago began before it ended.
    let ended = migration(
        "m",
        "x",
        30,
        json!({"phase": "Completed", "sourceNode": "a", "targetNode": "b", "completionTime": at(8)}),
        true,
    );
    assert_eq!(
        settled(&hosts, std::slice::from_ref(&ended), now()),
        Err(Wait::StaleAfterMigration {
            host: "a".into(),
            migration: "ns/m".into()
        })
    );
    let older = migration(
        "m",
        "x",
        60,
        json!({"phase": "Completed", "sourceNode": "a", "targetNode": "b", "completionTime": at(20)}),
        true,
    );
    assert_eq!(settled(&hosts, &[older], now()), Ok(()));
}
