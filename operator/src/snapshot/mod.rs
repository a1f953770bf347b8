//! Snapshots in the control plane: what they count in the tenant's quota.
//!
//! Pure: the ledger is built by the caller from what the index knows.

pub mod controller;
pub mod quota;
