//! The Ironvisor `VirtualMachine` an imported VM becomes, and writing it as YAML.
//!
//! [`build`] is pure: from the parsed VM, the inspected disks and the user's mapping
//! choices it produces the object plus a note per decision (bus and NIC model mappings,
//! dropped MACs), which the report shows. The mapping table lives here and in
//! `docs/migration.md`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ironvisor_crds::quantity::format_bytes;
use ironvisor_crds::vm::{
    BlankSource, BridgeNetwork, Cpu, Disk, DiskBus, DiskSource, Firmware, HostPathSource, Memory,
    NamedNetwork, Network, NicModel, RunStrategy, UserNetwork,
};
use ironvisor_crds::{VirtualMachine, VirtualMachineSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use super::model::{ControllerKind, SourceDisk, SourceFirmware, SourceNic, SourceVm};

/// Annotation naming the platform a VM was imported from.
pub const IMPORTED_FROM: &str = "ironvisor.io/imported-from";
/// Annotation with the VMware guest OS id.
pub const VMWARE_GUEST_OS: &str = "ironvisor.io/vmware-guest-os";
/// Annotation with the VMware virtual hardware version.
pub const VMWARE_HW_VERSION: &str = "ironvisor.io/vmware-hardware-version";
/// The libvirt network unmapped VMware networks are attached to.
pub const DEFAULT_NETWORK: &str = "default";

/// Where a VMware network goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkTarget {
    /// A libvirt network on the hosts.
    Network(String),
    /// A host bridge.
    Bridge(String),
    /// User-mode networking.
    User,
}

impl NetworkTarget {
    /// As the user writes it in `--network-map`.
    pub fn describe(&self) -> String {
        match self {
            Self::Network(n) => format!("network {n}"),
            Self::Bridge(b) => format!("bridge {b}"),
            Self::User => "user networking".into(),
        }
    }
}

/// `--network-map VMNET=TARGET`, TARGET being `NAME`, `network:NAME`, `bridge:NAME` or `user`.
pub fn parse_network_map(arg: &str) -> Result<(String, NetworkTarget), String> {
    let (from, to) = arg
        .rsplit_once('=')
        .ok_or("expected VMWARE-NETWORK=TARGET")?;
    if from.is_empty() {
        return Err("the VMware network name is empty".into());
    }
    let valid = |n: &str, max: usize| {
        !n.is_empty()
            && n.len() <= max
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && n.as_bytes()[0].is_ascii_alphanumeric()
    };
    let target = match to.split_once(':') {
        None if to == "user" => NetworkTarget::User,
        None if valid(to, 64) => NetworkTarget::Network(to.into()),
        Some(("network", n)) if valid(n, 64) => NetworkTarget::Network(n.into()),
        Some(("bridge", n)) if valid(n, 15) => NetworkTarget::Bridge(n.into()),
        _ => {
            return Err(format!(
                "{to:?} is not NAME, network:NAME, bridge:NAME or user"
            ));
        }
    };
    Ok((from.to_owned(), target))
}

/// Bus for disks on VMware SCSI controllers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ScsiBus {
    /// virtio-scsi: keeps SCSI semantics (unmap, multiple LUNs).
    #[default]
    Scsi,
    /// virtio-blk: fastest.
    Virtio,
    /// SATA (AHCI): slower, but every Windows since Vista has its driver, so a Windows guest
    /// without virtio-win boots; switch to virtio once the drivers are in.
    Sata,
}

/// The user's mapping choices.
#[derive(Clone, Debug)]
pub struct MappingOptions {
    /// Name of the VirtualMachine.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The hosts' images root, as agents see it.
    pub images_dir: PathBuf,
    /// VMware network → target.
    pub network_map: BTreeMap<String, NetworkTarget>,
    /// Keep the closest emulated NIC model instead of virtio.
    pub keep_nic_model: bool,
    /// Keep the VMware MAC addresses.
    pub keep_mac: bool,
    /// Bus for SCSI disks.
    pub scsi_bus: ScsiBus,
    /// Run strategy of the new VM.
    pub run_strategy: RunStrategy,
    /// Why a source vTPM is left out (`--no-tpm`); `None` carries it over as `spec.tpm`.
    pub no_tpm: Option<String>,
}

/// A disk to put in the manifest, with its size.
#[derive(Clone, Debug)]
pub struct PlannedDisk {
    /// The source disk.
    pub source: SourceDisk,
    /// Virtual size in bytes.
    pub capacity_bytes: u64,
    /// A new empty disk (no source file): a `blank` disk the agent creates.
    pub blank: bool,
}

/// The object and what was decided on the way.
#[derive(Clone, Debug)]
pub struct Built {
    /// The manifest.
    pub vm: VirtualMachine,
    /// File name of each disk's qcow2 image, in disk order (inside the VM's directory);
    /// `None` for a blank disk, which has no image.
    pub image_files: Vec<Option<String>>,
    /// One line per mapping decision.
    pub notes: Vec<String>,
    /// VMware networks that had no `--network-map` entry.
    pub unmapped_networks: Vec<String>,
}

/// A Kubernetes object name (RFC 1123 label, at most 63) from a VMware display name.
pub fn sanitize_name(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-').to_owned();
    if trimmed.is_empty() {
        "imported-vm".into()
    } else {
        trimmed
    }
}

/// Map a VMware bus to an Ironvisor bus.
pub fn map_bus(kind: ControllerKind, scsi: ScsiBus) -> DiskBus {
    match kind {
        ControllerKind::LsiLogic
        | ControllerKind::LsiLogicSas
        | ControllerKind::Pvscsi
        | ControllerKind::BusLogic => match scsi {
            ScsiBus::Scsi => DiskBus::Scsi,
            ScsiBus::Virtio => DiskBus::Virtio,
            ScsiBus::Sata => DiskBus::Sata,
        },
        ControllerKind::Sata | ControllerKind::Ide => DiskBus::Sata,
        ControllerKind::Nvme => DiskBus::Virtio,
    }
}

/// Map a VMware NIC model: virtio, or with `keep` the closest emulated model.
pub fn map_nic_model(model: &str, keep: bool) -> NicModel {
    if !keep {
        return NicModel::Virtio;
    }
    match model {
        "vlance" | "pcnet32" | "flexible" => NicModel::Rtl8139,
        _ => NicModel::E1000e,
    }
}

/// A MAC address the CRD accepts: six hex octets, unicast, not all zero.
pub fn valid_mac(mac: &str) -> bool {
    let octets: Vec<&str> = mac.split(':').collect();
    octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
        && u8::from_str_radix(octets[0], 16).is_ok_and(|b| b & 1 == 0)
        && mac != "00:00:00:00:00:00"
}

fn nic_name(nic: &SourceNic) -> String {
    format!("nic{}", nic.index)
}

/// Build the VirtualMachine.
pub fn build(src: &SourceVm, disks: &[PlannedDisk], opts: &MappingOptions) -> Built {
    let mut notes = Vec::new();
    let mut unmapped = Vec::new();
    let mut image_files = Vec::new();
    let mut spec_disks = Vec::new();
    // The disk the descriptor boots first, else the first in controller order.
    let boot = src
        .boot_disk
        .as_ref()
        .and_then(|slot| disks.iter().position(|d| d.source.slot() == *slot))
        .unwrap_or(0);
    for (i, d) in disks.iter().enumerate() {
        let name = d.source.slot().replace(':', "-");
        let bus = map_bus(d.source.controller, opts.scsi_bus);
        // Every disk declares its size (the storage quota counts it, and the operator
        // admits no image disk without one); the API's smallest is 1Mi.
        let size = Some(Quantity(format_bytes(i128::from(
            d.capacity_bytes.max(1 << 20),
        ))));
        let (source, file) = if d.blank {
            notes.push(
                format!(
                    "disk {}: new empty disk on {:?} → blank {bus:?} disk of {}",
                    d.source.slot(),
                    d.source.controller,
                    format_bytes(i128::from(d.capacity_bytes))
                )
                .to_lowercase(),
            );
            let blank = DiskSource {
                blank: Some(BlankSource {}),
                ..DiskSource::default()
            };
            (blank, None)
        } else {
            let file = format!("{}-{name}.qcow2", opts.name);
            notes.push(
                format!(
                    "disk {}: {:?} → {bus:?} ({file})",
                    d.source.slot(),
                    d.source.controller
                )
                .to_lowercase(),
            );
            let path = opts.images_dir.join(&opts.name).join(&file);
            let host = DiskSource {
                host_path: Some(HostPathSource {
                    path: path.to_string_lossy().into_owned(),
                }),
                ..DiskSource::default()
            };
            (host, Some(file))
        };
        spec_disks.push(Disk {
            name,
            bus,
            boot_order: (i == boot).then_some(1),
            read_only: false,
            size,
            source,
        });
        image_files.push(file);
    }
    let mut networks = Vec::new();
    for nic in &src.nics {
        let model = map_nic_model(&nic.model, opts.keep_nic_model);
        let vmware_net = nic.network.clone().unwrap_or_default();
        let target = match opts.network_map.get(&vmware_net) {
            Some(t) => t.clone(),
            None => {
                unmapped.push(if vmware_net.is_empty() {
                    format!("{} (not connected)", nic_name(nic))
                } else {
                    vmware_net.clone()
                });
                NetworkTarget::Network(DEFAULT_NETWORK.into())
            }
        };
        let mac_address = match (&nic.mac, opts.keep_mac) {
            (Some(mac), true) if valid_mac(mac) => Some(mac.clone()),
            (Some(mac), true) => {
                notes.push(format!(
                    "{}: MAC {mac} is not a unicast MAC; a new one is generated",
                    nic_name(nic)
                ));
                None
            }
            _ => None,
        };
        let model_name = format!("{model:?}").to_lowercase();
        notes.push(format!(
            "{}: {} on {vmware_net:?} → {model_name} on {}",
            nic_name(nic),
            nic.model,
            target.describe()
        ));
        let mut net = Network {
            name: nic_name(nic),
            model,
            mac_address,
            user: None,
            network: None,
            bridge: None,
        };
        match target {
            NetworkTarget::Network(name) => net.network = Some(NamedNetwork { name }),
            NetworkTarget::Bridge(name) => net.bridge = Some(BridgeNetwork { name }),
            NetworkTarget::User => net.user = Some(UserNetwork::default()),
        }
        networks.push(net);
    }
    let sockets = (src.vcpus / src.cores_per_socket).max(1);
    let cores = if sockets * src.cores_per_socket == src.vcpus {
        src.cores_per_socket
    } else {
        src.vcpus
    };
    let sockets = if cores == src.vcpus { 1 } else { sockets };
    let firmware = match src.firmware {
        SourceFirmware::Bios => Firmware::Bios,
        SourceFirmware::Efi => Firmware::Uefi,
    };
    let tpm = super::tpm::map(src, opts.no_tpm.as_deref());
    notes.extend(tpm.note());
    let mut annotations = BTreeMap::from([(IMPORTED_FROM.to_owned(), "vmware".to_owned())]);
    if let Some(os) = &src.guest_os {
        annotations.insert(VMWARE_GUEST_OS.into(), os.clone());
    }
    if let Some(hw) = &src.hardware_version {
        annotations.insert(VMWARE_HW_VERSION.into(), hw.clone());
    }
    let spec = VirtualMachineSpec {
        run_strategy: opts.run_strategy,
        cpu: Cpu {
            sockets,
            cores,
            ..Cpu::default()
        },
        memory: Memory {
            size: Quantity(format_bytes(i128::from(src.memory_mib) << 20)),
        },
        firmware: Some(firmware),
        secure_boot: (firmware == Firmware::Uefi).then_some(src.secure_boot),
        tpm: tpm.spec,
        // A VNC display, like every VM unless it says `graphics: none`.
        graphics: None,
        kernel_boot: None,
        disks: spec_disks,
        networks,
        cloud_init: None,
        hostname: None,
        node_name: None,
        node_selector: BTreeMap::new(),
        anti_affinity_group: None,
        termination_grace_period_seconds: 60,
        eviction_strategy: Default::default(),
        template: false,
        drain_strategy: Default::default(),
    };
    let mut vm = VirtualMachine::new(&opts.name, spec);
    vm.metadata = ObjectMeta {
        name: Some(opts.name.clone()),
        namespace: Some(opts.namespace.clone()),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };
    Built {
        vm,
        image_files,
        notes,
        unmapped_networks: unmapped,
    }
}

/// Why the manifest could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Serialization failed.
    #[error("cannot render the manifest as YAML")]
    Render(#[source] serde_saphyr::ser_error::Error),
    /// Writing failed (a full disk, say).
    #[error("{file}: cannot write the manifest")]
    Write {
        /// The manifest file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The manifest as YAML text.
pub fn render(vm: &VirtualMachine) -> Result<String, ManifestError> {
    serde_saphyr::to_string(vm).map_err(ManifestError::Render)
}

/// Write the manifest to `w` and flush it; `file` names it in errors.
pub fn write_to(w: &mut impl Write, file: &Path, vm: &VirtualMachine) -> Result<(), ManifestError> {
    let text = render(vm)?;
    let io = |source| ManifestError::Write {
        file: file.to_owned(),
        source,
    };
    w.write_all(text.as_bytes()).map_err(io)?;
    w.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(sanitize_name("Web Server (prod) #2"), "web-server-prod-2");
        assert_eq!(sanitize_name("___"), "imported-vm");
        assert_eq!(sanitize_name(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn network_map_arguments_parse_every_target_kind() {
        assert_eq!(
            parse_network_map("VM Network=prod").unwrap(),
            ("VM Network".into(), NetworkTarget::Network("prod".into()))
        );
        assert_eq!(
            parse_network_map("a=bridge:br0").unwrap().1,
            NetworkTarget::Bridge("br0".into())
        );
        assert_eq!(
            parse_network_map("a=network:lan").unwrap().1,
            NetworkTarget::Network("lan".into())
        );
        assert_eq!(parse_network_map("a=user").unwrap().1, NetworkTarget::User);
        assert!(parse_network_map("novalue").is_err());
        assert!(parse_network_map("a=bridge:much-too-long-bridge").is_err());
        assert!(parse_network_map("a=bad name").is_err());
    }

    #[test]
    fn buses_and_nic_models_follow_the_mapping_table() {
        assert_eq!(
            map_bus(ControllerKind::Pvscsi, ScsiBus::Scsi),
            DiskBus::Scsi
        );
        assert_eq!(
            map_bus(ControllerKind::LsiLogic, ScsiBus::Virtio),
            DiskBus::Virtio
        );
        assert_eq!(map_bus(ControllerKind::Ide, ScsiBus::Scsi), DiskBus::Sata);
        assert_eq!(
            map_bus(ControllerKind::LsiLogicSas, ScsiBus::Sata),
            DiskBus::Sata,
            "Windows' own AHCI driver boots it"
        );
        assert_eq!(map_bus(ControllerKind::Sata, ScsiBus::Scsi), DiskBus::Sata);
        assert_eq!(
            map_bus(ControllerKind::Nvme, ScsiBus::Scsi),
            DiskBus::Virtio
        );
        assert_eq!(map_nic_model("vmxnet3", false), NicModel::Virtio);
        assert_eq!(map_nic_model("e1000", false), NicModel::Virtio);
        assert_eq!(map_nic_model("e1000", true), NicModel::E1000e);
        assert_eq!(map_nic_model("vmxnet3", true), NicModel::E1000e);
        assert_eq!(map_nic_model("vlance", true), NicModel::Rtl8139);
    }

    #[test]
    fn macs_must_be_unicast_and_well_formed() {
        assert!(valid_mac("00:50:56:aa:bb:cc"));
        assert!(!valid_mac("01:50:56:aa:bb:cc"));
        assert!(!valid_mac("00:00:00:00:00:00"));
        assert!(!valid_mac("0:50:56:aa:bb:cc"));
    }

    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_while_writing_the_manifest_is_an_error_naming_the_file() {
        let vm = VirtualMachine::new(
            "x",
            VirtualMachineSpec {
                run_strategy: RunStrategy::Halted,
                cpu: Cpu::default(),
                memory: Memory {
                    size: Quantity("1Gi".into()),
                },
                firmware: None,
                secure_boot: None,
                tpm: None,
                graphics: None,
                kernel_boot: None,
                disks: vec![],
                networks: vec![],
                cloud_init: None,
                hostname: None,
                node_name: None,
                node_selector: BTreeMap::new(),
                anti_affinity_group: None,
                termination_grace_period_seconds: 60,
                eviction_strategy: Default::default(),
                template: false,
                drain_strategy: Default::default(),
            },
        );
        let err = write_to(&mut Full, Path::new("/out/x/x.yaml"), &vm).unwrap_err();
        let chain = format!(
            "{err}: {}",
            std::error::Error::source(&err)
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        assert!(
            chain.contains("/out/x/x.yaml") && chain.contains("No space left"),
            "{chain}"
        );
    }
}
