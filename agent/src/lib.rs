//! The Ironvisor node agent as a library, so its pure parts and its libvirt parts are tested
//! on their own; `main.rs` only parses flags and wires them together.

pub mod backup;
pub mod console;
pub mod daemon;
pub mod domain_xml;
pub mod health;
pub mod host;
pub mod host_guard;
pub mod hypervisor;
pub mod lifecycle;
pub mod load;
pub mod metrics;
pub mod migration;
pub mod paths;
pub mod reconcile;
pub mod run_strategy;
pub mod seed;
pub mod seed_key;
pub mod snapshot;
pub mod storage;
pub mod utilization;
