//! From a VM spec and host facts to a [`DomainPlan`]: validation and every decision, no I/O.

use super::{
    CpuMode, DiskFormat, DiskPlan, DomainPlan, DomainType, KernelPlan, NicAttachment, NicPlan,
    Owner, name::domain_name,
};
use crate::storage::layout;
use ironvisor_crds::quantity::to_bytes;
use ironvisor_crds::vm::{
    DiskBus, Firmware, MAX_DISKS, MAX_NETWORKS, MAX_VCPUS, VirtualMachineSpec,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// CPU model used under TCG, where host-model and named hardware models may not be emulated.
pub const TCG_CPU_MODEL: &str = "qemu64";
const MIN_MEMORY: i128 = 64 << 20;
const MAX_MEMORY: i128 = 16 << 40;

/// A spec the agent cannot turn into a domain. Permanent: it waits for a spec change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Memory is not a quantity or out of range.
    #[error("memory size {0:?} is not a quantity between 64Mi and 16Ti")]
    Memory(String),
    /// Too many vCPUs.
    #[error("the VM asks for {0} vCPUs, more than {MAX_VCPUS}")]
    Vcpus(u32),
    /// Too many disks or interfaces.
    #[error("the VM has more than {MAX_DISKS} disks or {MAX_NETWORKS} networks")]
    TooManyDevices,
    /// Two disks or interfaces share a name.
    #[error("the name {0:?} is used twice")]
    DuplicateName(String),
    /// Two disks share a boot order.
    #[error("boot order {0} is used twice")]
    DuplicateBootOrder(u32),
    /// A disk source is not exactly one kind.
    #[error("disk {0:?} needs exactly one source")]
    DiskSource(String),
    /// A blank disk without a size, or a size that is not a quantity.
    #[error("disk {0:?} has no valid size")]
    DiskSize(String),
    /// Kernel boot with uefi, or secure boot without uefi.
    #[error("{0}")]
    Firmware(&'static str),
    /// Kernel boot with no prepared kernel.
    #[error("the kernel for direct boot is not prepared")]
    KernelMissing,
    /// A malformed MAC address.
    #[error("interface {0:?} has an invalid or multicast MAC address")]
    Mac(String),
    /// An interface is not exactly one kind.
    #[error("interface {0:?} needs exactly one of user, network or bridge")]
    NicKind(String),
    /// Two port forwards share a host port.
    #[error("host port {0} is forwarded twice")]
    DuplicateHostPort(u16),
    /// A CPU model with characters libvirt would not accept.
    #[error("CPU model {0:?} is not a valid model name")]
    CpuModel(String),
}

/// What a plan is built from.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    /// The VM.
    pub owner: Owner,
    /// Its spec.
    pub spec: &'a VirtualMachineSpec,
    /// kvm or qemu.
    pub domain_type: DomainType,
    /// The VM's own directory (`<state-dir>/<uid>`).
    pub vm_dir: &'a Path,
    /// Prepared kernel and initrd for direct boot.
    pub kernel: Option<PathBuf>,
    /// Prepared initrd.
    pub initrd: Option<PathBuf>,
}

/// A deterministic, locally administered unicast MAC for an interface without one.
pub fn generated_mac(uid: &str, nic: &str) -> String {
    let h = Sha256::digest(format!("{uid}/{nic}").as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
        && mac != "00:00:00:00:00:00"
}

fn valid_model(model: &str) -> bool {
    let mut chars = model.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && model.len() <= 64
}

/// Validate the spec and decide the domain.
pub fn build_plan(input: &PlanInput<'_>) -> Result<DomainPlan, PlanError> {
    let spec = input.spec;
    let mem =
        to_bytes(&spec.memory.size.0).map_err(|_| PlanError::Memory(spec.memory.size.0.clone()))?;
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&mem) {
        return Err(PlanError::Memory(spec.memory.size.0.clone()));
    }
    let vcpus = spec.cpu.vcpus();
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(PlanError::Vcpus(vcpus));
    }
    if spec.disks.len() > MAX_DISKS || spec.networks.len() > MAX_NETWORKS {
        return Err(PlanError::TooManyDevices);
    }
    let firmware = spec.firmware.unwrap_or_default();
    let secure_boot = spec.secure_boot.unwrap_or(false);
    if secure_boot && firmware != Firmware::Uefi {
        return Err(PlanError::Firmware("secure boot requires firmware uefi"));
    }
    if spec.kernel_boot.is_some() && firmware != Firmware::Bios {
        return Err(PlanError::Firmware("kernelBoot requires firmware bios"));
    }
    let cpu = match input.domain_type {
        DomainType::Qemu => CpuMode::Named(TCG_CPU_MODEL.to_owned()),
        DomainType::Kvm => match spec.cpu.model.as_str() {
            "host-model" => CpuMode::HostModel,
            "host-passthrough" => CpuMode::HostPassthrough,
            m if valid_model(m) => CpuMode::Named(m.to_owned()),
            m => return Err(PlanError::CpuModel(m.to_owned())),
        },
    };
    let kernel = match &spec.kernel_boot {
        None => None,
        Some(kb) => Some(KernelPlan {
            kernel: input.kernel.clone().ok_or(PlanError::KernelMissing)?,
            initrd: if kb.initrd.is_some() {
                Some(input.initrd.clone().ok_or(PlanError::KernelMissing)?)
            } else {
                None
            },
            cmdline: kb.cmdline.clone(),
        }),
    };
    Ok(DomainPlan {
        name: domain_name(&input.owner.namespace, &input.owner.name),
        uuid: None,
        owner: input.owner.clone(),
        domain_type: input.domain_type,
        topology: (spec.cpu.sockets, spec.cpu.cores, spec.cpu.threads),
        cpu,
        memory_kib: u64::try_from((mem + 1023) / 1024)
            .map_err(|_| PlanError::Memory(spec.memory.size.0.clone()))?,
        firmware,
        secure_boot,
        kernel,
        disks: plan_disks(input)?,
        nics: plan_nics(input.spec, &input.owner.uid)?,
        tpm: spec.tpm.as_ref().map(|t| t.version),
        console_log: layout::console_log(input.vm_dir),
        display: spec.has_display(),
    })
}

fn plan_disks(input: &PlanInput<'_>) -> Result<Vec<DiskPlan>, PlanError> {
    let mut names = BTreeSet::new();
    let mut orders = BTreeSet::new();
    let mut disks = Vec::new();
    for d in &input.spec.disks {
        if !names.insert(d.name.as_str()) || d.name == layout::SEED_DISK_NAME {
            return Err(PlanError::DuplicateName(d.name.clone()));
        }
        if let Some(o) = d.boot_order
            && !orders.insert(o)
        {
            return Err(PlanError::DuplicateBootOrder(o));
        }
        let s = &d.source;
        let kinds = [
            s.blank.is_some(),
            s.http.is_some(),
            s.host_path.is_some(),
            s.backup.is_some(),
            s.snapshot.is_some(),
            s.vm.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(PlanError::DiskSource(d.name.clone()));
        }
        if let Some(size) = &d.size {
            to_bytes(&size.0).map_err(|_| PlanError::DiskSize(d.name.clone()))?;
        } else if s.blank.is_some() {
            return Err(PlanError::DiskSize(d.name.clone()));
        }
        disks.push(DiskPlan {
            name: d.name.clone(),
            path: layout::disk_file(input.vm_dir, &d.name),
            format: DiskFormat::Qcow2,
            bus: d.bus,
            cdrom: false,
            read_only: d.read_only,
            boot_order: d.boot_order,
        });
    }
    if input.spec.cloud_init.is_some() {
        // A SATA CD-ROM: every guest kernel reads ISO 9660 from it without virtio drivers.
        disks.push(DiskPlan {
            name: layout::SEED_DISK_NAME.to_owned(),
            path: layout::seed_file(input.vm_dir),
            format: DiskFormat::Raw,
            bus: DiskBus::Sata,
            cdrom: true,
            read_only: true,
            boot_order: None,
        });
    }
    Ok(disks)
}

/// The VM's interfaces with their MAC addresses, as the domain has them: the same on every
/// host (a MAC is the spec's, or generated from the VM's uid), so a migration target builds
/// the same cloud-init seed as the source.
pub fn plan_nics(spec: &VirtualMachineSpec, uid: &str) -> Result<Vec<NicPlan>, PlanError> {
    let mut names = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    let mut nics = Vec::new();
    for n in &spec.networks {
        if !names.insert(n.name.as_str()) {
            return Err(PlanError::DuplicateName(n.name.clone()));
        }
        let mac = match &n.mac_address {
            Some(m) if valid_mac(m) => m.to_ascii_lowercase(),
            Some(_) => return Err(PlanError::Mac(n.name.clone())),
            None => generated_mac(uid, &n.name),
        };
        let attachment = match (&n.user, &n.network, &n.bridge) {
            (Some(u), None, None) => {
                let mut forwards = Vec::new();
                for pf in &u.port_forwards {
                    if pf.host_port == 0
                        || pf.guest_port == 0
                        || !host_ports.insert((pf.protocol as u8, pf.host_port))
                    {
                        return Err(PlanError::DuplicateHostPort(pf.host_port));
                    }
                    forwards.push((pf.protocol, pf.host_port, pf.guest_port));
                }
                NicAttachment::User(forwards)
            }
            (None, Some(net), None) if valid_model(&net.name) => {
                NicAttachment::Network(net.name.clone())
            }
            (None, None, Some(br)) if valid_model(&br.name) && br.name.len() <= 15 => {
                NicAttachment::Bridge(br.name.clone())
            }
            _ => return Err(PlanError::NicKind(n.name.clone())),
        };
        nics.push(NicPlan {
            name: n.name.clone(),
            model: n.model,
            mac,
            attachment,
        });
    }
    Ok(nics)
}
