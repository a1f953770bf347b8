//! `ivctl host check`: qualifies a host for running Ironvisor (the hardware and OS checks
//! vendors sell as "hardware-tested stacks"), before or after it joins a cluster.
//!
//! Gathering ([`gather`], [`virsh`], [`domain_test`]) reads /proc, /sys, /dev and asks libvirt
//! through the `virsh` program, so the released `ivctl` never links libvirt; it never changes
//! the host (the domain test removes what it defined). Evaluation (`eval_*`) turns the gathered
//! [`facts`] into [`verdict`]s and is pure, so every verdict is unit-tested with synthetic facts.
//! [`evaluate`] lists them in the report's order, [`render`] prints the table and the JSON;
//! `cmd` glues it together.

pub mod args;
pub(crate) mod cmd;
pub mod domain_test;
pub mod eval_cpu;
pub mod eval_dirs;
pub mod eval_libvirt;
pub mod eval_platform;
pub mod evaluate;
pub mod facts;
pub mod gather;
pub mod gather_dirs;
pub mod render;
pub mod verdict;
pub mod virsh;
