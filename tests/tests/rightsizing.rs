//! Right-sizing on real guests (`qemu:///system`): an agent samples two tiny guests, one that
//! only sleeps and one that burns a vCPU (`ironvisor.burn` on its kernel command line), into
//! short buckets, and an operator judges them over a short window — both set by their
//! command-line flags, the same ones production uses with an hour and a week. The sleeping
//! guest is flagged idle with halting as its recommendation and a saving; the busy one is not
//! idle. `ivctl usage --rightsizing` and the operator's metrics say the same.

use std::time::Duration;

use ironvisor_tests::system::{
    System, guest_cache, require_libvirtd, tiny_guest, tiny_vm_manifest, wait_for,
};
use serde_json::Value;

const NS: &str = "rs-fin";

fn verdicts(sys: &System) -> Result<Vec<(String, String, Value)>, String> {
    let out = sys.kubectl_ok(&["get", "usagereports", "-n", "ironvisor-usage", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    // The current month's report: after midnight UTC on the 1st the last month's stays,
    // frozen, beside the new one.
    let report = list["items"]
        .as_array()
        .and_then(|i| {
            i.iter()
                .filter(|r| r["spec"]["tenant"] == NS)
                .max_by_key(|r| r["spec"]["period"].as_str().unwrap_or_default().to_owned())
                .cloned()
        })
        .ok_or("no report yet")?;
    let vms = report["status"]["rightsizing"]["vms"]
        .as_array()
        .cloned()
        .ok_or("no right-sizing yet")?;
    Ok(vms
        .into_iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                v["verdict"].as_str().unwrap_or_default().to_owned(),
                v,
            )
        })
        .collect())
}

fn metrics(port: u16) -> String {
    let out = ironvisor_tests::run(
        std::process::Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")]),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_idle_guest_is_flagged_idle_and_a_busy_one_is_not() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    // A 40 s window of 5 s buckets, sampled every second; idle below 5 % of a vCPU.
    let (_operator, metrics_port) =
        sys.operator_with_args(&["--usage-interval", "2s", "--rightsizing-window", "40s"]);
    let node = format!("rs{}", std::process::id());
    let flags = [
        "--utilization-sample-period",
        "1s",
        "--utilization-bucket",
        "5s",
        "--utilization-buckets",
        "20",
    ]
    .map(String::from);
    let _agent = sys.agent_with_args(&node, "qemu:///system", &images, &flags);
    sys.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n---\n\
         apiVersion: ironvisor.io/v1alpha1\nkind: Tenant\nmetadata: {{name: {NS}}}\n\
         spec: {{namespaces: [{NS}]}}\n---\n\
         apiVersion: ironvisor.io/v1alpha1\nkind: PriceList\nmetadata: {{name: default}}\n\
         spec: {{currency: EUR, rates: [{{effectiveFrom: \"2020-01-01T00:00:00Z\", \
         vcpuHour: \"0.04\", memoryGiBHour: \"0.01\", storageGiBMonth: \"0.1\"}}]}}\n"
    ));
    sys.apply(&tiny_vm_manifest(NS, "sleeper", &images, ""));
    sys.apply(
        &tiny_vm_manifest(NS, "burner", &images, "")
            .replace("ironvisor.stay", "ironvisor.stay ironvisor.burn"),
    );
    sys.wait_phase(NS, "sleeper", "Running", Duration::from_secs(120));
    sys.wait_phase(NS, "burner", "Running", Duration::from_secs(120));

    // Boot is busy under TCG; once the window holds only the settled guests, the verdicts.
    let judged = wait_for("both guests judged", Duration::from_secs(240), || {
        let v = verdicts(&sys)?;
        let of = |n: &str| v.iter().find(|(name, ..)| name == n).cloned();
        match (of("sleeper"), of("burner")) {
            (Some(s), Some(b)) if s.1 == "Idle" && b.1 != "Unknown" => Ok((s, b)),
            other => Err(format!("{other:?}")),
        }
    });
    let (sleeper, burner) = judged;
    assert_ne!(burner.1, "Idle", "the burning guest is busy: {}", burner.2);
    // What the loop gets depends on the host's load; it is above the idle line, and more than
    // the sleeper's.
    let avg = |v: &Value| v["cpuAvgMillicores"].as_i64().unwrap_or(0);
    assert!(avg(&burner.2) >= 50, "{}", burner.2);
    assert!(
        avg(&burner.2) > avg(&sleeper.2),
        "{} {}",
        burner.2,
        sleeper.2
    );
    assert!(avg(&sleeper.2) < 50, "{}", sleeper.2);
    assert_eq!(
        sleeper.2["recommended"]["vcpus"], 0,
        "halt it: {}",
        sleeper.2
    );
    // 1 vCPU × 0.04 × 730 h + 0.125 GiB × 0.01 × 730 h = 29.20 + 0.9125.
    assert_eq!(sleeper.2["monthlySaving"], "30.11", "{}", sleeper.2);
    assert!(sleeper.2["hostMemoryRssMiB"].as_i64().unwrap_or(0) > 0);

    // The VM's status holds the buckets the verdict came from.
    let vm = sys.vm(NS, "sleeper");
    let u = &vm["status"]["utilization"];
    assert_eq!(u["bucketSeconds"], 5, "{u}");
    assert!(u["buckets"].as_array().is_some_and(|b| b.len() >= 6), "{u}");

    let out = ironvisor_tests::run(
        std::process::Command::new(ironvisor_tests::system::bin("ivctl"))
            .env("KUBECONFIG", &sys.kubeconfig)
            .args(["usage", "--tenant", NS, "--rightsizing", "-o", "csv"]),
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(csv.contains(&format!(",{NS}/sleeper,idle,")), "{csv}");
    assert!(!csv.contains(&format!(",{NS}/burner,idle,")), "{csv}");

    let text = wait_for("the idle gauge", Duration::from_secs(30), || {
        let m = metrics(metrics_port);
        let idle = format!("ironvisor_rightsizing_vms{{tenant=\"{NS}\",verdict=\"idle\"}} 1");
        if m.contains(&idle) { Ok(m) } else { Err(m) }
    });
    assert!(text.contains("ironvisor_rightsizing_monthly_saving{tenant=\"rs-fin\"}"));
}
