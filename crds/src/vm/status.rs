//! The observed state of a VirtualMachine.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a VirtualMachine. The operator writes admission and placement
/// (`nodeName`, `vcpus`, `admitted`, the Scheduled condition); the agent of the host writes
/// the rest. Tenants cannot write the status subresource, so placement and the admitted size
/// live here and nowhere else: the `ironvisor.io/node` label is only a copy for the agents'
/// watch selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// What `kubectl get` shows: the phase, or the reason the VM is not progressing
    /// (QuotaExceeded, Unschedulable, HostLost, StartFailed, DefineFailed, StorageFailed,
    /// InvalidSpec, ...). The Ready condition's message says more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printable_status: Option<String>,
    /// Host the VM is placed on, written by the operator when it admits and places the VM.
    /// The only record of placement: agents act on a VM only when this names their host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The size the operator admitted the VM at (checked against its quota and its host's
    /// capacity). A spec grown beyond it is admitted again before it counts; until then the
    /// VM counts, and keeps, this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted: Option<AdmittedSize>,
    /// vCPUs of the VM (sockets × cores × threads), for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Conditions: at least Ready and Scheduled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// UUID of the libvirt domain.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "domainUUID"
    )]
    pub domain_uuid: Option<String>,
    /// When the guest was last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// How many times the agent has started the guest again after it stopped on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<i64>,
    /// The last value of the `ironvisor.io/restartedAt` annotation the agent acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_request: Option<String>,
    /// A full-copy clone disk being copied from its source (the agent writes it while it
    /// copies, under its own field manager, and removes it when done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_progress: Option<CloneProgress>,
    /// The guest's network interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceStatus>,
    /// What the operator's audit trail has announced in Events, so each change is announced
    /// once (the status is writable only by the control plane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audited: Option<Audited>,
    /// The operation that holds the VM (a migration, snapshot, restore, backup, resize or
    /// reset), written by the operator only. Another operation on the VM waits until it is
    /// released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<super::VmOperation>,
    /// Starts, stops and size changes of the guest as its agent saw them, oldest first, at
    /// most [`crate::usage::RUN_LOG_MAX`]: the durable facts usage accounting reads, so a
    /// halt while the operator is down is still accounted from its time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub run_log: Vec<crate::usage::RunRecord>,
    /// The guest's measured CPU, memory and disk use in compact buckets (an hour each by
    /// default), written by its agent once per bucket; right-sizing reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<crate::utilization::VmUtilization>,
}

/// The last change of a VM announced in its audit trail.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Audited {
    /// The spec generation last announced (Created at 1, SpecChanged after).
    pub generation: i64,
    /// Whether the deletion request was announced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletion: bool,
    /// The spec's field managers and the time of their last write, as last announced: the
    /// next change names the managers whose write is new.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub writers: std::collections::BTreeMap<String, String>,
}

/// The size a VM was admitted at, in quota units.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmittedSize {
    /// vCPUs admitted (sockets × cores × threads).
    pub vcpus: i64,
    /// Memory admitted (exact bytes, e.g. `1Gi`).
    pub memory: Quantity,
    /// Sum of the disk sizes admitted (exact bytes).
    pub storage: Quantity,
    /// Host ports the VM's user-mode interfaces forward, as admitted on its host: an edit
    /// that forwards another port is checked against the ports of the host's other VMs
    /// before it counts. Absent on VMs admitted by older operators (their spec's ports count
    /// until the operator records them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ports: Option<Vec<AdmittedHostPort>>,
}

/// A host port admitted for a VM.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmittedHostPort {
    /// TCP or UDP.
    pub protocol: super::Protocol,
    /// The port on the host's 127.0.0.1.
    pub port: u16,
}

/// Lifecycle phase of a VM.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Not yet admitted or placed.
    Pending,
    /// Placed on a host; the agent has not started it yet.
    Scheduled,
    /// The domain is being prepared or booted.
    Starting,
    /// The guest is running.
    Running,
    /// The guest is shutting down.
    Stopping,
    /// The guest is stopped.
    Stopped,
    /// The VM cannot run: its spec cannot run here (waits for a change), or libvirt or QEMU
    /// refused to define or start it (retried with a growing pause). The Ready condition
    /// says why, with libvirt's own message.
    Failed,
    /// The VM's host is not reporting.
    Unknown,
}

impl Phase {
    /// The phase as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Scheduled => "Scheduled",
            Phase::Starting => "Starting",
            Phase::Running => "Running",
            Phase::Stopping => "Stopping",
            Phase::Stopped => "Stopped",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
        }
    }
}

/// A network interface of the guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStatus {
    /// Name of the interface in the spec.
    pub name: String,
    /// MAC address in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// Host-side device name (e.g. vnet3), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_device: Option<String>,
    /// IP addresses the guest has on this interface, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
}

/// Progress of a full-copy clone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneProgress {
    /// The disk being copied.
    pub disk: String,
    /// Percent copied (0–100).
    pub percent: u8,
}
