//! Disks, their sources, direct kernel boot and the cloud-init seed.

use crate::quantity::{QuantityError, to_bytes};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A disk attached to the VM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.source.blank) || has(self.size)",
     "message": "size is required for a blank disk", "fieldPath": ".size"},
    {"rule": "!has(self.size) || isQuantity(string(self.size))",
     "message": "size must be a Kubernetes quantity such as 20Gi", "fieldPath": ".size"},
    {"rule": "!has(self.size) || !isQuantity(string(self.size)) || quantity(string(self.size)).compareTo(quantity('1Mi')) >= 0",
     "message": "size must be at least 1Mi", "fieldPath": ".size"}
]))]
pub struct Disk {
    /// Name of the disk, unique within the VM (a DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Bus the disk is attached to: virtio (fastest; needs guest drivers), sata, or scsi
    /// (virtio-scsi).
    #[serde(default)]
    pub bus: DiskBus,
    /// Boot priority, lowest first; unique across the VM's disks when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub boot_order: Option<u32>,
    /// Attach the disk read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Size of the disk: the largest it can grow to, which is what the tenant's storage
    /// quota counts (a clone's too: its overlay can grow to it; the shared base is counted
    /// once, by its snapshot or template). Required for every disk: a VM whose image disk has none is not
    /// scheduled. For an image, at least the image's virtual size (a larger image fails the
    /// VM with ImageLargerThanDisk); the disk is grown to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// Where the disk's initial content comes from.
    pub source: DiskSource,
}

/// Why a disk cannot be counted in a storage quota.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountingError {
    /// The disk declares no size.
    #[error(
        "disk {disk:?} has no size: every disk must declare size, the largest it can grow \
         to, which the storage quota counts (an image's own size is only known once a host \
         has downloaded it); set spec.disks[].size to at least the image's virtual size"
    )]
    SizeRequired {
        /// The disk's name.
        disk: String,
    },
    /// The size is not a quantity.
    #[error("size of disk {disk:?} is invalid")]
    Invalid {
        /// The disk's name.
        disk: String,
        /// Why.
        #[source]
        source: QuantityError,
    },
    /// The size is negative.
    #[error("size of disk {disk:?} must not be negative")]
    Negative {
        /// The disk's name.
        disk: String,
    },
}

/// The bytes a disk counts in its tenant's storage quota: its virtual size, the largest it
/// can grow to. That is the declared `size` for every kind of disk: a blank disk is made of
/// that size, and a disk from an image is grown to it (a host refuses an image whose
/// virtual size is larger, so the figure is never exceeded). The one storage rule the
/// operator's quota, snapshots, clones and usage accounting share.
pub fn accounted_bytes(disk: &Disk) -> Result<i128, AccountingError> {
    let name = || disk.name.clone();
    let size = disk
        .size
        .as_ref()
        .ok_or_else(|| AccountingError::SizeRequired { disk: name() })?;
    let bytes = to_bytes(&size.0).map_err(|source| AccountingError::Invalid {
        disk: name(),
        source,
    })?;
    if bytes < 0 {
        return Err(AccountingError::Negative { disk: name() });
    }
    Ok(bytes)
}

/// Bus a disk is attached to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// virtio-blk.
    #[default]
    Virtio,
    /// SATA (AHCI); works without guest drivers.
    Sata,
    /// SCSI on a virtio-scsi controller.
    Scsi,
}

/// Where a disk's (or kernel's) initial content comes from: exactly one kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "[has(self.blank), has(self.http), has(self.hostPath), has(self.backup), has(self.snapshot), has(self.vm)].filter(x, x).size() == 1",
     "message": "exactly one of blank, http, hostPath, backup, snapshot or vm must be set"}
]))]
pub struct DiskSource {
    /// An empty disk of the disk's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blank: Option<BlankSource>,
    /// An image downloaded over HTTP(S) once per host and verified against its checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    /// An image already on the host, under the agent's images directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathSource>,
    /// A disk of a `VirtualMachineBackup` in the VM's namespace: the host copies the
    /// backup's image after checking its SHA-256 (restore, on any host that mounts the
    /// backup's location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSource>,
    /// A clone of one disk of a VirtualMachineSnapshot in the same namespace (by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<super::SnapshotCloneSource>,
    /// A clone of one disk of a template VM (`spec.template: true`) in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<super::VmCloneSource>,
}

/// A disk restored from a backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSource {
    /// The `VirtualMachineBackup`, in the VM's own namespace (never another's).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The disk's name in the backup (its name in the backed-up VM).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub disk: String,
}

/// An empty disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BlankSource {}

/// An image downloaded over HTTP(S).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    /// URL of the image (http or https). Downloaded once per host.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,
    /// SHA-256 of the image: 64 hexadecimal digits. A mismatch fails the VM.
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{64}$"))]
    pub sha256: String,
    /// The disk image's format: `raw` or `qcow2`. Declared, the image is opened as exactly
    /// that (a raw image whose first bytes look like a qcow2 header stays raw; a declared
    /// qcow2 that is not one is refused). Left out, the agent reads the format from the
    /// image's header, refusing formats QEMU would follow to other files. Either way the
    /// image becomes a standalone qcow2 the agent made. Not for kernels and initrds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ImageFormat>,
}

/// Formats a downloaded disk image may have.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// A plain disk image, byte for byte.
    Raw,
    /// QEMU's qcow2, with no backing file and no external data file.
    Qcow2,
}

impl ImageFormat {
    /// The format as QEMU names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

/// An image on the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!self.path.matches('(^|/)[.][.](/|$)')",
     "message": "path must not contain a '..' component", "fieldPath": ".path"}
]))]
pub struct HostPathSource {
    /// Absolute path of the image on the host. It must resolve under the agent's images
    /// directory (symlinks included); the VM writes to a copy-on-write overlay, never to it.
    #[schemars(length(min = 2, max = 4096), regex(pattern = r"^/[^\x00]*$"))]
    pub path: String,
}

/// Direct kernel boot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KernelBoot {
    /// The kernel image; same source kinds as a disk (blank is not allowed).
    pub kernel: BootFileSource,
    /// An initial ramdisk; needs `kernel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<BootFileSource>,
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub cmdline: Option<String>,
}

/// Where a kernel or initrd comes from: exactly one of http or hostPath.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "[has(self.http), has(self.hostPath)].filter(x, x).size() == 1",
     "message": "exactly one of http or hostPath must be set"},
    {"rule": "!has(self.http) || !has(self.http.format)",
     "message": "a kernel or initrd is loaded as a file, not a disk image: leave out http.format",
     "fieldPath": ".http.format"}
]))]
pub struct BootFileSource {
    /// A file downloaded over HTTP(S) once per host and verified against its checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    /// A file on the host, under the agent's images directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathSource>,
}

/// A cloud-init NoCloud seed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.userData) && has(self.userDataSecretRef))",
     "message": "set userData or userDataSecretRef, not both"},
    {"rule": "!(has(self.networkData) && has(self.networkDataSecretRef))",
     "message": "set networkData or networkDataSecretRef, not both"}
]))]
pub struct CloudInit {
    /// User data (for example a `#cloud-config` document or a shell script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub user_data: Option<String>,
    /// A Secret in the VM's namespace whose `userdata` (or `userData`) key holds the user data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_secret_ref: Option<LocalObjectReference>,
    /// Network configuration (cloud-init network config version 1 or 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub network_data: Option<String>,
    /// A Secret in the VM's namespace whose `networkdata` (or `networkData`) key holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data_secret_ref: Option<LocalObjectReference>,
}

/// A reference to an object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(size: Option<&str>, source: serde_json::Value) -> Disk {
        let mut d = serde_json::json!({"name": "root", "source": source});
        if let Some(s) = size {
            d["size"] = s.into();
        }
        serde_json::from_value(d).unwrap()
    }

    #[test]
    fn every_kind_of_disk_counts_its_declared_size() {
        let http = serde_json::json!({"http": {"url": "https://x/y", "sha256": "00"}});
        let host = serde_json::json!({"hostPath": {"path": "/images/a.qcow2"}});
        let blank = serde_json::json!({"blank": {}});
        for src in [http, host, blank] {
            assert_eq!(accounted_bytes(&disk(Some("10Gi"), src)), Ok(10 << 30));
        }
    }

    #[test]
    fn an_image_disk_without_a_size_cannot_be_counted_and_says_which() {
        let d = disk(
            None,
            serde_json::json!({"hostPath": {"path": "/images/a.qcow2"}}),
        );
        let err = accounted_bytes(&d).unwrap_err();
        assert_eq!(
            err,
            AccountingError::SizeRequired {
                disk: "root".into()
            }
        );
        assert!(
            err.to_string().contains("disk \"root\" has no size"),
            "{err}"
        );
    }

    #[test]
    fn malformed_and_negative_sizes_are_refused() {
        let blank = serde_json::json!({"blank": {}});
        assert!(matches!(
            accounted_bytes(&disk(Some("lots"), blank.clone())),
            Err(AccountingError::Invalid { .. })
        ));
        assert!(matches!(
            accounted_bytes(&disk(Some("-1Gi"), blank)),
            Err(AccountingError::Negative { .. })
        ));
    }
}
