//! One CIM resource item (`Item`, `StorageItem`, `EthernetPortItem`): processor, memory,
//! disk, network adapter, or a device that is listed (CD-ROM, USB, serial, passthrough…).

use std::collections::BTreeMap;

use super::disks::{OvfDisk, capacity};
use super::{OvfError, OvfFile, RASD, VMW, units, vmw_config};
use crate::import::model::{
    ControllerKind, DeviceKind, OtherDevice, SourceDisk, SourceNic, SourceVm,
};
use crate::import::xml::Element;

/// A disk controller.
#[derive(Clone, Copy, Debug)]
pub(super) struct Controller {
    pub kind: ControllerKind,
    pub index: u32,
    pub shared: bool,
}

/// What items refer to, and what they leave for the boot order.
pub(super) struct ItemContext<'a> {
    pub controllers: BTreeMap<String, Controller>,
    pub disks: &'a BTreeMap<String, OvfDisk>,
    pub files: &'a [OvfFile],
    /// Disk items' InstanceID → slot, for `vmw:BootOrderSection`.
    pub disk_slots: BTreeMap<String, String>,
}

pub(super) fn resource_type(item: &Element) -> Result<u32, OvfError> {
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

/// Add what item number `n` describes to `vm`.
pub(super) fn read_item(
    vm: &mut SourceVm,
    item: &Element,
    n: usize,
    ctx: &mut ItemContext<'_>,
) -> Result<(), OvfError> {
    let rtype = resource_type(item)?;
    let label = item
        .child_text(RASD, "ElementName")
        .or_else(|| item.child_text(RASD, "Caption"))
        .map_or_else(|| format!("Item {}", n.saturating_add(1)), str::to_owned);
    let sub = item
        .child_text(RASD, "ResourceSubType")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let cfg = vmw_config(item);
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
        17 => {
            let disk = read_disk(item, &cfg, ctx)?;
            if let Some(id) = item.child_text(RASD, "InstanceID") {
                ctx.disk_slots.insert(id.to_owned(), disk.slot());
            }
            vm.disks.push(disk);
        }
        10 => {
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
        _ => {
            if let Some(kind) = other_device(rtype, &sub, &cfg) {
                vm.devices.push(OtherDevice { kind, label });
            }
        }
    }
    Ok(())
}

/// The kind of a device that is neither a disk nor a NIC, if it is one the report lists.
fn other_device(rtype: u32, sub: &str, cfg: &BTreeMap<String, String>) -> Option<DeviceKind> {
    Some(match rtype {
        14 => DeviceKind::Floppy,
        15 | 16 => DeviceKind::Cdrom,
        23 => DeviceKind::UsbController,
        21 => {
            let network = sub.contains("uri")
                || cfg
                    .keys()
                    .any(|k| k.contains("serviceuri") || k.contains("vspc"));
            if network {
                DeviceKind::SerialNetwork
            } else {
                DeviceKind::Serial
            }
        }
        1 if is_pci_passthrough(sub) => {
            // `vmware.pcipassthrough`, `vmware.pci.passthrough.vmiop` (NVIDIA GRID),
            // `…dvx`, `…dynamic`: a vmiop backing or a vgpu key is a vGPU.
            let vgpu = squash(sub).contains("vmiop")
                || sub.contains("vgpu")
                || cfg
                    .iter()
                    .any(|(k, v)| k.contains("vgpu") || v.to_ascii_lowercase().contains("vmiop"));
            if vgpu {
                DeviceKind::Vgpu
            } else {
                DeviceKind::PciPassthrough
            }
        }
        1 if squash(sub).contains("tpm") => DeviceKind::Vtpm,
        1 if sub.contains("usb") => DeviceKind::UsbPassthrough,
        35 => DeviceKind::Sound,
        1 if sub.contains("sound") => DeviceKind::Sound,
        _ => return None,
    })
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

/// The file and capacity a disk item's `HostResource` names: `ovf:/disk/ID` (DiskSection),
/// `ovf:/file/ID` (a file with no DiskSection entry), or nothing at all (a new empty disk
/// sized by the item's own `VirtualQuantity`).
fn disk_source(
    item: &Element,
    ctx: &ItemContext<'_>,
) -> Result<(Option<String>, Option<u64>), OvfError> {
    let Some(host) = item
        .child_text(RASD, "HostResource")
        .filter(|h| !h.is_empty())
    else {
        let qty = item
            .child_text(RASD, "VirtualQuantity")
            .ok_or(OvfError::Missing(
                "disk HostResource (or VirtualQuantity for a new empty disk)",
            ))?;
        let units_text = item
            .child_text(RASD, "VirtualQuantityUnits")
            .or_else(|| item.child_text(RASD, "AllocationUnits"))
            .unwrap_or("byte");
        return Ok((None, Some(capacity(qty, units_text)?)));
    };
    let path = host.trim_start_matches("ovf:");
    if let Some(file_id) = path.strip_prefix("/file/") {
        let file =
            ctx.files
                .iter()
                .find(|f| f.id == file_id)
                .ok_or_else(|| OvfError::Dangling {
                    what: "disk HostResource",
                    id: host.into(),
                })?;
        return Ok((Some(file.href.clone()), None));
    }
    let disk_id = path.trim_start_matches("/disk/");
    let disk = ctx.disks.get(disk_id).ok_or_else(|| OvfError::Dangling {
        what: "disk HostResource",
        id: host.into(),
    })?;
    Ok((disk.href.clone(), disk.capacity))
}

fn read_disk(
    item: &Element,
    cfg: &BTreeMap<String, String>,
    ctx: &ItemContext<'_>,
) -> Result<SourceDisk, OvfError> {
    let (file, capacity_bytes) = disk_source(item, ctx)?;
    let parent = item
        .child_text(RASD, "Parent")
        .ok_or(OvfError::Missing("disk Parent"))?;
    let c = *ctx
        .controllers
        .get(parent)
        .ok_or_else(|| OvfError::Dangling {
            what: "disk Parent",
            id: parent.into(),
        })?;
    let unit = item
        .child_text(RASD, "AddressOnParent")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let lower = |k: &str| {
        cfg.get(k)
            .map(|m| m.to_ascii_lowercase())
            .unwrap_or_default()
    };
    let mode = lower("backing.diskmode");
    let sharing = lower("backing.sharing");
    Ok(SourceDisk {
        controller: c.kind,
        controller_index: c.index,
        unit,
        file,
        capacity_bytes,
        independent: mode.starts_with("independent"),
        shared: c.shared || sharing.contains("multiwriter"),
        raw_device_mapping: mode.contains("raw") || cfg.contains_key("backing.lunuuid"),
    })
}
