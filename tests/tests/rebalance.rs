//! Rebalancing (DRS) for real on one machine: two hosts, each a private libvirtd in its own
//! network namespace with its own agent (the live-migration test support), the devcluster
//! and the operator as processes. One host runs two tiny guests that burn their vCPU
//! (`ironvisor.burn`) and an idle one; the other is empty. The agents measure the real CPU
//! time of their domains; in DryRun the operator only recommends moving a burner (status and
//! Event, no migration); switched to Automatic it moves one burner with a live migration and
//! an Event that explains the move, then finds the hosts balanced and moves nothing more.
//!
//! Hosts on one machine share a kernel (PSI cannot tell them apart), so the decision rests
//! on the domains' CPU time only; the thresholds are low because the guests run under TCG on
//! a machine shared with other work (a burner gets what the scheduler gives it).

use std::time::Duration;

use ironvisor_tests::migration::Cluster;
use ironvisor_tests::system::{describe, wait_for};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);
const DECIDE: Duration = Duration::from_secs(180);
const MIGRATE: Duration = Duration::from_secs(300);

fn cordon(c: &Cluster, node: &str, on: bool) {
    c.sys.kubectl_ok(&[
        "patch",
        "hypervisor",
        node,
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"spec":{{"unschedulable":{on}}}}}"#),
    ]);
}

fn policy(c: &Cluster, mode: &str) {
    c.sys.apply(&format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: RebalancePolicy\nmetadata: {{name: default}}\n\
         spec: {{mode: {mode}, intervalSeconds: 5, thresholdPercent: 10, minImprovementPercent: 5, \
         maxMovesPerHour: 1, cooldownSeconds: 3600}}\n"
    ));
}

fn node_of(c: &Cluster, vm: &str) -> String {
    c.sys.vm(&c.ns, vm)["status"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn migrations(c: &Cluster) -> Vec<Value> {
    let out = c
        .sys
        .kubectl_ok(&["get", "vmim", "-n", &c.ns, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).expect("vmim list");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn events_of(c: &Cluster, vm: &str) -> String {
    c.sys.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &c.ns,
        "--field-selector",
        &format!("involvedObject.name={vm}"),
        "-o",
        "json",
    ])
}

/// The host's measured load of one VM, millicores.
fn measured(hv: &Value, vm: &str) -> Option<u64> {
    hv["status"]["load"]["vms"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == vm)?["cpuMillicores"]
        .as_u64()
}

#[test]
fn a_host_loaded_with_cpu_burners_is_rebalanced_dry_run_first_then_automatically() {
    let c = Cluster::start(
        "rebal",
        2,
        "{virtualMachines: 3, vcpus: 3, memory: 384Mi, storage: 1Gi}",
    );
    let (hot, cold) = (c.hosts[0].agent.node.clone(), c.hosts[1].agent.node.clone());
    wait_for("both hosts to report", BOOT, || {
        match c.sys.get("hypervisor", None, &cold) {
            Some(_) => Ok(()),
            None => Err("not yet".to_owned()),
        }
    });
    // Every VM on the first host: the other is cordoned while they are placed.
    cordon(&c, &cold, true);
    c.apply_diskless_vm("burn1", "128Mi", "ironvisor.burn", "");
    c.apply_diskless_vm("burn2", "128Mi", "ironvisor.burn", "");
    c.apply_diskless_vm("idle", "128Mi", "ironvisor.stay", "");
    for vm in ["burn1", "burn2", "idle"] {
        let v = c.sys.wait_phase(&c.ns, vm, "Running", BOOT);
        assert_eq!(node_of(&c, vm), hot, "{}", describe(&v));
    }
    cordon(&c, &cold, false);

    // The agent measures the burners' real CPU time, well above the idle guest's.
    let hv = wait_for("the hot host to report the burners' load", DECIDE, || {
        let hv = c.sys.get("hypervisor", None, &hot).ok_or("no hypervisor")?;
        match (
            measured(&hv, "burn1"),
            measured(&hv, "burn2"),
            measured(&hv, "idle"),
        ) {
            (Some(b1), Some(b2), Some(i)) if b1 > 200 && b2 > 200 && i < b1.min(b2) => Ok(hv),
            other => Err(format!("{other:?}: {}", hv["status"]["load"])),
        }
    });
    eprintln!("hot host load: {}", hv["status"]["load"]);
    assert!(hv["status"]["load"]["cpuMillicores"].as_u64().unwrap() > 400);

    // DryRun: a burner is recommended to move to the empty host; nothing moves.
    policy(&c, "DryRun");
    let rec = wait_for("a DryRun recommendation", DECIDE, || {
        let p = c
            .sys
            .get("rebalancepolicy", None, "default")
            .ok_or("no policy")?;
        p["status"]["recommendations"][0]
            .as_object()
            .cloned()
            .ok_or_else(|| format!("{}", p["status"]))
    });
    eprintln!("recommendation: {rec:?}");
    let recommended = rec["vm"].as_str().unwrap().to_owned();
    assert!(recommended.starts_with("burn"), "{rec:?}");
    assert_eq!(rec["from"], hot.as_str());
    assert_eq!(rec["to"], cold.as_str());
    let reason = rec["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("metric cpu: {hot} is the busiest host")),
        "{reason}"
    );
    assert!(rec.get("migration").is_none(), "{rec:?}");
    wait_for("the RebalanceRecommended Event", DECIDE, || {
        let ev = events_of(&c, &recommended);
        ev.contains("RebalanceRecommended").then_some(()).ok_or(ev)
    });
    assert!(migrations(&c).is_empty(), "DryRun makes no migration");
    for vm in ["burn1", "burn2", "idle"] {
        assert_eq!(node_of(&c, vm), hot);
    }

    // Automatic: one burner moves to the empty host, with an Event that explains it.
    policy(&c, "Automatic");
    let made = wait_for("the rebalancer's migration", DECIDE, || {
        let m = migrations(&c);
        m.into_iter().next().ok_or_else(|| "none yet".to_owned())
    });
    let mig = made["metadata"]["name"].as_str().unwrap().to_owned();
    assert_eq!(
        made["metadata"]["labels"]["ironvisor.io/made-by"],
        "rebalancer"
    );
    let moved = made["spec"]["vmName"].as_str().unwrap().to_owned();
    assert!(moved.starts_with("burn"), "{made}");
    assert_eq!(made["spec"]["targetNode"], cold.as_str());
    assert!(
        made["metadata"]["annotations"]["ironvisor.io/rebalance-reason"]
            .as_str()
            .unwrap()
            .contains("Why this VM"),
        "{made}"
    );
    let done = c.wait_migration(&mig, "Completed", MIGRATE);
    eprintln!("migration: {}", done["status"]["conditions"]);
    assert_eq!(node_of(&c, &moved), cold);
    let ev = events_of(&c, &moved);
    assert!(ev.contains("RebalanceMigration"), "{ev}");
    assert!(ev.contains("metric cpu") && ev.contains(&mig), "{ev}");

    // The target's agent now measures the burner it received.
    wait_for(
        "the target host to report the moved burner's load",
        DECIDE,
        || {
            let hv = c
                .sys
                .get("hypervisor", None, &cold)
                .ok_or("no hypervisor")?;
            match measured(&hv, &moved) {
                Some(m) if m > 200 => Ok(()),
                other => Err(format!("{other:?}: {}", hv["status"]["load"])),
            }
        },
    );

    // Then, with fresh loads from both hosts, balanced: nothing more moves.
    let p = wait_for("an evaluation after the move", DECIDE, || {
        let p = c
            .sys
            .get("rebalancepolicy", None, "default")
            .ok_or("no policy")?;
        let msg = p["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if msg.contains("balanced") || msg.contains("budget") {
            Ok(p)
        } else {
            Err(msg)
        }
    });
    eprintln!("after the move: {}", p["status"]);
    assert_eq!(p["status"]["movesInLastHour"], 1, "{}", p["status"]);
    assert_eq!(migrations(&c).len(), 1, "within the budget of one move");
    let others: Vec<&str> = ["burn1", "burn2", "idle"]
        .into_iter()
        .filter(|v| *v != moved)
        .collect();
    for vm in others {
        assert_eq!(node_of(&c, vm), hot);
    }
}

/// The policy through real kubectl: defaults fill an empty spec (Off), and hostile values
/// are refused with the field named.
#[test]
fn a_rebalance_policy_defaults_to_off_and_refuses_hostile_values() {
    use ironvisor_tests::system::System;
    let sys = System::start();
    // The kind is served once the API server has taken the CRD in.
    wait_for(
        "the RebalancePolicy kind to be served",
        Duration::from_secs(60),
        || {
            let out = sys.kubectl(&["get", "rebalancepolicies"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );
    sys.apply("apiVersion: ironvisor.io/v1alpha1\nkind: RebalancePolicy\nmetadata: {name: default}\nspec: {}\n");
    let p = sys
        .get("rebalancepolicy", None, "default")
        .expect("created");
    let spec = &p["spec"];
    assert_eq!(spec["mode"], "Off", "{spec}");
    assert_eq!(spec["thresholdPercent"], 20, "{spec}");
    assert_eq!(spec["maxMovesPerHour"], 4, "{spec}");
    assert_eq!(spec["cooldownSeconds"], 3600, "{spec}");
    assert_eq!(spec["weights"]["cpu"], 1.0, "{spec}");
    for (bad, field) in [
        ("{mode: Sometimes}", "mode"),
        ("{thresholdPercent: 0}", "thresholdPercent"),
        ("{intervalSeconds: 1}", "intervalSeconds"),
        ("{weights: {cpu: 0, memory: 0}}", "weights"),
        ("{weights: {cpu: -1}}", "weights.cpu"),
        ("{maxMovesPerHour: -3}", "maxMovesPerHour"),
    ] {
        let out = sys.kubectl_cmd()
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(
                    format!("apiVersion: ironvisor.io/v1alpha1\nkind: RebalancePolicy\nmetadata: {{name: default}}\nspec: {bad}\n").as_bytes(),
                )?;
                c.wait_with_output()
            })
            .expect("kubectl apply");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(err.contains(field), "{bad}: {err}");
    }
}
