//! Disk snapshots of a VM: the layer tree model ([`chain`], pure), where layers live
//! ([`files`]), and carrying out snapshots ([`take`]) and merges ([`merge`]) on real files
//! and running domains.
//!
//! Disk-only: a snapshot holds what the disks held at one instant, never the guest's
//! memory. This module never deletes a layer on its own inference: the caller removes a
//! layer only once the API no longer names it.

pub mod chain;
pub mod clone;
pub mod controller;
pub mod domain_disks;
pub mod files;
pub mod found;
pub mod layer_lock;
pub mod merge;
pub mod metrics;
pub mod pins;
pub mod qemu_img;
pub mod restore;
pub mod restore_controller;
pub mod retained;
pub mod state;
pub mod take;
pub mod unfreeze;

/// Whether a restore holds the VM's operation lock (the VM controller then leaves the guest
/// off: its disks are being replaced).
pub fn restore_holds(vm: &ironvisor_crds::vm::VirtualMachine) -> bool {
    vm.status
        .as_ref()
        .and_then(|s| s.operation.as_ref())
        .is_some_and(|op| op.kind == ironvisor_crds::vm::OperationKind::Restore)
}
