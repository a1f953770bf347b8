//! `ivctl status` and `kubectl ironvisor status` against the devcluster, with Events
//! published the way the agent publishes them (kube-rs' Recorder, events.k8s.io/v1).

use kube::Resource as _;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::common::*;

async fn publish(
    c: &Cluster,
    vm: &ironvisor_crds::vm::VirtualMachine,
    reason: &str,
    warning: bool,
) {
    let recorder = Recorder::new(
        c.client.clone(),
        Reporter {
            controller: "ironvisor-agent".into(),
            instance: Some(HOST.into()),
        },
    );
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(format!("the guest {}", reason.to_lowercase())),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &vm.object_ref(&()))
        .await
        .expect("event published");
}

async fn running_vm_with_history(c: &Cluster) {
    c.create_vm("web", "Always", json!({})).await;
    let vm = c
        .agent_reports(
            "web",
            "Running",
            json!({
                "startedAt": "2026-11-25T09:30:00Z", "restartCount": 1,
                "domainUUID": "87fd9463-0d86-4566-b980-798b7898ff2a",
                "interfaces": [{"name": "net0", "macAddress": "52:54:00:00:00:01",
                    "hostDevice": "vnet3"}],
            }),
        )
        .await;
    publish(c, &vm, "Crashed", true).await;
    publish(c, &vm, "Started", false).await;
    // Another VM's events are not this one's.
    let other = c.create_vm("db", "Always", json!({})).await;
    publish(c, &other, "Failed", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_ironvisor_status_prints_placement_conditions_and_the_vms_events() {
    let c = Cluster::start().await;
    running_vm_with_history(&c).await;

    let out = run(c.kubectl(&["ironvisor", "status", "web", "-n", NS])).await;
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    for (i, want) in [
        "Name:             web",
        "Namespace:        team",
        "Status:           Running",
        "Phase:            Running",
        "Run strategy:     Always",
        "Host:             host-a",
        "vCPUs:            2",
        "Memory:           1Gi",
        "Restarts:         1",
    ]
    .iter()
    .enumerate()
    {
        let got = if i < 8 { lines[i] } else { lines[i + 1] };
        assert_eq!(got, *want, "\n{text}");
    }
    assert!(
        lines[8].starts_with("Started:          2026-11-25T09:30:00Z ("),
        "{text}"
    );
    let section = |name: &str| -> Vec<&str> {
        let start = lines.iter().position(|l| l.starts_with(name)).expect(name) + 1;
        lines[start..]
            .iter()
            .take_while(|l| l.starts_with("  "))
            .copied()
            .collect()
    };
    let interfaces = section("Interfaces:");
    assert_eq!(
        interfaces[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "MAC", "HOST", "DEVICE", "IP"]
    );
    assert_eq!(
        interfaces[1].split_whitespace().collect::<Vec<_>>(),
        ["net0", "52:54:00:00:00:01", "vnet3", "-"]
    );
    let conditions = section("Conditions:");
    assert_eq!(conditions.len(), 3, "{text}");
    assert!(
        conditions[2].starts_with("  Ready      True    Running"),
        "{text}"
    );
    assert!(conditions[2].ends_with("the guest is running"), "{text}");
    assert!(
        conditions[1].starts_with("  Scheduled  True    Scheduled"),
        "{text}"
    );
    assert!(conditions[1].ends_with("placed on host-a"), "{text}");
    let events = section("Events:");
    assert_eq!(events.len(), 3, "header and two events of web only: {text}");
    let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let crashed = cells(events[1]);
    assert_eq!(crashed[..2], ["Warning", "Crashed"], "{text}");
    assert!(events[1].contains("ironvisor-agent/host-a"), "{text}");
    assert!(events[1].ends_with("the guest crashed"), "{text}");
    assert_eq!(cells(events[2])[..2], ["Normal", "Started"], "{text}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_as_json_and_yaml_carries_the_same_report() {
    let c = Cluster::start().await;
    running_vm_with_history(&c).await;

    let out = run(c.ivctl(&["status", "web", "-n", NS, "-o", "json"])).await;
    let v: Value = serde_json::from_str(&ok(&out)).expect("JSON");
    assert_eq!(v["name"], "web");
    assert_eq!(v["host"], HOST);
    assert_eq!(v["phase"], "Running");
    assert_eq!(v["vcpus"], 2);
    assert_eq!(v["startedAt"], "2026-11-25T09:30:00Z");
    assert_eq!(v["restartCount"], 1);
    assert_eq!(v["interfaces"][0]["hostDevice"], "vnet3");
    let types: Vec<&str> = v["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, ["Scheduled", "Ready"], "in the status' order");
    let reasons: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["Crashed", "Started"]);
    assert_eq!(v["events"][0]["type"], "Warning");
    assert_eq!(v["events"][0]["from"], "ironvisor-agent/host-a");

    let out = run(c.ivctl(&["status", "web", "-n", NS, "-o", "yaml"])).await;
    let y: Value = serde_saphyr::from_str(&ok(&out)).expect("YAML");
    assert_eq!(y, v);

    // Through kubectl, with the options before the verb; the events' ages may have moved on.
    let out = run(c.kubectl(&["ironvisor", "-n", NS, "status", "-o", "json", "web"])).await;
    let k: Value = serde_json::from_str(&ok(&out)).expect("JSON");
    assert_eq!(k["name"], v["name"]);
    assert_eq!(k["conditions"], v["conditions"]);
    assert_eq!(k["events"].as_array().map(Vec::len), Some(2));

    let out = run(c.kubectl(&["ironvisor", "status", "nope", "-n", NS])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("error: VirtualMachine \"nope\" not found in namespace \"team\""),
        "{}",
        stderr(&out)
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_ironvisor_stop_and_start_write_what_ivctl_writes() {
    let c = Cluster::start().await;
    c.create_vm("web", "Always", json!({})).await;
    let out = run(c.kubectl(&["ironvisor", "stop", "web", "-n", NS])).await;
    assert_eq!(
        ok(&out),
        "team/web: runStrategy Always -> Halted; the agent shuts the guest down\n"
    );
    let out = run(c.kubectl(&["ironvisor", "start", "web", "-n", NS])).await;
    assert_eq!(
        ok(&out),
        "team/web: runStrategy Halted -> Always; the agent starts the guest\n"
    );
    let vm = c.get("web").await;
    assert_eq!(
        vm.spec.run_strategy,
        ironvisor_crds::vm::RunStrategy::Always
    );
    assert_eq!(
        managers_of(&vm, &["f:spec", "f:runStrategy"]),
        [("ivctl".to_owned(), "Update".to_owned())]
    );
    c.stop().await;
}
