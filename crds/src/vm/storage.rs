//! Disks, their sources, direct kernel boot and the cloud-init seed.

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
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
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
    /// Size of the disk. Required for a blank disk; for an image, the disk is grown to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// Where the disk's initial content comes from.
    pub source: DiskSource,
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
    {"rule": "[has(self.blank), has(self.http), has(self.hostPath)].filter(x, x).size() == 1",
     "message": "exactly one of blank, http or hostPath must be set"}
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
     "message": "exactly one of http or hostPath must be set"}
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
