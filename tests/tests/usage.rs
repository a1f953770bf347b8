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

fn report_of<'a>(items: &'a [Value], tenant: &str) -> &'a Value {
    items
        .iter()
        .find(|r| r["spec"]["tenant"] == tenant)
        .unwrap_or_else(|| panic!("no report of {tenant}"))
}

fn field(v: &Value, f: &str) -> i64 {
    v[f].as_i64().unwrap_or(0)
}

const FIELDS: [&str; 3] = ["runningSeconds", "vcpuSeconds", "storageMiBSeconds"];

/// Cents of a decimal string such as `12.34`.
fn cents(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or("0.00");
    let (units, frac) = s.split_once('.').unwrap_or((s, "0"));
    units.parse::<i64>().unwrap_or(0) * 100 + frac.parse::<i64>().unwrap_or(0)
}

#[test]
fn a_tenant_tree_rolls_up_exactly_and_a_new_price_applies_from_its_time_only() {
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let (_operator, _) = sys.operator_with_args(&["--usage-interval", "2s"]);
    let _agent = sys.agent(
        &format!("tree-{}", std::process::id()),
        "test:///default",
        &images,
    );
    // org → dept → proj; org has no VMs of its own, dept and proj one each.
    let now = jiff::Timestamp::now().as_second();
    let change = now + 20;
    let change_at = jiff::Timestamp::from_second(change).unwrap().to_string();
    sys.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: tree-dept}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: tree-proj}}\n---\n\
         apiVersion: ironvisor.io/v1alpha1\nkind: Tenant\nmetadata: {{name: tree-org}}\nspec: {{}}\n---\n\
         apiVersion: ironvisor.io/v1alpha1\nkind: Tenant\nmetadata: {{name: tree-dept}}\n\
         spec: {{parent: tree-org, namespaces: [tree-dept]}}\n---\n\
         apiVersion: ironvisor.io/v1alpha1\nkind: Tenant\nmetadata: {{name: tree-proj}}\n\
         spec: {{parent: tree-dept, namespaces: [tree-proj]}}\n---\n\
         apiVersion: ironvisor.io/v1alpha1\nkind: PriceList\nmetadata: {{name: default}}\n\
         spec:\n  currency: EUR\n  rates:\n\
         \x20 - {{effectiveFrom: \"2020-01-01T00:00:00Z\", vcpuHour: \"0.04\", memoryGiBHour: \"0.01\", storageGiBMonth: \"0.1\"}}\n\
         \x20 - {{effectiveFrom: \"{change_at}\", vcpuHour: \"9\", memoryGiBHour: \"0.5\", storageGiBMonth: \"2\"}}\n"
    ));
    // Each with a small data disk, so storage rolls up too.
    let disks = "  disks:\n  - name: data\n    size: 16Mi\n    source: {blank: {}}\n";
    for ns in ["tree-dept", "tree-proj"] {
        sys.apply(&tiny_vm_manifest(ns, "v", &images, disks));
    }
    let mut started = Vec::new();
    for ns in ["tree-dept", "tree-proj"] {
        let vm = sys.wait_phase(ns, "v", "Running", QUICK);
        let first = vm["status"]["runLog"]
            .as_array()
            .and_then(|l| l.iter().find(|r| r["running"] == true).cloned())
            .expect("a start in the run log");
        started.push(secs(&first["at"]));
    }
    assert!(
        started.iter().all(|s| *s < change),
        "both started before the price change"
    );
    // Run across the change, then delete both VMs so the totals stop moving.
    wait_for("the price change to pass", QUICK, || {
        if jiff::Timestamp::now().as_second() > change + 3 {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    for ns in ["tree-dept", "tree-proj"] {
        sys.kubectl_ok(&["delete", "vm", "v", "-n", ns, "--wait=false"]);
    }
    let items = wait_for(
        "settled, rolled-up reports",
        Duration::from_secs(120),
        || {
            let out =
                sys.kubectl_ok(&["get", "usagereports", "-n", "ironvisor-usage", "-o", "json"]);
            let list: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let settled = |t: &str| {
                items.iter().any(|r| {
                    r["spec"]["tenant"] == t
                        && r["status"]["vms"].as_array().is_some_and(|v| {
                            !v.is_empty() && v.iter().all(|e| e["deleted"] == true)
                        })
                })
            };
            let org = items.iter().find(|r| r["spec"]["tenant"] == "tree-org");
            let own = |t: &str| {
                items
                    .iter()
                    .find(|r| r["spec"]["tenant"] == t)
                    .map_or(0, |r| field(&r["status"]["own"], "runningSeconds"))
            };
            let org_total = org.map_or(-1, |r| field(&r["status"]["total"], "runningSeconds"));
            if settled("tree-dept")
                && settled("tree-proj")
                && org_total == own("tree-dept") + own("tree-proj")
            {
                Ok(items)
            } else {
                Err(format!("org total {org_total}"))
            }
        },
    );
    let (org, dept, proj) = (
        report_of(&items, "tree-org"),
        report_of(&items, "tree-dept"),
        report_of(&items, "tree-proj"),
    );
    for f in FIELDS {
        let sum = field(&dept["status"]["own"], f) + field(&proj["status"]["own"], f);
        assert!(sum > 0, "{f}");
        assert_eq!(field(&org["status"]["total"], f), sum, "org {f}");
        assert_eq!(field(&dept["status"]["total"], f), sum, "dept {f}");
        assert_eq!(field(&org["status"]["own"], f), 0, "org has no VMs");
        assert_eq!(
            field(&proj["status"]["total"], f),
            field(&proj["status"]["own"], f)
        );
    }
    // Each parent lists its direct child's part.
    let children = |r: &Value| {
        r["status"]["children"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let org_children = children(org);
    assert_eq!(org_children.len(), 1, "{org_children:?}");
    assert_eq!(org_children[0]["tenant"], "tree-dept");
    assert_eq!(org_children[0]["usage"], dept["status"]["total"]);
    let dept_children = children(dept);
    assert_eq!(dept_children[0]["tenant"], "tree-proj");
    assert_eq!(dept_children[0]["usage"], proj["status"]["own"]);
    // Costs roll up too (to the cent, each rounded once).
    let cost = |r: &Value, k: &str| cents(&r["status"]["cost"][k]);
    assert!((cost(org, "total") - cost(dept, "own") - cost(proj, "own")).abs() <= 1);

    // The new rate priced exactly the seconds from its effective time on, the old one the rest.
    for (i, r) in [dept, proj].into_iter().enumerate() {
        // A deleted VM is accounted through its deletion request.
        let deleted = secs(&r["status"]["vms"][0]["accountedThrough"]);
        let priced = r["status"]["priced"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let by_rate = |cpu: &str| {
            priced
                .iter()
                .find(|p| p["rate"]["vcpuHour"] == cpu)
                .map_or(0, |p| field(&p["usage"], "runningSeconds"))
        };
        let own = field(&r["status"]["own"], "runningSeconds");
        assert_eq!(
            by_rate("0.04"),
            change - started[i],
            "before the change: {priced:?}"
        );
        assert_eq!(
            by_rate("9"),
            deleted - change,
            "after the change: {priced:?}"
        );
        assert_eq!(by_rate("0.04") + by_rate("9"), own);
    }
}
