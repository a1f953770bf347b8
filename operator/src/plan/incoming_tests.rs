//! Room on the target of a live migration is reserved during the copy.

use ironvisor_crds::migration::{MigrationPhase, VirtualMachineMigration};

use super::tests::{self, cluster, run, vm};
use super::*;
use crate::units::Limits;

fn migration(vm: &str, phase: MigrationPhase, target: &str) -> VirtualMachineMigration {
    let mut m: VirtualMachineMigration = serde_json::from_value(serde_json::json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachineMigration",
        "metadata": {"name": format!("move-{vm}"), "namespace": "fin"},
        "spec": {"vmName": vm},
    }))
    .unwrap();
    m.status = Some(ironvisor_crds::migration::VirtualMachineMigrationStatus {
        phase,
        target_node: Some(target.into()),
        ..Default::default()
    });
    m
}

#[test]
fn a_vm_migrating_to_a_host_holds_its_room_there_until_the_migration_ends() {
    let mut ix = cluster(Limits::default(), &[("h1", 4, 4), ("h2", 4, 4)]);
    // 'mover' (4 vCPUs) fills h1.
    ix.apply_vm_entry(vm("fin", "mover", 0, 4, 1));
    run(&mut ix, 1);
    assert_eq!(
        ix.vm(&tests::key("fin", "mover"))
            .unwrap()
            .status_node
            .as_deref(),
        Some("h1")
    );
    ix.apply_migration(&migration("mover", MigrationPhase::Migrating, "h2"));
    // A new VM finds no room: h1 holds 'mover', h2 holds its copy.
    ix.apply_vm_entry(vm("fin", "late", 2, 1, 1));
    let p = run(&mut ix, 3);
    assert!(p.placed.is_empty(), "{:?}", p.placed);
    assert_eq!(p.pending.get(REASON_UNSCHEDULABLE), Some(&1));
    // The quota counts the migrating VM once.
    assert_eq!(tests::used(&ix, "fin").vcpus, 4);
    // Cancelled: the room on h2 is free again.
    ix.apply_migration(&migration("mover", MigrationPhase::Cancelled, "h2"));
    let p = run(&mut ix, 4);
    assert_eq!(p.placed.len(), 1);
}
