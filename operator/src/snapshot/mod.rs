//! Snapshots and restores in the control plane: what snapshots count in the tenant's
//! quota, and handing snapshots and restores to the VM's host under the VM's lock.
//!
//! [`quota`] is pure; [`controller`] and [`restore`] talk to the API and never touch disks.

pub mod controller;
pub mod owner;
pub mod quota;
pub mod restore;
