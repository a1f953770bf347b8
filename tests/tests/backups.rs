//! Backups through `kubectl apply` and `ivctl` on real guests: two hosts (two agents with
//! their own state directories on `qemu:///system`) share a directory that stands in for an
//! NFS export. A backup is written on one host and restored on the other with the same data;
//! a tampered image is refused by its checksum; a schedule makes snapshots and prunes them.

use std::process::Command;
use std::time::Duration;

use ironvisor_tests::backup_hosts::{
    QUICK, TwoHosts, URI, backup_dir, events, metric_value, metrics,
};
use ironvisor_tests::guest_disk::{guest_write_at, layers, reads, sha256};
use ironvisor_tests::system::{uid, wait_for};
use serde_json::Value;

/// A marker written before the backup on host A reads back on host B after a restore from
/// the backup; what was written after the backup does not. The images stand alone and their
/// checksums are recorded; the snapshot taken for the backup is merged away afterwards.
#[test]
fn a_backup_taken_on_one_host_restores_on_another_with_the_same_data() {
    let h = TwoHosts::start("bkx", "{storage: 2Gi}");
    let (vm, domain) = h.vm("web", &h.a.node, "64Mi");
    let vm_dir = h.a.vm_dir(&uid(&vm));
    guest_write_at(URI, &domain, 0x41, "0", "64k");

    let out = h.ivctl(&[
        "backup",
        "web",
        "--location",
        "share",
        "--name",
        "nightly",
        "--wait",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = h.wait_backup("nightly", "Succeeded", QUICK);
    let st = &b["status"];
    assert_eq!(st["nodeName"], h.a.node.as_str(), "{st}");
    assert_eq!(st["vmName"], "web");
    assert_eq!(st["size"], "64Mi", "{st}");
    assert_eq!(st["consistency"], "Crash", "{st}");
    let disk = &st["disks"][0];
    assert_eq!(disk["name"], "data");
    let dir = backup_dir(&h.share, &b);
    let image = dir.join(disk["file"].as_str().unwrap());
    assert_eq!(sha256(&image), disk["sha256"].as_str().unwrap());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["vmSpec"]["disks"][0]["name"], "data");
    assert_eq!(manifest["disks"][0]["sha256"], disk["sha256"]);
    let names: Vec<String> = std::fs::read_dir(h.share.join("ironvisor-backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".probe-"))
        .collect();
    assert_eq!(
        names,
        [b["metadata"]["uid"].as_str().unwrap()],
        "no staging left"
    );
    // The snapshot taken for the backup goes, its layer merged back.
    wait_for("the backup's snapshot merged away", QUICK, || {
        let l = layers(&vm_dir);
        (l == ["disk-data.qcow2"])
            .then_some(())
            .ok_or(format!("{l:?}"))
    });
    guest_write_at(URI, &domain, 0x42, "0", "64k");

    let out = h.ivctl(&[
        "restore",
        "web-copy",
        "--from-backup",
        "nightly",
        "--node",
        &h.b.node,
        "--wait",
        "--timeout",
        "3m",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = h.sys.vm(&h.ns, "web-copy");
    assert_eq!(copy["status"]["nodeName"], h.b.node.as_str());
    h.halt("web-copy");
    let restored = h.b.vm_dir(&uid(&copy)).join("disk-data.qcow2");
    assert!(
        reads(&restored, 0x41, "0", "64k"),
        "the marker from before the backup"
    );
    assert!(!reads(&restored, 0x42, "0", "64k"));
    assert!(events(&h.sys, &h.ns).contains("RestoredFromBackup"));
    assert!(events(&h.sys, &h.ns).contains("BackupSucceeded"));
    assert!(
        metrics(&h.a).contains("ironvisor_agent_backups_total{result=\"succeeded\"} 1"),
        "{}",
        metrics(&h.a)
    );
    assert!(metrics(&h.b).contains("ironvisor_agent_backup_restores_total{result=\"restored\"} 1"));

    // Deleting the backup removes its files from the location.
    h.sys.kubectl_ok(&[
        "delete",
        "vmbackup",
        "nightly",
        "-n",
        &h.ns,
        "--timeout=60s",
    ]);
    assert!(!dir.exists());
}

/// An image changed in the location after the backup was written is refused: the VM that
/// names it gets no disk and does not start, an Event says why, and ivctl fails.
#[test]
fn a_tampered_backup_image_is_refused_by_its_checksum() {
    let h = TwoHosts::start("bkt", "{storage: 2Gi}");
    let (_vm, domain) = h.vm("db", &h.a.node, "64Mi");
    guest_write_at(URI, &domain, 0x41, "0", "64k");
    h.backup("before", "db", "share");
    let b = h.wait_backup("before", "Succeeded", QUICK);
    let image = backup_dir(&h.share, &b).join(b["status"]["disks"][0]["file"].as_str().unwrap());
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x66 0 4k"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let out = h.ivctl(&[
        "restore",
        "db-copy",
        "--from-backup",
        "before",
        "--node",
        &h.b.node,
        "--wait",
        "--timeout",
        "2m",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the checksum"), "{err}");
    let copy = h.sys.vm(&h.ns, "db-copy");
    assert!(!h.b.vm_dir(&uid(&copy)).join("disk-data.qcow2").exists());
    assert_ne!(copy["status"]["phase"], "Running");
    // At least once: every look at the VM before the spec changes refuses the copy again.
    let text = metrics(&h.b);
    let refused = metric_value(
        &text,
        "ironvisor_agent_backup_restores_total{result=\"checksum_mismatch\"}",
    );
    assert!(refused.is_some_and(|n| n >= 1.0), "{text}");
    let restored = metric_value(
        &text,
        "ironvisor_agent_backup_restores_total{result=\"restored\"}",
    );
    assert_eq!(restored, Some(0.0), "{text}");
}

/// A schedule every 5 seconds with keepLast 2 makes snapshots and prunes its own beyond
/// two; a snapshot a person made stays.
#[test]
fn a_schedule_makes_snapshots_and_prunes_only_its_own() {
    let h = TwoHosts::start("bks", "{storage: 4Gi}");
    let (vm, _domain) = h.vm("app", &h.a.node, "16Mi");
    let vm_dir = h.a.vm_dir(&uid(&vm));
    h.sys.apply(&format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachineSnapshot\n\
         metadata: {{name: mine, namespace: {}}}\nspec: {{vmName: app}}\n",
        h.ns
    ));
    h.sys.apply(&format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachineSchedule\n\
         metadata: {{name: often, namespace: {}}}\n\
         spec: {{vmName: app, schedule: '*/5 * * * * *', action: Snapshot, retention: {{keepLast: 2}}}}\n",
        h.ns
    ));
    let sched = wait_for(
        "the schedule pruned two of its own",
        Duration::from_secs(240),
        || {
            let s = h
                .sys
                .get("vmschedule", Some(&h.ns), "often")
                .ok_or("gone")?;
            let pruned = s["status"]["pruned"].as_u64().unwrap_or(0);
            (pruned >= 2)
                .then_some(s.clone())
                .ok_or(s["status"].to_string())
        },
    );
    assert_eq!(sched["status"]["conditions"][0]["reason"], "Scheduled");
    let uid_label = format!("ironvisor.io/schedule-uid={}", uid(&sched));
    h.sys.kubectl_ok(&[
        "patch",
        "vmschedule",
        "often",
        "-n",
        &h.ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    wait_for(
        "two of the schedule's snapshots kept, finished and merged",
        QUICK,
        || {
            let out = h
                .sys
                .kubectl_ok(&["get", "vmsnap", "-n", &h.ns, "-l", &uid_label, "-o", "json"]);
            let items: Value = serde_json::from_str(&out).unwrap();
            let items = items["items"].as_array().cloned().unwrap_or_default();
            let done = items
                .iter()
                .filter(|s| s["status"]["phase"] == "Succeeded")
                .count();
            (items.len() == 2 && done == 2)
                .then_some(())
                .ok_or(format!("{} made, {done} done", items.len()))
        },
    );
    assert!(
        h.sys.get("vmsnap", Some(&h.ns), "mine").is_some(),
        "a person's snapshot stays"
    );
    let sched = h.sys.get("vmschedule", Some(&h.ns), "often").unwrap();
    assert_eq!(sched["status"]["conditions"][0]["reason"], "Suspended");
    let ev = events(&h.sys, &h.ns);
    assert!(ev.contains("\"Made\"") && ev.contains("\"Pruned\""), "{ev}");
    // The VM's chain: its base, the layers of the three snapshots left, and the active one.
    wait_for("pruned snapshots merged away", QUICK, || {
        let l = layers(&vm_dir);
        (l.len() == 4).then_some(()).ok_or(format!("{l:?}"))
    });
}
