//! A host's real load, as its agent measures it and writes it into the Hypervisor status:
//! the CPU time and memory of its domains over the last interval, per VM and in total, and
//! the kernel's pressure stall figures (PSI).
//!
//! Integers only (millicores, bytes, hundredths of a percent): the status stays compact and
//! an unchanged load writes the same bytes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most VMs listed in a host's load: the busiest first; the totals count every VM.
pub const MAX_LISTED_VMS: usize = 256;

/// The host's load over the last interval.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostLoad {
    /// When the interval ended.
    pub sampled_at: Option<Time>,
    /// Length of the interval, milliseconds.
    pub interval_milliseconds: u64,
    /// The host's CPU threads (the CPU percentages are of these).
    pub cpus: u32,
    /// CPU used by the host's domains, thousandths of a CPU (1000 = one CPU busy).
    pub cpu_millicores: u64,
    /// `cpuMillicores` over the host's CPUs, percent.
    pub cpu_percent: u32,
    /// Memory the host's domains hold (resident, or the balloon's size), bytes.
    pub memory_bytes: u64,
    /// `memoryBytes` over the host's memory, percent.
    pub memory_percent: u32,
    /// The kernel's pressure stall information, when the host has /proc/pressure. Hosts
    /// that share one kernel (test hosts in namespaces) report the same figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<Pressure>,
    /// Each running VM's share, busiest first (at most [`MAX_LISTED_VMS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<VmLoad>,
}

/// PSI averages over 10 seconds, hundredths of a percent of time some task stalled.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pressure {
    /// Waiting for a CPU.
    pub cpu_some_centi_percent: u32,
    /// Waiting for memory (reclaim, swap-in).
    pub memory_some_centi_percent: u32,
    /// Waiting for I/O.
    pub io_some_centi_percent: u32,
}

/// One VM's load over the interval.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmLoad {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name.
    pub name: String,
    /// CPU used, thousandths of a CPU.
    pub cpu_millicores: u64,
    /// Memory held, bytes.
    pub memory_bytes: u64,
}
