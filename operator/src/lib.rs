//! Ironvisor's control plane: tenants, quotas in VM units, admission, placement, host failure.
//!
//! Pure decision logic (`units`, `quota`, `placement`, `hosts`, `index`, `plan`, `seed`) is kept apart
//! from the modules that talk to the API server (`controllers`, `leader`, `metrics`), so it is
//! tested without a cluster.
#![forbid(unsafe_code)]

pub mod audit;
pub mod backup;
pub mod console;
pub mod controllers;
pub mod desktops;
pub mod error;
pub mod hosts;
pub mod index;
pub mod leader;
pub mod maintenance;
pub mod metrics;
pub mod migration;
pub mod oplock;
pub mod placement;
pub mod plan;
pub mod preflight;
pub mod quota;
pub mod rebalance;
pub mod run;
pub mod seed;
pub mod snapshot;
pub mod status_write;
pub mod units;
pub mod usage;
