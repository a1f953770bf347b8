//! A resize of a running VM respects the VM's operation lock: while a migration (or a
//! snapshot, a restore, a backup) holds the VM, the grown size is not admitted; it is once
//! the lock is free.

use pretty_assertions::assert_eq;

use super::tests::{cluster, key, limits, run, vm};
use super::*;
use ironvisor_crds::vm::{OperationKind, VmOperation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn set(ix: &mut Index, vcpus: Option<i128>, op: Option<OperationKind>) {
    let mut e = ix.vm(&key("fin", "a")).unwrap().clone();
    if let (Some(v), Ok(d)) = (vcpus, e.demand.as_mut()) {
        d.vcpus = v;
    }
    e.operation = op.map(|kind| VmOperation {
        kind,
        name: "a-drain-x".into(),
        uid: "u-m".into(),
        since: Time(Timestamp::UNIX_EPOCH),
    });
    ix.apply_vm_entry(e);
}

#[test]
fn a_resize_waits_for_the_operation_holding_the_vm_then_is_admitted() {
    let mut ix = cluster(limits(None, Some(8)), &[("h1", 64, 64)]);
    ix.apply_vm_entry(vm("fin", "a", 0, 2, 1));
    run(&mut ix, 1);
    set(&mut ix, Some(6), Some(OperationKind::Migration));
    let p = run(&mut ix, 2);
    let w = &p.vms[0];
    assert_eq!(
        w.status.admitted.map(|a| a.vcpus),
        Some(2),
        "the admitted size stays"
    );
    assert!(!w.reserves);
    let a = w.announce.as_ref().expect("announced");
    assert_eq!(a.reason, "ResizeWaiting");
    assert!(
        a.note.contains("Migration a-drain-x holds the VM"),
        "{}",
        a.note
    );
    assert!(
        w.status.scheduled.message.contains("waits"),
        "{}",
        w.status.scheduled.message
    );
    // The lock released: the resize is admitted.
    set(&mut ix, None, None);
    let p = run(&mut ix, 3);
    assert_eq!(p.vms[0].status.admitted.map(|a| a.vcpus), Some(6));
    assert_eq!(
        p.vms[0].announce.as_ref().map(|a| a.reason),
        Some("Resized")
    );
}
