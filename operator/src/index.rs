//! The operator's in-memory view of the cluster, fed by watches (linkerd policy-controller
//! style: `apply` / `delete` / `reset` per kind) and by the operator's own writes.
//!
//! A VM's placement and admitted size are read from its status only (`entry`); the
//! `ironvisor.io/node` label is a copy the planner keeps right, never an input.
//!
//! Owns the parsed, compact form of every object a decision needs, and the *assumed*
//! placements: writes the operator made that its watches have not shown yet (as
//! kube-scheduler assumes pods), so the next decision already counts them. It never talks to
//! the API and never decides anything; `plan` does.

use std::collections::BTreeMap;

use ironvisor_crds::hypervisor::Hypervisor;
use ironvisor_crds::quota::Quota;
use ironvisor_crds::tenant::Tenant;
use ironvisor_crds::vm::VirtualMachine;
use jiff::Timestamp;
use kube::ResourceExt;

use crate::hosts;
use crate::placement::Capacity;
use crate::quota::{QuotaEntry, TenantNode};
use crate::units::{Limits, Units};

/// Scheduled reason: placed, vCPUs and memory reserved under quota (the agents act on it).
pub const REASON_SCHEDULED: &str = ironvisor_crds::common::scheduled_reason::SCHEDULED;
/// Scheduled reason: placed while Halted; vCPUs and memory not reserved (the agents stop
/// the guest on it, never start it).
pub const REASON_SCHEDULED_HALTED: &str =
    ironvisor_crds::common::scheduled_reason::SCHEDULED_HALTED;
/// Scheduled=False reason: a quota of the tenant or an ancestor has no room.
pub const REASON_QUOTA_EXCEEDED: &str = "QuotaExceeded";
/// Scheduled=False reason on a running VM whose grown spec does not fit its quota (or its
/// host): it keeps its admitted size reserved and runs on; the agent starts it again only
/// once the resize is admitted (or the spec is reverted).
pub const REASON_RESIZE_QUOTA_EXCEEDED: &str = "ResizeQuotaExceeded";
/// Scheduled=False reason on a running VM whose edited interfaces are not admitted (a bridge
/// or network its tenant does not allow, a privileged host port, a MAC in use): it keeps
/// what it holds and runs on as admitted; its agent applies nothing new until the spec is
/// admitted again. The message says which refusal.
pub const REASON_CHANGE_NOT_ADMITTED: &str = "ChangeNotAdmitted";
/// Scheduled=False reason: no host fits.
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";
/// Scheduled=False reason (and Tenant=False reason on a placed VM): the namespace belongs
/// to no Tenant and no default tenant is named, so nothing new is admitted there.
pub const REASON_NO_TENANT: &str = "NoTenant";
/// Scheduled=False reason: the spec cannot be turned into VM units.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// Annotation in which operators before status.admitted recorded the admitted size. It is
/// tenant-writable, so nothing reads it; the operator removes it where it finds it.
pub const LEGACY_ADMITTED_ANNOTATION: &str = "ironvisor.io/admitted";

mod backups;
pub mod clones;
mod entry;
mod incoming;
mod net;

pub use backups::BackupIndex;
pub use entry::{VmEntry, VmKey};
pub use net::{HostPort, TenantNets, VmNet};

/// A placement the operator wrote and has not seen come back yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assumed {
    /// The host written in `status.nodeName`.
    pub node: String,
    /// Whether compute is reserved.
    pub compute: bool,
}

/// What decisions need to know about one host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostEntry {
    /// Labels of the Hypervisor object.
    pub labels: BTreeMap<String, String>,
    /// Whether a Hypervisor object exists (a Lease alone does not make a host placeable).
    pub has_object: bool,
    /// Cordoned.
    pub unschedulable: bool,
    /// In maintenance (`ironvisor_crds::maintenance::in_maintenance`).
    pub maintenance: bool,
    /// Allocatable, when reported.
    pub allocatable: Option<Capacity>,
    /// Ready condition (status, reason).
    pub ready: Option<(String, String)>,
    /// A health condition that keeps new VMs away (LibvirtHealthy or StorageAccessible
    /// False), when the agent reports one.
    pub unhealthy: Option<crate::placement::FilterReason>,
    /// The agent reports it can emulate a TPM (`status.tpm`).
    pub tpm: bool,
    /// Last heartbeat Lease renewTime seen.
    pub heartbeat: Option<Timestamp>,
    /// Last Hypervisor `status.lastHeartbeatTime` seen. Kept apart from the Lease's: the two
    /// differ, and an unrelated Hypervisor update (the operator's own HostLost mark) must not
    /// look like a heartbeat.
    pub status_heartbeat: Option<Timestamp>,
    /// When the operator saw the heartbeat move last (its own clock).
    pub heartbeat_seen: Option<Timestamp>,
}

impl HostEntry {
    /// A heartbeat value was observed: from the Lease (`lease`) or the Hypervisor status.
    /// Only a value that moved (or the first sight of the host) refreshes it.
    fn beat(&mut self, lease: bool, value: Option<Timestamp>, now: Timestamp) {
        let last = if lease {
            &mut self.heartbeat
        } else {
            &mut self.status_heartbeat
        };
        let moved = value.is_some() && value != *last;
        if value.is_some() {
            *last = value;
        }
        if self.heartbeat_seen.is_none() || moved {
            self.heartbeat_seen = Some(now);
        }
    }
}

/// Everything the planner reads.
#[derive(Clone, Debug, Default)]
pub struct Index {
    pub(crate) vms: BTreeMap<VmKey, VmEntry>,
    /// resourceVersion of each VM as last applied (from the watch or an own write).
    rvs: BTreeMap<VmKey, String>,
    /// VMs whose entry comes from the response to the operator's own write, with that
    /// write's resourceVersion, until the watch delivers that version. Watch events for such a
    /// VM that carry another version are older than the write (a watch delivers in order, and
    /// the write's own event comes before any later one) and are skipped, so a lagging watch
    /// can never make the planner rewrite a status it has just written.
    written: BTreeMap<VmKey, String>,
    pub(crate) assumed: BTreeMap<VmKey, Assumed>,
    pub(crate) hosts: BTreeMap<String, HostEntry>,
    pub(crate) tenants: BTreeMap<String, TenantNode>,
    /// Tenant name → the bridges and libvirt networks it allows.
    pub(crate) tenant_nets: BTreeMap<String, TenantNets>,
    /// Quota name → parsed entry, or the error that makes it unusable.
    pub(crate) quotas: BTreeMap<String, Result<QuotaEntry, String>>,
    /// Snapshots by (namespace, name): where clones of them go.
    pub(crate) snapshots: BTreeMap<VmKey, clones::SnapshotEntry>,
    /// Migration `ns/name` → the VM and the target it reserves room on ([`incoming`]).
    pub(crate) incoming: BTreeMap<String, (VmKey, String)>,
    /// Backups' locations and where each location is available ([`backups`]).
    pub(crate) backups: BackupIndex,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// A VM was added or changed, as the watch shows it. Drops its assumption once the API
    /// shows it. An event older than the operator's own last write to the VM is skipped.
    pub fn apply_vm(&mut self, vm: &VirtualMachine) {
        let entry = VmEntry::from_vm(vm);
        let rv = vm.resource_version().unwrap_or_default();
        if let Some(own) = self.written.get(&entry.key) {
            if *own != rv {
                return;
            }
            self.written.remove(&entry.key);
        }
        self.rvs.insert(entry.key.clone(), rv);
        self.apply_vm_entry(entry);
    }

    /// Before a write that admits `size`: count the larger of the recorded and the new size
    /// until the API's answer (or the watch) says which one it holds — an unknown outcome
    /// must not under-count.
    pub fn raise_admitted(&mut self, key: &VmKey, size: Units) {
        if let Some(vm) = self.vms.get_mut(key) {
            let old = vm.admitted.unwrap_or(size);
            vm.admitted = Some(Units {
                vms: old.vms.max(size.vms),
                vcpus: old.vcpus.max(size.vcpus),
                memory: old.memory.max(size.memory),
                storage: old.storage.max(size.storage),
            });
        }
    }

    /// The size a placed VM counts at ([`VmEntry::admitted_size`]).
    pub fn admitted(&self, key: &VmKey) -> Option<Units> {
        self.vms.get(key)?.admitted_size()
    }

    /// The API's answer to the operator's own write of a VM (label or status): it is newer
    /// than anything the watch has delivered so far, so it replaces the VM's entry until the
    /// watch catches up with it. Ignored for a VM the index does not know or whose uid
    /// differs (deleted, or recreated under the same name).
    pub fn record_write(&mut self, vm: &VirtualMachine) {
        let entry = VmEntry::from_vm(vm);
        let Some(rv) = vm.resource_version() else {
            return;
        };
        if self.vms.get(&entry.key).is_none_or(|e| e.uid != entry.uid)
            || self.rvs.get(&entry.key) == Some(&rv)
        {
            return;
        }
        self.written.insert(entry.key.clone(), rv.clone());
        self.rvs.insert(entry.key.clone(), rv);
        self.apply_vm_entry(entry);
    }

    /// Stop waiting for the watch to deliver the operator's own writes: the next watch event
    /// of each VM applies whatever it carries. Done at every resync, so a write whose event
    /// never comes (a watch that restarted past it) holds nothing back for long.
    pub fn release_writes(&mut self) {
        self.written.clear();
    }

    /// Number of own writes the watch has not delivered yet.
    pub fn unwatched_writes(&self) -> usize {
        self.written.len()
    }

    /// Same, from an already parsed entry (tests, the benchmark).
    pub fn apply_vm_entry(&mut self, entry: VmEntry) {
        if let Some(a) = self.assumed.get(&entry.key)
            && entry.status_node.as_deref() == Some(a.node.as_str())
            && entry.observed_compute_reserved() == a.compute
        {
            self.assumed.remove(&entry.key);
        }
        self.vms.insert(entry.key.clone(), entry);
    }

    /// A VM is gone.
    pub fn delete_vm(&mut self, key: &VmKey) {
        self.vms.remove(key);
        self.assumed.remove(key);
        self.rvs.remove(key);
        self.written.remove(key);
    }

    /// The VM watch restarted: replace every VM. Assumptions for VMs still present stay
    /// (a relist may predate the operator's last write).
    pub fn reset_vms<'a>(&mut self, vms: impl IntoIterator<Item = &'a VirtualMachine>) {
        self.vms.clear();
        self.rvs.clear();
        self.written.clear();
        for vm in vms {
            self.apply_vm(vm);
        }
        let vms = &self.vms;
        self.assumed.retain(|k, _| vms.contains_key(k));
    }

    /// Record a write the operator made (placement and Scheduled state), before the watch
    /// shows it.
    pub fn assume(&mut self, key: VmKey, assumed: Assumed) {
        self.assumed.insert(key, assumed);
    }

    /// Forget an assumption (the write is known to have failed).
    pub fn forget(&mut self, key: &VmKey) {
        self.assumed.remove(key);
    }

    /// The assumption for a VM, if any.
    pub fn assumed(&self, key: &VmKey) -> Option<&Assumed> {
        self.assumed.get(key)
    }

    /// The VMs with an assumption.
    pub fn assumed_keys(&self) -> Vec<VmKey> {
        self.assumed.keys().cloned().collect()
    }

    /// Number of writes not yet seen back.
    pub fn assumed_len(&self) -> usize {
        self.assumed.len()
    }

    /// Where a VM is placed and whether its compute is reserved, counting assumptions: its
    /// `status.nodeName`, never its label.
    pub fn placement(&self, vm: &VmEntry) -> Option<Assumed> {
        if let Some(a) = self.assumed.get(&vm.key) {
            return Some(a.clone());
        }
        let node = vm.status_node.clone()?;
        Some(Assumed {
            node,
            compute: vm.observed_compute_reserved(),
        })
    }

    /// A Hypervisor was added or changed.
    pub fn apply_hypervisor(&mut self, hv: &Hypervisor, now: Timestamp) {
        let h = self.hosts.entry(hv.name_any()).or_default();
        h.has_object = true;
        h.labels = hv.labels().clone();
        h.unschedulable = hv.spec.unschedulable;
        h.maintenance = ironvisor_crds::maintenance::in_maintenance(hv);
        h.allocatable = hosts::allocatable(hv);
        h.ready = hosts::ready_condition(hv).map(|(s, r)| (s.to_owned(), r.to_owned()));
        h.unhealthy = hosts::unhealthy(hv);
        h.tpm = hosts::tpm(hv);
        let beat = hv
            .status
            .as_ref()
            .and_then(|s| s.last_heartbeat_time.as_ref())
            .map(|t| t.0);
        h.beat(false, beat, now);
    }

    /// A Hypervisor is gone. Its heartbeat is kept (the Lease may still be there).
    pub fn delete_hypervisor(&mut self, name: &str) {
        if let Some(h) = self.hosts.get_mut(name) {
            *h = HostEntry {
                heartbeat: h.heartbeat,
                status_heartbeat: h.status_heartbeat,
                heartbeat_seen: h.heartbeat_seen,
                ..HostEntry::default()
            };
        }
    }

    /// The Hypervisor watch restarted.
    pub fn reset_hypervisors<'a>(
        &mut self,
        hvs: impl IntoIterator<Item = &'a Hypervisor>,
        now: Timestamp,
    ) {
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        for n in names {
            self.delete_hypervisor(&n);
        }
        for hv in hvs {
            self.apply_hypervisor(hv, now);
        }
    }

    /// A heartbeat Lease `ironvisor-agent-<node>` was seen with this renewTime.
    pub fn apply_heartbeat(&mut self, node: &str, renew: Option<Timestamp>, now: Timestamp) {
        self.hosts
            .entry(node.to_owned())
            .or_default()
            .beat(true, renew, now);
    }

    /// The hosts, for tests and benchmarks that build a cluster directly.
    pub fn hosts_mut(&mut self) -> &mut BTreeMap<String, HostEntry> {
        &mut self.hosts
    }

    /// The hosts, by name.
    pub fn hosts(&self) -> &BTreeMap<String, HostEntry> {
        &self.hosts
    }

    /// A Tenant was added or changed.
    pub fn apply_tenant(&mut self, t: &Tenant) {
        let node = TenantNode::from_tenant(t);
        self.tenants.insert(node.name.clone(), node);
        self.tenant_nets
            .insert(t.name_any(), TenantNets::from_tenant(t));
    }

    /// Same, from a parsed node.
    pub fn apply_tenant_node(&mut self, node: TenantNode) {
        self.tenants.insert(node.name.clone(), node);
    }

    /// A Tenant is gone.
    pub fn delete_tenant(&mut self, name: &str) {
        self.tenants.remove(name);
        self.tenant_nets.remove(name);
    }

    /// The Tenant watch restarted.
    pub fn reset_tenants<'a>(&mut self, ts: impl IntoIterator<Item = &'a Tenant>) {
        self.tenants.clear();
        self.tenant_nets.clear();
        for t in ts {
            self.apply_tenant(t);
        }
    }

    /// A Quota was added or changed.
    pub fn apply_quota(&mut self, q: &Quota) {
        let name = q.name_any();
        let entry = Limits::parse(&q.spec.hard)
            .map(|limits| QuotaEntry {
                name: name.clone(),
                tenant: q.spec.tenant.clone(),
                limits,
            })
            .map_err(|e| e.to_string());
        self.quotas.insert(name, entry);
    }

    /// Same, from a parsed entry.
    pub fn apply_quota_entry(&mut self, q: QuotaEntry) {
        self.quotas.insert(q.name.clone(), Ok(q));
    }

    /// A Quota is gone.
    pub fn delete_quota(&mut self, name: &str) {
        self.quotas.remove(name);
    }

    /// The Quota watch restarted.
    pub fn reset_quotas<'a>(&mut self, qs: impl IntoIterator<Item = &'a Quota>) {
        self.quotas.clear();
        for q in qs {
            self.apply_quota(q);
        }
    }

    /// Every tenant's name.
    pub fn tenant_names(&self) -> Vec<String> {
        self.tenants.keys().cloned().collect()
    }

    /// A VM by key.
    pub fn vm(&self, key: &VmKey) -> Option<&VmEntry> {
        self.vms.get(key)
    }

    /// Every VM.
    pub fn vms(&self) -> impl Iterator<Item = &VmEntry> {
        self.vms.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("valid")
    }

    fn hv(name: &str, beat: Option<i64>, ready: (&str, &str)) -> Hypervisor {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "Hypervisor",
            "metadata": {"name": name, "labels": {"zone": "z1"}},
            "spec": {},
            "status": {
                "capacity": {"vcpus": 8, "memory": "16Gi"},
                "lastHeartbeatTime": beat.map(|b| t(b).to_string()),
                "conditions": [{"type": "Ready", "status": ready.0, "reason": ready.1, "message": "",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            },
        }))
        .expect("valid Hypervisor")
    }

    #[test]
    fn only_a_moving_heartbeat_refreshes_a_host() {
        let mut ix = Index::new();
        ix.apply_heartbeat("h1", Some(t(100)), t(1000));
        assert_eq!(ix.hosts()["h1"].heartbeat_seen, Some(t(1000)));
        ix.apply_heartbeat("h1", Some(t(100)), t(1010));
        assert_eq!(
            ix.hosts()["h1"].heartbeat_seen,
            Some(t(1000)),
            "same renewTime"
        );
        ix.apply_heartbeat("h1", Some(t(110)), t(1020));
        assert_eq!(ix.hosts()["h1"].heartbeat_seen, Some(t(1020)));
    }

    #[test]
    fn the_operators_own_host_lost_mark_does_not_count_as_a_heartbeat() {
        let mut ix = Index::new();
        ix.apply_heartbeat("h1", Some(t(100)), t(1000));
        ix.apply_hypervisor(&hv("h1", Some(90), ("True", "AgentReady")), t(1001));
        let seen = ix.hosts()["h1"].heartbeat_seen;
        // A relist of the Lease (same renewTime), then the operator marks the host lost:
        // neither heartbeat has moved.
        ix.apply_heartbeat("h1", Some(t(100)), t(1050));
        ix.apply_hypervisor(&hv("h1", Some(90), ("False", "HostLost")), t(1100));
        ix.reset_hypervisors([&hv("h1", Some(90), ("False", "HostLost"))], t(1200));
        assert_eq!(ix.hosts()["h1"].heartbeat_seen, seen);
        let h = &ix.hosts()["h1"];
        assert_eq!(h.ready, Some(("False".into(), "HostLost".into())));
        assert_eq!(
            h.allocatable,
            Some(Capacity {
                vcpus: 32,
                memory: 16 << 30
            })
        );
        assert_eq!(h.labels.get("zone").map(String::as_str), Some("z1"));
    }

    #[test]
    fn a_relist_keeps_assumptions_only_for_vms_that_still_exist() {
        let vm = |name: &str| -> VirtualMachine {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
                "metadata": {"name": name, "namespace": "ns", "uid": name},
                "spec": {"memory": {"size": "1Gi"}},
            }))
            .expect("valid VM")
        };
        let mut ix = Index::new();
        ix.apply_vm(&vm("a"));
        ix.apply_vm(&vm("b"));
        let key = |n: &str| VmKey {
            namespace: "ns".into(),
            name: n.into(),
        };
        ix.assume(
            key("a"),
            Assumed {
                node: "h1".into(),
                compute: true,
            },
        );
        ix.assume(
            key("b"),
            Assumed {
                node: "h1".into(),
                compute: true,
            },
        );
        ix.reset_vms([&vm("a")]);
        assert_eq!(ix.assumed_len(), 1);
        assert!(ix.vm(&key("b")).is_none());
        // The relisted object predates the write: the assumption still places it.
        let a = ix.vm(&key("a")).expect("a").clone();
        assert_eq!(ix.placement(&a).map(|p| p.node), Some("h1".into()));
    }

    fn vm_at(rv: &str, reason: Option<&str>) -> VirtualMachine {
        let conditions: Vec<serde_json::Value> = reason
            .map(|r| {
                serde_json::json!({"type": "Scheduled", "status": "False", "reason": r,
                    "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"})
            })
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": rv},
            "spec": {"memory": {"size": "1Gi"}},
            "status": {"conditions": conditions},
        }))
        .expect("valid VM")
    }

    fn reason(ix: &Index) -> Option<String> {
        let key = VmKey {
            namespace: "ns".into(),
            name: "a".into(),
        };
        ix.vm(&key)?.scheduled.as_ref().map(|c| c.reason.clone())
    }

    #[test]
    fn watch_events_older_than_an_own_write_do_not_move_the_vm_back() {
        let mut ix = Index::new();
        ix.apply_vm(&vm_at("1", None));
        // The operator writes QuotaExceeded (rv 3) while the watch still delivers rv 2
        // (someone else's earlier change, without the operator's condition).
        ix.record_write(&vm_at("3", Some("QuotaExceeded")));
        ix.apply_vm(&vm_at("2", None));
        assert_eq!(reason(&ix).as_deref(), Some("QuotaExceeded"));
        assert_eq!(ix.unwatched_writes(), 1);
        // The watch delivers the write itself: from then on every event applies.
        ix.apply_vm(&vm_at("3", Some("QuotaExceeded")));
        assert_eq!(ix.unwatched_writes(), 0);
        ix.apply_vm(&vm_at("4", Some("Unschedulable")));
        assert_eq!(reason(&ix).as_deref(), Some("Unschedulable"));
    }

    #[test]
    fn a_write_that_changed_nothing_holds_back_no_watch_event() {
        let mut ix = Index::new();
        ix.apply_vm(&vm_at("5", Some("QuotaExceeded")));
        // A no-op apply returns the same resourceVersion and makes no watch event.
        ix.record_write(&vm_at("5", Some("QuotaExceeded")));
        assert_eq!(ix.unwatched_writes(), 0);
        ix.apply_vm(&vm_at("6", Some("Unschedulable")));
        assert_eq!(reason(&ix).as_deref(), Some("Unschedulable"));
    }

    #[test]
    fn released_writes_and_relists_let_the_watch_apply_again() {
        let mut ix = Index::new();
        ix.apply_vm(&vm_at("1", None));
        ix.record_write(&vm_at("3", Some("QuotaExceeded")));
        ix.release_writes();
        ix.apply_vm(&vm_at("7", Some("Unschedulable")));
        assert_eq!(reason(&ix).as_deref(), Some("Unschedulable"));
        ix.record_write(&vm_at("8", Some("QuotaExceeded")));
        ix.reset_vms([&vm_at("9", None)]);
        assert_eq!(ix.unwatched_writes(), 0);
        assert_eq!(reason(&ix), None);
        // A write to a VM the index does not know (deleted meanwhile) is not recorded.
        ix.delete_vm(&VmKey {
            namespace: "ns".into(),
            name: "a".into(),
        });
        ix.record_write(&vm_at("10", Some("QuotaExceeded")));
        assert!(ix.vms().next().is_none());
    }
}
