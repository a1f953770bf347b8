//! `VirtualMachine`: a guest that Ironvisor keeps in the state its `runStrategy` asks for.
//!
//! The spec is written by users (and GitOps tools); controllers never mutate it. The status
//! is written by the operator (admission, placement) and by the agent of the VM's host
//! (lifecycle), each with its own server-side-apply field manager.

mod clone;
mod network;
mod operation;
mod status;
mod storage;
mod tpm;

pub use clone::*;
pub use network::*;
pub use operation::*;
pub use status::*;
pub use storage::*;
pub use tpm::*;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most vCPUs one VM may have (sockets × cores × threads).
pub const MAX_VCPUS: u32 = 256;
/// Most disks one VM may have: the limit of virtio disks on one PCI bus with headroom.
pub const MAX_DISKS: usize = 24;
/// Most network interfaces one VM may have.
pub const MAX_NETWORKS: usize = 16;

/// A virtual machine: its hardware, disks, networks, and how it should be kept running.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ironvisor.io",
    version = "v1alpha1",
    kind = "VirtualMachine",
    doc = "A virtual machine: its hardware, disks, networks, cloud-init, and how it is kept running. Admitted against its tenant's quotas and placed on a host by the operator; run by the agent of that host.",
    plural = "virtualmachines",
    singular = "virtualmachine",
    shortname = "vm",
    shortname = "vms",
    category = "ironvisor",
    category = "all",
    namespaced,
    status = "VirtualMachineStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.printableStatus","description":"Phase, or why the VM is not progressing"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.nodeName","description":"Host the VM is placed on"}"#,
    printcolumn = r#"{"name":"VCPUs","type":"integer","jsonPath":".status.vcpus","description":"vCPUs (sockets × cores × threads)"}"#,
    printcolumn = r#"{"name":"Memory","type":"string","jsonPath":".spec.memory.size","description":"Guest memory"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","description":"Whether the guest is running"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    selectable = ".status.nodeName",
    selectable = ".spec.runStrategy"
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.kernelBoot) || !has(self.firmware) || self.firmware == 'bios'",
     "message": "kernelBoot requires firmware bios", "fieldPath": ".kernelBoot"},
    {"rule": "!has(self.disks) || self.disks.all(d, !has(d.bootOrder) || self.disks.exists_one(e, has(e.bootOrder) && e.bootOrder == d.bootOrder))",
     "message": "bootOrder must be unique across disks", "fieldPath": ".disks"},
    {"rule": "!has(self.disks) || !has(self.networks) || self.disks.size() + self.networks.size() <= 32",
     "message": "disks and networks together may use at most 32 PCI slots", "fieldPath": ".disks"},
    {"rule": "!has(self.template) || !self.template || self.runStrategy == 'Halted'",
     "message": "a template never runs: set runStrategy Halted (clone it to run a copy)", "fieldPath": ".runStrategy"},
    {"rule": "!has(self.template) || !self.template || !has(self.disks) || self.disks.all(d, (!has(d.source.vm) || (has(d.source.vm.mode) && d.source.vm.mode == 'Full')) && (!has(d.source.snapshot) || (has(d.source.snapshot.mode) && d.source.snapshot.mode == 'Full')))",
     "message": "a template's disks may not be linked clones: make them full copies (mode: Full)", "fieldPath": ".disks"}
]))]
pub struct VirtualMachineSpec {
    /// How the VM is kept running: Always (start it, and start it again whenever it stops),
    /// RerunOnFailure (start it, and again only after a crash), Manual (start and stop on
    /// request: `ivctl start|stop`), Halted (keep it stopped), Once (run it to completion,
    /// never restart).
    #[serde(default)]
    pub run_strategy: RunStrategy,

    /// Virtual CPU topology and model.
    #[serde(default)]
    pub cpu: Cpu,

    /// Guest memory.
    pub memory: Memory,

    /// Firmware the guest boots with: bios (SeaBIOS) or uefi (OVMF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,

    /// Secure boot for uefi firmware (needs OVMF with Microsoft keys on the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,

    /// A virtual TPM 2.0 (`{}` asks for one), emulated by swtpm on the host: the VM is
    /// placed only on hosts whose Hypervisor status reports `tpm: true`. Its state (sealed
    /// keys, e.g. BitLocker's) stays with the VM across restarts and live migrations and is
    /// deleted with the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Tpm>,

    /// The graphical display: `vnc` (the default; reached only through the console server,
    /// it listens on no host address) or `none` (serial console only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphics: Option<crate::console::Graphics>,

    /// Boot a kernel (and optional initrd) directly instead of from a disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_boot: Option<KernelBoot>,

    /// Disks attached to the VM, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 24))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub disks: Vec<Disk>,

    /// Network interfaces of the VM, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub networks: Vec<Network>,

    /// A cloud-init NoCloud seed (a CIDATA disk) built by the agent for the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,

    /// Host name of the guest, passed to cloud-init as local-hostname. Defaults to the VM name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub hostname: Option<String>,

    /// Pin the VM to this host. It is still subject to quota and capacity checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node_name: Option<String>,

    /// Only hosts whose Hypervisor object carries all of these labels are considered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// VMs of the same namespace with the same group are spread across hosts: no two of
    /// them share a host while another host fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub anti_affinity_group: Option<String>,

    /// Seconds the guest gets to shut down after an ACPI power-off before it is destroyed.
    #[serde(default = "default_grace_period")]
    #[schemars(range(min = 0, max = 86400))]
    pub termination_grace_period_seconds: i64,

    /// A template: never started (runStrategy must be Halted), its disks frozen as the base
    /// that other VMs clone (`disks[].source.vm`). It cannot be deleted while a linked clone
    /// uses its disks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub template: bool,

    /// What happens when the VM's host is lost: None (wait for the host to come back) or
    /// Restart (start the VM on another host, when its disks are not local to the lost host).
    #[serde(default)]
    pub eviction_strategy: EvictionStrategy,

    /// What a planned drain of the VM's host (maintenance mode) does to it while it runs:
    /// LiveMigrate (move it to another host without stopping it) or None (it stays and
    /// blocks the drain, which reports it). A stopped VM stays on its host either way.
    #[serde(default)]
    pub drain_strategy: crate::maintenance::DrainStrategy,
}

fn default_grace_period() -> i64 {
    60
}

/// How a VM is kept running.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum RunStrategy {
    /// Start the VM and start it again whenever it stops.
    #[default]
    Always,
    /// Start the VM, and start it again only after it crashed (not after a clean shutdown).
    RerunOnFailure,
    /// Start and stop only when asked (`ivctl start|stop`).
    Manual,
    /// Keep the VM stopped.
    Halted,
    /// Run the VM once; when it stops, leave it stopped.
    Once,
}

impl RunStrategy {
    /// Whether quota should count the VM's vCPUs and memory: every strategy but Halted.
    pub fn counts_compute(self) -> bool {
        self != RunStrategy::Halted
    }
}

/// What happens to a VM when its host is lost.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EvictionStrategy {
    /// Wait for the host to come back.
    #[default]
    None,
    /// Restart the VM on another host when its disks are not local to the lost host.
    Restart,
}

/// Firmware a guest boots with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// Legacy BIOS (SeaBIOS).
    #[default]
    Bios,
    /// UEFI (OVMF).
    Uefi,
}

/// Virtual CPU topology and model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.sockets * self.cores * self.threads <= 256",
     "message": "sockets × cores × threads must be at most 256 vCPUs"}
]))]
pub struct Cpu {
    /// Cores per socket.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 256))]
    pub cores: u32,
    /// Sockets.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 256))]
    pub sockets: u32,
    /// Threads per core.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 8))]
    pub threads: u32,
    /// CPU model: host-model, host-passthrough, or a named libvirt model (e.g. Skylake-Server).
    /// Under software emulation (no KVM) the agent uses QEMU's default model instead.
    #[serde(default = "default_cpu_model")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    )]
    pub model: String,
}

fn one() -> u32 {
    1
}

fn default_cpu_model() -> String {
    "host-model".into()
}

impl Default for Cpu {
    fn default() -> Self {
        Self {
            cores: 1,
            sockets: 1,
            threads: 1,
            model: default_cpu_model(),
        }
    }
}

impl Cpu {
    /// Number of vCPUs: sockets × cores × threads.
    pub fn vcpus(&self) -> u32 {
        self.sockets
            .saturating_mul(self.cores)
            .saturating_mul(self.threads)
    }
}

/// Guest memory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "isQuantity(string(self.size))",
     "message": "size must be a Kubernetes quantity such as 2Gi", "fieldPath": ".size"},
    {"rule": "!isQuantity(string(self.size)) || quantity(string(self.size)).compareTo(quantity('64Mi')) >= 0",
     "message": "size must be at least 64Mi", "fieldPath": ".size"},
    {"rule": "!isQuantity(string(self.size)) || quantity(string(self.size)).compareTo(quantity('16Ti')) <= 0",
     "message": "size must be at most 16Ti", "fieldPath": ".size"}
]))]
pub struct Memory {
    /// Memory size as a Kubernetes quantity, at least 64Mi (e.g. 512Mi, 2Gi).
    pub size: Quantity,
}

impl VirtualMachine {
    /// `namespace/name`, for messages and logs.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

impl VirtualMachineSpec {
    /// Whether the VM has a graphical display (unset or `vnc`; not `none`): the one rule the
    /// domain XML and the console server follow.
    pub fn has_display(&self) -> bool {
        self.graphics.unwrap_or_default() == crate::console::Graphics::Vnc
    }
}
