//! One admission and placement pass: from the index to the writes that bring the cluster to
//! the decided state.
//!
//! Owns every decision about a VM: admit (quota), place (filters and scores), re-place off a
//! lost host, reserve or release vCPUs and memory on a runStrategy change, and what the
//! operator's part of the VM status must say. Decisions are made one VM at a time, oldest
//! first, each counting the ones before it; the caller writes them in order and records each
//! in the index (`Index::assume`) so the next pass counts them even before the watch does.
//! Placement and admitted size are read from, and written to, the status only; the node
//! label is derived from them ([`LabelWrite`]).
//! Pure: no I/O, the clock is a parameter.

use std::collections::BTreeMap;
use std::time::Duration;

use ironvisor_crds::common::{Condition, condition_status};
use ironvisor_crds::vm::Phase;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::hosts::{self, HOST_LOST, Health};
use crate::index::*;
use crate::placement::{HostSnapshot, Strategy};
use crate::quota::{Ledger, Reserved, TenantTree};
use crate::units::Units;

/// Cluster settings for decisions.
#[derive(Clone, Debug)]
pub struct Config {
    /// Spread or bin-pack.
    pub strategy: Strategy,
    /// How long a heartbeat may stand still before its host is lost.
    pub host_grace: Duration,
    /// Admit forwards from host ports below 1024 (`--allow-privileged-host-ports`).
    pub allow_privileged_host_ports: bool,
    /// The tenant that counts the VMs of namespaces no Tenant owns; with none, such VMs are
    /// not admitted (`NoTenant`).
    pub default_tenant: Option<String>,
    /// Namespaces no tenant may own.
    pub reserved: Reserved,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            strategy: Strategy::Spread,
            host_grace: Duration::from_secs(40),
            allow_privileged_host_ports: false,
            default_tenant: None,
            reserved: Reserved::default(),
        }
    }
}

/// The operator's part of a VM's status, as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct VmStatus {
    /// `status.nodeName`.
    pub node_name: Option<String>,
    /// `status.vcpus`.
    pub vcpus: Option<u32>,
    /// `status.admitted`: set on every placed VM (leaving it out of an apply would delete
    /// it), `None` on an unplaced one.
    pub admitted: Option<Units>,
    /// `status.admitted.hostPorts`, written with `admitted`.
    pub host_ports: Option<Vec<HostPort>>,
    /// The Scheduled condition.
    pub scheduled: Condition,
    /// `phase` and `printableStatus`, while the operator owns them (unplaced, placed but the
    /// agent has not reported yet, host lost); `None` leaves them to the agent.
    pub phase: Option<(Phase, String)>,
    /// The Ready condition, forced only when the host is lost.
    pub ready: Option<Condition>,
    /// The Tenant condition: `Tenant=False NoTenant` on a placed VM whose namespace belongs
    /// to no Tenant; `None` (the condition removed) otherwise.
    pub tenant: Option<Condition>,
}

/// An Event to announce a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// Warning rather than Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: &'static str,
    /// Human text.
    pub note: String,
}

/// A write to one VM's status: the decision itself (placement, admitted size, Scheduled).
#[derive(Clone, Debug, PartialEq)]
pub struct VmWrite {
    /// The VM.
    pub key: VmKey,
    /// Its uid (a precondition: never write to a recreated namesake).
    pub uid: String,
    /// The status to apply.
    pub status: VmStatus,
    /// The write takes room (a new placement, a start, an admitted growth): the caller
    /// records `assume` and the admitted size in the index *before* writing, so an unknown
    /// outcome errs on counting. Otherwise (a release, a status refresh) after.
    pub reserves: bool,
    /// What to record in the index once the write succeeded.
    pub assume: Option<Assumed>,
    /// The Event, if the decision changed.
    pub announce: Option<Announce>,
}

/// The `ironvisor.io/node` label copy of a VM's placement, written after its status (a
/// crash in between leaves a status the next pass copies again). The label exists only for
/// the agents' server-side watch selector; any other value, or one without a placement, is
/// undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelWrite {
    /// The VM.
    pub key: VmKey,
    /// Its uid (a precondition).
    pub uid: String,
    /// The placement's host, or `None` to remove the label.
    pub node: Option<String>,
    /// Also remove the legacy `ironvisor.io/admitted` annotation.
    pub drop_annotation: bool,
}

/// A write to a Hypervisor's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostWrite {
    /// Force Ready=False reason HostLost.
    Lost {
        /// Host name.
        host: String,
    },
    /// The heartbeat moves again: drop the operator's HostLost mark.
    Returned {
        /// Host name.
        host: String,
    },
}

/// The outcome of one pass.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Host writes, then VM writes, in decision order.
    pub hosts: Vec<HostWrite>,
    /// VM status writes, oldest VM first.
    pub vms: Vec<VmWrite>,
    /// Label copies to fix, each after its VM's status write of this pass (if any).
    pub labels: Vec<LabelWrite>,
    /// Usage per tenant after this pass's admissions.
    pub ledger: Ledger,
    /// VMs left pending, per reason.
    pub pending: BTreeMap<&'static str, usize>,
    /// VMs newly placed in this pass (not re-placements).
    pub placed: Vec<VmKey>,
    /// Each Hypervisor (object) and whether it is Ready (heartbeat fresh, agent Ready).
    pub hosts_ready: BTreeMap<String, bool>,
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    old: Option<&Condition>,
    now: Timestamp,
) -> Condition {
    let status = if ok {
        condition_status::TRUE
    } else {
        condition_status::FALSE
    };
    let ltt = old
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    ironvisor_crds::common::new_condition(type_, ok, reason, message, None, ltt)
}

fn same_condition(a: Option<&Condition>, b: &Condition) -> bool {
    a.is_some_and(|a| a.status == b.status && a.reason == b.reason && a.message == b.message)
}

/// Two optional conditions say the same (both absent counts).
fn same_optional(a: Option<&Condition>, b: Option<&Condition>) -> bool {
    match b {
        Some(b) => same_condition(a, b),
        None => a.is_none(),
    }
}

/// Whether the observed VM differs from the desired status.
fn differs(vm: &VmEntry, want: &VmStatus) -> bool {
    vm.status_node != want.node_name
        || vm.status_vcpus != want.vcpus
        || vm.admitted != want.admitted
        || (want.admitted.is_some() && vm.admitted_ports != want.host_ports)
        || !same_condition(vm.scheduled.as_ref(), &want.scheduled)
        || match &want.phase {
            Some((p, s)) => vm.phase != Some(*p) || vm.printable.as_deref() != Some(s.as_str()),
            None => vm.operator_owns_phase,
        }
        || want
            .ready
            .as_ref()
            .is_some_and(|r| !same_condition(vm.ready.as_ref(), r))
        || !same_optional(vm.tenant.as_ref(), want.tenant.as_ref())
}

/// Run one pass over the index.
pub fn plan(index: &Index, cfg: Config, now: Timestamp) -> Plan {
    let mut out = Plan::default();
    let health: BTreeMap<&str, Health> = index
        .hosts
        .iter()
        .map(|(n, h)| {
            let ready = h.ready.as_ref().map(|(s, r)| (s.as_str(), r.as_str()));
            (
                n.as_str(),
                hosts::health(h.heartbeat_seen, ready, now, cfg.host_grace),
            )
        })
        .collect();
    for (name, h) in &index.hosts {
        let marked_lost = h
            .ready
            .as_ref()
            .is_some_and(|(s, r)| s == condition_status::FALSE && r == HOST_LOST);
        match health.get(name.as_str()) {
            Some(Health::Lost) if h.has_object && !marked_lost => {
                out.hosts.push(HostWrite::Lost { host: name.clone() })
            }
            Some(Health::Ready | Health::NotReady) if marked_lost => {
                out.hosts.push(HostWrite::Returned { host: name.clone() })
            }
            _ => {}
        }
    }

    out.hosts_ready = index
        .hosts
        .iter()
        .filter(|(_, h)| h.has_object)
        .map(|(n, _)| (n.clone(), health.get(n.as_str()) == Some(&Health::Ready)))
        .collect();

    // Usage and host allocations from everything already admitted.
    let tree = TenantTree::with_reserved(index.tenants.values().cloned(), cfg.reserved.clone());
    let quotas = index
        .quotas
        .values()
        .filter_map(|q| q.as_ref().ok().cloned())
        .collect();
    let mut ledger = Ledger::new(tree, quotas).with_default_tenant(cfg.default_tenant.clone());
    let mut net = NetBook::new(&index.tenant_nets, cfg.allow_privileged_host_ports);
    let mut snaps: BTreeMap<String, HostSnapshot> = index
        .hosts
        .iter()
        .filter(|(_, h)| h.has_object)
        .map(|(n, h)| {
            let snap = HostSnapshot {
                name: n.clone(),
                labels: h.labels.clone(),
                ready: health.get(n.as_str()) == Some(&Health::Ready),
                unschedulable: h.unschedulable,
                maintenance: h.maintenance,
                unhealthy: h.unhealthy,
                allocatable: h.allocatable,
                tpm: h.tpm,
                backup_locations: index.backups().available_on(n),
                ..HostSnapshot::default()
            };
            (n.clone(), snap)
        })
        .collect();
    for vm in index.vms.values() {
        let Some(p) = index.placement(vm) else {
            continue;
        };
        // An admitted VM counts at the size it was admitted at; a grown spec is re-admitted
        // by the pass. One whose spec no longer counts (an image disk without a size, under
        // the storage rule) still holds what it was admitted at.
        let Some(base) = index
            .admitted(&vm.key)
            .or_else(|| vm.demand.as_ref().ok().copied())
        else {
            continue;
        };
        let counted = if p.compute { base } else { base.non_compute() };
        ledger.add(&vm.key.namespace, counted);
        net.record(ledger.tree(), vm);
        if let Some(s) = snaps.get_mut(&p.node) {
            take(s, vm, counted);
        }
    }

    reserve_incoming(index, &mut snaps);

    let mut order: Vec<&VmEntry> = index.vms.values().filter(|v| !v.deleting).collect();
    order.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.key.cmp(&b.key)));
    let mut pass = Pass {
        cfg,
        now,
        ledger: &mut ledger,
        snaps: &mut snaps,
        health: &health,
        net,
        backups: index.backups(),
        clone_sources: index.clone_sources(),
    };
    for vm in order {
        let write = match index.placement(vm) {
            None => pass.admit(vm, &mut out),
            Some(p) => {
                let w = pass.placed(vm, &p, index.admitted(&vm.key));
                // A placed VM whose start waits (quota or host capacity) is pending too.
                let waiting = w
                    .as_ref()
                    .map(|w| &w.status.scheduled)
                    .filter(|c| c.status == condition_status::FALSE);
                if let Some(c) = waiting {
                    let reason = if c.reason == REASON_QUOTA_EXCEEDED
                        || c.reason == REASON_RESIZE_QUOTA_EXCEEDED
                    {
                        REASON_QUOTA_EXCEEDED
                    } else if c.reason == REASON_NO_TENANT {
                        REASON_NO_TENANT
                    } else if let Some(r) = network::REASONS.iter().find(|r| **r == c.reason) {
                        r
                    } else if c.reason == REASON_CHANGE_NOT_ADMITTED {
                        // The message says which network refusal; counted as one.
                        network::REASON_NETWORK_NOT_ALLOWED
                    } else {
                        REASON_UNSCHEDULABLE
                    };
                    *out.pending.entry(reason).or_default() += 1;
                }
                w
            }
        };
        let node = match &write {
            Some(w) => w.status.node_name.clone(),
            None => index.placement(vm).map(|p| p.node),
        };
        if let Some(w) = write {
            let unchanged = index.assumed.contains_key(&vm.key) || !differs(vm, &w.status);
            if !unchanged {
                out.vms.push(w);
            }
        }
        out.labels.extend(label_write(vm, node));
    }
    out.ledger = ledger;
    out
}

/// Room on the targets of live migrations under way: the VM counts on its source (where it
/// is placed and runs) and, during the copy, its compute on the target too. Its quota is
/// counted once.
fn reserve_incoming(index: &Index, snaps: &mut BTreeMap<String, HostSnapshot>) {
    for (key, target) in index.incoming() {
        let Some(vm) = index.vms.get(key) else {
            continue;
        };
        if index
            .placement(vm)
            .is_none_or(|p| !p.compute || p.node == *target)
        {
            continue;
        }
        let Some(size) = index
            .admitted(key)
            .or_else(|| vm.demand.as_ref().ok().copied())
        else {
            continue;
        };
        if let Some(s) = snaps.get_mut(target) {
            s.allocated.vcpus += size.vcpus;
            s.allocated.memory += size.memory;
        }
    }
}

/// The label fix a VM needs so its copy matches `node`, the placement after this pass.
fn label_write(vm: &VmEntry, node: Option<String>) -> Option<LabelWrite> {
    (vm.label_node != node || vm.legacy_annotation).then(|| LabelWrite {
        key: vm.key.clone(),
        uid: vm.uid.clone(),
        node,
        drop_annotation: vm.legacy_annotation,
    })
}

pub mod network;
mod pass;
mod placed_network;

use network::NetBook;
use pass::{Pass, take};

#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod incoming_tests;
#[cfg(test)]
mod no_tenant;
#[cfg(test)]
mod props;
#[cfg(test)]
mod resize_lock;
#[cfg(test)]
mod tenant_edits;
#[cfg(test)]
mod tests;
