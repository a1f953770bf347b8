//! Network interfaces of a VM.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A network interface.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "[has(self.user), has(self.network), has(self.bridge)].filter(x, x).size() == 1",
     "message": "exactly one of user, network or bridge must be set"}
]))]
pub struct Network {
    /// Name of the interface, unique within the VM (a DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Device model: virtio (fastest; needs guest drivers), e1000e, or rtl8139.
    #[serde(default)]
    pub model: NicModel,
    /// MAC address; a unicast address such as 52:54:00:12:34:56. Generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^.[02468aceACE]')",
         "message": "macAddress must be unicast (the lowest bit of the first octet clear)"},
        {"rule": "self != '00:00:00:00:00:00'", "message": "macAddress must not be all zeros"}
    ]))]
    pub mac_address: Option<String>,
    /// User-mode networking (SLIRP/passt): outbound access through the host, inbound only
    /// through port forwards bound to 127.0.0.1 on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserNetwork>,
    /// Attach to a libvirt network defined on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NamedNetwork>,
    /// Attach to a host bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeNetwork>,
}

/// Model of a virtual network card.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    /// virtio-net.
    #[default]
    Virtio,
    /// Intel 82574 (e1000e); works without guest drivers.
    E1000e,
    /// Realtek 8139; for very old guests.
    Rtl8139,
}

/// User-mode networking.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserNetwork {
    /// Ports forwarded from 127.0.0.1 on the host into the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map",
                      "x-kubernetes-list-map-keys" = ["protocol", "hostPort"]))]
    pub port_forwards: Vec<PortForward>,
}

/// One forwarded port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortForward {
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: Protocol,
    /// Port on 127.0.0.1 of the host.
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: u16,
    /// Port in the guest.
    #[schemars(range(min = 1, max = 65535))]
    pub guest_port: u16,
}

/// Transport protocol of a port forward.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum Protocol {
    /// TCP.
    #[default]
    TCP,
    /// UDP.
    UDP,
}

/// A libvirt network on the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedNetwork {
    /// Name of the libvirt network.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    )]
    pub name: String,
}

/// A bridge on the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeNetwork {
    /// Name of the host bridge (a Linux interface name, at most 15 characters).
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    )]
    pub name: String,
}
