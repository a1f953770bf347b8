//! A VM's network attachments and a tenant's network allowances, as admission sees them.
//!
//! Owns parsing only: which bridges, libvirt networks, MAC addresses and host ports a VM's
//! spec names, and which bridges and networks a Tenant allows. The rules that use them live
//! in `plan::network`. Pure, no I/O.

use std::collections::BTreeSet;

use ironvisor_crds::tenant::Tenant;
use ironvisor_crds::vm::{Protocol, VirtualMachineSpec};

/// A forwarded host port: (protocol, port on the host's 127.0.0.1).
pub type HostPort = (Protocol, u16);

/// What a VM's interfaces attach to, for admission.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmNet {
    /// Host bridges named by `spec.networks[].bridge`.
    pub bridges: BTreeSet<String>,
    /// libvirt networks named by `spec.networks[].network`.
    pub networks: BTreeSet<String>,
    /// MAC addresses the spec sets, lower-cased, in spec order (duplicates kept, so a VM
    /// that repeats one is seen). Generated MACs are derived from the VM's uid and are not
    /// listed.
    pub macs: Vec<String>,
}

impl VmNet {
    /// Read the interfaces of a spec.
    pub fn from_spec(spec: &VirtualMachineSpec) -> Self {
        let mut out = VmNet::default();
        for n in &spec.networks {
            if let Some(b) = &n.bridge {
                out.bridges.insert(b.name.clone());
            }
            if let Some(net) = &n.network {
                out.networks.insert(net.name.clone());
            }
            if let Some(m) = &n.mac_address {
                out.macs.push(m.to_ascii_lowercase());
            }
        }
        out
    }
}

/// The host ports a spec forwards (user-mode interfaces), each once, sorted.
pub fn host_ports(spec: &VirtualMachineSpec) -> Vec<HostPort> {
    let ports: BTreeSet<HostPort> = spec
        .networks
        .iter()
        .filter_map(|n| n.user.as_ref())
        .flat_map(|u| &u.port_forwards)
        .map(|pf| (pf.protocol, pf.host_port))
        .collect();
    ports.into_iter().collect()
}

/// The bridges and libvirt networks one Tenant allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantNets {
    /// `spec.allowedBridges`.
    pub bridges: BTreeSet<String>,
    /// `spec.allowedNetworks`.
    pub networks: BTreeSet<String>,
}

impl TenantNets {
    /// Read a Tenant's allowances.
    pub fn from_tenant(t: &Tenant) -> Self {
        TenantNets {
            bridges: t.spec.allowed_bridges.iter().cloned().collect(),
            networks: t.spec.allowed_networks.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> VirtualMachineSpec {
        serde_json::from_value(v).expect("valid spec")
    }

    #[test]
    fn bridges_networks_macs_and_host_ports_are_read_from_the_interfaces() {
        let s = spec(serde_json::json!({
            "memory": {"size": "1Gi"},
            "networks": [
                {"name": "a", "bridge": {"name": "br0"}, "macAddress": "52:54:00:AA:00:01"},
                {"name": "b", "network": {"name": "default"}},
                {"name": "c", "user": {"portForwards": [
                    {"hostPort": 2222, "guestPort": 22},
                    {"protocol": "UDP", "hostPort": 2222, "guestPort": 53}]}},
                {"name": "d", "user": {"portForwards": [{"hostPort": 2222, "guestPort": 23}]}}
            ]
        }));
        let n = VmNet::from_spec(&s);
        assert_eq!(n.bridges, BTreeSet::from(["br0".to_owned()]));
        assert_eq!(n.networks, BTreeSet::from(["default".to_owned()]));
        assert_eq!(n.macs, vec!["52:54:00:aa:00:01".to_owned()]);
        assert_eq!(
            host_ports(&s),
            vec![(Protocol::TCP, 2222), (Protocol::UDP, 2222)]
        );
    }
}
