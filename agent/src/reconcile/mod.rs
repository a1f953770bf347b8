//! Reconciling VirtualMachines: the host-side [`engine`] (libvirt, storage; no Kubernetes
//! client), the pure [`status`] builder, and the Kubernetes [`controller`] around them.

pub mod backoff;
mod clones;
pub mod controller;
mod converge;
pub mod engine;
pub mod events;
pub mod failure;
pub mod guard;
pub mod heartbeat;
pub mod image_failure;
pub mod leftovers;
pub mod malformed;
pub mod release;
pub mod seed_copy;
pub mod status;
