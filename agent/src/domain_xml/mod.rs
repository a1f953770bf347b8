//! The libvirt domain XML as a pure, deterministic function of a [`DomainPlan`].
//!
//! A plan is the VM spec with every host-side decision already made (domain type, paths of
//! the prepared disks, seed and kernel, MAC addresses). Rendering does no I/O and never
//! concatenates strings into XML: every value goes through quick-xml's escaping writer.

mod devices;
pub mod metadata;
pub mod name;
mod plan;

pub use metadata::DomainMetadata;
pub use plan::{PlanError, PlanInput, build_plan, generated_mac, plan_nics};

use ironvisor_crds::vm::{DiskBus, Firmware, NicModel, Protocol, TpmVersion};
use quick_xml::Writer;
use quick_xml::events::BytesText;
use sha2::{Digest, Sha256};
use std::io;
use std::path::PathBuf;

/// libvirt's namespace for QEMU command-line passthrough (user-mode port forwards).
pub const QEMU_NAMESPACE_URI: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// libvirt domain type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainType {
    /// Hardware virtualization.
    Kvm,
    /// QEMU software emulation (TCG).
    Qemu,
}

impl DomainType {
    fn as_str(self) -> &'static str {
        match self {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
        }
    }
}

/// The guest CPU as libvirt is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// `host-model`.
    HostModel,
    /// `host-passthrough`.
    HostPassthrough,
    /// A named model (`mode='custom'`).
    Named(String),
}

/// Everything the domain XML is rendered from.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainPlan {
    /// Domain name.
    pub name: String,
    /// UUID of the existing domain, when redefining it: libvirt refuses a definition of an
    /// existing name without its UUID. Left out of the config hash.
    pub uuid: Option<String>,
    /// Which VM the domain belongs to (the generation and hash are filled by [`render`]).
    pub owner: Owner,
    /// kvm or qemu.
    pub domain_type: DomainType,
    /// sockets, cores, threads.
    pub topology: (u32, u32, u32),
    /// CPU model.
    pub cpu: CpuMode,
    /// Guest memory in KiB.
    pub memory_kib: u64,
    /// bios or uefi.
    pub firmware: Firmware,
    /// Secure boot (uefi only).
    pub secure_boot: bool,
    /// Direct kernel boot.
    pub kernel: Option<KernelPlan>,
    /// Disks in spec order, then the seed.
    pub disks: Vec<DiskPlan>,
    /// Network interfaces in spec order.
    pub nics: Vec<NicPlan>,
    /// An emulated TPM (swtpm, state kept by libvirt under /var/lib/libvirt/swtpm/<uuid>).
    pub tpm: Option<TpmVersion>,
    /// File the serial console is logged to.
    pub console_log: PathBuf,
    /// A VNC display (`spec.graphics` unset or `vnc`) that listens nowhere: the console
    /// asks libvirt for a connected socket. `false`: no display at all.
    pub display: bool,
}

/// The VM a domain belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `metadata.uid`.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// The node whose agent manages the domain (empty: not recorded).
    pub node: String,
}

/// Direct kernel boot with prepared files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPlan {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: Option<String>,
}

/// Format of a disk file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    /// qcow2 (overlays and blank disks).
    Qcow2,
    /// raw (the seed).
    Raw,
}

/// A prepared disk.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskPlan {
    /// Name in the spec (`cloudinit` for the seed).
    pub name: String,
    /// File on the host.
    pub path: PathBuf,
    /// File format.
    pub format: DiskFormat,
    /// Bus.
    pub bus: DiskBus,
    /// A CD-ROM (the seed) rather than a disk.
    pub cdrom: bool,
    /// Read-only.
    pub read_only: bool,
    /// Boot priority.
    pub boot_order: Option<u32>,
}

/// How an interface is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NicAttachment {
    /// QEMU user-mode networking with host ports on 127.0.0.1.
    User(Vec<(Protocol, u16, u16)>),
    /// A libvirt network.
    Network(String),
    /// A host bridge.
    Bridge(String),
}

/// A network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicPlan {
    /// Name in the spec.
    pub name: String,
    /// Device model.
    pub model: NicModel,
    /// MAC address.
    pub mac: String,
    /// Attachment.
    pub attachment: NicAttachment,
}

/// The rendered domain and the hash recorded in its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedDomain {
    /// Full domain XML.
    pub xml: String,
    /// SHA-256 of the XML without the metadata element.
    pub config_hash: String,
}

/// Render the domain XML. The config hash covers everything but our metadata, so a new VM
/// generation that changes nothing in the domain (say, a runStrategy change) keeps it.
pub fn render(plan: &DomainPlan) -> RenderedDomain {
    let bare = write_domain(
        &DomainPlan {
            uuid: None,
            ..plan.clone()
        },
        None,
    );
    // The VM's directory is left out of the hash: a VM migrated to a host with another
    // state directory has the same configuration there (see `migration::xml`).
    let portable = match plan.console_log.parent().and_then(|d| d.to_str()) {
        Some(dir) if dir.len() > 1 => bare.replace(&format!("{dir}/"), "@VMDIR@/"),
        _ => bare,
    };
    let config_hash = hex::encode(Sha256::digest(portable.as_bytes()));
    let metadata = DomainMetadata {
        uid: plan.owner.uid.clone(),
        namespace: plan.owner.namespace.clone(),
        name: plan.owner.name.clone(),
        generation: plan.owner.generation,
        config_hash: config_hash.clone(),
        node: (!plan.owner.node.is_empty()).then(|| plan.owner.node.clone()),
    };
    RenderedDomain {
        xml: write_domain(plan, Some(&metadata)),
        config_hash,
    }
}

fn write_domain(plan: &DomainPlan, metadata: Option<&DomainMetadata>) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_root(&mut w, plan, metadata).expect("writing XML into memory cannot fail");
    String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
}

fn write_root(
    w: &mut Writer<Vec<u8>>,
    plan: &DomainPlan,
    metadata: Option<&DomainMetadata>,
) -> io::Result<()> {
    let needs_qemu_ns = plan
        .nics
        .iter()
        .any(|n| matches!(n.attachment, NicAttachment::User(_)));
    let mut root = w
        .create_element("domain")
        .with_attribute(("type", plan.domain_type.as_str()));
    if needs_qemu_ns {
        root = root.with_attribute(("xmlns:qemu", QEMU_NAMESPACE_URI));
    }
    root.write_inner_content(|w| {
        text(w, "name", &plan.name)?;
        if let Some(uuid) = &plan.uuid {
            text(w, "uuid", uuid)?;
        }
        if let Some(m) = metadata {
            w.create_element("metadata")
                .write_inner_content(|w| m.write(w))?;
        }
        let mem = plan.memory_kib.to_string();
        w.create_element("memory")
            .with_attribute(("unit", "KiB"))
            .write_text_content(BytesText::new(&mem))?;
        let (s, c, t) = plan.topology;
        let vcpus = s.saturating_mul(c).saturating_mul(t).to_string();
        w.create_element("vcpu")
            .with_attribute(("placement", "static"))
            .write_text_content(BytesText::new(&vcpus))?;
        write_os(w, plan)?;
        write_features(w, plan)?;
        write_cpu(w, plan)?;
        w.create_element("clock")
            .with_attribute(("offset", "utc"))
            .write_empty()?;
        text(w, "on_poweroff", "destroy")?;
        text(w, "on_reboot", "restart")?;
        text(w, "on_crash", "destroy")?;
        devices::write_devices(w, plan)?;
        if needs_qemu_ns {
            devices::write_user_net_args(w, plan)?;
        }
        Ok(())
    })?;
    Ok(())
}

fn text(w: &mut Writer<Vec<u8>>, name: &str, value: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

fn write_os(w: &mut Writer<Vec<u8>>, plan: &DomainPlan) -> io::Result<()> {
    let mut os = w.create_element("os");
    if plan.firmware == Firmware::Uefi {
        os = os.with_attribute(("firmware", "efi"));
    }
    os.write_inner_content(|w| {
        w.create_element("type")
            .with_attribute(("arch", "x86_64"))
            .with_attribute(("machine", "q35"))
            .write_text_content(BytesText::new("hvm"))?;
        if plan.firmware == Firmware::Uefi {
            let on_off = if plan.secure_boot { "yes" } else { "no" };
            w.create_element("firmware").write_inner_content(|w| {
                for feature in ["secure-boot", "enrolled-keys"] {
                    w.create_element("feature")
                        .with_attribute(("enabled", on_off))
                        .with_attribute(("name", feature))
                        .write_empty()?;
                }
                Ok(())
            })?;
            if plan.secure_boot {
                w.create_element("loader")
                    .with_attribute(("secure", "yes"))
                    .write_empty()?;
            }
        }
        if let Some(k) = &plan.kernel {
            text(w, "kernel", &path_str(&k.kernel))?;
            if let Some(initrd) = &k.initrd {
                text(w, "initrd", &path_str(initrd))?;
            }
            if let Some(cmdline) = &k.cmdline {
                text(w, "cmdline", cmdline)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

fn write_features(w: &mut Writer<Vec<u8>>, plan: &DomainPlan) -> io::Result<()> {
    w.create_element("features").write_inner_content(|w| {
        w.create_element("acpi").write_empty()?;
        w.create_element("apic").write_empty()?;
        if plan.secure_boot {
            w.create_element("smm")
                .with_attribute(("state", "on"))
                .write_empty()?;
        }
        Ok(())
    })?;
    Ok(())
}

fn write_cpu(w: &mut Writer<Vec<u8>>, plan: &DomainPlan) -> io::Result<()> {
    let (sockets, cores, threads) = (
        plan.topology.0.to_string(),
        plan.topology.1.to_string(),
        plan.topology.2.to_string(),
    );
    let topology = |w: &mut Writer<Vec<u8>>| -> io::Result<()> {
        w.create_element("topology")
            .with_attribute(("sockets", sockets.as_str()))
            .with_attribute(("dies", "1"))
            .with_attribute(("cores", cores.as_str()))
            .with_attribute(("threads", threads.as_str()))
            .write_empty()?;
        Ok(())
    };
    match &plan.cpu {
        CpuMode::HostModel => {
            w.create_element("cpu")
                .with_attribute(("mode", "host-model"))
                .write_inner_content(topology)?;
        }
        CpuMode::HostPassthrough => {
            w.create_element("cpu")
                .with_attribute(("mode", "host-passthrough"))
                .write_inner_content(topology)?;
        }
        CpuMode::Named(model) => {
            w.create_element("cpu")
                .with_attribute(("mode", "custom"))
                .with_attribute(("match", "exact"))
                .with_attribute(("check", "none"))
                .write_inner_content(|w| {
                    w.create_element("model")
                        .with_attribute(("fallback", "allow"))
                        .write_text_content(BytesText::new(model))?;
                    topology(w)
                })?;
        }
    }
    Ok(())
}

/// Paths come from our own state directory or a canonicalised images directory; a
/// non-UTF-8 path is rejected when the plan is built, so this lossy form is never lossy.
fn path_str(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod display_tests;
#[cfg(test)]
mod tests;
