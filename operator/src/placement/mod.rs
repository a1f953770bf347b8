//! Placement: choose a host for a VM the way kube-scheduler chooses a node.
//!
//! Owns the decision only: filters drop hosts that cannot take the VM (each with a reason,
//! counted for the Unschedulable message), scores rank the rest, ties go to the host name
//! that sorts first. Pure; the caller brings a snapshot of the hosts with their allocations
//! (including placements written but not yet reported by agents).

pub mod filters;
pub mod scores;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::index::HostPort;

pub use filters::FilterReason;
pub use scores::Strategy;

/// vCPUs and memory bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// vCPUs.
    pub vcpus: i128,
    /// Memory in bytes.
    pub memory: i128,
}

/// What placement knows about one host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSnapshot {
    /// The host (and Hypervisor) name.
    pub name: String,
    /// The Hypervisor's labels, matched by `nodeSelector`.
    pub labels: BTreeMap<String, String>,
    /// Heartbeat fresh and Ready=True.
    pub ready: bool,
    /// Cordoned.
    pub unschedulable: bool,
    /// In maintenance (being drained).
    pub maintenance: bool,
    /// A health condition that keeps new VMs away, as its filter reason.
    pub unhealthy: Option<FilterReason>,
    /// What may be given to VMs: (capacity − reserved) × overcommit; `None` until reported.
    pub allocatable: Option<Capacity>,
    /// What VMs placed on the host take, counting placements the agent has not reported yet.
    pub allocated: Capacity,
    /// VMs on the host per (namespace, antiAffinityGroup).
    pub groups: BTreeMap<(String, String), u32>,
    /// Host ports (on 127.0.0.1) forwarded by VMs placed on the host, Halted ones included.
    pub host_ports: BTreeSet<HostPort>,
    /// The agent reports it can give VMs an emulated TPM (`status.tpm`).
    pub tpm: bool,
    /// The BackupLocations the host's agent reports available (`status.hosts`).
    pub backup_locations: BTreeSet<String>,
}

/// The BackupLocations a VM restored from backups needs on its host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupNeed {
    /// The locations its backups were written into: the host must report each available.
    pub locations: BTreeSet<String>,
    /// A backup the operator does not know (not in the VM's namespace, or not yet seen):
    /// no host can restore it.
    pub missing: Option<String>,
}

impl BackupNeed {
    /// Nothing to restore from a backup.
    pub fn is_empty(&self) -> bool {
        self.locations.is_empty() && self.missing.is_none()
    }
}

/// What a VM asks of a host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// The VM's namespace (anti-affinity groups are per namespace).
    pub namespace: String,
    /// vCPUs and memory that the host must have free: zero for a Halted VM.
    pub compute: Capacity,
    /// `spec.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `spec.antiAffinityGroup`.
    pub anti_affinity_group: Option<String>,
    /// Host ports its user-mode interfaces forward: a host where one is taken does not fit.
    pub host_ports: Vec<HostPort>,
    /// Where a clone's source is, for a VM with clone disks.
    pub clone_source: CloneSource,
    /// `spec.tpm`: only a host that can emulate a TPM fits.
    pub tpm: bool,
    /// The backups its disks are restored from (`source.backup`, in its namespace).
    pub restores_from: BTreeSet<String>,
    /// Where those backups are, resolved by the planner from its index before placement.
    pub backups: BackupNeed,
}

/// Where the source of a VM's clone disks is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CloneSource {
    /// The VM has no clone disk.
    #[default]
    None,
    /// Every source is on this host.
    On(String),
    /// A source is not ready, missing, or the sources are on different hosts.
    NotReady,
}

/// No host fits: how many hosts each filter turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unschedulable {
    /// Hosts considered.
    pub hosts: usize,
    /// Hosts per reason (a host short of both vCPUs and memory counts under both).
    pub reasons: BTreeMap<FilterReason, usize>,
}

impl fmt::Display for Unschedulable {
    /// `0/3 hosts available: 2 insufficient memory, 1 unschedulable`: most frequent reason
    /// first, then alphabetically, as kube-scheduler prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} hosts available", self.hosts)?;
        let mut reasons: Vec<(String, usize)> = self
            .reasons
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        if !parts.is_empty() {
            write!(f, ": {}", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Choose a host for the request, or say why none fits.
pub fn place<'h>(
    hosts: impl IntoIterator<Item = &'h HostSnapshot>,
    req: &Request,
    strategy: Strategy,
) -> Result<&'h HostSnapshot, Unschedulable> {
    let mut unsched = Unschedulable::default();
    let mut feasible: Vec<&HostSnapshot> = Vec::new();
    for h in hosts {
        unsched.hosts += 1;
        match filters::run(h, req) {
            Ok(()) => feasible.push(h),
            Err(reasons) => {
                for r in reasons {
                    *unsched.reasons.entry(r).or_default() += 1;
                }
            }
        }
    }
    let rejected = filters::anti_affinity(&mut feasible, req);
    if rejected > 0 {
        *unsched
            .reasons
            .entry(FilterReason::AntiAffinity)
            .or_default() += rejected;
    }
    feasible
        .into_iter()
        .map(|h| (scores::score(h, req, strategy), h))
        // Highest score; on a tie the name that sorts first.
        .max_by(|(sa, ha), (sb, hb)| sa.cmp(sb).then_with(|| hb.name.cmp(&ha.name)))
        .map(|(_, h)| h)
        .ok_or(unsched)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    pub(crate) const GI: i128 = 1 << 30;

    pub(crate) fn host(name: &str, vcpus: i128, mem_gi: i128) -> HostSnapshot {
        HostSnapshot {
            name: name.into(),
            ready: true,
            allocatable: Some(Capacity {
                vcpus,
                memory: mem_gi * GI,
            }),
            ..Default::default()
        }
    }

    pub(crate) fn req(vcpus: i128, mem_gi: i128) -> Request {
        Request {
            namespace: "ns".into(),
            compute: Capacity {
                vcpus,
                memory: mem_gi * GI,
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_message_counts_hosts_per_reason_like_kube_scheduler() {
        let mut cordoned = host("c", 64, 64);
        cordoned.unschedulable = true;
        let hosts = [host("a", 64, 1), host("b", 64, 2), cordoned];
        let e = place(&hosts, &req(1, 4), Strategy::Spread).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0/3 hosts available: 2 insufficient memory, 1 unschedulable"
        );
    }

    #[test]
    fn no_hosts_at_all_says_zero_of_zero() {
        let e = place(&[], &req(1, 1), Strategy::Spread).unwrap_err();
        assert_eq!(e.to_string(), "0/0 hosts available");
    }

    #[test]
    fn spread_picks_the_emptiest_host_and_binpack_the_fullest_that_fits() {
        let mut busy = host("busy", 16, 16);
        busy.allocated = Capacity {
            vcpus: 12,
            memory: 12 * GI,
        };
        let idle = host("idle", 16, 16);
        let hosts = [busy, idle];
        assert_eq!(
            place(&hosts, &req(2, 2), Strategy::Spread).unwrap().name,
            "idle"
        );
        assert_eq!(
            place(&hosts, &req(2, 2), Strategy::BinPack).unwrap().name,
            "busy"
        );
    }

    #[test]
    fn ties_go_to_the_host_name_that_sorts_first_whatever_the_input_order() {
        let hosts = [host("h3", 8, 8), host("h1", 8, 8), host("h2", 8, 8)];
        for s in [Strategy::Spread, Strategy::BinPack] {
            assert_eq!(place(&hosts, &req(1, 1), s).unwrap().name, "h1");
            assert_eq!(place(hosts.iter().rev(), &req(1, 1), s).unwrap().name, "h1");
        }
    }

    #[test]
    fn anti_affinity_rejections_are_counted_in_the_message() {
        let mut a = host("a", 8, 8);
        a.groups.insert(("ns".into(), "db".into()), 1);
        let mut r = req(1, 1);
        r.anti_affinity_group = Some("db".into());
        r.node_name = Some("a".into());
        // Pinned to the only host that has the group: it still fits (no other host does).
        assert_eq!(place([&a], &r, Strategy::Spread).unwrap().name, "a");
        r.node_name = None;
        let b = host("b", 8, 8);
        assert_eq!(place([&a, &b], &r, Strategy::BinPack).unwrap().name, "b");
    }
}
