//! Where a console is: the VM's host (its `status.nodeName`, read at every connection, so a
//! console follows its VM after a migration) and that host's console endpoint. Pure: the
//! caller fetches the VM and the Hypervisor.

use ironvisor_crds::hypervisor::Hypervisor;
use ironvisor_crds::vm::{Phase, VirtualMachine};

use crate::status::ApiError;

/// Which console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The serial console (`virtualmachines/console`).
    Serial,
    /// The graphical display (`virtualmachines/vnc`).
    Vnc,
}

impl Kind {
    /// From the URL's subresource.
    pub fn from_subresource(s: &str) -> Option<Self> {
        match s {
            "console" => Some(Kind::Serial),
            "vnc" => Some(Kind::Vnc),
            _ => None,
        }
    }

    /// The subresource (and the agent's path segment).
    pub fn subresource(self) -> &'static str {
        match self {
            Kind::Serial => "console",
            Kind::Vnc => "vnc",
        }
    }

    /// The metric and audit label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Serial => "serial",
            Kind::Vnc => "vnc",
        }
    }
}

/// The VM's host and what to ask it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The host (and the name its certificate must carry).
    pub node: String,
    /// The VM's uid (the agent checks it).
    pub uid: String,
}

/// The host of a VM whose `kind` console can be opened now.
pub fn placement(vm: &VirtualMachine, kind: Kind) -> Result<Placement, ApiError> {
    let key = format!(
        "{}/{}",
        vm.metadata.namespace.as_deref().unwrap_or_default(),
        vm.metadata.name.as_deref().unwrap_or_default()
    );
    if kind == Kind::Vnc && !vm.spec.has_display() {
        return Err(ApiError::Conflict(format!(
            "VM {key} has no graphical display (spec.graphics: none); use its serial console"
        )));
    }
    let status = vm.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or(Phase::Pending);
    if phase != Phase::Running {
        return Err(ApiError::Conflict(format!(
            "VM {key} is not running (phase {}); start it first",
            phase.as_str()
        )));
    }
    let node = status
        .node_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::Conflict(format!("VM {key} is not placed on a host")))?;
    let uid = vm
        .metadata
        .uid
        .clone()
        .ok_or_else(|| ApiError::Conflict(format!("VM {key} has no uid")))?;
    Ok(Placement { node, uid })
}

/// The `host:port` of the host's console endpoint, once its certificate is signed.
pub fn endpoint(hv: Option<&Hypervisor>, node: &str) -> Result<String, ApiError> {
    let status = hv
        .and_then(|h| h.status.clone())
        .ok_or_else(|| ApiError::BadGateway(format!("host {node} has no Hypervisor status")))?;
    let ep = status.console_endpoint.ok_or_else(|| {
        ApiError::BadGateway(format!(
            "host {node} publishes no console endpoint (its agent runs without --console-address)"
        ))
    })?;
    if status.console_certificate.is_none() {
        return Err(ApiError::BadGateway(format!(
            "host {node}'s console certificate is not signed yet; is the operator running?"
        )));
    }
    Ok(ep.address)
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
