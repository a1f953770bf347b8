//! Snapshots through `kubectl apply` on a real guest: the local control plane, the operator
//! and an agent on `qemu:///system` run as processes (the tiny guest from
//! `hack/build-guest.sh`, TCG). The guest's writes to its data disk go through QEMU's own
//! block layer (HMP `qemu-io` on the disk's device); the data is checked with `qemu-io` on
//! the files once the guest is halted.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ironvisor_tests::backup_hosts::{metric_value, metrics};
use ironvisor_tests::system::{
    System, guest_cache, require_libvirtd, tiny_guest, tiny_vm_manifest, uid, wait_for,
};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(90);

fn snapshot(ns: &str, name: &str, vm: &str) -> String {
    format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachineSnapshot\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec: {{vmName: {vm}}}\n"
    )
}

fn wait_snapshot(sys: &System, ns: &str, name: &str, phase: &str) -> Value {
    wait_for(&format!("snapshot {name} {phase}"), QUICK, || {
        let s = sys
            .get("virtualmachinesnapshot", Some(ns), name)
            .ok_or("not found")?;
        if s["status"]["phase"] == phase {
            Ok(s)
        } else {
            Err(s["status"].to_string())
        }
    })
}

/// The domain of a VM, by the uid in its definition.
fn domain_of(uri: &str, vm_uid: &str) -> String {
    let out = Command::new("virsh")
        .args(["-c", uri, "list", "--name"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|d| !d.is_empty())
        .find(|d| {
            let xml = Command::new("virsh")
                .args(["-c", uri, "dumpxml", d])
                .output()
                .unwrap();
            String::from_utf8_lossy(&xml.stdout).contains(vm_uid)
        })
        .expect("the VM's domain runs")
        .to_owned()
}

/// A write by the guest, through QEMU, to whatever layer its first disk writes to now.
fn guest_write(uri: &str, domain: &str, pattern: u8) {
    let cmd = format!(
        "qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P {pattern:#x} 0 64k\""
    );
    let out = Command::new("virsh")
        .args(["-c", uri, "qemu-monitor-command", "--hmp", domain, &cmd])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "{out:?}"
    );
}

fn layers(vm_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(vm_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("disk-") && n.ends_with(".qcow2"))
        .collect();
    v.sort();
    v
}

/// Snapshot a running guest, refuse one over quota, delete the snapshot: its layer is
/// merged back online, the chain is one layer again and the data written since is intact.
#[test]
fn a_running_vm_is_snapshotted_refused_over_quota_and_merged_back_on_delete() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let uri = "qemu:///system";
    let agent = sys.agent(&format!("snap-{}", std::process::id()), uri, &images);
    let ns = format!("e2esnap{}", std::process::id());
    // The VM's 64Mi disk and one snapshot of it fit; a second snapshot does not.
    sys.tenant(&ns, &ns, "{storage: 128Mi}");
    let disks = "  disks:\n  - name: data\n    size: 64Mi\n    source: {blank: {}}\n";
    sys.apply(&tiny_vm_manifest(&ns, "web", &images, disks));
    let vm = sys.wait_phase(&ns, "web", "Running", BOOT);
    let vm_dir = agent.vm_dir(&uid(&vm));
    let domain = domain_of(uri, &uid(&vm));
    guest_write(uri, &domain, 0x41);

    sys.apply(&snapshot(&ns, "before", "web"));
    let s = wait_snapshot(&sys, &ns, "before", "Succeeded");
    assert_eq!(s["status"]["readyToUse"], true, "{s}");
    assert_eq!(s["status"]["consistency"], "Crash", "{s}");
    assert_eq!(s["status"]["size"], "64Mi", "{s}");
    assert_eq!(s["status"]["disks"][0]["layer"], "base", "{s}");
    assert_eq!(layers(&vm_dir).len(), 2, "{:?}", layers(&vm_dir));
    let table = sys.kubectl_ok(&["get", "vmsnap", "-n", &ns]);
    assert!(table.contains("VM") && table.contains("READY"), "{table}");
    // The lock is given back once the snapshot is taken.
    wait_for("the VM's lock released", QUICK, || {
        let vm = sys.vm(&ns, "web");
        vm["status"]["operation"]
            .is_null()
            .then_some(())
            .ok_or(vm["status"]["operation"].to_string())
    });
    guest_write(uri, &domain, 0x42);

    sys.apply(&snapshot(&ns, "too-many", "web"));
    let refused = wait_snapshot(&sys, &ns, "too-many", "Failed");
    let ready = &refused["status"]["conditions"][0];
    assert_eq!(ready["reason"], "QuotaExceeded", "{refused}");
    assert_eq!(
        ready["message"],
        format!(
            "exceeded quota: {ns}-quota, requested: storage=64Mi, used: storage=128Mi, \
             limited: storage=128Mi (snapshot layers count the declared size of every disk \
             of the VM, as disks do)"
        )
    );
    sys.kubectl_ok(&["delete", "vmsnap", "too-many", "-n", &ns, "--timeout=60s"]);

    sys.kubectl_ok(&["delete", "vmsnap", "before", "-n", &ns, "--timeout=90s"]);
    assert_eq!(layers(&vm_dir), ["disk-data.qcow2"]);
    // The agent counted the snapshot (its consistency, size and duration) and the merge.
    let text = metrics(&agent);
    for series in [
        "ironvisor_agent_snapshots_total{consistency=\"Crash\",result=\"ok\"}",
        "ironvisor_agent_snapshot_duration_seconds_count{result=\"ok\"}",
        "ironvisor_agent_snapshot_size_bytes_count",
        "ironvisor_agent_snapshot_merges_total{result=\"ok\"}",
        "ironvisor_agent_snapshot_merge_duration_seconds_count",
    ] {
        let v = metric_value(&text, series).unwrap_or(0.0);
        assert!(v >= 1.0, "{series} is {v}:\n{text}");
    }
    let failed = "ironvisor_agent_snapshots_total{consistency=\"none\",result=\"error\"}";
    assert_eq!(metric_value(&text, failed), Some(0.0), "{text}");
    sys.kubectl_ok(&[
        "patch",
        "vm",
        "web",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"runStrategy":"Halted"}}"#,
    ]);
    wait_for("the guest halted", BOOT, || {
        let st = Command::new("virsh")
            .args(["-c", uri, "domstate", &domain])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&st.stdout).into_owned();
        if s.contains("shut off") {
            Ok(())
        } else {
            Err(s)
        }
    });
    let read = Command::new("qemu-io")
        .args(["-r", "-c", "read -P 0x42 0 64k"])
        .arg(vm_dir.join("disk-data.qcow2"))
        .output()
        .unwrap();
    assert!(read.status.success(), "{read:?}");
}

fn restore(ns: &str, name: &str, vm: &str, snapshot: &str, stop: bool) -> String {
    format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachineRestore\n\
         metadata: {{name: {name}, namespace: {ns}}}\n\
         spec: {{vmName: {vm}, snapshotName: {snapshot}, stopVM: {stop}}}\n"
    )
}

fn wait_restore(sys: &System, ns: &str, name: &str, phase: &str) -> Value {
    wait_for(&format!("restore {name} {phase}"), BOOT, || {
        let s = sys
            .get("virtualmachinerestore", Some(ns), name)
            .ok_or("not found")?;
        if s["status"]["phase"] == phase {
            Ok(s)
        } else {
            Err(s["status"].to_string())
        }
    })
}

/// A restore of a running VM is refused unless asked to stop it; asked, the guest is
/// powered off, its disk returns to the snapshot, and it runs again on the restored disk.
#[test]
fn a_restore_returns_the_disk_of_a_running_vm_to_its_snapshot() {
    require_libvirtd();
    let images = tiny_guest(&guest_cache());
    let sys = System::start();
    let (_operator, _) = sys.operator();
    let uri = "qemu:///system";
    let agent = sys.agent(&format!("rst-{}", std::process::id()), uri, &images);
    let ns = format!("e2erst{}", std::process::id());
    sys.tenant(&ns, &ns, "{storage: 1Gi}");
    let disks = "  disks:\n  - name: data\n    size: 64Mi\n    source: {blank: {}}\n";
    sys.apply(&tiny_vm_manifest(&ns, "db", &images, disks));
    let vm = sys.wait_phase(&ns, "db", "Running", BOOT);
    let vm_dir = agent.vm_dir(&uid(&vm));
    let domain = domain_of(uri, &uid(&vm));
    guest_write(uri, &domain, 0x41);
    sys.apply(&snapshot(&ns, "good", "db"));
    wait_snapshot(&sys, &ns, "good", "Succeeded");
    wait_for("the VM's lock released", QUICK, || {
        let vm = sys.vm(&ns, "db");
        vm["status"]["operation"]
            .is_null()
            .then_some(())
            .ok_or(String::new())
    });
    guest_write(uri, &domain, 0x42);

    sys.apply(&restore(&ns, "refused", "db", "good", false));
    let refused = wait_restore(&sys, &ns, "refused", "Failed");
    let ready = &refused["status"]["conditions"][0];
    assert_eq!(ready["reason"], "VMRunning", "{refused}");
    assert!(
        ready["message"].as_str().unwrap().contains("stopVM: true"),
        "{refused}"
    );

    sys.apply(&restore(&ns, "back", "db", "good", true));
    wait_restore(&sys, &ns, "back", "Succeeded");
    let text = metrics(&agent);
    for series in [
        "ironvisor_agent_snapshot_restores_total{result=\"ok\"}",
        "ironvisor_agent_snapshot_restore_duration_seconds_count",
    ] {
        let v = metric_value(&text, series).unwrap_or(0.0);
        assert!(v >= 1.0, "{series} is {v}:\n{text}");
    }
    let active = std::fs::read_to_string(vm_dir.join("active-layer")).unwrap();
    let active = active.trim().to_owned();
    assert!(active.starts_with("r-"), "{active}");
    // The guest runs again (runStrategy Always), on the restored layer.
    wait_for("the guest running on the restored layer", BOOT, || {
        let out = Command::new("virsh")
            .args(["-c", uri, "domblklist", &domain])
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&out.stdout).into_owned();
        let running = Command::new("virsh")
            .args(["-c", uri, "domstate", &domain])
            .output()
            .unwrap();
        let state = String::from_utf8_lossy(&running.stdout).into_owned();
        (list.contains(&format!("disk-data.{active}.qcow2")) && state.contains("running"))
            .then_some(())
            .ok_or(format!("{state} {list}"))
    });
    // The overwritten layer is gone; the snapshot's and the restored one remain.
    assert_eq!(
        layers(&vm_dir),
        [
            "disk-data.qcow2".to_owned(),
            format!("disk-data.{active}.qcow2")
        ]
    );
    sys.kubectl_ok(&[
        "patch",
        "vm",
        "db",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"runStrategy":"Halted"}}"#,
    ]);
    sys.wait_phase(&ns, "db", "Stopped", BOOT);
    let read = Command::new("qemu-io")
        .args(["-r", "-c", "read -P 0x41 0 64k"])
        .arg(vm_dir.join(format!("disk-data.{active}.qcow2")))
        .output()
        .unwrap();
    assert!(read.status.success(), "{read:?}");
}
