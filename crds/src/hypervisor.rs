//! `Hypervisor`: one per host, named after it. The agent of the host writes its status; admins
//! write its spec (cordon, overcommit, reservation) and its labels (used by `nodeSelector`).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A host that runs VMs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "Hypervisor",
    doc = "A host that runs VMs, named after it. Its agent writes the status (capacity, allocation, versions, heartbeat); admins write the spec (cordon, maintenance, overcommit, reservation) and its labels (matched by VM nodeSelectors).",
    plural = "hypervisors",
    singular = "hypervisor",
    shortname = "hv",
    category = "ironvisor",
    status = "HypervisorStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","description":"Whether the host's agent is reporting"}"#,
    printcolumn = r#"{"name":"Health","type":"string","jsonPath":".status.health","description":"OK, or the reasons of the health conditions that fail (LibvirtHealthy and StorageAccessible keep new VMs away; KVMAvailable is information)"}"#,
    printcolumn = r#"{"name":"VCPUs","type":"string","jsonPath":".status.summary.vcpus","description":"vCPUs allocated/allocatable"}"#,
    printcolumn = r#"{"name":"Memory","type":"string","jsonPath":".status.summary.memory","description":"Memory allocated/allocatable"}"#,
    printcolumn = r#"{"name":"VMs","type":"integer","jsonPath":".status.vmCount","description":"VMs on the host"}"#,
    printcolumn = r#"{"name":"Maintenance","type":"string","jsonPath":".status.maintenance.phase","description":"Draining or Ready while the host is in maintenance"}"#,
    printcolumn = r#"{"name":"Accel","type":"string","jsonPath":".status.acceleration","description":"kvm or tcg"}"#,
    printcolumn = r#"{"name":"TPM","type":"boolean","jsonPath":".status.tpm","priority":1,"description":"Whether the host can give VMs an emulated TPM (swtpm)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HypervisorSpec {
    /// Cordon: no new VMs are placed on the host; running ones stay.
    #[serde(default)]
    pub unschedulable: bool,
    /// How far vCPUs and memory may be overcommitted.
    #[serde(default)]
    pub overcommit: Overcommit,
    /// Capacity kept for the host itself, never given to VMs.
    #[serde(default)]
    pub reserved: Reserved,
    /// Maintenance mode (`ivctl host drain`): no new VMs are placed on the host and the
    /// operator moves every running VM away by live migration (per each VM's
    /// `drainStrategy`); `status.maintenance` shows the progress and the `MaintenanceReady`
    /// condition turns True once no running VM is left. False again (`ivctl host undrain`)
    /// makes the host schedulable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maintenance: bool,
}

/// Overcommit ratios: allocatable = (capacity − reserved) × ratio.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.cpu > 0.0", "message": "cpu must be above zero", "fieldPath": ".cpu"},
    {"rule": "self.memory > 0.0", "message": "memory must be above zero", "fieldPath": ".memory"}
]))]
pub struct Overcommit {
    /// vCPUs per physical CPU thread (Nova's default is 4.0).
    #[serde(default = "default_cpu_ratio")]
    #[schemars(range(max = 64.0))]
    pub cpu: f64,
    /// Guest memory per byte of host memory (Nova's default is 1.0).
    #[serde(default = "default_memory_ratio")]
    #[schemars(range(max = 4.0))]
    pub memory: f64,
}

fn default_cpu_ratio() -> f64 {
    4.0
}

fn default_memory_ratio() -> f64 {
    1.0
}

impl Default for Overcommit {
    fn default() -> Self {
        Self {
            cpu: default_cpu_ratio(),
            memory: default_memory_ratio(),
        }
    }
}

/// Capacity kept for the host.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.memory) || isQuantity(string(self.memory))",
     "message": "memory must be a Kubernetes quantity such as 1Gi", "fieldPath": ".memory"},
    {"rule": "!has(self.memory) || !isQuantity(string(self.memory)) || quantity(string(self.memory)).sign() >= 0",
     "message": "memory must not be negative", "fieldPath": ".memory"}
]))]
pub struct Reserved {
    /// Host CPU threads kept for the host.
    #[serde(default)]
    #[schemars(range(min = 0, max = 4096))]
    pub vcpus: u32,
    /// Host memory kept for the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// Observed state of a host, written by its agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HypervisorStatus {
    /// What the host has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Resources>,
    /// What may be given to VMs: (capacity − reserved) × overcommit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocatable: Option<Resources>,
    /// What the host's VMs take (their spec vCPUs and memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<Resources>,
    /// allocated/allocatable, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<ResourceSummary>,
    /// Number of VMs on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_count: Option<u32>,
    /// The host CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<HostCpu>,
    /// libvirt version (e.g. 9.0.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt_version: Option<String>,
    /// QEMU version (e.g. 7.2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_version: Option<String>,
    /// Whether the host can give VMs an emulated TPM 2.0: swtpm is installed and libvirt's
    /// domain capabilities list the emulator backend. VMs with `spec.tpm` are placed only
    /// where this is true (install `swtpm swtpm-tools`; the next heartbeat reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<bool>,
    /// Acceleration the agent uses: kvm or tcg (software emulation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceleration: Option<Acceleration>,
    /// Version of the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// When the agent last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// `OK`, or the reasons of the health conditions that do not hold (KVMAvailable,
    /// LibvirtHealthy, StorageAccessible), for the HEALTH column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Conditions: Ready (the agent reports), KVMAvailable (guests can use KVM; False is
    /// information on a software-emulation host), LibvirtHealthy and StorageAccessible (the
    /// operator places no new VMs on a host where either is False), each with the remedy in
    /// its message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The agent's public seed key (X25519, base64): the operator seals the cloud-init data
    /// it copies for this host's VMs to it, so only this host's agent can read them
    /// (`crds::seed`). The private half never leaves the host's state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_key: Option<String>,
    /// The host's real load, measured by its agent from its domains' statistics (what the
    /// rebalancer weighs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<crate::load::HostLoad>,
    /// The drain's progress while the host is in maintenance (operator); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<crate::maintenance::MaintenanceStatus>,
}

/// vCPUs and memory.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// vCPUs (or host CPU threads, for capacity).
    pub vcpus: u32,
    /// Memory.
    pub memory: Quantity,
}

/// Human-readable `used/total` figures for `kubectl get`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSummary {
    /// vCPUs allocated/allocatable.
    pub vcpus: String,
    /// Memory allocated/allocatable.
    pub memory: String,
}

/// The host CPU.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostCpu {
    /// Model name (from /proc/cpuinfo).
    pub model: String,
    /// Vendor (GenuineIntel, AuthenticAMD, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// CPU flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

/// Acceleration of a host.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Acceleration {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulation (TCG).
    Tcg,
}
