//! Filters: each drops a host that cannot take the VM and says why.
//!
//! Order matters only for the message: a host is reported under the first filter it fails
//! (the capacity filter may report both vCPUs and memory), as kube-scheduler does.

use std::fmt;

use super::{HostSnapshot, Request};

/// Why a host was turned away. The Display text goes into the Unschedulable message; the
/// set is fixed, so it is also safe as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FilterReason {
    /// `spec.nodeName` names another host.
    NodeName,
    /// Heartbeat stale or Ready not True.
    NotReady,
    /// Cordoned (`spec.unschedulable`).
    Unschedulable,
    /// In maintenance (`spec.maintenance`, or its Kubernetes Node cordoned): being drained.
    Maintenance,
    /// The agent reports LibvirtHealthy=False (e.g. capability probes that keep taking
    /// seconds: every define would wait minutes).
    LibvirtUnhealthy,
    /// The agent reports StorageAccessible=False (QEMU cannot reach its directories).
    StorageInaccessible,
    /// The host's labels do not match `nodeSelector`.
    NodeSelector,
    /// The VM has a TPM and the host cannot emulate one (no swtpm).
    NoTpm,
    /// A host port the VM forwards is already forwarded by another VM on the host.
    HostPortTaken,
    /// A backup the VM's disks are restored from is not known in its namespace.
    BackupNotFound,
    /// The host does not report a BackupLocation the VM's backups are in available.
    BackupLocationUnavailable,
    /// The agent has not reported capacity yet.
    NoCapacity,
    /// Not enough free vCPUs.
    InsufficientVcpus,
    /// Not enough free memory.
    InsufficientMemory,
    /// Another VM of the same anti-affinity group is there and a host without one fits.
    AntiAffinity,
    /// A clone's source (snapshot layers, template disks) is on another host.
    CloneSourceElsewhere,
    /// A clone's source is not ready (snapshot not taken yet, template not placed).
    CloneSourceNotReady,
}

impl FilterReason {
    /// A short identifier (metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            FilterReason::NodeName => "node_name",
            FilterReason::NotReady => "not_ready",
            FilterReason::Unschedulable => "unschedulable",
            FilterReason::Maintenance => "maintenance",
            FilterReason::LibvirtUnhealthy => "libvirt_unhealthy",
            FilterReason::StorageInaccessible => "storage_inaccessible",
            FilterReason::NodeSelector => "node_selector",
            FilterReason::NoTpm => "no_tpm",
            FilterReason::HostPortTaken => "host_port_taken",
            FilterReason::BackupNotFound => "backup_not_found",
            FilterReason::BackupLocationUnavailable => "backup_location_unavailable",
            FilterReason::NoCapacity => "no_capacity",
            FilterReason::InsufficientVcpus => "insufficient_vcpus",
            FilterReason::InsufficientMemory => "insufficient_memory",
            FilterReason::AntiAffinity => "anti_affinity",
            FilterReason::CloneSourceElsewhere => "clone_source_elsewhere",
            FilterReason::CloneSourceNotReady => "clone_source_not_ready",
        }
    }
}

impl fmt::Display for FilterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FilterReason::NodeName => "not the requested host",
            FilterReason::NotReady => "not ready",
            FilterReason::Unschedulable => "unschedulable",
            FilterReason::Maintenance => "in maintenance",
            FilterReason::LibvirtUnhealthy => {
                "libvirt unhealthy (see the host's LibvirtHealthy condition)"
            }
            FilterReason::StorageInaccessible => {
                "storage unreachable for QEMU (see the host's StorageAccessible condition)"
            }
            FilterReason::NodeSelector => "node selector mismatch",
            FilterReason::NoTpm => {
                "no TPM emulator (install swtpm and swtpm-tools on the host; its Hypervisor status then reports tpm: true)"
            }
            FilterReason::HostPortTaken => "host port already forwarded by another VM",
            FilterReason::BackupNotFound => {
                "backup to restore from not found in the VM's namespace (kubectl get vmbackup)"
            }
            FilterReason::BackupLocationUnavailable => {
                "backup location not available (see the BackupLocation's status.hosts)"
            }
            FilterReason::NoCapacity => "no capacity reported",
            FilterReason::InsufficientVcpus => "insufficient vcpus",
            FilterReason::InsufficientMemory => "insufficient memory",
            FilterReason::AntiAffinity => "anti-affinity group already there",
            FilterReason::CloneSourceElsewhere => {
                "not the host of the clone's source (a clone is made on its source's host)"
            }
            FilterReason::CloneSourceNotReady => {
                "clone source not ready (snapshot not taken, or template not placed, yet)"
            }
        })
    }
}

/// `spec.nodeName` pins the VM to one host.
pub fn node_name(h: &HostSnapshot, req: &Request) -> Result<(), FilterReason> {
    match &req.node_name {
        Some(n) if *n != h.name => Err(FilterReason::NodeName),
        _ => Ok(()),
    }
}

/// A clone goes where its source's files are: a linked clone reads them for ever, a full
/// copy while it is made.
pub fn clone_source(h: &HostSnapshot, req: &Request) -> Result<(), FilterReason> {
    match &req.clone_source {
        super::CloneSource::None => Ok(()),
        super::CloneSource::On(n) if *n == h.name => Ok(()),
        super::CloneSource::On(_) => Err(FilterReason::CloneSourceElsewhere),
        super::CloneSource::NotReady => Err(FilterReason::CloneSourceNotReady),
    }
}

/// Heartbeat fresh and Ready.
pub fn ready(h: &HostSnapshot) -> Result<(), FilterReason> {
    if h.ready {
        Ok(())
    } else {
        Err(FilterReason::NotReady)
    }
}

/// Not in maintenance, not cordoned.
pub fn schedulable(h: &HostSnapshot) -> Result<(), FilterReason> {
    if h.maintenance {
        Err(FilterReason::Maintenance)
    } else if h.unschedulable {
        Err(FilterReason::Unschedulable)
    } else {
        Ok(())
    }
}

/// No health condition keeps new VMs away.
pub fn healthy(h: &HostSnapshot) -> Result<(), FilterReason> {
    h.unhealthy.map_or(Ok(()), Err)
}

/// Every `nodeSelector` label is on the host with the same value.
pub fn node_selector(h: &HostSnapshot, req: &Request) -> Result<(), FilterReason> {
    if req
        .node_selector
        .iter()
        .all(|(k, v)| h.labels.get(k) == Some(v))
    {
        Ok(())
    } else {
        Err(FilterReason::NodeSelector)
    }
}

/// A VM with a TPM needs a host whose agent reports it can emulate one: elsewhere libvirt
/// would refuse to start it.
pub fn tpm(h: &HostSnapshot, req: &Request) -> Result<(), FilterReason> {
    if req.tpm && !h.tpm {
        Err(FilterReason::NoTpm)
    } else {
        Ok(())
    }
}

/// A VM whose disks are restored from backups needs a host that reports every location
/// those backups are in available: elsewhere its agent could not read the images.
pub fn backup_location(h: &HostSnapshot, req: &Request) -> Result<(), FilterReason> {
    if req.backups.missing.is_some() {
        Err(FilterReason::BackupNotFound)
    } else if !req.backups.locations.is_subset(&h.backup_locations) {
        Err(FilterReason::BackupLocationUnavailable)
    } else {
        Ok(())
    }
}

/// No host port the VM forwards is forwarded by a VM already placed on the host (both bind
/// the same port of the host's 127.0.0.1; the second could not start).
pub fn host_ports(h: &HostSnapshot, req: &Request) -> Result<(), FilterReason> {
    if req.host_ports.iter().any(|p| h.host_ports.contains(p)) {
        Err(FilterReason::HostPortTaken)
    } else {
        Ok(())
    }
}

/// Free capacity (allocatable minus allocated, placements not yet reported included) covers
/// the request. A Halted VM asks for no compute and fits any host that reported capacity.
pub fn capacity(h: &HostSnapshot, req: &Request) -> Result<(), Vec<FilterReason>> {
    let Some(alloc) = h.allocatable else {
        return Err(vec![FilterReason::NoCapacity]);
    };
    let mut out = Vec::new();
    if req.compute.vcpus > 0 && h.allocated.vcpus.saturating_add(req.compute.vcpus) > alloc.vcpus {
        out.push(FilterReason::InsufficientVcpus);
    }
    if req.compute.memory > 0
        && h.allocated.memory.saturating_add(req.compute.memory) > alloc.memory
    {
        out.push(FilterReason::InsufficientMemory);
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// Every per-host filter, in order; the first failure is the reason.
pub fn run(h: &HostSnapshot, req: &Request) -> Result<(), Vec<FilterReason>> {
    node_name(h, req)
        .and_then(|()| clone_source(h, req))
        .and_then(|()| ready(h))
        .and_then(|()| schedulable(h))
        .and_then(|()| healthy(h))
        .and_then(|()| node_selector(h, req))
        .and_then(|()| tpm(h, req))
        .and_then(|()| backup_location(h, req))
        .and_then(|()| host_ports(h, req))
        .map_err(|r| vec![r])?;
    capacity(h, req)
}

/// Anti-affinity spread over the hosts that passed the other filters: keep only those with
/// the fewest VMs of the group (none, while any host without one fits). Returns how many
/// hosts it dropped.
pub fn anti_affinity(feasible: &mut Vec<&HostSnapshot>, req: &Request) -> usize {
    let Some(group) = &req.anti_affinity_group else {
        return 0;
    };
    let key = (req.namespace.clone(), group.clone());
    let count = |h: &HostSnapshot| h.groups.get(&key).copied().unwrap_or(0);
    let Some(min) = feasible.iter().map(|h| count(h)).min() else {
        return 0;
    };
    let before = feasible.len();
    feasible.retain(|h| count(h) == min);
    before - feasible.len()
}

#[cfg(test)]
mod tests {
    use super::super::Capacity;
    use super::super::tests::{GI, host, req};
    use super::*;

    #[test]
    fn node_name_pin_keeps_only_the_named_host() {
        let mut r = req(1, 1);
        assert_eq!(node_name(&host("a", 1, 1), &r), Ok(()));
        r.node_name = Some("b".into());
        assert_eq!(node_name(&host("a", 1, 1), &r), Err(FilterReason::NodeName));
        assert_eq!(node_name(&host("b", 1, 1), &r), Ok(()));
    }

    #[test]
    fn a_host_that_is_not_ready_is_filtered() {
        let mut h = host("a", 8, 8);
        assert_eq!(ready(&h), Ok(()));
        h.ready = false;
        assert_eq!(run(&h, &req(1, 1)), Err(vec![FilterReason::NotReady]));
    }

    #[test]
    fn a_host_in_maintenance_is_filtered_with_that_reason_even_when_also_cordoned() {
        let mut h = host("a", 8, 8);
        h.maintenance = true;
        h.unschedulable = true;
        assert_eq!(run(&h, &req(1, 1)), Err(vec![FilterReason::Maintenance]));
        assert_eq!(FilterReason::Maintenance.to_string(), "in maintenance");
    }

    #[test]
    fn a_cordoned_host_is_filtered() {
        let mut h = host("a", 8, 8);
        h.unschedulable = true;
        assert_eq!(run(&h, &req(1, 1)), Err(vec![FilterReason::Unschedulable]));
    }

    #[test]
    fn a_host_whose_libvirt_or_storage_is_unhealthy_is_filtered_with_the_reason() {
        let mut h = host("a", 8, 8);
        h.unhealthy = Some(FilterReason::LibvirtUnhealthy);
        assert_eq!(
            run(&h, &req(1, 1)),
            Err(vec![FilterReason::LibvirtUnhealthy])
        );
        let mut u = super::super::Unschedulable {
            hosts: 1,
            ..Default::default()
        };
        u.reasons.insert(FilterReason::LibvirtUnhealthy, 1);
        assert_eq!(
            u.to_string(),
            "0/1 hosts available: 1 libvirt unhealthy (see the host's LibvirtHealthy condition)"
        );
    }

    #[test]
    fn node_selector_needs_every_label_with_the_same_value() {
        let mut h = host("a", 8, 8);
        h.labels.insert("zone".into(), "z1".into());
        h.labels.insert("gpu".into(), "yes".into());
        let mut r = req(1, 1);
        r.node_selector.insert("zone".into(), "z1".into());
        assert_eq!(node_selector(&h, &r), Ok(()));
        r.node_selector.insert("gpu".into(), "no".into());
        assert_eq!(node_selector(&h, &r), Err(FilterReason::NodeSelector));
        r.node_selector.clear();
        r.node_selector.insert("ssd".into(), "yes".into());
        assert_eq!(node_selector(&h, &r), Err(FilterReason::NodeSelector));
    }

    #[test]
    fn a_host_where_a_forwarded_port_is_taken_is_filtered_per_protocol() {
        use ironvisor_crds::vm::Protocol;
        let mut h = host("a", 8, 8);
        h.host_ports.insert((Protocol::TCP, 2222));
        let mut r = req(1, 1);
        r.host_ports = vec![(Protocol::UDP, 2222), (Protocol::TCP, 8080)];
        assert_eq!(run(&h, &r), Ok(()));
        r.host_ports.push((Protocol::TCP, 2222));
        assert_eq!(run(&h, &r), Err(vec![FilterReason::HostPortTaken]));
        let mut u = super::super::Unschedulable {
            hosts: 1,
            ..Default::default()
        };
        u.reasons.insert(FilterReason::HostPortTaken, 1);
        assert_eq!(
            u.to_string(),
            "0/1 hosts available: 1 host port already forwarded by another VM"
        );
    }

    #[test]
    fn a_vm_with_a_tpm_fits_only_hosts_that_report_a_tpm_emulator() {
        let mut with = host("with", 8, 8);
        with.tpm = true;
        let without = host("without", 8, 8);
        let mut r = req(1, 1);
        // A VM without a TPM fits both.
        assert_eq!(run(&without, &r), Ok(()));
        assert_eq!(run(&with, &r), Ok(()));
        r.tpm = true;
        assert_eq!(run(&with, &r), Ok(()));
        assert_eq!(run(&without, &r), Err(vec![FilterReason::NoTpm]));
        let e = super::super::place([&without], &r, super::super::Strategy::Spread).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0/1 hosts available: 1 no TPM emulator (install swtpm and swtpm-tools on the host; \
             its Hypervisor status then reports tpm: true)"
        );
        let chosen = super::super::place([&without, &with], &r, super::super::Strategy::Spread);
        assert_eq!(chosen.unwrap().name, "with");
    }

    #[test]
    fn a_vm_restored_from_a_backup_fits_only_hosts_where_its_location_is_available() {
        let mut mounted = host("mounted", 8, 8);
        mounted.backup_locations.insert("nfs".into());
        mounted.backup_locations.insert("other".into());
        let bare = host("bare", 8, 8);
        let mut r = req(1, 1);
        r.backups.locations.insert("nfs".into());
        assert_eq!(run(&mounted, &r), Ok(()));
        assert_eq!(
            run(&bare, &r),
            Err(vec![FilterReason::BackupLocationUnavailable])
        );
        let chosen = super::super::place([&bare, &mounted], &r, super::super::Strategy::Spread);
        assert_eq!(chosen.unwrap().name, "mounted");
        // Pinned to the host without it: refused, with the reason.
        r.node_name = Some("bare".into());
        let e =
            super::super::place([&bare, &mounted], &r, super::super::Strategy::Spread).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0/2 hosts available: 1 backup location not available (see the BackupLocation's \
             status.hosts), 1 not the requested host"
        );
        // A backup nobody knows: no host restores it, whatever it mounts.
        r.node_name = None;
        r.backups.missing = Some("gone".into());
        assert_eq!(run(&mounted, &r), Err(vec![FilterReason::BackupNotFound]));
        // A VM with no disk from a backup fits a host that mounts nothing.
        assert_eq!(run(&bare, &req(1, 1)), Ok(()));
    }

    #[test]
    fn capacity_counts_what_is_already_allocated_and_fits_exactly() {
        let mut h = host("a", 8, 8);
        h.allocated = Capacity {
            vcpus: 6,
            memory: 6 * GI,
        };
        assert_eq!(capacity(&h, &req(2, 2)), Ok(()));
        assert_eq!(
            capacity(&h, &req(3, 2)),
            Err(vec![FilterReason::InsufficientVcpus])
        );
        assert_eq!(
            capacity(&h, &req(2, 3)),
            Err(vec![FilterReason::InsufficientMemory])
        );
        assert_eq!(
            capacity(&h, &req(3, 3)),
            Err(vec![
                FilterReason::InsufficientVcpus,
                FilterReason::InsufficientMemory
            ])
        );
    }

    #[test]
    fn a_halted_vm_fits_a_full_host_but_not_one_without_reported_capacity() {
        let mut h = host("a", 8, 8);
        h.allocated = Capacity {
            vcpus: 8,
            memory: 8 * GI,
        };
        assert_eq!(capacity(&h, &req(0, 0)), Ok(()));
        h.allocatable = None;
        assert_eq!(
            capacity(&h, &req(0, 0)),
            Err(vec![FilterReason::NoCapacity])
        );
    }

    #[test]
    fn filters_report_the_first_failure_only() {
        let mut h = host("a", 0, 0);
        h.ready = false;
        h.unschedulable = true;
        assert_eq!(run(&h, &req(1, 1)), Err(vec![FilterReason::NotReady]));
    }

    #[test]
    fn anti_affinity_keeps_the_hosts_with_the_fewest_group_members() {
        let mut a = host("a", 8, 8);
        a.groups.insert(("ns".into(), "web".into()), 2);
        let mut b = host("b", 8, 8);
        b.groups.insert(("ns".into(), "web".into()), 1);
        // Same group name in another namespace does not count.
        let mut c = host("c", 8, 8);
        c.groups.insert(("other".into(), "web".into()), 5);
        let mut r = req(1, 1);
        r.anti_affinity_group = Some("web".into());
        let mut feasible = vec![&a, &b, &c];
        assert_eq!(anti_affinity(&mut feasible, &r), 2);
        assert_eq!(
            feasible.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            vec!["c"]
        );
        let mut feasible = vec![&a, &b];
        assert_eq!(anti_affinity(&mut feasible, &r), 1);
        assert_eq!(feasible[0].name, "b");
    }

    #[test]
    fn without_a_group_anti_affinity_drops_nothing() {
        let a = host("a", 8, 8);
        let mut feasible = vec![&a];
        assert_eq!(anti_affinity(&mut feasible, &req(1, 1)), 0);
        assert_eq!(feasible.len(), 1);
    }
}
