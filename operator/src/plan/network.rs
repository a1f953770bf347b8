//! Network admission: what a VM's interfaces may attach to, before it is placed.
//!
//! Owns three rules, each a `Scheduled=False` reason with a message that says what to change:
//! - a bridge or libvirt network must be allowed by the Tenant that owns the VM's namespace
//!   (`spec.allowedBridges`, `spec.allowedNetworks`; a namespace no Tenant owns allows none);
//! - a host port below 1024 is forwarded only when the operator runs with
//!   `--allow-privileged-host-ports`;
//! - a MAC address the spec sets is unique within the tenant (within the VM, and among the
//!   tenant's admitted VMs and those admitted earlier in the same pass).
//!
//! Host ports taken on a host are a placement filter (`placement::filters::host_ports`), not
//! a rule here. Pure: the caller brings the tenants' allowances and the admitted VMs.

use std::collections::BTreeMap;

use ironvisor_crds::vm::Protocol;

use crate::index::{TenantNets, VmEntry, VmKey};
use crate::quota::TenantTree;

/// Scheduled=False reason: a bridge or libvirt network the VM's tenant does not allow.
pub const REASON_NETWORK_NOT_ALLOWED: &str = "NetworkNotAllowed";
/// Scheduled=False reason: a forwarded host port below 1024 without the admin's setting.
pub const REASON_HOST_PORT_NOT_ALLOWED: &str = "HostPortNotAllowed";
/// Scheduled=False reason: a MAC address already used in the VM's tenant.
pub const REASON_DUPLICATE_MAC: &str = "DuplicateMac";

/// Scheduled=False reason (or within `ChangeNotAdmitted`): a placed VM edited to forward a
/// host port another VM on its host already forwards.
pub const REASON_HOST_PORT_TAKEN: &str = "HostPortTaken";

/// Every reason this module gives (fixed: metric label values).
pub const REASONS: [&str; 4] = [
    REASON_NETWORK_NOT_ALLOWED,
    REASON_HOST_PORT_NOT_ALLOWED,
    REASON_DUPLICATE_MAC,
    REASON_HOST_PORT_TAKEN,
];

/// The first port that is not privileged.
const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// Why a VM's networking is not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// One of [`REASONS`].
    pub reason: &'static str,
    /// What is wrong and what to change.
    pub message: String,
}

/// Whose a MAC is: the tenant that owns a namespace, or the namespace alone. MACs are unique
/// in the whole cluster (tenants may share a bridge), but a refusal names the holder only
/// within the asker's own scope.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Tenant(String),
    Namespace(String),
}

/// The state network admission reads during one pass.
#[derive(Debug)]
pub struct NetBook<'a> {
    tenants: &'a BTreeMap<String, TenantNets>,
    allow_privileged_ports: bool,
    /// MACs in use, with the scope and the VM that holds each.
    macs: BTreeMap<String, (Scope, VmKey)>,
}

impl<'a> NetBook<'a> {
    /// An empty book over the tenants' allowances.
    pub fn new(tenants: &'a BTreeMap<String, TenantNets>, allow_privileged_ports: bool) -> Self {
        NetBook {
            tenants,
            allow_privileged_ports,
            macs: BTreeMap::new(),
        }
    }

    fn scope(tree: &TenantTree, namespace: &str) -> Scope {
        match tree.owner_of(namespace) {
            Some(t) => Scope::Tenant(t.to_owned()),
            None => Scope::Namespace(namespace.to_owned()),
        }
    }

    /// Count an admitted VM's MACs (placed VMs, and each VM admitted in this pass).
    pub fn record(&mut self, tree: &TenantTree, vm: &VmEntry) {
        let scope = Self::scope(tree, &vm.key.namespace);
        for mac in &vm.net.macs {
            self.macs
                .entry(mac.clone())
                .or_insert_with(|| (scope.clone(), vm.key.clone()));
        }
    }

    /// Whether a VM that is not admitted yet may have its interfaces.
    pub fn check(&self, tree: &TenantTree, vm: &VmEntry) -> Result<(), Refusal> {
        self.attachments(tree, &vm.key.namespace, vm)?;
        self.privileged_ports(vm)?;
        self.unique_macs(tree, vm)
    }

    fn attachments(&self, tree: &TenantTree, ns: &str, vm: &VmEntry) -> Result<(), Refusal> {
        let tenant = tree.owner_of(ns);
        let allowed = tenant.and_then(|t| self.tenants.get(t));
        let empty = TenantNets::default();
        let allowed = allowed.unwrap_or(&empty);
        let refused = vm
            .net
            .bridges
            .iter()
            .find(|b| !allowed.bridges.contains(*b))
            .map(|b| ("bridge", b, "allowedBridges", &allowed.bridges))
            .or_else(|| {
                vm.net
                    .networks
                    .iter()
                    .find(|n| !allowed.networks.contains(*n))
                    .map(|n| ("libvirt network", n, "allowedNetworks", &allowed.networks))
            });
        let Some((kind, name, field, list)) = refused else {
            return Ok(());
        };
        let message = match tenant {
            None => format!(
                "{kind} {name:?} is not allowed: namespace {ns} belongs to no Tenant, and only a \
                 Tenant's {field} can allow one; use a user-mode interface or move the VM to a \
                 tenant namespace"
            ),
            Some(t) => {
                let listed = if list.is_empty() {
                    "none".to_owned()
                } else {
                    list.iter().cloned().collect::<Vec<_>>().join(", ")
                };
                format!(
                    "{kind} {name:?} is not allowed for tenant {t} (its spec.{field}: \
                     {listed}); a cluster administrator adds it to the Tenant, or use a \
                     user-mode interface"
                )
            }
        };
        Err(Refusal {
            reason: REASON_NETWORK_NOT_ALLOWED,
            message,
        })
    }

    fn privileged_ports(&self, vm: &VmEntry) -> Result<(), Refusal> {
        if self.allow_privileged_ports {
            return Ok(());
        }
        match vm
            .request
            .host_ports
            .iter()
            .find(|(_, p)| *p < FIRST_UNPRIVILEGED_PORT)
        {
            None => Ok(()),
            Some((proto, port)) => Err(Refusal {
                reason: REASON_HOST_PORT_NOT_ALLOWED,
                message: format!(
                    "host port {port}/{} is below {FIRST_UNPRIVILEGED_PORT}: forward a port \
                     from {FIRST_UNPRIVILEGED_PORT}-65535 instead (privileged host ports need \
                     the operator's --allow-privileged-host-ports)",
                    proto_name(*proto)
                ),
            }),
        }
    }

    fn unique_macs(&self, tree: &TenantTree, vm: &VmEntry) -> Result<(), Refusal> {
        let scope = Self::scope(tree, &vm.key.namespace);
        let within = match &scope {
            Scope::Tenant(t) => format!("tenant {t}"),
            Scope::Namespace(n) => format!("namespace {n}"),
        };
        for (i, mac) in vm.net.macs.iter().enumerate() {
            let holder = if vm.net.macs[..i].contains(mac) {
                Some(format!("another interface of this VM in {within}"))
            } else {
                self.macs
                    .get(mac)
                    .filter(|(_, k)| *k != vm.key)
                    .map(|(s, k)| {
                        if *s == scope {
                            format!("VM {k} in {within}")
                        } else {
                            // Another tenant's VM is not named to this one.
                            "a VM of another tenant (MAC addresses are unique in the cluster)"
                                .to_owned()
                        }
                    })
            };
            if let Some(holder) = holder {
                return Err(Refusal {
                    reason: REASON_DUPLICATE_MAC,
                    message: format!(
                        "macAddress {mac} is already used by {holder}; choose another or \
                         leave macAddress out to have one generated"
                    ),
                });
            }
        }
        Ok(())
    }
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::TCP => "TCP",
        Protocol::UDP => "UDP",
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
