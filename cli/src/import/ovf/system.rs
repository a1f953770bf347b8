//! The VirtualSystem: its identity, firmware, the hardware items that apply to the chosen
//! deployment option, the controllers disks hang on, and the boot disk.

use std::collections::BTreeMap;

use super::deployment::applies;
use super::disks::OvfDisk;
use super::items::{self, Controller, ItemContext};
use super::{OVF, OVF_ATTR, OvfError, OvfFile, RASD, VMW, VSSD, vmw_config};
use crate::import::model::{ControllerKind, SourceFirmware, SourceVm};
use crate::import::xml::Element;

/// Read the VM of `system` for configuration `config`.
pub(super) fn read_system(
    system: &Element,
    disks: &BTreeMap<String, OvfDisk>,
    files: &[OvfFile],
    config: Option<&str>,
) -> Result<SourceVm, OvfError> {
    let hw = system
        .child(OVF, "VirtualHardwareSection")
        .ok_or(OvfError::Missing("VirtualHardwareSection"))?;
    let items: Vec<&Element> = hw
        .children
        .iter()
        .filter(|c| c.is(OVF, "Item") || c.is(OVF, "StorageItem") || c.is(OVF, "EthernetPortItem"))
        .filter(|c| applies(c, config))
        .collect();
    let mut vm = header(system, hw);
    let mut ctx = ItemContext {
        controllers: controllers(&items)?,
        disks,
        files,
        disk_slots: BTreeMap::new(),
    };
    for (n, item) in items.iter().enumerate() {
        items::read_item(&mut vm, item, n, &mut ctx)?;
    }
    vm.boot_disk = boot_disk(system, &ctx.disk_slots);
    vm.vcpus = vm.vcpus.max(1);
    vm.cores_per_socket = vm.cores_per_socket.max(1);
    vm.disks
        .sort_by_key(|d| (d.controller.rank(), d.controller_index, d.unit));
    Ok(vm)
}

/// Name, hardware version, guest OS, firmware and Tools, from outside the items.
fn header(system: &Element, hw: &Element) -> SourceVm {
    let config = vmw_config(hw);
    let os = system.child(OVF, "OperatingSystemSection");
    SourceVm {
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
    }
}

/// The disk controllers by InstanceID (disks refer to them through `Parent`).
fn controllers(items: &[&Element]) -> Result<BTreeMap<String, Controller>, OvfError> {
    let mut controllers = BTreeMap::new();
    let mut next_index: BTreeMap<&str, u32> = BTreeMap::new();
    for item in items {
        let rtype = items::resource_type(item)?;
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
        controllers.insert(
            id.to_owned(),
            Controller {
                kind,
                index,
                shared,
            },
        );
    }
    Ok(controllers)
}

/// The slot of the first disk in the VM's boot order, as vSphere exports it:
/// `<vmw:BootOrderSection vmw:type="disk" vmw:instanceId="N">` sections after the
/// VirtualHardwareSection, in boot order, naming items by InstanceID.
fn boot_disk(system: &Element, disk_slots: &BTreeMap<String, String>) -> Option<String> {
    system
        .children_named(VMW, "BootOrderSection")
        .filter(|s| {
            s.attr(VMW, "type")
                .is_some_and(|t| t.eq_ignore_ascii_case("disk"))
        })
        .filter_map(|s| s.attr(VMW, "instanceId"))
        .find_map(|id| disk_slots.get(id.trim()).cloned())
}
