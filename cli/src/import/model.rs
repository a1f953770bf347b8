//! The neutral description of a VMware VM that every descriptor parser produces.
//!
//! OVF and VMX say the same things in different syntax; both parsers fill these types, and
//! everything after parsing (advisor, manifest, conversion plan) reads only these. Pure data:
//! nothing here touches the file system.

use serde::Serialize;

/// A VMware VM as its descriptor describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceVm {
    /// The VM's display name in vSphere.
    pub name: String,
    /// Virtual hardware version, e.g. `vmx-13`.
    pub hardware_version: Option<String>,
    /// VMware guest OS identifier, e.g. `ubuntu64Guest` or `windows2019srv-64`.
    pub guest_os: Option<String>,
    /// Total vCPUs.
    pub vcpus: u32,
    /// Cores per socket (1 when the descriptor does not say).
    pub cores_per_socket: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Firmware the VM boots with.
    pub firmware: SourceFirmware,
    /// Whether UEFI secure boot is enabled.
    pub secure_boot: bool,
    /// Hard disks, in controller order.
    pub disks: Vec<SourceDisk>,
    /// Network adapters, in descriptor order.
    pub nics: Vec<SourceNic>,
    /// Devices that are not disks or NICs (CD-ROMs, USB, vGPU, serial ports...).
    pub devices: Vec<OtherDevice>,
    /// Whether the descriptor shows VMware Tools settings or an installed Tools version.
    pub vmware_tools: bool,
    /// Snapshots recorded beside the descriptor (`.vmsd`), when known.
    pub snapshots: u32,
    /// The slot of the hard disk the firmware tries first, when the descriptor names it
    /// (VMX `bios.hddOrder`, OVF `vmw:BootOrderSection`, e.g. `sata0:0`); otherwise the
    /// first disk in controller order.
    pub boot_disk: Option<String>,
}

/// Firmware of a VMware VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFirmware {
    /// Legacy BIOS.
    #[default]
    Bios,
    /// EFI.
    Efi,
}

/// A VMware disk controller type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ControllerKind {
    /// LSI Logic parallel SCSI.
    LsiLogic,
    /// LSI Logic SAS.
    LsiLogicSas,
    /// VMware paravirtual SCSI.
    Pvscsi,
    /// BusLogic parallel SCSI.
    BusLogic,
    /// SATA (AHCI).
    Sata,
    /// IDE.
    Ide,
    /// NVMe.
    Nvme,
}

impl ControllerKind {
    /// The VMX key prefix of the controller family (`scsi`, `sata`, `ide`, `nvme`).
    pub fn family(self) -> &'static str {
        match self {
            Self::LsiLogic | Self::LsiLogicSas | Self::Pvscsi | Self::BusLogic => "scsi",
            Self::Sata => "sata",
            Self::Ide => "ide",
            Self::Nvme => "nvme",
        }
    }

    /// Order of the families in VMware's device listing: scsi, sata, ide, nvme.
    pub fn rank(self) -> u8 {
        match self.family() {
            "scsi" => 0,
            "sata" => 1,
            "ide" => 2,
            _ => 3,
        }
    }

    /// Whether it is one of the SCSI controllers.
    pub fn is_scsi(self) -> bool {
        self.family() == "scsi"
    }

    /// Parse a SCSI controller model as VMX (`virtualDev`) or OVF (`ResourceSubType`) spell it.
    pub fn from_scsi_model(model: &str) -> Option<Self> {
        match model.to_ascii_lowercase().as_str() {
            "lsilogic" => Some(Self::LsiLogic),
            "lsilogicsas" | "lsisas1068" => Some(Self::LsiLogicSas),
            "pvscsi" | "virtualscsi" => Some(Self::Pvscsi),
            "buslogic" => Some(Self::BusLogic),
            _ => None,
        }
    }
}

/// A hard disk attached to the VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceDisk {
    /// Controller type.
    pub controller: ControllerKind,
    /// Controller number within its family (`scsi0` → 0).
    pub controller_index: u32,
    /// Unit number on the controller.
    pub unit: u32,
    /// Path of the disk's VMDK, relative to the descriptor's directory as written there;
    /// `None` for a new empty disk (an OVF disk with no file), which is created blank.
    pub file: Option<String>,
    /// Capacity in bytes when the descriptor states it (OVF); otherwise read from the VMDK.
    pub capacity_bytes: Option<u64>,
    /// An independent disk (not part of snapshots).
    pub independent: bool,
    /// A disk shared with other VMs (multi-writer or a shared SCSI bus).
    pub shared: bool,
    /// A raw device mapping: the data lives on a LUN, not in the bundle.
    pub raw_device_mapping: bool,
}

impl SourceDisk {
    /// VMware's name for the disk's slot, e.g. `scsi0:1`.
    pub fn slot(&self) -> String {
        format!(
            "{}{}:{}",
            self.controller.family(),
            self.controller_index,
            self.unit
        )
    }
}

/// A network adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceNic {
    /// Position of the adapter (`ethernet0` → 0).
    pub index: u32,
    /// Adapter model, lower case: `vmxnet3`, `e1000`, `e1000e`, `vlance`, `vmxnet2`...
    pub model: String,
    /// The VMware network (port group) it is connected to.
    pub network: Option<String>,
    /// Its MAC address, when the descriptor has one.
    pub mac: Option<String>,
}

/// Kind of a device that is neither a disk nor a NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceKind {
    /// A CD or DVD drive.
    Cdrom,
    /// A floppy drive.
    Floppy,
    /// A USB controller.
    UsbController,
    /// A USB device passed through from the host or client.
    UsbPassthrough,
    /// A virtual GPU (NVIDIA GRID profile).
    Vgpu,
    /// A PCI device passed through.
    PciPassthrough,
    /// A serial port backed by a network URI (telnet, vSPC).
    SerialNetwork,
    /// A serial port backed by a file, device or pipe.
    Serial,
    /// A sound card.
    Sound,
    /// A virtual TPM (its sealed secrets do not travel in an export).
    Vtpm,
    /// An SR-IOV network adapter (a virtual function of a host NIC passed through).
    SriovNic,
}

/// A device that is neither a disk nor a NIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OtherDevice {
    /// What it is.
    pub kind: DeviceKind,
    /// Its name in the descriptor (`serial0`, `Item 12`, ...).
    pub label: String,
}

/// Guest OS family, as far as migration cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestFamily {
    /// Microsoft Windows: needs virtio drivers installed.
    Windows,
    /// Linux: virtio drivers are in the kernel.
    Linux,
    /// Anything else (BSD, Solaris, unknown).
    Other,
}

/// The family of a VMware guest OS identifier (`windows9Server64Guest`, `ubuntu-64`, `rhel8_64Guest`).
pub fn guest_family(guest_os: Option<&str>) -> GuestFamily {
    let Some(id) = guest_os else {
        return GuestFamily::Other;
    };
    let id = id.to_ascii_lowercase();
    const LINUX: [&str; 16] = [
        "linux",
        "ubuntu",
        "debian",
        "rhel",
        "centos",
        "sles",
        "suse",
        "fedora",
        "oracle",
        "other26x",
        "other3x",
        "other4x",
        "other5x",
        "otherlinux",
        "rocky",
        "almalinux",
    ];
    if id.starts_with("win") {
        GuestFamily::Windows
    } else if LINUX.iter().any(|p| id.starts_with(p)) || id.contains("linux") {
        GuestFamily::Linux
    } else {
        GuestFamily::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_families_are_recognised_from_vmware_ids() {
        assert_eq!(
            guest_family(Some("windows9Server64Guest")),
            GuestFamily::Windows
        );
        assert_eq!(
            guest_family(Some("windows2019srv-64")),
            GuestFamily::Windows
        );
        assert_eq!(guest_family(Some("ubuntu64Guest")), GuestFamily::Linux);
        assert_eq!(guest_family(Some("rhel8_64Guest")), GuestFamily::Linux);
        assert_eq!(
            guest_family(Some("other4xLinux64Guest")),
            GuestFamily::Linux
        );
        assert_eq!(guest_family(Some("freebsd12_64Guest")), GuestFamily::Other);
        assert_eq!(guest_family(None), GuestFamily::Other);
    }

    #[test]
    fn disk_slots_read_like_vmware_names_them() {
        let d = SourceDisk {
            controller: ControllerKind::Pvscsi,
            controller_index: 1,
            unit: 3,
            file: Some("a.vmdk".into()),
            capacity_bytes: None,
            independent: false,
            shared: false,
            raw_device_mapping: false,
        };
        assert_eq!(d.slot(), "scsi1:3");
    }
}
