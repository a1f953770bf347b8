//! Backups and schedules in the control plane: handing backups to the VM's host under the
//! VM's lock (taking the snapshot a backup of a VM needs), counting their storage in the
//! tenant's quota, and following schedules with retention.
//!
//! [`plan`] is pure; [`controller`] and [`schedule`] talk to the API and never touch files.

pub mod controller;
pub mod metrics;
pub mod plan;
pub mod quota;
pub mod schedule;
