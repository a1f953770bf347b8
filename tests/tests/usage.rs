//! Usage accounting with real processes: the control plane, the operator (as its
//! ServiceAccount) and an agent (test:///default) run as processes; a VM runs, halts, runs
//! again while the operator is killed, and is deleted. The tenant's report then matches, to
//! the second, the integral of the agent's run records up to the deletion request, and each
//! tenant owner reads their own report and not another tenant's.

use std::time::Duration;

use ironvisor_tests::system::{System, guest_cache, tiny_guest, tiny_vm_manifest, wait_for};
use serde_json::Value;

const QUICK: Duration = Duration::from_secs(60);

fn tenant(sys: &System, name: &str, owner: &str) {
    sys.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n---\n\
         apiVersion: ironvisor.io/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\n\
         spec: {{namespaces: [{name}], owners: [{{kind: User, name: {owner}}}]}}\n"
    ));
}

fn halt(sys: &System, ns: &str, strategy: &str) {
    let patch = format!(r#"{{"spec":{{"runStrategy":"{strategy}"}}}}"#);
    sys.kubectl_ok(&["patch", "vm", "v", "-n", ns, "--type=merge", "-p", &patch]);
}

fn secs(t: &Value) -> i64 {
    let ts: jiff::Timestamp = t.as_str().expect("a time").parse().expect("RFC 3339");
    ts.as_second()
}

/// (running, halted) seconds of `log` up to `end`, computed here on its own.
fn integral(log: &[Value], end: i64) -> (i64, i64) {
    let (mut running, mut halted) = (0, 0);
    for (i, r) in log.iter().enumerate() {
        let from = secs(&r["at"]).min(end);
        let to = log.get(i + 1).map_or(end, |n| secs(&n["at"])).min(end);
        if r["running"] == true {
            running += to - from;
        } else {
            halted += to - from;
        }
    }
    (running, halted)
}

fn reports(sys: &System, tenant: &str) -> Vec<Value> {
    let out = sys.kubectl_ok(&["get", "usagereports", "-n", "ironvisor-usage", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).expect("a list");
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["spec"]["tenant"] == tenant)
        .collect()
}

fn own(sys: &System, tenant: &str, field: &str) -> i64 {
    reports(sys, tenant)
        .iter()
        .map(|r| r["status"]["own"][field].as_i64().unwrap_or(0))
        .sum()
}

#[test]
fn a_tenants_report_is_exact_across_an_operator_kill_and_only_its_owner_reads_it() {
    let images = tiny_guest(&guest_cache());
    let sys = System::start_with_users(&["alice", "bob"]);
    let (mut operator, _) = sys.operator();
    let _agent = sys.agent(
        &format!("usage-{}", std::process::id()),
        "test:///default",
        &images,
    );
    tenant(&sys, "acct-a", "alice");
    tenant(&sys, "acct-b", "bob");
    sys.apply(&tiny_vm_manifest("acct-a", "v", &images, ""));
    sys.wait_phase("acct-a", "v", "Running", QUICK);
    // The operator dies while the guest runs; the guest is halted with no operator to see it.
    std::thread::sleep(Duration::from_millis(2500));
    operator.kill();
    halt(&sys, "acct-a", "Halted");
    sys.wait_phase("acct-a", "v", "Stopped", QUICK);
    std::thread::sleep(Duration::from_millis(2100));
    // A new operator re-admits the VM when it is started again.
    let (_operator, _) = sys.operator();
    halt(&sys, "acct-a", "Always");
    let vm = wait_for("the VM to run again", Duration::from_secs(120), || {
        let vm = sys.vm("acct-a", "v");
        let runs = vm["status"]["runLog"]
            .as_array()
            .map_or(0, |l| l.iter().filter(|r| r["running"] == true).count());
        if vm["status"]["phase"] == "Running" && runs == 2 {
            Ok(vm)
        } else {
            Err(format!("phase {}, {runs} starts", vm["status"]["phase"]))
        }
    });
    std::thread::sleep(Duration::from_millis(2100));
    let log = vm["status"]["runLog"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    sys.kubectl_ok(&["delete", "vm", "v", "-n", "acct-a", "--wait=false"]);
    let deleted_at = wait_for("the deletion request", QUICK, || {
        match sys.get("vm", Some("acct-a"), "v") {
            Some(v) if v["metadata"]["deletionTimestamp"].is_string() => {
                Ok(secs(&v["metadata"]["deletionTimestamp"]))
            }
            Some(_) => Err("not deleting yet".to_owned()),
            None => Err("gone before its deletion time was read".to_owned()),
        }
    });
    wait_for(
        "the VM to be gone",
        Duration::from_secs(120),
        || match sys.get("vm", Some("acct-a"), "v") {
            None => Ok(()),
            Some(v) => Err(format!("finalizers {}", v["metadata"]["finalizers"])),
        },
    );
    let (running, halted) = integral(&log, deleted_at);
    assert!(running >= 3, "ran for seconds: {running}: {log:?}");
    wait_for("the report to hold the whole life of the VM", QUICK, || {
        let got = (
            own(&sys, "acct-a", "runningSeconds"),
            own(&sys, "acct-a", "reservedSeconds"),
        );
        if got == (running, halted) {
            Ok(())
        } else {
            Err(format!("{got:?} != {:?}", (running, halted)))
        }
    });
    assert_eq!(own(&sys, "acct-a", "vcpuSeconds"), running);
    assert_eq!(own(&sys, "acct-a", "memoryMiBSeconds"), 128 * running);

    let name = reports(&sys, "acct-a")[0]["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_owned();
    let as_user = |user: &str, args: &[&str]| {
        let mut cmd = sys.kubectl_cmd();
        cmd.env("KUBECONFIG", sys.user_kubeconfig(user)).args(args);
        ironvisor_tests::run(&mut cmd)
    };
    let get = ["get", "usagereport", &name, "-n", "ironvisor-usage"];
    wait_for("alice may read her tenant's report", QUICK, || {
        let out = as_user("alice", &get);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    let denied = as_user("bob", &get);
    assert!(!denied.status.success(), "bob reads acct-a's report");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("forbidden"));
    let list = as_user("alice", &["get", "usagereports", "-n", "ironvisor-usage"]);
    assert!(
        !list.status.success(),
        "no owner lists every tenant's reports"
    );

    // ivctl reads the same report for its owner, as CSV; not another tenant's.
    let ivctl = |user: &str, tenant: &str| {
        ironvisor_tests::run(
            std::process::Command::new(ironvisor_tests::system::bin("ivctl"))
                .env("KUBECONFIG", sys.user_kubeconfig(user))
                .args(["usage", "--tenant", tenant, "-o", "csv"]),
        )
    };
    let out = ivctl("alice", "acct-a");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let own_line = text
        .lines()
        .find(|l| l.starts_with("acct-a,") && l.contains(",own,"))
        .unwrap_or_else(|| panic!("no own line: {text}"));
    let hours = format!("{:.3}", running as f64 / 3600.0);
    assert!(own_line.contains(&format!(",own,,{hours},")), "{own_line}");
    assert!(text.contains(",vm,acct-a/v (deleted),"), "{text}");
    assert!(!ivctl("bob", "acct-a").status.success());
}
