use super::*;
use pretty_assertions::assert_eq;
use serde_json::json;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn vm() -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web", "namespace": "team", "uid": "u-1", "generation": 3,
            "annotations": {"ironvisor.io/restartedAt": "2026-11-25T09:50:00Z"}},
        "spec": {"runStrategy": "Always", "cpu": {"cores": 2, "sockets": 1, "threads": 1},
            "memory": {"size": "2Gi"}},
        "status": {
            "phase": "Running", "printableStatus": "Running", "nodeName": "host-a",
            "vcpus": 2, "observedGeneration": 3, "startedAt": "2026-11-25T09:50:05Z",
            "restartCount": 1, "lastRestartRequest": "2026-11-25T09:50:00Z",
            "interfaces": [{"name": "net0", "macAddress": "52:54:00:00:00:01",
                "hostDevice": "vnet3", "ipAddresses": ["10.0.2.15"]}],
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Running",
                 "message": "the guest is running", "lastTransitionTime": "2026-11-25T09:50:05Z"},
                {"type": "Scheduled", "status": "True", "reason": "Scheduled",
                 "message": "placed on host-a", "lastTransitionTime": "2026-11-25T08:00:00Z"},
            ],
        },
    }))
    .unwrap()
}

fn event(name: &str, reason: &str, last: &str, count: i32, uid: &str) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "team"},
        "involvedObject": {"kind": "VirtualMachine", "namespace": "team", "name": "web", "uid": uid},
        "type": if reason == "Crashed" { "Warning" } else { "Normal" },
        "reason": reason, "message": format!("the guest {}", reason.to_lowercase()),
        "count": count, "firstTimestamp": "2026-11-25T08:00:00Z", "lastTimestamp": last,
        "reportingComponent": "ironvisor-agent", "reportingInstance": "host-a",
    }))
    .unwrap()
}

const NOW: &str = "2026-11-25T10:00:00Z";

#[test]
fn the_text_report_shows_placement_resources_interfaces_conditions_and_events() {
    let events = [
        event("e2", "Started", "2026-11-25T09:50:05Z", 2, "u-1"),
        event("e1", "Crashed", "2026-11-25T09:40:00Z", 1, "u-1"),
    ];
    let text = Report::new(&vm(), &events).to_text(t(NOW));
    assert_eq!(
        text,
        "\
Name:             web
Namespace:        team
Status:           Running
Phase:            Running
Run strategy:     Always
Host:             host-a
vCPUs:            2
Memory:           2Gi
Started:          2026-11-25T09:50:05Z (9m55s ago)
Restarts:         1
Restart request:  2026-11-25T09:50:00Z (done)
Interfaces:
  NAME  MAC                HOST DEVICE  IP
  net0  52:54:00:00:00:01  vnet3        10.0.2.15
Conditions:
  TYPE       STATUS  REASON     AGE    MESSAGE
  Ready      True    Running    9m55s  the guest is running
  Scheduled  True    Scheduled  120m   placed on host-a
Events:
  TYPE     REASON   AGE                   FROM                    MESSAGE
  Warning  Crashed  20m                   ironvisor-agent/host-a  the guest crashed
  Normal   Started  9m55s (x2 over 120m)  ironvisor-agent/host-a  the guest started
"
    );
}

#[test]
fn only_the_ten_latest_events_about_this_vm_are_kept_oldest_first() {
    let mut events: Vec<Event> = (0..15)
        .map(|i| {
            event(
                &format!("e{i:02}"),
                "Started",
                &format!("2026-11-25T09:{i:02}:00Z"),
                1,
                "u-1",
            )
        })
        .collect();
    // Same name, an earlier VM (another uid): not this VM's history.
    events.push(event("old", "Crashed", "2026-11-25T09:59:00Z", 1, "u-0"));
    let mut other = event("other", "Started", "2026-11-25T09:59:30Z", 1, "u-9");
    other.involved_object.name = Some("db".into());
    events.push(other);
    let r = Report::new(&vm(), &events);
    let seen: Vec<&str> = r
        .events
        .iter()
        .filter_map(|e| e.last_seen.as_deref())
        .collect();
    assert_eq!(r.events.len(), MAX_EVENTS);
    assert_eq!(seen.first(), Some(&"2026-11-25T09:05:00Z"));
    assert_eq!(seen.last(), Some(&"2026-11-25T09:14:00Z"));
    assert!(r.events.iter().all(|e| e.reason == "Started"));
}

#[test]
fn a_new_vm_without_status_reads_as_such() {
    let mut v = vm();
    v.status = None;
    v.metadata.annotations = None;
    let text = Report::new(&v, &[]).to_text(t(NOW));
    assert!(text.contains("Status:           no status yet\n"), "{text}");
    assert!(text.contains("Host:             -\n"), "{text}");
    assert!(
        text.contains("vCPUs:            2\n"),
        "from the spec: {text}"
    );
    assert!(
        text.contains("Generation:       3 (the agent has seen none)\n"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "Interfaces:       <none>\nConditions:       <none>\nEvents:           <none>\n"
        ),
        "{text}"
    );
}

#[test]
fn the_json_report_has_stable_camel_case_fields() {
    let r = Report::new(&vm(), &[event("e1", "Started", NOW, 1, "u-1")]);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["host"], "host-a");
    assert_eq!(v["runStrategy"], "Always");
    assert_eq!(v["startedAt"], "2026-11-25T09:50:05Z");
    assert_eq!(v["conditions"][0]["type"], "Ready");
    assert_eq!(
        v["conditions"][0]["lastTransitionTime"],
        "2026-11-25T09:50:05Z"
    );
    assert_eq!(v["events"][0]["from"], "ironvisor-agent/host-a");
    assert_eq!(v["interfaces"][0]["hostDevice"], "vnet3");
}

#[test]
fn ages_read_like_kubectl() {
    let now = t(NOW);
    let ago = |s: i64| human_age(now, now - k8s_openapi::jiff::SignedDuration::from_secs(s));
    assert_eq!(ago(0), "0s");
    assert_eq!(ago(119), "119s");
    assert_eq!(ago(200), "3m20s");
    assert_eq!(ago(600), "10m");
    assert_eq!(ago(3 * 3600 + 600), "3h10m");
    assert_eq!(ago(30 * 3600), "30h");
    assert_eq!(ago(3 * 86400 + 4 * 3600), "3d4h");
    assert_eq!(ago(120 * 86400), "120d");
    assert_eq!(ago(3 * 365 * 86400), "3y");
    assert_eq!(
        human_age(now, now + k8s_openapi::jiff::SignedDuration::from_secs(5)),
        "0s"
    );
}
