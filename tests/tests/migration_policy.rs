//! Migration policies for real, on two private libvirtd hosts in network namespaces (see
//! tests/migration.rs): the cluster-wide parallel limit holds a second migration in
//! `Pending` until the first ends, and a copy that cannot converge (a guest dirtying memory
//! faster than the policy's bandwidth sends it) is aborted at the policy's timeout with the
//! VM running on as before.

use std::time::Duration;

use ironvisor_tests::migration::{Cluster, TickWatch, domid};
use ironvisor_tests::system::{describe, uid, wait_for};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);
const MIGRATE: Duration = Duration::from_secs(240);

fn node_of(vm: &Value) -> String {
    vm["status"]["nodeName"]
        .as_str()
        .expect("placed")
        .to_owned()
}

/// The domain of `ns/name` on `uri`, if any.
fn domain_on(uri: &str, name: &str) -> Option<String> {
    let out = std::process::Command::new("virsh")
        .args(["-c", uri, "list", "--all", "--name"])
        .output()
        .expect("virsh");
    let wanted = format!("-{name}-");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|n| n.starts_with("iv-") && n.contains(&wanted))
        .map(str::to_owned)
}

/// Wait until the source agent reports QEMU's job copying.
fn wait_copying(c: &Cluster, name: &str) -> Value {
    wait_for(&format!("migration {name} to copy"), MIGRATE, || {
        let m = c.migration(name).ok_or("gone")?;
        let p = &m["status"]["source"]["progress"];
        if m["status"]["phase"] == "Migrating" && p["memoryTotalBytes"].as_u64().unwrap_or(0) > 0 {
            Ok(m)
        } else {
            Err(m["status"].to_string())
        }
    })
}

/// The operator's metric `name{labels}` value, as text.
fn metric(c: &Cluster, line_start: &str) -> Option<String> {
    let url = format!("http://127.0.0.1:{}/metrics", c.operator_port);
    let out = std::process::Command::new("curl")
        .args(["-sf", &url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(line_start).map(|v| v.trim().to_owned()))
}

/// With `parallelMigrationsPerCluster: 1`, a second migration waits in `Pending` (reason
/// `ClusterLimit`) while the first copies, then runs once the first is cancelled; the
/// operator counts one Cancelled and one Completed.
#[test]
fn with_a_cluster_limit_of_one_the_second_migration_waits_until_the_first_ends() {
    let c = Cluster::start("mpl", 2, "{virtualMachines: 2, vcpus: 2, memory: 256Mi}");
    c.sys.apply(
        "apiVersion: ironvisor.io/v1alpha1\nkind: MigrationPolicy\nmetadata: {name: default}\n\
         spec: {parallelMigrationsPerCluster: 1}\n",
    );
    c.apply_counter_vm("first");
    c.apply_counter_vm("second");
    c.sys.wait_phase(&c.ns, "first", "Running", BOOT);
    c.sys.wait_phase(&c.ns, "second", "Running", BOOT);

    c.apply_migration("slow", "first", None, "  bandwidthMibPerSecond: 1\n");
    wait_copying(&c, "slow");
    c.apply_migration("queued", "second", None, "");
    let waiting = wait_for("the second migration to wait for a place", MIGRATE, || {
        let m = c.migration("queued").ok_or("gone")?;
        let cond = &m["status"]["conditions"][0];
        if m["status"]["phase"] == "Pending" && cond["reason"] == "ClusterLimit" {
            Ok(cond["message"].as_str().unwrap_or("").to_owned())
        } else {
            Err(m["status"].to_string())
        }
    });
    assert!(waiting.contains("the policy allows 1 at once"), "{waiting}");
    // Still waiting a while later: the limit holds, not a passing state.
    std::thread::sleep(Duration::from_secs(5));
    let m = c.migration("queued").expect("there");
    assert_eq!(m["status"]["phase"], "Pending", "{}", m["status"]);
    assert!(
        c.sys.vm(&c.ns, "second")["status"]["operation"].is_null(),
        "a waiting migration takes no lock"
    );

    c.sys
        .kubectl_ok(&["delete", "vmim", "slow", "-n", &c.ns, "--wait=false"]);
    let done = c.wait_migration("queued", "Completed", MIGRATE);
    assert_eq!(
        done["status"]["policy"]["policies"],
        serde_json::json!(["default"]),
        "{}",
        done["status"]
    );
    let vm = c.sys.vm(&c.ns, "second");
    assert_eq!(node_of(&vm), done["status"]["targetNode"].as_str().unwrap());
    wait_for(
        "the operator to count both ends",
        Duration::from_secs(30),
        || {
            let counts = (
                metric(&c, "ironvisor_migrations_total{result=\"Cancelled\"}"),
                metric(&c, "ironvisor_migrations_total{result=\"Completed\"}"),
            );
            if counts == (Some("1".into()), Some("1".into())) {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        },
    );
}

/// A busy guest, a policy selecting it by label with 1 MiB/s, auto-converge, a 100 ms
/// downtime and 20 s per GiB: the copy cannot converge, the source agent aborts it at the
/// timeout, the migration ends `Failed` naming the policy's timeout, and the same guest
/// runs on its source (same domain id, counter going on, lock released).
#[test]
fn a_copy_that_does_not_converge_is_aborted_at_the_policys_timeout_and_the_vm_runs_on() {
    let c = Cluster::start("mpc", 2, "{virtualMachines: 1, vcpus: 1, memory: 128Mi}");
    c.sys.apply(
        "apiVersion: ironvisor.io/v1alpha1\nkind: MigrationPolicy\nmetadata: {name: busy}\n\
         spec:\n  selector: {matchLabels: {load: busy}}\n  bandwidthMibPerSecond: 1\n  \
         allowAutoConverge: true\n  maxDowntimeMilliseconds: 100\n  completionTimeoutPerGibSeconds: 20\n",
    );
    c.apply_busy_vm("churn", "{load: busy}");
    let vm = c.sys.wait_phase(&c.ns, "churn", "Running", BOOT);
    let src = node_of(&vm);
    let a = c.host(&src);
    let log = a.agent.vm_dir(&uid(&vm)).join("console.log");
    let watch = TickWatch::start(vec![log]);
    watch.wait_tick_on(0, 20, BOOT);
    let dom = domain_on(a.libvirtd.uri(), "churn").expect("the guest's domain");
    let id = domid(a.libvirtd.uri(), &dom).expect("running");

    c.apply_migration("hopeless", "churn", None, "");
    let copying = wait_copying(&c, "hopeless");
    let policy = &copying["status"]["policy"];
    assert_eq!(policy["policies"], serde_json::json!(["busy"]), "{policy}");
    assert_eq!(policy["completionTimeoutSeconds"], 20, "{policy}");
    assert_eq!(policy["autoConverge"], true, "{policy}");
    // The policy's downtime reached QEMU through the agent's libvirt wrapper.
    wait_for("QEMU's maximum downtime to be 100 ms", MIGRATE, || {
        let out = std::process::Command::new("virsh")
            .args(["-c", a.libvirtd.uri(), "migrate-getmaxdowntime", &dom])
            .output()
            .expect("virsh");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if text == "100" {
            Ok(())
        } else {
            Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr)))
        }
    });

    let m = c.wait_migration("hopeless", "Failed", MIGRATE);
    let why = m["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        why.contains("did not converge within the policy's 20 s"),
        "{why}"
    );
    assert!(why.contains("auto-converge on"), "{why}");
    assert!(why.contains("runs on its source"), "{why}");
    let elapsed = m["status"]["source"]["elapsedMilliseconds"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        elapsed >= 20_000,
        "aborted at the timeout, not before: {elapsed} ms"
    );
    let vm = c.sys.vm(&c.ns, "churn");
    assert_eq!(node_of(&vm), src, "{}", describe(&vm));
    assert!(vm["status"]["operation"].is_null(), "{}", vm["status"]);
    assert_eq!(
        domid(a.libvirtd.uri(), &dom),
        Some(id),
        "the same guest runs on"
    );
    let now = watch.ticks().iter().map(|t| t.value).max().unwrap_or(0);
    watch.wait_tick_on(0, now, BOOT);
}

/// The API server refuses policies that make no sense, with the field named: parallel
/// limits on a policy that selects VMs, a zero bandwidth, a negative limit, an unknown
/// field; a sound `default` is accepted and read back.
#[test]
fn nonsensical_policies_are_refused_at_apply_time() {
    let sys = ironvisor_tests::system::System::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let apply = |name: &str, spec: &str| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: ironvisor.io/v1alpha1\nkind: MigrationPolicy\n\
                 metadata: {{name: {name}}}\nspec: {spec}\n"
            ),
        )
        .expect("write");
        let out = sys.kubectl(&["apply", "-f", path.to_str().expect("utf-8")]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = apply(
        "db",
        "{selector: {matchLabels: {tier: db}}, parallelMigrationsPerCluster: 3}",
    );
    assert!(!ok);
    assert!(
        err.contains("the parallel limits are cluster-wide"),
        "{err}"
    );
    for (spec, field) in [
        ("{bandwidthMibPerSecond: 0}", "bandwidthMibPerSecond"),
        (
            "{parallelOutboundMigrationsPerHost: -1}",
            "parallelOutboundMigrationsPerHost",
        ),
        ("{allowPostCopy: maybe}", "allowPostCopy"),
        ("{postCopyAlways: true}", "postCopyAlways"),
    ] {
        let (ok, err) = apply("bad", spec);
        assert!(!ok, "{spec} accepted");
        assert!(err.contains(field), "{spec}: {err}");
    }
    let (ok, err) = apply(
        "default",
        "{parallelMigrationsPerCluster: 3, parallelOutboundMigrationsPerHost: 1, allowAutoConverge: true}",
    );
    assert!(ok, "{err}");
    let p = sys.get("mpol", None, "default").expect("stored");
    assert_eq!(p["spec"]["parallelMigrationsPerCluster"], 3);
}
