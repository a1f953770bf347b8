//! `ivctl import vmware SOURCE`: VMware VMs (OVF, OVA, VMX with VMDK disks) to Ironvisor
//! `VirtualMachine` manifests with qcow2 disks.
//!
//! Parsing (`ovf`, `vmx`, `vmdk`, `xml`, `model`), the advisor (`advisor` with its rules in
//! `advisor-rules.yaml`), the mapping (`manifest`) and the report are pure. I/O lives in
//! `bundle` (paths and checksums), `ova` (unpacking), `vmdk_check` (integrity walk),
//! `convert` (qemu-img, run inside `sandbox`), `qemu_view` (what QEMU would open) and `run` (the staging directory and the final rename). This module
//! tree must never talk to a cluster; the optional quota lookup is in `crate::cluster`.

pub mod advisor;
pub mod args;
pub mod bundle;
pub mod convert;
pub mod gunzip;
pub mod load;
pub mod manifest;
pub mod model;
pub mod netmap;
pub mod ova;
pub mod ovf;
pub mod plan;
pub mod qemu_view;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod tpm;
pub mod validate;
pub mod vapp;
pub mod vmdk;
pub mod vmdk_check;
pub mod vmx;
pub mod xml;
