//! Consoles: the VM's graphical display (`spec.graphics`), what its agent reports about
//! console connections (`status.console`), and each host's console endpoint (its address,
//! the certificate request its agent publishes, and the certificate the operator signs).
//!
//! The console path: a user's request reaches the console server through the Kubernetes
//! API (the `subresources.ironvisor.io` aggregated API: `virtualmachines/console` and
//! `virtualmachines/vnc`), the server authorises it with a SubjectAccessReview, and connects
//! to the VM's host agent over mutual TLS (both sides' certificates signed by the console CA
//! the operator keeps); the agent bridges to the VM's serial console or VNC display.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The aggregated API group the console subresources are served in.
pub const SUBRESOURCE_GROUP: &str = "subresources.ironvisor.io";
/// Its version.
pub const SUBRESOURCE_VERSION: &str = "v1";
/// The common name of the console server's client certificate, the only client an agent's
/// console port accepts.
pub const CONSOLE_CLIENT_CN: &str = "ironvisor-console";

/// The VM's graphical display: VNC unless the VM says `none`. The display listens on no
/// address and no socket path: the host's agent asks libvirt for a connection to it when a
/// console client connects through the console server (docs/consoles.md).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Graphics {
    /// A VNC display (and a VGA adapter) reached only through the console server (the
    /// default).
    #[default]
    Vnc,
    /// No graphical display: the serial console only.
    None,
}

/// Console connections to the VM, as its host's agent (which bridges them) saw them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleStatus {
    /// Connections open now (serial and graphical).
    #[serde(default)]
    pub active_connections: u32,
    /// When the last connection opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connected_time: Option<Time>,
    /// When the last connection closed (with `activeConnections: 0`, the start of the
    /// idle time desktop pools measure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_disconnected_time: Option<Time>,
}

/// A host's console endpoint as its agent publishes it (`Hypervisor.status.consoleEndpoint`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleEndpoint {
    /// `host:port` the agent's console port listens on (mutual TLS only).
    pub address: String,
    /// The agent's PKCS#10 certificate request (PEM) for its serving certificate; the key
    /// never leaves the host.
    pub csr: String,
}

/// The serving certificate the operator signed for a host's console endpoint
/// (`Hypervisor.status.consoleCertificate`), written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleCertificate {
    /// The certificate (PEM), signed by the console CA.
    pub certificate: String,
    /// SHA-256 of the request it answers (hex), so the agent knows it matches its key.
    pub csr_sha256: String,
    /// When it expires; the operator renews it before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
}
