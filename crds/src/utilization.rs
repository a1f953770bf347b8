//! What VMs actually use, and what right-sizing makes of it.
//!
//! [`VmUtilization`] is written by the VM's agent into `status.utilization`: compact windows
//! (one [`UtilizationBucket`] per bucket width, an hour by default) of the guest's measured
//! CPU, memory and disk use, so the samples live durably in the API at one write per VM per
//! bucket. [`RightsizingReport`] is the operator's verdict per VM and per tenant in a
//! `UsageReport`: allocated vs used, idle and oversized VMs, recommended sizes and what each
//! recommendation saves per month.
//!
//! CPU use is in millicores (1000 = one vCPU busy all the time); sizes are in MiB.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most buckets a VM's status may hold (a week of hours is 168; the agent keeps fewer when
/// told to).
pub const MAX_BUCKETS: usize = 744;

/// A VM's measured use, aggregated by its agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmUtilization {
    /// Width of a bucket in seconds.
    #[schemars(range(min = 1))]
    pub bucket_seconds: i64,
    /// Closed buckets, oldest first. The bucket being filled is not here yet.
    #[serde(default)]
    #[schemars(length(max = 744))]
    pub buckets: Vec<UtilizationBucket>,
}

/// The guest's use during one bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UtilizationBucket {
    /// Start of the bucket.
    pub start: Time,
    /// Seconds of the bucket the guest was measured running (less than the width when it
    /// started, stopped or the agent restarted within it).
    #[schemars(range(min = 0))]
    pub seconds: i64,
    /// vCPUs the guest had.
    #[schemars(range(min = 0))]
    pub vcpus: i64,
    /// Average CPU use over the measured seconds, in millicores.
    #[schemars(range(min = 0))]
    pub cpu_avg_millicores: i64,
    /// Highest CPU use between two samples, in millicores.
    #[schemars(range(min = 0))]
    pub cpu_max_millicores: i64,
    /// Highest memory the guest itself reported in use (balloon driver: available minus
    /// unused), MiB; absent when the guest reports nothing.
    #[serde(
        default,
        rename = "guestMemoryUsedMiB",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub guest_memory_used_mib: Option<i64>,
    /// Highest resident memory of the guest's process on the host (balloon `rss`), MiB.
    #[serde(default, rename = "hostMemoryRssMiB")]
    #[schemars(range(min = 0))]
    pub host_memory_rss_mib: i64,
    /// Highest host storage allocated to the guest's disks (QEMU's block allocation), MiB.
    #[serde(default, rename = "diskAllocatedMiB")]
    #[schemars(range(min = 0))]
    pub disk_allocated_mib: i64,
}

/// How a VM came out of right-sizing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Verdict {
    /// Below the idle threshold for the whole window: halting it saves its compute.
    Idle,
    /// Uses clearly less than it holds: a smaller size is recommended.
    Oversized,
    /// Its size fits its use.
    RightSized,
    /// Not measured for enough of the window to say.
    Unknown,
}

impl Verdict {
    /// The verdict as a fixed lowercase word (metric labels, CSV).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Idle => "idle",
            Verdict::Oversized => "oversized",
            Verdict::RightSized => "right_sized",
            Verdict::Unknown => "unknown",
        }
    }

    /// Every verdict.
    pub const ALL: [Verdict; 4] = [
        Verdict::Idle,
        Verdict::Oversized,
        Verdict::RightSized,
        Verdict::Unknown,
    ];
}

/// A size: vCPUs and memory.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Size {
    /// vCPUs.
    #[schemars(range(min = 0))]
    pub vcpus: i64,
    /// Memory, MiB.
    #[serde(rename = "memoryMiB")]
    #[schemars(range(min = 0))]
    pub memory_mib: i64,
}

/// One VM's right-sizing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmRightsizing {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name.
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What it holds now (admitted).
    pub allocated: Size,
    /// Admitted storage, MiB.
    #[serde(rename = "allocatedStorageMiB")]
    pub allocated_storage_mib: i64,
    /// Seconds of the window it was measured running.
    pub measured_seconds: i64,
    /// Average CPU use over the window, millicores.
    pub cpu_avg_millicores: i64,
    /// 95th percentile of the buckets' highest CPU use, millicores.
    pub cpu_p95_millicores: i64,
    /// Highest memory the guest reported in use, MiB (absent: the guest reports nothing, so
    /// memory is not resized).
    #[serde(
        default,
        rename = "guestMemoryUsedMiB",
        skip_serializing_if = "Option::is_none"
    )]
    pub guest_memory_used_mib: Option<i64>,
    /// Highest resident memory on the host, MiB.
    #[serde(rename = "hostMemoryRssMiB")]
    pub host_memory_rss_mib: i64,
    /// Latest host storage allocated to its disks, MiB.
    #[serde(rename = "diskAllocatedMiB")]
    pub disk_allocated_mib: i64,
    /// The recommended size (Idle: none, halt it; RightSized and Unknown: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended: Option<Size>,
    /// What following the recommendation saves per month (730 hours) at the rate in force
    /// now, in the price list's currency, rounded to the cent; absent without a rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_saving: Option<String>,
    /// Why, in one sentence.
    pub reason: String,
}

/// A tenant's right-sizing: its own VMs, allocated vs used, and what the recommendations
/// save.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RightsizingReport {
    /// The end of the newest measurement it is based on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
    /// The window looked at, seconds.
    pub window_seconds: i64,
    /// vCPUs and memory the running VMs hold.
    pub allocated: Size,
    /// CPU used on average (millicores) and memory in use (guest-reported where known,
    /// else host resident), summed over the VMs.
    pub used: UsedSummary,
    /// Admitted storage, MiB.
    #[serde(rename = "allocatedStorageMiB")]
    pub allocated_storage_mib: i64,
    /// Storage actually allocated on hosts, MiB.
    #[serde(rename = "diskAllocatedMiB")]
    pub disk_allocated_mib: i64,
    /// Idle VMs.
    pub idle: i64,
    /// Oversized VMs.
    pub oversized: i64,
    /// What all recommendations save per month, rounded to the cent (absent without prices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_saving: Option<String>,
    /// Currency of the savings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Each measured VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<VmRightsizing>,
}

/// Use summed over VMs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsedSummary {
    /// Average CPU, millicores.
    pub cpu_millicores: i64,
    /// Memory in use, MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: i64,
}
