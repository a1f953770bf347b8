//! Live migration for real on one machine: two hosts, each a private libvirtd in its own
//! mount and network namespace on a test switch (198.18.0.0/24, a benchmarking range that
//! exists only inside the namespaces these tests create), each with its own agent process,
//! the devcluster and the operator as processes. The tiny guest prints a counter on its
//! serial console: after a migration the same boot continues (the counter goes on, no boot
//! banner), and the downtime is measured from when the lines arrive on each host.

use std::time::Duration;

use ironvisor_tests::migration::{Cluster, TickWatch, disk_token, domid, switch_over};
use ironvisor_tests::system::{describe, uid, wait_for};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);
const MIGRATE: Duration = Duration::from_secs(240);

/// Domain name of `ns/name` as the agent builds it.
fn domain(c: &Cluster, name: &str) -> String {
    let list = std::process::Command::new("virsh")
        .args(["-c", c.hosts[0].libvirtd.uri(), "list", "--all", "--name"])
        .output()
        .expect("virsh");
    let mut names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let list = std::process::Command::new("virsh")
        .args(["-c", c.hosts[1].libvirtd.uri(), "list", "--all", "--name"])
        .output()
        .expect("virsh");
    names.extend(
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .map(str::to_owned),
    );
    let wanted = format!("-{name}-");
    names
        .into_iter()
        .find(|n| n.starts_with("iv-") && n.contains(&wanted))
        .unwrap_or_else(|| panic!("no domain of {name}"))
}

fn node_of(vm: &Value) -> String {
    vm["status"]["nodeName"]
        .as_str()
        .expect("placed")
        .to_owned()
}

/// A running counter VM, its uid, its host's index and the other's.
fn running_vm(c: &Cluster, name: &str) -> (String, usize, usize) {
    c.apply_counter_vm(name);
    let vm = c.sys.wait_phase(&c.ns, name, "Running", BOOT);
    let node = node_of(&vm);
    let src = c
        .hosts
        .iter()
        .position(|h| h.agent.node == node)
        .expect("a test host");
    (uid(&vm), src, 1 - src)
}

fn console_paths(c: &Cluster, uid: &str) -> Vec<std::path::PathBuf> {
    c.hosts
        .iter()
        .map(|h| h.agent.vm_dir(uid).join("console.log"))
        .collect()
}

fn assert_lock_released(c: &Cluster, name: &str) {
    let vm = c.sys.vm(&c.ns, name);
    assert!(
        vm["status"]["operation"].is_null(),
        "the lock is released: {}",
        vm["status"]
    );
}

/// Migrate there and back (the tenant's quota at exactly 100 %, which never blocks a
/// migration): the counter continues, the disk's data is on the target, the placement,
/// label and lock follow, the source's directory goes only once the VM runs on the target.
#[test]
fn a_running_vm_migrates_to_the_other_host_and_back_without_restarting() {
    let c = Cluster::start(
        "mig",
        2,
        "{virtualMachines: 1, vcpus: 1, memory: 128Mi, storage: 64Mi}",
    );
    let (vm_uid, src, dst) = running_vm(&c, "mover");
    let watch = TickWatch::start(console_paths(&c, &vm_uid));
    let before = watch.wait_tick_on(src, 20, BOOT);
    let token = wait_for("the guest's disk token", BOOT, || {
        let text = std::fs::read_to_string(c.hosts[src].agent.vm_dir(&vm_uid).join("console.log"))
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("IRONVISOR-DISK-WROTE ").map(str::to_owned))
            .ok_or_else(|| "not yet".to_owned())
    });
    let dom = domain(&c, "mover");

    // There, by kubectl apply, naming no host: the operator picks the other one.
    c.apply_migration("there", "mover", None, "");
    let m = c.wait_migration("there", "Completed", MIGRATE);
    let (a, b) = (&c.hosts[src], &c.hosts[dst]);
    assert_eq!(m["status"]["sourceNode"], a.agent.node.as_str());
    assert_eq!(m["status"]["targetNode"], b.agent.node.as_str());
    assert!(
        m["status"]["targetReason"]
            .as_str()
            .unwrap_or("")
            .contains("scored best"),
        "{}",
        m["status"]
    );
    let vm = c.sys.vm(&c.ns, "mover");
    assert_eq!(node_of(&vm), b.agent.node, "{}", describe(&vm));
    assert_eq!(
        vm["metadata"]["labels"]["ironvisor.io/node"],
        b.agent.node.as_str()
    );
    assert_lock_released(&c, "mover");
    assert!(
        domid(b.libvirtd.uri(), &dom).is_some(),
        "the guest runs on the target"
    );
    assert!(
        domid(a.libvirtd.uri(), &dom).is_none(),
        "and no longer on the source"
    );
    let after = watch.wait_tick_on(dst, before, MIGRATE);
    let sw = switch_over(&watch.ticks(), src, dst).expect("ticks on both hosts");
    assert!(
        sw.first_target > sw.last_source && sw.first_target <= sw.last_source + 3,
        "the counter continues on the target (same boot): {sw:?}"
    );
    assert!(after > before);
    let qemu_downtime = m["status"]["target"]["downtimeMilliseconds"].as_u64();
    eprintln!(
        "there: host-side gap {} ms, QEMU's downtime {qemu_downtime:?} ms, job {} ms",
        sw.gap.as_millis(),
        m["status"]["source"]["elapsedMilliseconds"]
    );
    let qemu_downtime = wait_for(
        "QEMU's downtime on the migration",
        Duration::from_secs(30),
        || {
            c.migration("there")
                .and_then(|m| m["status"]["target"]["downtimeMilliseconds"].as_u64())
                .ok_or_else(|| "not yet".to_owned())
        },
    );
    // The guest was seen paused at least as long as QEMU paused it (less the 1 ms polling
    // and the time its last line took to leave), never a fraction of it.
    assert!(
        sw.gap.as_millis() as u64 + 20 >= qemu_downtime,
        "host-side gap {} ms is shorter than QEMU's downtime {qemu_downtime} ms",
        sw.gap.as_millis()
    );
    let target_disk = b.agent.vm_dir(&vm_uid).join("disk-data.qcow2");
    assert_eq!(
        disk_token(&target_disk).as_deref(),
        Some(token.as_str()),
        "the disk's data came along"
    );
    wait_for("the source's directory to be removed", MIGRATE, || {
        if a.agent.vm_dir(&vm_uid).exists() {
            Err("still there".to_owned())
        } else {
            Ok(())
        }
    });
    let events = c.sys.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &c.ns,
        "--field-selector",
        "involvedObject.name=mover",
    ]);
    assert!(events.contains("Migrated"), "{events}");

    // And back with `ivctl migrate --to HOST --wait`: it returns once QEMU completed and
    // the VM's node moved, with the operator's summary.
    let out = c.ivctl(&["migrate", "mover", "--to", &a.agent.node, "--wait"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "ivctl migrate: {stdout}{stderr}");
    let created = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("virtualmachinemigration.ironvisor.io/")?
                .strip_suffix(" created")
        })
        .unwrap_or_else(|| panic!("no migration named in {stdout}"))
        .to_owned();
    assert!(created.starts_with("mover-"), "{stdout}");
    assert!(
        stdout.contains(&format!("{created}: Completed")),
        "the summary names the migration and how it ended: {stdout}"
    );
    let m = c.migration(&created).expect("the migration ivctl created");
    assert_eq!(m["status"]["phase"], "Completed", "{}", m["status"]);
    assert_eq!(m["status"]["targetNode"], a.agent.node.as_str());
    assert_eq!(node_of(&c.sys.vm(&c.ns, "mover")), a.agent.node);
    assert_lock_released(&c, "mover");
    watch.wait_tick_on(src, after, MIGRATE);
    let back = switch_over(&watch.ticks(), dst, src).expect("ticks back on the source");
    assert!(
        back.first_target > back.last_source && back.first_target <= back.last_source + 3,
        "{back:?}"
    );
    assert_eq!(
        watch.boots().values().sum::<usize>(),
        1,
        "one boot banner: the first boot's, on the first host ({:?})",
        watch.boots()
    );
    let vm = c.sys.wait_phase(&c.ns, "mover", "Running", BOOT);
    assert_eq!(
        vm["status"]["restartCount"].as_i64().unwrap_or(0),
        0,
        "{}",
        describe(&vm)
    );
}

/// Wait until the source agent reports QEMU's job copying (the migration is slowed to
/// 1 MiB/s, so a 128 MiB guest stays in this state for minutes).
fn wait_copying(c: &Cluster, name: &str) {
    wait_for(&format!("migration {name} to copy"), MIGRATE, || {
        let m = c.migration(name).ok_or("gone")?;
        let p = &m["status"]["source"]["progress"];
        if m["status"]["phase"] == "Migrating" && p["memoryTotalBytes"].as_u64().unwrap_or(0) > 0 {
            Ok(())
        } else {
            Err(m["status"].to_string())
        }
    });
}

/// Delete (= cancel) a migration in the middle of QEMU's copy: the source agent aborts the
/// job, the finalizer goes, the VM keeps running where it was (same domain id, counter
/// going on, disk intact), and what the target prepared is removed.
#[test]
fn deleting_a_migration_mid_copy_cancels_it_and_the_vm_runs_on_where_it_was() {
    let c = Cluster::start("mic", 2, "{virtualMachines: 2, vcpus: 2, memory: 256Mi}");
    let (vm_uid, src, dst) = running_vm(&c, "stay");
    let watch = TickWatch::start(console_paths(&c, &vm_uid));
    watch.wait_tick_on(src, 20, BOOT);
    let dom = domain(&c, "stay");
    let (a, b) = (&c.hosts[src], &c.hosts[dst]);
    let id = domid(a.libvirtd.uri(), &dom).expect("running");
    c.apply_migration("slow", "stay", None, "  bandwidthMibPerSecond: 1\n");
    wait_copying(&c, "slow");
    assert!(
        b.agent.vm_dir(&vm_uid).exists(),
        "the target prepared the VM's directory"
    );
    c.sys
        .kubectl_ok(&["delete", "vmim", "slow", "-n", &c.ns, "--wait=false"]);
    wait_for("the cancelled migration to go", MIGRATE, || {
        match c.migration("slow") {
            None => Ok(()),
            Some(m) => Err(m["status"].to_string()),
        }
    });
    let vm = c.sys.vm(&c.ns, "stay");
    assert_eq!(node_of(&vm), a.agent.node, "{}", describe(&vm));
    assert_lock_released(&c, "stay");
    assert_eq!(
        domid(a.libvirtd.uri(), &dom),
        Some(id),
        "the same guest runs on"
    );
    assert!(
        domid(b.libvirtd.uri(), &dom).is_none(),
        "nothing runs on the target"
    );
    let now = watch.ticks().iter().map(|t| t.value).max().unwrap_or(0);
    watch.wait_tick_on(src, now, BOOT);
    let events = c.sys.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &c.ns,
        "--field-selector",
        "involvedObject.name=stay",
    ]);
    assert!(events.contains("MigrationCancelled"), "{events}");
    wait_for(
        "the target's prepared directory to be removed",
        MIGRATE,
        || {
            if b.agent.vm_dir(&vm_uid).exists() {
                Err("still there".to_owned())
            } else {
                Ok(())
            }
        },
    );
    assert!(
        a.agent.vm_dir(&vm_uid).join("disk-data.qcow2").exists(),
        "the source's disk stays"
    );
}

/// The target's QEMU killed in the middle of the copy (the target host dying): the migration
/// fails with libvirt's own message, the VM runs on on its source with its disk intact, and
/// a retry completes.
#[test]
fn a_target_dying_mid_copy_fails_the_migration_and_a_retry_succeeds() {
    let c = Cluster::start("mik", 2, "{virtualMachines: 2, vcpus: 2, memory: 256Mi}");
    let (vm_uid, src, dst) = running_vm(&c, "phoenix");
    let watch = TickWatch::start(console_paths(&c, &vm_uid));
    let before = watch.wait_tick_on(src, 20, BOOT);
    let dom = domain(&c, "phoenix");
    let (a, b) = (&c.hosts[src], &c.hosts[dst]);
    let id = domid(a.libvirtd.uri(), &dom).expect("running");
    c.apply_migration("doomed", "phoenix", None, "  bandwidthMibPerSecond: 1\n");
    wait_copying(&c, "doomed");
    let pidfile = b.libvirtd.dir().join("run/qemu").join(format!("{dom}.pid"));
    let pid = std::fs::read_to_string(&pidfile).expect("the incoming QEMU's pid file");
    let killed = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let m = c.wait_migration("doomed", "Failed", MIGRATE);
    let why = m["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(why.contains("runs on its source"), "{why}");
    assert!(
        m["status"]["source"]["message"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "libvirt's message: {}",
        m["status"]
    );
    let vm = c.sys.vm(&c.ns, "phoenix");
    assert_eq!(node_of(&vm), a.agent.node, "{}", describe(&vm));
    assert_lock_released(&c, "phoenix");
    assert_eq!(
        domid(a.libvirtd.uri(), &dom),
        Some(id),
        "the same guest runs on"
    );
    let now = watch.ticks().iter().map(|t| t.value).max().unwrap_or(0);
    watch.wait_tick_on(src, now, BOOT);

    c.apply_migration("retry", "phoenix", None, "");
    c.wait_migration("retry", "Completed", MIGRATE);
    assert_eq!(node_of(&c.sys.vm(&c.ns, "phoenix")), b.agent.node);
    let sw = {
        watch.wait_tick_on(dst, before, MIGRATE);
        switch_over(&watch.ticks(), src, dst).expect("ticks on both")
    };
    assert!(
        sw.first_target > sw.last_source && sw.first_target <= sw.last_source + 3,
        "{sw:?}"
    );
}

/// The opened user data of the seed copy `name` in `ironvisor-seeds`, with the seed key in
/// `agent`'s state directory (`None`: no such copy, or not sealed to that host).
fn opened_copy(c: &Cluster, name: &str, agent: &ironvisor_tests::system::Agent) -> Option<String> {
    use base64::Engine as _;
    let out = c.sys.kubectl(&[
        "get",
        "secret",
        name,
        "-n",
        "ironvisor-seeds",
        "-o",
        "go-template={{.data.userData}}",
    ]);
    if !out.status.success() {
        return None;
    }
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(out.stdout.trim_ascii())
        .ok()?;
    let raw: [u8; 32] = std::fs::read(agent.state_dir.join("seed-key"))
        .ok()?
        .try_into()
        .ok()?;
    let opened = crypto_box::SecretKey::from_bytes(raw)
        .unseal(&sealed)
        .ok()?;
    Some(String::from_utf8_lossy(&opened).into_owned())
}

/// A VM whose cloud-init user data comes from a Secret migrates live: the operator seals an
/// incoming copy to the target's key, the target's agent writes the seed ISO before the copy
/// starts, the guest keeps running (same boot), and afterwards the placed copy is sealed to
/// the new host and the incoming one is gone.
#[test]
fn a_vm_with_a_cloud_init_seed_migrates_live_and_its_seed_is_on_the_target() {
    let c = Cluster::start("mis", 2, "{virtualMachines: 1, vcpus: 1, memory: 96Mi}");
    let marker = format!("seed-marker-{}", std::process::id());
    c.sys.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: init, namespace: {}}}\n\
         stringData:\n  userdata: \"#cloud-config\\nmarker: {marker}\\n\"\n",
        c.ns
    ));
    c.apply_diskless_vm(
        "seeded",
        "96Mi",
        "ironvisor.counter",
        "  cloudInit:\n    userDataSecretRef: {name: init}\n",
    );
    let vm = c.sys.wait_phase(&c.ns, "seeded", "Running", BOOT);
    let vm_uid = uid(&vm);
    let src = c
        .hosts
        .iter()
        .position(|h| h.agent.node == node_of(&vm))
        .expect("a test host");
    let (a, b) = (&c.hosts[src], &c.hosts[1 - src]);
    let watch = TickWatch::start(console_paths(&c, &vm_uid));
    let before = watch.wait_tick_on(src, 20, BOOT);
    let console =
        std::fs::read_to_string(a.agent.vm_dir(&vm_uid).join("console.log")).unwrap_or_default();
    assert!(
        console.contains(&format!("marker: {marker}")),
        "the guest read its seed on the source: {console}"
    );

    c.apply_migration("seeded-away", "seeded", None, "");
    c.wait_migration("seeded-away", "Completed", MIGRATE);
    let vm = c.sys.vm(&c.ns, "seeded");
    assert_eq!(node_of(&vm), b.agent.node, "{}", describe(&vm));
    let seed = std::fs::read(b.agent.vm_dir(&vm_uid).join("seed.iso"))
        .expect("the seed ISO exists on the target");
    let wanted = format!("marker: {marker}");
    assert!(
        seed.windows(wanted.len()).any(|w| w == wanted.as_bytes()),
        "the target's seed holds the user data"
    );
    watch.wait_tick_on(1 - src, before, MIGRATE);
    let sw = switch_over(&watch.ticks(), src, 1 - src).expect("ticks on both hosts");
    assert!(
        sw.first_target > sw.last_source && sw.first_target <= sw.last_source + 3,
        "the counter continues on the target (same boot): {sw:?}"
    );
    assert_eq!(
        watch.boots().values().sum::<usize>(),
        1,
        "{:?}",
        watch.boots()
    );
    let placed = format!("ironvisor-seed-{vm_uid}");
    wait_for("the placed copy sealed to the target", MIGRATE, || {
        opened_copy(&c, &placed, &b.agent)
            .filter(|u| u.contains(&marker))
            .ok_or_else(|| "not yet".to_owned())
    });
    wait_for("the incoming copy removed", MIGRATE, || {
        match c.sys.get(
            "secret",
            Some("ironvisor-seeds"),
            &format!("{placed}-incoming"),
        ) {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    });
    assert_eq!(
        c.sys.wait_phase(&c.ns, "seeded", "Running", BOOT)["status"]["restartCount"]
            .as_i64()
            .unwrap_or(0),
        0
    );
}
