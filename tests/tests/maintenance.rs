//! Maintenance mode for real: three private hosts (libvirtd in their own network namespaces,
//! each with its agent), six tiny counter guests and one that refuses to move
//! (`drainStrategy: None`) on the first host. `ivctl host drain` moves the six away by live
//! migration, none restarted (on its new host each guest's counter goes on from where it was
//! and no boot banner appears); the seventh blocks the drain, reported on the Hypervisor and
//! in an Event, until it is stopped; then `MaintenanceReady`; `ivctl host undrain` ends it.
//! A lighter test follows `kubectl cordon|drain|uncordon` of a Node with a control plane only.

use std::process::Command;
use std::time::{Duration, Instant};

use ironvisor_tests::migration::{Cluster, guest_diagnostics};
use ironvisor_tests::system::{System, bin, uid, wait_for};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(300);
const DRAIN: Duration = Duration::from_secs(600);
const MOVERS: usize = 6;
/// How long a moved guest may print nothing on its new host.
const STALL: Duration = Duration::from_secs(120);

fn ivctl(sys: &System, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("ivctl"))
        .arg("--kubeconfig")
        .arg(&sys.kubeconfig)
        .args(args)
        .output()
        .expect("ivctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn hypervisor(sys: &System, host: &str) -> Value {
    sys.get("hypervisor", None, host).expect("the Hypervisor")
}

fn set_unschedulable(sys: &System, host: &str, on: bool) {
    sys.kubectl_ok(&[
        "patch",
        "hypervisor",
        host,
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"spec":{{"unschedulable":{on}}}}}"#),
    ]);
}

fn condition<'a>(hv: &'a Value, type_: &str) -> Option<&'a Value> {
    hv["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The counter values in a console log, and whether the guest booted in it.
fn ticks(log: &str) -> (Vec<u64>, bool) {
    let values = log
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("IRONVISOR-TICK ")?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    (values, log.contains("IRONVISOR-GUEST-BOOTED"))
}

fn console_log(c: &Cluster, host: &str, vm_uid: &str) -> String {
    std::fs::read_to_string(c.host(host).agent.vm_dir(vm_uid).join("console.log"))
        .unwrap_or_default()
}

#[test]
fn drain_moves_six_running_vms_to_two_hosts_without_restarting_and_a_vm_that_stays_blocks_it() {
    let c = Cluster::start("drn", 3, "{virtualMachines: 8, vcpus: 8, memory: 1Gi}");
    let [h1, h2, h3] = [0, 1, 2].map(|i| c.hosts[i].agent.node.clone());
    // Everything starts on h1: the others are cordoned while the VMs are placed.
    set_unschedulable(&c.sys, &h2, true);
    set_unschedulable(&c.sys, &h3, true);
    let movers: Vec<String> = (1..=MOVERS).map(|i| format!("mover{i}")).collect();
    for m in &movers {
        c.apply_diskless_vm(m, "96Mi", "ironvisor.counter", "");
    }
    c.apply_diskless_vm(
        "stayer",
        "96Mi",
        "ironvisor.counter",
        "  drainStrategy: None\n",
    );
    let mut before = Vec::new();
    for m in &movers {
        let vm = c.sys.wait_phase(&c.ns, m, "Running", BOOT);
        assert_eq!(vm["status"]["nodeName"], h1.as_str());
        let id = uid(&vm);
        let seen = wait_for(&format!("{m}'s counter on {h1}"), BOOT, || {
            let (t, booted) = ticks(&console_log(&c, &h1, &id));
            match t.last() {
                Some(&v) if booted && v > 5 => Ok(v),
                _ => Err("not counting yet".to_owned()),
            }
        });
        before.push((m.clone(), id, seen));
    }
    c.sys.wait_phase(&c.ns, "stayer", "Running", BOOT);
    set_unschedulable(&c.sys, &h2, false);
    set_unschedulable(&c.sys, &h3, false);

    let started = Instant::now();
    let (ok, out) = ivctl(&c.sys, &["host", "drain", &h1]);
    assert!(ok, "{out}");
    // The six leave; the seventh stays and blocks, with its reason.
    let hv = wait_for("the six VMs to leave h1", DRAIN, || {
        let hv = hypervisor(&c.sys, &h1);
        let m = &hv["status"]["maintenance"];
        if m["vmsRemaining"] == 1 && m["vmsBlocked"] == 1 && m["vmsMoved"] == MOVERS {
            Ok(hv)
        } else {
            Err(m.to_string())
        }
    });
    let drained = started.elapsed();
    let m = &hv["status"]["maintenance"];
    assert_eq!(m["phase"], "Draining");
    assert_eq!(m["requestedBy"], "Hypervisor");
    assert_eq!(m["blocked"][0]["name"], "stayer");
    assert!(
        m["blocked"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("drainStrategy None"),
        "{m}"
    );
    let cond = condition(&hv, "MaintenanceReady").expect("the condition");
    assert_eq!(
        (&cond["status"], &cond["reason"]),
        (&"False".into(), &"Blocked".into())
    );
    let events = c.sys.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &c.ns,
        "--field-selector",
        "involvedObject.name=stayer",
        "-o",
        "json",
    ]);
    assert!(events.contains("DrainBlocked"), "{events}");
    // The agents' own status writes (every heartbeat) keep the operator's condition.
    std::thread::sleep(Duration::from_secs(12));
    assert!(condition(&hypervisor(&c.sys, &h1), "MaintenanceReady").is_some());

    // None restarted: on its new host each guest counts on from where it was, no boot.
    let mut on = std::collections::BTreeMap::<String, usize>::new();
    for (name, id, seen) in &before {
        let vm = c.sys.vm(&c.ns, name);
        let node = vm["status"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(node == h2 || node == h3, "{name} on {node}");
        assert_eq!(vm["status"]["phase"], "Running");
        *on.entry(node.clone()).or_default() += 1;
        // A guest that prints nothing on its new host for a minute is looked at once (its
        // state, CPU, interrupts) and the test fails with what was seen, rather than
        // waiting out the drain's timeout while the suite's other tests starve.
        let waiting = Instant::now();
        let mut seen_stalled: Option<String> = None;
        let first = wait_for(&format!("{name}'s counter on {node}"), STALL, || {
            let (t, booted) = ticks(&console_log(&c, &node, id));
            assert!(!booted, "{name} booted again on {node}");
            if let Some(&v) = t.first() {
                return Ok(v);
            }
            if waiting.elapsed() > STALL / 2 && seen_stalled.is_none() {
                let host = c.host(&node);
                let log = host.agent.vm_dir(id).join("console.log");
                seen_stalled = Some(guest_diagnostics(host.libvirtd.uri(), name, &log));
            }
            Err(seen_stalled
                .clone()
                .unwrap_or_else(|| "no line yet".to_owned()))
        });
        assert!(
            first > *seen,
            "{name}: counter {first} on {node} after {seen} on {h1}"
        );
    }
    assert!(
        c.sys.vm(&c.ns, "stayer")["status"]["nodeName"] == h1.as_str(),
        "the VM with drainStrategy None stays"
    );

    // Stopping it completes the drain; --wait returns once MaintenanceReady.
    c.sys.kubectl_ok(&[
        "patch",
        "vm",
        "stayer",
        "-n",
        &c.ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"runStrategy":"Halted"}}"#,
    ]);
    let (ok, out) = ivctl(&c.sys, &["host", "drain", &h1, "--wait", "--timeout", "5m"]);
    assert!(ok, "{out}");
    assert!(out.contains("is drained"), "{out}");
    let hv = hypervisor(&c.sys, &h1);
    let m = &hv["status"]["maintenance"];
    assert_eq!(
        (&m["phase"], &m["vmsStopped"]),
        (&"Ready".into(), &1.into()),
        "{m}"
    );
    let cond = condition(&hv, "MaintenanceReady").expect("the condition");
    assert_eq!(cond["status"], "True");
    eprintln!(
        "drain of {MOVERS} VMs: {:.1} s ({:.1} s per VM); landed {on:?}",
        drained.as_secs_f64(),
        drained.as_secs_f64() / MOVERS as f64
    );

    // Undrain: the status and condition go, the host is schedulable again.
    let (ok, out) = ivctl(&c.sys, &["host", "undrain", &h1]);
    assert!(ok && out.contains("schedulable again"), "{out}");
    wait_for(
        "the maintenance status to go",
        Duration::from_secs(60),
        || {
            let hv = hypervisor(&c.sys, &h1);
            if hv["status"]["maintenance"].is_null() && condition(&hv, "MaintenanceReady").is_none()
            {
                Ok(())
            } else {
                Err(hv["status"].to_string())
            }
        },
    );
}

fn apply_host(sys: &System, name: &str) {
    sys.apply(&format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: Hypervisor\nmetadata: {{name: {name}}}\nspec: {{}}\n"
    ));
    sys.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"
    ));
}

fn maintenance(sys: &System, host: &str) -> Value {
    hypervisor(sys, host)["status"]["maintenance"].clone()
}

#[test]
fn kubectl_cordon_and_drain_put_the_matching_host_in_maintenance_and_uncordon_ends_it() {
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let pid = std::process::id();
    let (host, other) = (format!("cordon-h{pid}"), format!("cordon-o{pid}"));
    apply_host(&sys, &host);
    apply_host(&sys, &other);

    sys.kubectl_ok(&["cordon", &host]);
    let m = wait_for(
        "maintenance from the cordoned Node",
        Duration::from_secs(60),
        || {
            let m = maintenance(&sys, &host);
            if m["phase"] == "Ready" {
                Ok(m)
            } else {
                Err(m.to_string())
            }
        },
    );
    assert_eq!(m["requestedBy"], "Node");
    assert_eq!(m["vmsRemaining"], 0);
    assert!(
        maintenance(&sys, &other).is_null(),
        "only the matching host"
    );
    // ivctl undrain cannot end a maintenance the Node asked for, and says so.
    let (ok, out) = ivctl(&sys, &["host", "undrain", &host]);
    assert!(
        ok && out.contains(&format!("kubectl uncordon {host}")),
        "{out}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(maintenance(&sys, &host)["requestedBy"], "Node");

    sys.kubectl_ok(&["uncordon", &host]);
    wait_for(
        "maintenance to end with the uncordon",
        Duration::from_secs(60),
        || {
            let m = maintenance(&sys, &host);
            if m.is_null() {
                Ok(())
            } else {
                Err(m.to_string())
            }
        },
    );

    // kubectl drain cordons too (no pods to evict here), and leaves with uncordon.
    let out = sys.kubectl_ok(&["drain", &other, "--ignore-daemonsets", "--timeout=30s"]);
    assert!(out.contains("drained"), "{out}");
    wait_for(
        "maintenance from kubectl drain",
        Duration::from_secs(60),
        || {
            let m = maintenance(&sys, &other);
            if m["requestedBy"] == "Node" {
                Ok(())
            } else {
                Err(m.to_string())
            }
        },
    );
    // Maintenance asked for by both stays until both let go.
    let (ok, out) = ivctl(&sys, &["host", "drain", &other]);
    assert!(ok, "{out}");
    sys.kubectl_ok(&["uncordon", &other]);
    wait_for(
        "the Hypervisor's own request to take over",
        Duration::from_secs(60),
        || {
            let m = maintenance(&sys, &other);
            if m["requestedBy"] == "Hypervisor" {
                Ok(())
            } else {
                Err(m.to_string())
            }
        },
    );
    let (ok, out) = ivctl(&sys, &["host", "undrain", &other]);
    assert!(ok, "{out}");
    wait_for("maintenance to end", Duration::from_secs(60), || {
        let m = maintenance(&sys, &other);
        if m.is_null() {
            Ok(())
        } else {
            Err(m.to_string())
        }
    });
    // A host with no Hypervisor: cordoning its Node changes nothing, breaks nothing.
    sys.apply("apiVersion: v1\nkind: Node\nmetadata: {name: not-a-hypervisor}\n");
    sys.kubectl_ok(&["cordon", "not-a-hypervisor"]);
}
