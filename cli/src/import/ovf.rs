//! OVF descriptors (DMTF DSP0243, as vSphere exports them) into a [`SourceVm`].
//!
//! Reads the References, DiskSection, NetworkSection and the single VirtualSystem's
//! VirtualHardwareSection: CIM resource items (processor, memory, controllers, disks, NICs,
//! other devices) and VMware's `vmw:Config` extensions (firmware, secure boot, disk mode,
//! sharing). Names are matched by namespace URI, never by prefix. Pure: the caller reads
//! the file.

use std::collections::BTreeMap;

use super::model::{
    ControllerKind, DeviceKind, OtherDevice, SourceDisk, SourceFirmware, SourceNic, SourceVm,
};
use super::xml::{self, Element, XmlError};

/// OVF envelope namespaces (1.x and 2.x).
const OVF: &[&str] = &[
    "http://schemas.dmtf.org/ovf/envelope/1",
    "http://schemas.dmtf.org/ovf/envelope/2",
];
/// OVF attributes appear qualified (`ovf:href`) or, in some exporters, unqualified.
const OVF_ATTR: &[&str] = &[
    "http://schemas.dmtf.org/ovf/envelope/1",
    "http://schemas.dmtf.org/ovf/envelope/2",
    "",
];
/// CIM settings data namespaces used inside hardware items.
const RASD: &[&str] = &[
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData",
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData",
];
const VSSD: &[&str] =
    &["http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"];
const VMW: &[&str] = &["http://www.vmware.com/schema/ovf"];

/// Why an OVF descriptor could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OvfError {
    /// Not XML.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The root is not an OVF Envelope.
    #[error("the root element is not an OVF Envelope")]
    NotOvf,
    /// No VirtualSystem, or several side by side.
    #[error("expected exactly one VirtualSystem, found {0}")]
    VirtualSystems(usize),
    /// A VirtualSystemCollection (a vApp): several VMs in one OVF.
    #[error(
        "the OVF is a VirtualSystemCollection (a vApp) of {0} virtual system(s); ivctl imports \
         one VM per OVF: export each VM of the vApp on its own (vSphere: Export OVF Template \
         on the VM, or ovftool vi://…/vm-name) and import each"
    )]
    Collection(usize),
    /// A required element is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// An element whose value does not parse.
    #[error("{what} {value:?} is not valid")]
    BadValue {
        /// What it is.
        what: &'static str,
        /// The value found.
        value: String,
    },
    /// A reference to an id that is not defined.
    #[error("{what} refers to {id:?}, which is not defined")]
    Dangling {
        /// What refers.
        what: &'static str,
        /// The id.
        id: String,
    },
}

/// A file the OVF references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvfFile {
    /// `ovf:id`.
    pub id: String,
    /// `ovf:href`, relative to the descriptor.
    pub href: String,
    /// Declared size in bytes.
    pub size: Option<u64>,
}

/// What an OVF descriptor says.
#[derive(Clone, Debug, PartialEq)]
pub struct OvfPackage {
    /// Every referenced file.
    pub files: Vec<OvfFile>,
    /// The VM.
    pub vm: SourceVm,
}

/// Parse an OVF descriptor's text.
pub fn parse(text: &str) -> Result<OvfPackage, OvfError> {
    let root = xml::parse(text)?;
    if !root.is(OVF, "Envelope") {
        return Err(OvfError::NotOvf);
    }
    let files: Vec<OvfFile> = root
        .child(OVF, "References")
        .map(|refs| {
            refs.children_named(OVF, "File")
                .map(|f| {
                    Ok(OvfFile {
                        id: f
                            .attr(OVF_ATTR, "id")
                            .ok_or(OvfError::Missing("File ovf:id"))?
                            .to_owned(),
                        href: f
                            .attr(OVF_ATTR, "href")
                            .ok_or(OvfError::Missing("File ovf:href"))?
                            .to_owned(),
                        size: f.attr(OVF_ATTR, "size").and_then(|s| s.parse().ok()),
                    })
                })
                .collect::<Result<_, OvfError>>()
        })
        .transpose()?
        .unwrap_or_default();
    let disks = read_disk_section(&root, &files)?;
    let systems: Vec<&Element> = root.children_named(OVF, "VirtualSystem").collect();
    if let Some(c) = root.child(OVF, "VirtualSystemCollection") {
        return Err(OvfError::Collection(
            c.children_named(OVF, "VirtualSystem").count(),
        ));
    }
    if systems.len() != 1 {
        return Err(OvfError::VirtualSystems(systems.len()));
    }
    let vm = read_system(systems[0], &disks)?;
    Ok(OvfPackage { files, vm })
}

/// A DiskSection entry: its file and capacity.
struct OvfDisk {
    href: String,
    capacity: Option<u64>,
}

fn read_disk_section(
    root: &Element,
    files: &[OvfFile],
) -> Result<BTreeMap<String, OvfDisk>, OvfError> {
    let mut out = BTreeMap::new();
    let Some(section) = root.child(OVF, "DiskSection") else {
        return Ok(out);
    };
    for d in section.children_named(OVF, "Disk") {
        let id = d
            .attr(OVF_ATTR, "diskId")
            .ok_or(OvfError::Missing("Disk ovf:diskId"))?;
        let file_ref = d
            .attr(OVF_ATTR, "fileRef")
            .ok_or(OvfError::Missing("Disk ovf:fileRef"))?;
        let file = files
            .iter()
            .find(|f| f.id == file_ref)
            .ok_or_else(|| OvfError::Dangling {
                what: "Disk ovf:fileRef",
                id: file_ref.into(),
            })?;
        let capacity = match d.attr(OVF_ATTR, "capacity") {
            Some(c) => {
                let n: u64 = c.trim().parse().map_err(|_| OvfError::BadValue {
                    what: "Disk capacity",
                    value: c.into(),
                })?;
                let unit = units(
                    d.attr(OVF_ATTR, "capacityAllocationUnits")
                        .unwrap_or("byte"),
                )?;
                let bytes = n.checked_mul(unit).ok_or_else(|| OvfError::BadValue {
                    what: "Disk capacity in bytes",
                    value: format!("{c} × {unit}"),
                })?;
                Some(bytes)
            }
            None => None,
        };
        out.insert(
            id.to_owned(),
            OvfDisk {
                href: file.href.clone(),
                capacity,
            },
        );
    }
    Ok(out)
}

/// Programmatic units (DSP0004): `byte`, `byte * 2^20`, `byte * 1024`, and the common
/// `MegaBytes`/`GigaBytes` spellings.
pub fn units(text: &str) -> Result<u64, OvfError> {
    let bad = || OvfError::BadValue {
        what: "allocation units",
        value: text.into(),
    };
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "megabytes" | "mb" => return Ok(1 << 20),
        "gigabytes" | "gb" => return Ok(1 << 30),
        "kilobytes" | "kb" => return Ok(1 << 10),
        _ => {}
    }
    let mut parts = t.split('*').map(str::trim);
    if parts.next() != Some("byte") {
        return Err(bad());
    }
    let mut unit: u64 = 1;
    for factor in parts {
        let f = match factor.split_once('^') {
            Some((base, exp)) => {
                let base: u64 = base.trim().parse().map_err(|_| bad())?;
                let exp: u32 = exp.trim().parse().map_err(|_| bad())?;
                base.checked_pow(exp).ok_or_else(bad)?
            }
            None => factor.parse().map_err(|_| bad())?,
        };
        unit = unit.checked_mul(f).ok_or_else(bad)?;
    }
    Ok(unit)
}

/// `vmw:Config` key/values of an element (VirtualHardwareSection or an Item).
fn vmw_config(el: &Element) -> BTreeMap<String, String> {
    el.children
        .iter()
        .filter(|c| c.is(VMW, "Config") || c.is(VMW, "ExtraConfig"))
        .filter_map(|c| {
            Some((
                c.attr(VMW, "key")?.to_ascii_lowercase(),
                c.attr(VMW, "value")?.to_owned(),
            ))
        })
        .collect()
}

fn read_system(system: &Element, disks: &BTreeMap<String, OvfDisk>) -> Result<SourceVm, OvfError> {
    let hw = system
        .child(OVF, "VirtualHardwareSection")
        .ok_or(OvfError::Missing("VirtualHardwareSection"))?;
    let config = vmw_config(hw);
    let os = system.child(OVF, "OperatingSystemSection");
    let mut vm = SourceVm {
        name: system
            .child_text(OVF, "Name")
            .or_else(|| system.attr(OVF_ATTR, "id"))
            .unwrap_or("imported")
            .to_owned(),
        hardware_version: hw
            .child(OVF, "System")
            .and_then(|s| s.child_text(VSSD, "VirtualSystemType"))
            .and_then(|t| t.split_whitespace().next())
            .map(str::to_owned),
        guest_os: os
            .and_then(|o| o.attr(VMW, "osType").map(str::to_owned))
            .or_else(|| {
                os.and_then(|o| o.child_text(OVF, "Description"))
                    .map(str::to_owned)
            }),
        cores_per_socket: 1,
        firmware: match config
            .get("firmware")
            .map(|f| f.to_ascii_lowercase())
            .as_deref()
        {
            Some("efi") => SourceFirmware::Efi,
            _ => SourceFirmware::Bios,
        },
        secure_boot: config
            .get("bootoptions.efisecurebootenabled")
            .or_else(|| config.get("uefi.secureboot.enabled"))
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        vmware_tools: config.keys().any(|k| k.starts_with("tools.")),
        ..SourceVm::default()
    };
    let items: Vec<&Element> = hw
        .children
        .iter()
        .filter(|c| c.is(OVF, "Item") || c.is(OVF, "StorageItem") || c.is(OVF, "EthernetPortItem"))
        .collect();
    // Controllers first: disks refer to them by InstanceID.
    let mut controllers: BTreeMap<String, (ControllerKind, u32, bool)> = BTreeMap::new();
    let mut next_index: BTreeMap<&str, u32> = BTreeMap::new();
    for item in &items {
        let rtype = resource_type(item)?;
        let sub = item
            .child_text(RASD, "ResourceSubType")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let kind = match rtype {
            5 => ControllerKind::Ide,
            6 => ControllerKind::from_scsi_model(&sub).ok_or_else(|| OvfError::BadValue {
                what: "SCSI controller ResourceSubType",
                value: sub.clone(),
            })?,
            20 if sub.contains("sata") || sub.contains("ahci") => ControllerKind::Sata,
            20 if sub.contains("nvme") => ControllerKind::Nvme,
            _ => continue,
        };
        let id = item
            .child_text(RASD, "InstanceID")
            .ok_or(OvfError::Missing("controller InstanceID"))?;
        let counter = next_index.entry(kind.family()).or_insert(0);
        let index = item
            .child_text(RASD, "Address")
            .and_then(|a| a.parse().ok())
            .unwrap_or(*counter);
        *counter = index.saturating_add(1);
        let shared = vmw_config(item)
            .get("sharedbus")
            .is_some_and(|v| !v.eq_ignore_ascii_case("nosharing"));
        controllers.insert(id.to_owned(), (kind, index, shared));
    }
    for (n, item) in items.iter().enumerate() {
        let rtype = resource_type(item)?;
        let label = item
            .child_text(RASD, "ElementName")
            .map_or_else(|| format!("Item {}", n + 1), str::to_owned);
        let sub = item
            .child_text(RASD, "ResourceSubType")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let cfg = vmw_config(item);
        if rtype == 10 {
            // An SR-IOV adapter is listed (its passthrough is not carried over) and kept as
            // a paravirtual NIC on the same network.
            let sriov = squash(&sub).contains("sriov");
            if sriov {
                vm.devices.push(OtherDevice {
                    kind: DeviceKind::SriovNic,
                    label: label.clone(),
                });
            }
            let model = if sriov { "vmxnet3" } else { sub.as_str() };
            vm.nics.push(nic(item, vm.nics.len(), model));
        }
        let mut device = |kind| {
            vm.devices.push(OtherDevice {
                kind,
                label: label.clone(),
            })
        };
        match rtype {
            3 => {
                vm.vcpus = number(item, "VirtualQuantity", "processor VirtualQuantity")?;
                if let Some(c) = item.child_text(VMW, "CoresPerSocket") {
                    vm.cores_per_socket = c.parse().map_err(|_| OvfError::BadValue {
                        what: "CoresPerSocket",
                        value: c.into(),
                    })?;
                }
            }
            4 => {
                let qty: u64 = number(item, "VirtualQuantity", "memory VirtualQuantity")?;
                let unit = units(
                    item.child_text(RASD, "AllocationUnits")
                        .unwrap_or("byte * 2^20"),
                )?;
                vm.memory_mib = qty.checked_mul(unit).ok_or_else(|| OvfError::BadValue {
                    what: "memory in bytes",
                    value: format!("{qty} × {unit}"),
                })? >> 20;
            }
            17 => vm.disks.push(read_disk(item, &cfg, &controllers, disks)?),
            10 => {}
            14 => device(DeviceKind::Floppy),
            15 | 16 => device(DeviceKind::Cdrom),
            23 => device(DeviceKind::UsbController),
            21 => {
                let network = sub.contains("uri")
                    || cfg
                        .keys()
                        .any(|k| k.contains("serviceuri") || k.contains("vspc"));
                device(if network {
                    DeviceKind::SerialNetwork
                } else {
                    DeviceKind::Serial
                });
            }
            1 if is_pci_passthrough(&sub) => {
                // `vmware.pcipassthrough`, `vmware.pci.passthrough.vmiop` (NVIDIA GRID),
                // `…dvx`, `…dynamic`: a vmiop backing or a vgpu key is a vGPU.
                let vgpu = squash(&sub).contains("vmiop")
                    || sub.contains("vgpu")
                    || cfg.iter().any(|(k, v)| {
                        k.contains("vgpu") || v.to_ascii_lowercase().contains("vmiop")
                    });
                device(if vgpu {
                    DeviceKind::Vgpu
                } else {
                    DeviceKind::PciPassthrough
                });
            }
            1 if squash(&sub).contains("tpm") => device(DeviceKind::Vtpm),
            1 if sub.contains("usb") => device(DeviceKind::UsbPassthrough),
            1 | 35 if sub.contains("sound") || rtype == 35 => device(DeviceKind::Sound),
            _ => {}
        }
    }
    vm.vcpus = vm.vcpus.max(1);
    vm.cores_per_socket = vm.cores_per_socket.max(1);
    vm.disks
        .sort_by_key(|d| (d.controller.rank(), d.controller_index, d.unit));
    Ok(vm)
}

/// A resource subtype without separators: `vmware.pci.passthrough` and `vmware.pcipassthrough`
/// are one thing.
fn squash(sub: &str) -> String {
    sub.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

fn is_pci_passthrough(sub: &str) -> bool {
    let s = squash(sub);
    s.contains("pcipassthrough") || s.contains("vgpu") || s.contains("vmiop")
}

/// A NIC item read as an adapter of `model` (an SR-IOV adapter becomes a paravirtual one).
fn nic(item: &Element, index: usize, model: &str) -> SourceNic {
    SourceNic {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        model: model.into(),
        network: item.child_text(RASD, "Connection").map(str::to_owned),
        mac: item
            .child_text(RASD, "Address")
            .filter(|a| !a.is_empty())
            .map(str::to_ascii_lowercase),
    }
}

fn resource_type(item: &Element) -> Result<u32, OvfError> {
    number(item, "ResourceType", "ResourceType")
}

fn number<T: std::str::FromStr>(
    item: &Element,
    field: &str,
    what: &'static str,
) -> Result<T, OvfError> {
    let text = item
        .child_text(RASD, field)
        .ok_or(OvfError::Missing(what))?;
    text.parse().map_err(|_| OvfError::BadValue {
        what,
        value: text.into(),
    })
}

fn read_disk(
    item: &Element,
    cfg: &BTreeMap<String, String>,
    controllers: &BTreeMap<String, (ControllerKind, u32, bool)>,
    disks: &BTreeMap<String, OvfDisk>,
) -> Result<SourceDisk, OvfError> {
    let host = item
        .child_text(RASD, "HostResource")
        .ok_or(OvfError::Missing("disk HostResource"))?;
    let disk_id = host.trim_start_matches("ovf:").trim_start_matches("/disk/");
    let disk = disks.get(disk_id).ok_or_else(|| OvfError::Dangling {
        what: "disk HostResource",
        id: host.into(),
    })?;
    let parent = item
        .child_text(RASD, "Parent")
        .ok_or(OvfError::Missing("disk Parent"))?;
    let (controller, controller_index, shared_bus) =
        *controllers.get(parent).ok_or_else(|| OvfError::Dangling {
            what: "disk Parent",
            id: parent.into(),
        })?;
    let unit = item
        .child_text(RASD, "AddressOnParent")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let mode = cfg
        .get("backing.diskmode")
        .map(|m| m.to_ascii_lowercase())
        .unwrap_or_default();
    let sharing = cfg
        .get("backing.sharing")
        .map(|m| m.to_ascii_lowercase())
        .unwrap_or_default();
    Ok(SourceDisk {
        controller,
        controller_index,
        unit,
        file: disk.href.clone(),
        capacity_bytes: disk.capacity,
        independent: mode.starts_with("independent"),
        shared: shared_bus || sharing.contains("multiwriter"),
        raw_device_mapping: mode.contains("raw") || cfg.contains_key("backing.lunuuid"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_units_follow_dsp0004() {
        assert_eq!(units("byte").unwrap(), 1);
        assert_eq!(units("byte * 2^30").unwrap(), 1 << 30);
        assert_eq!(units("byte * 1024").unwrap(), 1024);
        assert_eq!(units("MegaBytes").unwrap(), 1 << 20);
        assert!(units("furlongs").is_err());
        assert!(units("byte * 2^999").is_err());
    }

    #[test]
    fn a_document_that_is_not_an_envelope_is_refused() {
        assert!(matches!(parse("<Envelope/>"), Err(OvfError::NotOvf)));
    }

    #[test]
    fn a_collection_of_systems_is_refused() {
        let text = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">
            <VirtualSystem/><VirtualSystem/></Envelope>"#;
        assert!(matches!(parse(text), Err(OvfError::VirtualSystems(2))));
        // A vApp of one VM: named as what it is, not as "found 1".
        let vapp = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">
            <VirtualSystemCollection><VirtualSystem/></VirtualSystemCollection></Envelope>"#;
        let err = parse(vapp).unwrap_err();
        assert!(matches!(err, OvfError::Collection(1)), "{err:?}");
        assert!(
            err.to_string().contains("export each VM of the vApp"),
            "{err}"
        );
    }

    const DEVICES: &str = r#"<?xml version="1.0"?>
<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:r="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:v="http://www.vmware.com/schema/ovf">
  <ovf:References><ovf:File ovf:id="f1" ovf:href="a.vmdk"/><ovf:File ovf:id="f2" ovf:href="b.vmdk"/></ovf:References>
  <ovf:DiskSection>
    <ovf:Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^30"/>
    <ovf:Disk ovf:diskId="d2" ovf:fileRef="f2" ovf:capacity="1024"/>
  </ovf:DiskSection>
  <ovf:VirtualSystem ovf:id="cluster-node">
    <ovf:VirtualHardwareSection>
      <ovf:Item><r:ResourceType>3</r:ResourceType><r:VirtualQuantity>8</r:VirtualQuantity><r:InstanceID>1</r:InstanceID></ovf:Item>
      <ovf:Item><r:ResourceType>4</r:ResourceType><r:VirtualQuantity>2</r:VirtualQuantity><r:AllocationUnits>byte * 2^30</r:AllocationUnits><r:InstanceID>2</r:InstanceID></ovf:Item>
      <ovf:Item><r:ResourceType>6</r:ResourceType><r:ResourceSubType>lsilogicsas</r:ResourceSubType><r:InstanceID>3</r:InstanceID><r:Address>1</r:Address>
        <v:Config v:key="sharedBus" v:value="physicalSharing"/></ovf:Item>
      <ovf:Item><r:ResourceType>17</r:ResourceType><r:HostResource>ovf:/disk/d1</r:HostResource><r:Parent>3</r:Parent><r:AddressOnParent>2</r:AddressOnParent><r:InstanceID>4</r:InstanceID></ovf:Item>
      <ovf:Item><r:ResourceType>17</r:ResourceType><r:HostResource>/disk/d2</r:HostResource><r:Parent>3</r:Parent><r:InstanceID>5</r:InstanceID>
        <v:Config v:key="backing.diskMode" v:value="independent_persistent"/></ovf:Item>
      <ovf:Item><r:ResourceType>23</r:ResourceType><r:ElementName>USB controller</r:ElementName><r:InstanceID>6</r:InstanceID></ovf:Item>
      <ovf:Item><r:ResourceType>1</r:ResourceType><r:ResourceSubType>vmware.pcipassthrough</r:ResourceSubType><r:ElementName>PCI device 0</r:ElementName><r:InstanceID>7</r:InstanceID>
        <v:Config v:key="backing.vgpu" v:value="grid_t4-4q"/></ovf:Item>
      <ovf:Item><r:ResourceType>21</r:ResourceType><r:ElementName>Serial port 1</r:ElementName><r:InstanceID>8</r:InstanceID>
        <v:Config v:key="backing.serviceURI" v:value="telnet://:7000"/></ovf:Item>
      <ovf:Item><r:ResourceType>15</r:ResourceType><r:ElementName>CD/DVD drive 1</r:ElementName><r:InstanceID>9</r:InstanceID></ovf:Item>
    </ovf:VirtualHardwareSection>
  </ovf:VirtualSystem>
</ovf:Envelope>"#;

    #[test]
    fn devices_without_equivalent_shared_and_independent_disks_are_read_from_an_ovf() {
        let pkg = parse(DEVICES).unwrap();
        let vm = pkg.vm;
        assert_eq!(vm.name, "cluster-node");
        assert_eq!((vm.vcpus, vm.cores_per_socket, vm.memory_mib), (8, 1, 2048));
        assert_eq!(vm.disks.len(), 2);
        assert_eq!(vm.disks[0].slot(), "scsi1:0");
        assert_eq!(vm.disks[1].slot(), "scsi1:2");
        assert_eq!(vm.disks[1].capacity_bytes, Some(8 << 30));
        assert!(
            vm.disks
                .iter()
                .all(|d| d.shared && d.controller == ControllerKind::LsiLogicSas)
        );
        assert!(vm.disks[0].independent && !vm.disks[1].independent);
        let kinds: Vec<DeviceKind> = vm.devices.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            [
                DeviceKind::UsbController,
                DeviceKind::Vgpu,
                DeviceKind::SerialNetwork,
                DeviceKind::Cdrom
            ]
        );
        assert_eq!(pkg.files.len(), 2);
    }

    #[test]
    fn a_disk_pointing_at_an_undefined_file_is_a_dangling_reference() {
        let text = DEVICES.replace(r#"ovf:fileRef="f2""#, r#"ovf:fileRef="nope""#);
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }

    #[test]
    fn vgpu_backings_passthrough_spellings_sr_iov_and_a_vtpm_are_listed() {
        let items = r#"<ovf:Item><r:ResourceType>1</r:ResourceType><r:ResourceSubType>vmware.pci.passthrough.vmiop</r:ResourceSubType><r:ElementName>PCI device 0</r:ElementName><r:InstanceID>7</r:InstanceID></ovf:Item>
      <ovf:Item><r:ResourceType>1</r:ResourceType><r:ResourceSubType>vmware.pci.passthrough.dynamic</r:ResourceSubType><r:ElementName>PCI device 1</r:ElementName><r:InstanceID>10</r:InstanceID></ovf:Item>
      <ovf:Item><r:ResourceType>1</r:ResourceType><r:ResourceSubType>vmware.pcipassthrough</r:ResourceSubType><r:ElementName>PCI device 2</r:ElementName><r:InstanceID>11</r:InstanceID>
        <v:Config v:key="backing.id" v:value="vmiop:grid_a100-4c"/></ovf:Item>
      <ovf:Item><r:ResourceType>10</r:ResourceType><r:ResourceSubType>vmware.sriovethernetcard</r:ResourceSubType><r:ElementName>Network adapter 1</r:ElementName><r:Connection>VM Network</r:Connection><r:InstanceID>12</r:InstanceID></ovf:Item>
      <ovf:Item><r:ResourceType>1</r:ResourceType><r:ResourceSubType>vmware.vtpm</r:ResourceSubType><r:ElementName>Virtual TPM</r:ElementName><r:InstanceID>13</r:InstanceID></ovf:Item>"#;
        let start = DEVICES
            .find("<ovf:Item><r:ResourceType>1</r:ResourceType>")
            .unwrap();
        let end = DEVICES
            .find("<ovf:Item><r:ResourceType>21</r:ResourceType>")
            .unwrap();
        let text = format!("{}{}\n      {}", &DEVICES[..start], items, &DEVICES[end..]);
        let vm = parse(&text).unwrap().vm;
        let found: Vec<(DeviceKind, &str)> = vm
            .devices
            .iter()
            .filter(|d| {
                d.label != "USB controller"
                    && !d.label.starts_with("Serial")
                    && !d.label.starts_with("CD")
            })
            .map(|d| (d.kind, d.label.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (DeviceKind::Vgpu, "PCI device 0"),
                (DeviceKind::PciPassthrough, "PCI device 1"),
                (DeviceKind::Vgpu, "PCI device 2"),
                (DeviceKind::SriovNic, "Network adapter 1"),
                (DeviceKind::Vtpm, "Virtual TPM"),
            ]
        );
        assert_eq!(vm.nics.len(), 1, "the SR-IOV adapter's network is kept");
        assert_eq!(vm.nics[0].model, "vmxnet3");
        assert_eq!(vm.nics[0].network.as_deref(), Some("VM Network"));
    }
}
