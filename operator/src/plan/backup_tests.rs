//! A VM whose disks are restored from a backup, through whole passes: placed only on a host
//! whose agent reports the backup's location available, pending with the reason otherwise,
//! and placed once the location (or the backup) shows up.

use ironvisor_crds::backup::{
    BackupLocation, BackupLocationSpec, BackupLocationStatus, LocationOnHost, VirtualMachineBackup,
    VirtualMachineBackupSpec,
};
use ironvisor_crds::common::condition_status;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use pretty_assertions::assert_eq;

use crate::index::Index;
use crate::plan::tests::{cluster, key, limits, run, vm};

fn backup(name: &str, location: &str) -> VirtualMachineBackup {
    let mut b = VirtualMachineBackup::new(
        name,
        VirtualMachineBackupSpec {
            vm_name: Some("web".into()),
            snapshot_name: None,
            location: location.into(),
        },
    );
    b.metadata.namespace = Some("fin".into());
    b
}

fn location(name: &str, available_on: &[&str]) -> BackupLocation {
    let mut l = BackupLocation::new(
        name,
        BackupLocationSpec {
            path: "/mnt/backups".into(),
            nfs: None,
            bandwidth_limit: None,
        },
    );
    l.status = Some(BackupLocationStatus {
        hosts: available_on
            .iter()
            .map(|n| LocationOnHost {
                node: (*n).into(),
                available: true,
                reason: "Available".into(),
                message: String::new(),
                free_bytes: None,
                last_check_time: Time(Default::default()),
            })
            .collect(),
    });
    l
}

fn restore_vm(ix: &mut Index, name: &str, from: &str) {
    let mut e = vm("fin", name, 10, 1, 1);
    e.request.restores_from.insert(from.into());
    ix.apply_vm_entry(e);
}

#[test]
fn a_vm_restored_from_a_backup_goes_to_the_host_that_mounts_its_location() {
    // h1 is emptier (spread would pick it) but only h2 reports the location.
    let mut ix = cluster(limits(None, None), &[("h1", 64, 64), ("h2", 8, 8)]);
    ix.apply_backup(&backup("nightly", "nfs"));
    ix.apply_location(&location("nfs", &["h2"]));
    restore_vm(&mut ix, "copy", "nightly");
    run(&mut ix, 1);
    let e = ix.vm(&key("fin", "copy")).unwrap();
    assert_eq!(e.status_node.as_deref(), Some("h2"));
}

#[test]
fn with_no_host_mounting_it_the_vm_waits_unschedulable_and_is_placed_once_one_does() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8), ("h2", 8, 8)]);
    ix.apply_backup(&backup("nightly", "nfs"));
    ix.apply_location(&location("nfs", &[]));
    restore_vm(&mut ix, "copy", "nightly");
    run(&mut ix, 1);
    let c = ix
        .vm(&key("fin", "copy"))
        .unwrap()
        .scheduled
        .clone()
        .unwrap();
    assert_eq!(c.status, condition_status::FALSE);
    assert_eq!(c.reason, "Unschedulable");
    assert_eq!(
        c.message,
        "0/2 hosts available: 2 backup location not available (see the BackupLocation's \
         status.hosts)"
    );
    ix.apply_location(&location("nfs", &["h1"]));
    run(&mut ix, 2);
    let e = ix.vm(&key("fin", "copy")).unwrap();
    assert_eq!(e.status_node.as_deref(), Some("h1"));
}

#[test]
fn a_backup_the_operator_does_not_know_places_the_vm_nowhere_and_says_so() {
    let mut ix = cluster(limits(None, None), &[("h1", 8, 8)]);
    ix.apply_location(&location("nfs", &["h1"]));
    restore_vm(&mut ix, "copy", "missing");
    run(&mut ix, 1);
    let c = ix
        .vm(&key("fin", "copy"))
        .unwrap()
        .scheduled
        .clone()
        .unwrap();
    assert_eq!(
        c.message,
        "0/1 hosts available: 1 backup to restore from not found in the VM's namespace \
         (kubectl get vmbackup)"
    );
    ix.apply_backup(&backup("missing", "nfs"));
    run(&mut ix, 2);
    assert_eq!(
        ix.vm(&key("fin", "copy")).unwrap().status_node.as_deref(),
        Some("h1")
    );
}
