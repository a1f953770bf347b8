//! The hypervisor behind a trait: what the reconciler needs from libvirt and nothing more.
//!
//! [`libvirt::Libvirt`] is the real implementation (any libvirt URI: `qemu:///system`, or
//! `test:///default`, libvirt's in-process fake hypervisor, in tests). Only domains carrying
//! our metadata element are ever reported or touched.

pub mod blockjob;
pub mod caps;
pub mod console;
pub mod devices;
pub mod domstats;
mod events;
pub mod graphics;
pub mod libvirt;

use crate::domain_xml::DomainMetadata;
use crate::lifecycle::VmState;
use async_trait::async_trait;

pub use events::DomainEvent;

/// What the agent sees of one of its domains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Domain name.
    pub name: String,
    /// Domain UUID.
    pub uuid: String,
    /// Lifecycle state.
    pub state: VmState,
    /// Metadata of the persistent definition (what the next boot uses).
    pub config: Option<DomainMetadata>,
    /// Metadata of the running guest (what it booted with), when it runs.
    pub live: Option<DomainMetadata>,
    /// Interfaces libvirt manages: (MAC, host device).
    pub interfaces: Vec<(String, Option<String>)>,
}

impl Observed {
    /// The metadata that says whose domain this is.
    pub fn owner(&self) -> Option<&DomainMetadata> {
        self.live.as_ref().or(self.config.as_ref())
    }
}

/// Usage counters of a running domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainStats {
    /// CPU time, nanoseconds.
    pub cpu_time_ns: u64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Bytes read from all disks.
    pub disk_read_bytes: u64,
    /// Bytes written to all disks.
    pub disk_write_bytes: u64,
    /// Bytes received on libvirt-managed interfaces.
    pub net_rx_bytes: u64,
    /// Bytes sent on libvirt-managed interfaces.
    pub net_tx_bytes: u64,
    /// vCPUs of the running guest.
    pub vcpus: u32,
    /// Resident memory of the guest's process on the host (balloon `rss`), bytes.
    pub rss_bytes: u64,
    /// Memory the guest reports in use (balloon driver: `available` minus `unused`), bytes;
    /// None when the guest has no balloon driver reporting.
    pub guest_used_bytes: Option<u64>,
    /// Host bytes allocated to the disks (QEMU's block allocation), summed.
    pub disk_allocated_bytes: u64,
}

/// What the hypervisor says about the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// Host CPU threads.
    pub cpus: u32,
    /// Host memory in KiB.
    pub memory_kib: u64,
    /// CPU model as libvirt reports it.
    pub cpu_model: String,
    /// libvirt library version (e.g. 9.0.0).
    pub libvirt_version: String,
    /// Hypervisor version (QEMU's, e.g. 7.2.0).
    pub hypervisor_version: String,
    /// The uid and gid QEMU runs as (libvirt's DAC base label); `None` when libvirt has no
    /// DAC security model (QEMU then runs as libvirtd's own user).
    pub qemu_label: Option<(u32, u32)>,
}

/// Why a hypervisor call failed.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    /// The domain does not exist.
    #[error("domain {0} does not exist")]
    NotFound(String),
    /// libvirt refused the call.
    #[error("libvirt {op} failed: {message}")]
    Libvirt {
        /// The operation.
        op: &'static str,
        /// libvirt's message.
        message: String,
        /// Whether the connection itself is broken.
        connection: bool,
    },
    /// The connection could not be opened.
    #[error("cannot connect to {uri}: {message}")]
    Connect {
        /// The URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// A blocking task did not finish.
    #[error("libvirt worker task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// A hypervisor the agent drives. Every name passed in is a domain name the agent built.
#[async_trait]
pub trait Hypervisor: Send + Sync + 'static {
    /// Every domain with our metadata.
    async fn list_owned(&self) -> Result<Vec<Observed>, HvError>;
    /// One domain by name; `None` when it does not exist. A domain of that name without our
    /// metadata is reported as `Observed` with no metadata, so callers can refuse to touch it.
    async fn observe(&self, name: &str) -> Result<Option<Observed>, HvError>;
    /// Define (or redefine) a persistent domain; a running guest keeps its live definition.
    async fn define(&self, xml: &str) -> Result<(), HvError>;
    /// Start a defined domain.
    async fn start(&self, name: &str) -> Result<(), HvError>;
    /// Ask the guest to power off (ACPI).
    async fn shutdown(&self, name: &str) -> Result<(), HvError>;
    /// Stop the domain at once.
    async fn destroy(&self, name: &str) -> Result<(), HvError>;
    /// Remove the definition with its NVRAM and its TPM state. Call it only for a VM
    /// confirmed deleted: the TPM state (sealed keys) cannot be recovered.
    async fn undefine(&self, name: &str) -> Result<(), HvError>;
    /// Usage counters of a running domain.
    async fn stats(&self, name: &str) -> Result<DomainStats, HvError>;
    /// Facts about the host.
    async fn host_info(&self) -> Result<HostInfo, HvError>;
    /// Ask for the domain capabilities of the default guest type: a call that goes through
    /// libvirt's QEMU capability cache, so its duration shows a thrashing cache. Returns
    /// the guest devices the host can provide (none from a driver without domain
    /// capabilities).
    async fn probe_capabilities(&self) -> Result<caps::HostCaps, HvError>;
    /// Lifecycle events of domains (all of them; the receiver filters).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<DomainEvent>;
    /// A message each time the connection is reopened after being lost (events may have
    /// been missed meanwhile: resync everything).
    fn reconnected(&self) -> tokio::sync::broadcast::Receiver<()>;
}
