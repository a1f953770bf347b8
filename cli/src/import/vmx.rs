//! The `.vmx` key/value format and its meaning.
//!
//! A VMX file is lines of `key = "value"`; keys are case-insensitive, `#` starts a comment,
//! and special characters in values are escaped as `|XX` (two hex digits). This module
//! parses that text into a map and reads the VM's hardware from it. Pure: no file access
//! (the caller reads the `.vmx` and the optional `.vmsd`).

use std::collections::BTreeMap;

use super::model::{
    ControllerKind, DeviceKind, OtherDevice, SourceDisk, SourceFirmware, SourceNic, SourceVm,
};

/// Why a VMX file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmxError {
    /// A line that is neither blank, a comment, nor `key = value`.
    #[error("line {line}: expected `key = \"value\"`")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
    /// A value that is not what its key needs.
    #[error("{key} = {value:?} is not valid")]
    BadValue {
        /// The key.
        key: String,
        /// The value found.
        value: String,
    },
}

/// Parsed VMX keys, lower-cased, with unescaped values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vmx(BTreeMap<String, String>);

impl Vmx {
    /// Parse the text of a `.vmx` (or `.vmsd`, which has the same syntax).
    pub fn parse(text: &str) -> Result<Self, VmxError> {
        let mut map = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or(VmxError::Syntax { line: i + 1 })?;
            let key = key.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(VmxError::Syntax { line: i + 1 });
            }
            let value = value.trim();
            let value = match value.strip_prefix('"') {
                Some(rest) => rest
                    .strip_suffix('"')
                    .ok_or(VmxError::Syntax { line: i + 1 })?,
                None => value,
            };
            map.insert(key.to_ascii_lowercase(), unescape(value));
        }
        Ok(Self(map))
    }

    /// The value of a key (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(&key.to_ascii_lowercase()).map(String::as_str)
    }

    /// Whether a key is `TRUE` (VMware booleans are TRUE/FALSE, sometimes yes/no or 1/0).
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1"))
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, VmxError> {
        self.get(key)
            .map(|v| {
                v.trim().parse().map_err(|_| VmxError::BadValue {
                    key: key.into(),
                    value: v.into(),
                })
            })
            .transpose()
    }

    /// Every key, lower-cased, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Undo VMware's `|XX` escaping; a `|` not followed by two hex digits stays as it is.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'|'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The number of snapshots a `.vmsd` file records.
pub fn snapshot_count(vmsd: &Vmx) -> Result<u32, VmxError> {
    Ok(vmsd.number("snapshot.numSnapshots")?.unwrap_or(0))
}

/// Read the VM's hardware from its VMX keys.
pub fn to_source_vm(vmx: &Vmx, fallback_name: &str) -> Result<SourceVm, VmxError> {
    let vcpus: u32 = vmx.number("numvcpus")?.unwrap_or(1).max(1);
    let cores_per_socket: u32 = vmx.number("cpuid.coresPerSocket")?.unwrap_or(1).max(1);
    let memory_mib: u64 = vmx.number("memsize")?.unwrap_or(0);
    let firmware = match vmx.get("firmware").map(str::to_ascii_lowercase).as_deref() {
        Some("efi") => SourceFirmware::Efi,
        None | Some("bios") => SourceFirmware::Bios,
        Some(other) => {
            return Err(VmxError::BadValue {
                key: "firmware".into(),
                value: other.into(),
            });
        }
    };
    let mut vm = SourceVm {
        name: vmx.get("displayName").unwrap_or(fallback_name).to_owned(),
        hardware_version: vmx.get("virtualHW.version").map(|v| format!("vmx-{v:0>2}")),
        guest_os: vmx.get("guestOS").map(str::to_owned),
        vcpus,
        cores_per_socket,
        memory_mib,
        firmware,
        secure_boot: vmx.flag("uefi.secureBoot.enabled"),
        vmware_tools: vmx
            .keys()
            .any(|k| k.starts_with("tools.") || k.starts_with("toolsinstall")),
        // `bios.hddOrder = "nvme0:1,scsi0:0"`: the first is the disk the BIOS boots.
        boot_disk: vmx
            .get("bios.hddOrder")
            .and_then(|v| v.split(',').next())
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty()),
        ..SourceVm::default()
    };
    read_disks(vmx, &mut vm)?;
    read_nics(vmx, &mut vm);
    read_other_devices(vmx, &mut vm);
    Ok(vm)
}

/// Controller numbers and unit numbers VMware allows per family.
const FAMILIES: [(&str, u32, u32); 4] = [
    ("scsi", 4, 64),
    ("sata", 4, 30),
    ("ide", 2, 2),
    ("nvme", 4, 64),
];

fn read_disks(vmx: &Vmx, vm: &mut SourceVm) -> Result<(), VmxError> {
    for (family, controllers, units) in FAMILIES {
        for c in 0..controllers {
            let ctl = format!("{family}{c}");
            // The two IDE channels are built into every VMware machine: VMware writes
            // `ide0:0.present` for a disk on them, never `ide0.present`.
            let builtin = family == "ide" && vmx.get(&format!("{ctl}.present")).is_none();
            if !builtin && !vmx.flag(&format!("{ctl}.present")) {
                continue;
            }
            let kind = match family {
                "scsi" => {
                    let model = vmx.get(&format!("{ctl}.virtualDev")).unwrap_or("lsilogic");
                    ControllerKind::from_scsi_model(model).ok_or_else(|| VmxError::BadValue {
                        key: format!("{ctl}.virtualDev"),
                        value: model.into(),
                    })?
                }
                "sata" => ControllerKind::Sata,
                "ide" => ControllerKind::Ide,
                _ => ControllerKind::Nvme,
            };
            let shared_bus = vmx
                .get(&format!("{ctl}.sharedBus"))
                .is_some_and(|v| !v.eq_ignore_ascii_case("none"));
            for u in 0..units {
                let slot = format!("{ctl}:{u}");
                if !vmx.flag(&format!("{slot}.present")) {
                    continue;
                }
                let device_type = vmx
                    .get(&format!("{slot}.deviceType"))
                    .unwrap_or("disk")
                    .to_ascii_lowercase();
                if device_type.contains("cdrom") {
                    vm.devices.push(OtherDevice {
                        kind: DeviceKind::Cdrom,
                        label: slot,
                    });
                    continue;
                }
                let Some(file) = vmx.get(&format!("{slot}.fileName")) else {
                    return Err(VmxError::BadValue {
                        key: format!("{slot}.fileName"),
                        value: String::new(),
                    });
                };
                let mode = vmx
                    .get(&format!("{slot}.mode"))
                    .unwrap_or("persistent")
                    .to_ascii_lowercase();
                let sharing = vmx
                    .get(&format!("{slot}.sharing"))
                    .unwrap_or("none")
                    .to_ascii_lowercase();
                vm.disks.push(SourceDisk {
                    controller: kind,
                    controller_index: c,
                    unit: u,
                    file: Some(file.to_owned()),
                    capacity_bytes: None,
                    independent: mode.starts_with("independent"),
                    shared: shared_bus || sharing == "multi-writer",
                    raw_device_mapping: device_type == "rawdisk" || device_type.contains("raw"),
                });
            }
        }
    }
    Ok(())
}

fn read_nics(vmx: &Vmx, vm: &mut SourceVm) {
    for i in 0..10u32 {
        let eth = format!("ethernet{i}");
        if !vmx.flag(&format!("{eth}.present")) {
            continue;
        }
        let address_type = vmx
            .get(&format!("{eth}.addressType"))
            .unwrap_or("generated")
            .to_ascii_lowercase();
        let mac = if address_type == "static" {
            vmx.get(&format!("{eth}.address"))
        } else {
            vmx.get(&format!("{eth}.generatedAddress"))
        };
        vm.nics.push(SourceNic {
            index: i,
            model: vmx
                .get(&format!("{eth}.virtualDev"))
                .unwrap_or("vlance")
                .to_ascii_lowercase(),
            network: vmx.get(&format!("{eth}.networkName")).map(str::to_owned),
            mac: mac.map(str::to_ascii_lowercase),
        });
    }
}

fn read_other_devices(vmx: &Vmx, vm: &mut SourceVm) {
    let mut push = |kind, label: String| vm.devices.push(OtherDevice { kind, label });
    for f in 0..2 {
        if vmx.flag(&format!("floppy{f}.present")) {
            push(DeviceKind::Floppy, format!("floppy{f}"));
        }
    }
    for key in ["usb", "ehci", "usb_xhci"] {
        if vmx.flag(&format!("{key}.present")) {
            push(DeviceKind::UsbController, key.into());
        }
    }
    let usb_devices: Vec<String> = vmx
        .keys()
        .filter(|k| {
            k.starts_with("usb.autoconnect.device")
                || (k.starts_with("usb:") && k.ends_with(".present"))
        })
        .map(str::to_owned)
        .collect();
    for key in usb_devices {
        if key.ends_with(".present") && !vmx.flag(&key) {
            continue;
        }
        push(
            DeviceKind::UsbPassthrough,
            key.trim_end_matches(".present").to_owned(),
        );
    }
    for p in 0..16 {
        let pci = format!("pciPassthru{p}");
        if !vmx.flag(&format!("{pci}.present")) {
            continue;
        }
        let kind = if vmx.get(&format!("{pci}.vgpu")).is_some() {
            DeviceKind::Vgpu
        } else if vmx.get(&format!("{pci}.pfId")).is_some() {
            // A virtual function of an SR-IOV adapter.
            DeviceKind::SriovNic
        } else {
            DeviceKind::PciPassthrough
        };
        push(kind, pci.to_ascii_lowercase());
    }
    for s in 0..32 {
        let serial = format!("serial{s}");
        if !vmx.flag(&format!("{serial}.present")) {
            continue;
        }
        let network = vmx
            .get(&format!("{serial}.fileType"))
            .is_some_and(|t| t.eq_ignore_ascii_case("network"))
            || vmx.get(&format!("{serial}.vspc")).is_some();
        push(
            if network {
                DeviceKind::SerialNetwork
            } else {
                DeviceKind::Serial
            },
            serial,
        );
    }
    if vmx.flag("sound.present") {
        push(DeviceKind::Sound, "sound".into());
    }
    if vmx.flag("vtpm.present") {
        push(DeviceKind::Vtpm, "vtpm".into());
    }
    for i in 0..10u32 {
        let eth = format!("ethernet{i}");
        let sriov = vmx
            .get(&format!("{eth}.virtualDev"))
            .is_some_and(|d| d.eq_ignore_ascii_case("sriov"));
        if sriov && vmx.flag(&format!("{eth}.present")) {
            push(DeviceKind::SriovNic, eth);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::model::DeviceKind;

    const SAMPLE: &str = r#".encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "web |22prod|22"
guestOS = "ubuntu-64"
numvcpus = "4"
cpuid.coresPerSocket = "2"
memsize = "4096"
firmware = "efi"
uefi.secureBoot.enabled = "TRUE"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web.vmdk"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "data.vmdk"
scsi0:1.mode = "independent-persistent"
sata0.present = "TRUE"
sata0:0.present = "TRUE"
sata0:0.deviceType = "cdrom-image"
sata0:0.fileName = "ubuntu.iso"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "generated"
ethernet0.generatedAddress = "00:0C:29:AA:BB:CC"
ethernet1.present = "TRUE"
ethernet1.virtualDev = "e1000"
ethernet1.networkName = "Backup"
ethernet1.addressType = "static"
ethernet1.address = "00:50:56:01:02:03"
serial0.present = "TRUE"
serial0.fileType = "network"
serial0.fileName = "telnet://:7001"
tools.syncTime = "FALSE"
"#;

    #[test]
    fn a_vmx_with_two_disks_two_nics_and_efi_is_read_completely() {
        let vm = to_source_vm(&Vmx::parse(SAMPLE).unwrap(), "fallback").unwrap();
        assert_eq!(vm.name, "web \"prod\"");
        assert_eq!(vm.hardware_version.as_deref(), Some("vmx-19"));
        assert_eq!((vm.vcpus, vm.cores_per_socket, vm.memory_mib), (4, 2, 4096));
        assert_eq!(vm.firmware, SourceFirmware::Efi);
        assert!(vm.secure_boot);
        assert_eq!(vm.disks.len(), 2);
        assert_eq!(vm.disks[0].controller, ControllerKind::Pvscsi);
        assert_eq!(vm.disks[1].slot(), "scsi0:1");
        assert!(vm.disks[1].independent && !vm.disks[0].independent);
        assert_eq!(vm.nics[0].mac.as_deref(), Some("00:0c:29:aa:bb:cc"));
        assert_eq!(vm.nics[1].mac.as_deref(), Some("00:50:56:01:02:03"));
        assert_eq!(vm.nics[1].network.as_deref(), Some("Backup"));
        let kinds: Vec<DeviceKind> = vm.devices.iter().map(|d| d.kind).collect();
        assert_eq!(kinds, vec![DeviceKind::Cdrom, DeviceKind::SerialNetwork]);
        assert!(vm.vmware_tools);
    }

    #[test]
    fn keys_are_case_insensitive_and_comments_are_skipped() {
        let vmx = Vmx::parse("# comment\nNumVCPUs = \"2\"\n\nmemSize = 1024\n").unwrap();
        assert_eq!(vmx.get("numvcpus"), Some("2"));
        assert_eq!(vmx.get("MEMSIZE"), Some("1024"));
    }

    #[test]
    fn a_line_without_equals_is_a_syntax_error_with_its_line_number() {
        assert_eq!(
            Vmx::parse("a = \"1\"\nnonsense\n"),
            Err(VmxError::Syntax { line: 2 })
        );
        assert_eq!(
            Vmx::parse("a = \"unterminated\n"),
            Err(VmxError::Syntax { line: 1 })
        );
    }

    #[test]
    fn a_non_numeric_cpu_count_is_refused_naming_the_key() {
        let err = to_source_vm(&Vmx::parse("numvcpus = \"many\"").unwrap(), "x").unwrap_err();
        assert!(err.to_string().contains("numvcpus"), "{err}");
    }

    #[test]
    fn rdm_shared_usb_and_vgpu_are_recognised() {
        let text = r#"scsi1.present = "TRUE"
scsi1.virtualDev = "lsilogic"
scsi1.sharedBus = "virtual"
scsi1:0.present = "TRUE"
scsi1:0.fileName = "quorum.vmdk"
scsi1:0.deviceType = "rawDisk"
usb.present = "TRUE"
usb.autoConnect.device0 = "vid:0x0781 pid:0x5567"
pciPassthru0.present = "TRUE"
pciPassthru0.vgpu = "grid_t4-2q"
"#;
        let vm = to_source_vm(&Vmx::parse(text).unwrap(), "x").unwrap();
        assert!(vm.disks[0].raw_device_mapping && vm.disks[0].shared);
        let kinds: Vec<DeviceKind> = vm.devices.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            vec![
                DeviceKind::UsbController,
                DeviceKind::UsbPassthrough,
                DeviceKind::Vgpu
            ]
        );
    }

    #[test]
    fn a_disk_on_the_builtin_ide_channel_is_read_without_a_controller_key() {
        // VMware writes no ide0.present: the IDE channels are always there.
        let text = r#"ide0:0.present = "TRUE"
ide0:0.fileName = "legacy.vmdk"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-image"
ide1:0.fileName = "tools.iso"
ide0:1.present = "FALSE"
ide0:1.fileName = "gone.vmdk"
"#;
        let vm = to_source_vm(&Vmx::parse(text).unwrap(), "x").unwrap();
        assert_eq!(vm.disks.len(), 1, "{:?}", vm.disks);
        assert_eq!(vm.disks[0].file.as_deref(), Some("legacy.vmdk"));
        assert_eq!(vm.disks[0].controller, ControllerKind::Ide);
        assert_eq!(vm.devices[0].kind, DeviceKind::Cdrom);
        let off =
            "ide0.present = \"FALSE\"\nide0:0.present = \"TRUE\"\nide0:0.fileName = \"a.vmdk\"\n";
        let vm = to_source_vm(&Vmx::parse(off).unwrap(), "x").unwrap();
        assert!(
            vm.disks.is_empty(),
            "a channel explicitly absent stays absent"
        );
    }

    #[test]
    fn a_vtpm_and_sr_iov_adapters_are_listed_not_dropped() {
        let text = r#"vtpm.present = "TRUE"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "sriov"
ethernet0.networkName = "VM Network"
ethernet0.pfId = "0000:3b:00.0"
pciPassthru1.present = "TRUE"
pciPassthru1.pfId = "0000:3b:00.1"
pciPassthru2.present = "TRUE"
pciPassthru2.id = "00000:216:00.0"
"#;
        let vm = to_source_vm(&Vmx::parse(text).unwrap(), "x").unwrap();
        let kinds: Vec<DeviceKind> = vm.devices.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            vec![
                DeviceKind::SriovNic,
                DeviceKind::PciPassthrough,
                DeviceKind::Vtpm,
                DeviceKind::SriovNic
            ]
        );
        assert_eq!(vm.nics.len(), 1, "the adapter itself is kept as a NIC");
    }

    #[test]
    fn the_boot_disk_named_by_bios_hdd_order_is_read() {
        let vm = to_source_vm(
            &Vmx::parse("bios.bootOrder = \"hdd,cdrom\"\nbios.hddOrder = \"SATA0:1, scsi0:0\"\n")
                .unwrap(),
            "x",
        )
        .unwrap();
        assert_eq!(vm.boot_disk.as_deref(), Some("sata0:1"));
        let none = to_source_vm(&Vmx::parse("numvcpus = \"1\"\n").unwrap(), "x").unwrap();
        assert_eq!(none.boot_disk, None);
    }

    #[test]
    fn vmsd_snapshot_count_is_read() {
        let vmsd = Vmx::parse("snapshot.numSnapshots = \"2\"\nsnapshot0.uid = \"1\"\n").unwrap();
        assert_eq!(snapshot_count(&vmsd), Ok(2));
    }
}
