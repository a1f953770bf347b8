//! Post-copy migration for real, on two private libvirtd hosts (see tests/migration.rs): a
//! busy guest that a capped pre-copy cannot converge, under a policy allowing post-copy,
//! is switched to post-copy by its source agent after a full pass at half the policy's
//! timeout, and completes on the target with its counter going on. The hosts' QEMUs may use
//! userfaultfd (`hack/private-libvirtd.sh --userfaultfd`), which post-copy needs. On hosts
//! whose QEMUs may not (this machine's default), QEMU refuses post-copy at the start of the
//! job: the source agent runs it again without, and says so.

use std::time::Duration;

use ironvisor_tests::migration::{Cluster, TickWatch};
use ironvisor_tests::system::{describe, uid, wait_for};

const BOOT: Duration = Duration::from_secs(240);
const MIGRATE: Duration = Duration::from_secs(300);

#[test]
fn a_copy_that_does_not_converge_switches_to_post_copy_and_completes() {
    let c =
        Cluster::start_with_userfaultfd("mpp", 2, "{virtualMachines: 1, vcpus: 1, memory: 128Mi}");
    // 2 MiB/s cannot keep up with the busy guest's 16 MiB rewritten in a loop; the 120 s
    // timeout puts the switch at 60 s, after at least one full pass.
    c.sys.apply(
        "apiVersion: ironvisor.io/v1alpha1\nkind: MigrationPolicy\nmetadata: {name: postcopy}\n\
         spec:\n  selector: {matchLabels: {load: busy}}\n  bandwidthMibPerSecond: 2\n  \
         allowPostCopy: true\n  maxDowntimeMilliseconds: 50\n  completionTimeoutPerGibSeconds: 120\n",
    );
    c.apply_busy_vm("churn", "{load: busy}");
    let vm = c.sys.wait_phase(&c.ns, "churn", "Running", BOOT);
    let src = vm["status"]["nodeName"]
        .as_str()
        .expect("placed")
        .to_owned();
    let (s, t) = if c.hosts[0].agent.node == src {
        (0, 1)
    } else {
        (1, 0)
    };
    let vm_uid = uid(&vm);
    let logs = [s, t].map(|i| c.hosts[i].agent.vm_dir(&vm_uid).join("console.log"));
    let watch = TickWatch::start(logs.to_vec());
    watch.wait_tick_on(0, 10, BOOT);

    c.apply_migration("late", "churn", None, "");
    let switched = wait_for("the copy to switch to post-copy", MIGRATE, || {
        let m = c.migration("late").ok_or("gone")?;
        let phase = m["status"]["phase"].as_str().unwrap_or("");
        if ["Failed", "Cancelled"].contains(&phase) {
            panic!("migration ended {phase}: {}", m["status"]);
        }
        if m["status"]["source"]["postCopy"] == true {
            Ok(m)
        } else {
            Err(m["status"].to_string())
        }
    });
    let policy = &switched["status"]["policy"];
    assert_eq!(policy["postCopy"], true, "{policy}");
    let m = c.wait_migration("late", "Completed", MIGRATE);
    assert_eq!(m["status"]["source"]["postCopy"], true, "{}", m["status"]);
    let elapsed = m["status"]["source"]["elapsedMilliseconds"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        elapsed >= 60_000,
        "switched only at half the timeout, after a full pass: {elapsed} ms"
    );
    let vm = c.sys.vm(&c.ns, "churn");
    assert_eq!(
        vm["status"]["nodeName"].as_str(),
        Some(c.hosts[t].agent.node.as_str()),
        "{}",
        describe(&vm)
    );
    // The guest goes on on the target: its counter moves past the last value seen there.
    let now = watch
        .ticks()
        .iter()
        .filter(|t| t.log == 1)
        .map(|t| t.value)
        .max()
        .unwrap_or(0);
    watch.wait_tick_on(1, now + 2, BOOT);
    assert!(vm["status"]["operation"].is_null(), "{}", vm["status"]);
}

/// Hosts as this machine has them (QEMU as libvirt-qemu, `vm.unprivileged_userfaultfd=0`):
/// QEMU refuses post-copy when the job starts; a policy allowing it does not fail the
/// migration, which completes by pre-copy and says why it went without.
#[test]
fn where_qemu_refuses_post_copy_the_migration_goes_without_it_and_says_so() {
    let c = Cluster::start("mpn", 2, "{virtualMachines: 1, vcpus: 1, memory: 128Mi}");
    c.sys.apply(
        "apiVersion: ironvisor.io/v1alpha1\nkind: MigrationPolicy\nmetadata: {name: default}\n\
         spec: {allowPostCopy: true}\n",
    );
    c.apply_counter_vm("calm");
    let vm = c.sys.wait_phase(&c.ns, "calm", "Running", BOOT);
    let src = vm["status"]["nodeName"]
        .as_str()
        .expect("placed")
        .to_owned();
    c.apply_migration("plain", "calm", None, "");
    let m = c.wait_migration("plain", "Completed", MIGRATE);
    assert_eq!(m["status"]["policy"]["postCopy"], true, "{}", m["status"]);
    assert_ne!(m["status"]["source"]["postCopy"], true, "{}", m["status"]);
    let note = m["status"]["source"]["message"].as_str().unwrap_or("");
    assert!(note.contains("completed without post-copy"), "{note}");
    assert!(
        note.contains("Postcopy is not supported"),
        "QEMU's own words: {note}"
    );
    let vm = c.sys.vm(&c.ns, "calm");
    assert_ne!(
        vm["status"]["nodeName"].as_str(),
        Some(src.as_str()),
        "{}",
        describe(&vm)
    );
}
