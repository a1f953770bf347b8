//! One VM as decisions see it: parsed once from the object, compact, no I/O.
//!
//! Owns where the operator's truth about a VM is read from. Placement (`status.nodeName`),
//! the admitted size (`status.admitted`) and the Scheduled condition come from the status
//! subresource, which only the control plane writes; the `ironvisor.io/node` label and
//! annotations are tenant-writable metadata and are recorded here only so the planner can see
//! that the label copy differs and rewrite it. Nothing here ever infers placement or size
//! from them.

use std::collections::BTreeSet;

use ironvisor_crds::common::{Condition, condition_status, condition_type, find_condition};
use ironvisor_crds::labels;
use ironvisor_crds::vm::{Phase, RunStrategy, VirtualMachine};
use jiff::Timestamp;
use kube::ResourceExt;

use super::net::{HostPort, VmNet, host_ports};
use super::{
    LEGACY_ADMITTED_ANNOTATION, REASON_CHANGE_NOT_ADMITTED, REASON_RESIZE_QUOTA_EXCEEDED,
    REASON_SCHEDULED_HALTED,
};
use crate::hosts;
use crate::placement::{BackupNeed, Capacity, Request};
use crate::units::{Units, vm_demand};

/// A VM's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for VmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What decisions need to know about one VM.
#[derive(Clone, Debug, PartialEq)]
pub struct VmEntry {
    /// Identity.
    pub key: VmKey,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.creationTimestamp`: the admission queue is oldest first.
    pub created: Timestamp,
    /// Being deleted: keeps counting until gone, gets no decisions.
    pub deleting: bool,
    /// Full demand, or why the spec is invalid.
    pub demand: Result<Units, String>,
    /// `spec.runStrategy`.
    pub run_strategy: RunStrategy,
    /// The placement constraints.
    pub request: Request,
    /// `evictionStrategy: Restart` with no local disks.
    pub restart_elsewhere: bool,
    /// The `ironvisor.io/node` label as observed. Only compared with the placement to keep
    /// the copy right; never a placement by itself (anyone who may edit the VM may set it).
    pub label_node: Option<String>,
    /// Whether the VM carries the `ironvisor.io/admitted` annotation of older operators (or
    /// a tenant's): read by nothing, removed by the operator.
    pub legacy_annotation: bool,
    /// `status.nodeName`: the placement.
    pub status_node: Option<String>,
    /// `status.vcpus`.
    pub status_vcpus: Option<u32>,
    /// `status.admitted`: the size the operator admitted the VM at, when recorded.
    pub admitted: Option<Units>,
    /// `status.admitted.hostPorts`: the host ports admitted on its host, when recorded.
    pub admitted_ports: Option<Vec<HostPort>>,
    /// `status.phase`.
    pub phase: Option<Phase>,
    /// `status.printableStatus`.
    pub printable: Option<String>,
    /// The Scheduled condition.
    pub scheduled: Option<Condition>,
    /// The Ready condition.
    pub ready: Option<Condition>,
    /// The Tenant condition (the operator writes it only while the namespace has none).
    pub tenant: Option<Condition>,
    /// Nodes whose agent has written this VM's status (from managedFields).
    pub agents: BTreeSet<String>,
    /// Whether the operator's field manager owns `status.phase` (from managedFields).
    pub operator_owns_phase: bool,
    /// Bridges, libvirt networks and MACs the interfaces name (network admission).
    pub net: VmNet,
    /// `spec.template`: a template never runs; clones name it.
    pub template: bool,
    /// The clone sources its disks name (placed on their host).
    pub clones: Vec<super::clones::CloneRef>,
    /// `status.operation`: the operation holding the VM's lock (a resize waits for it).
    pub operation: Option<ironvisor_crds::vm::VmOperation>,
}

impl VmEntry {
    /// Parse a VirtualMachine.
    pub fn from_vm(vm: &VirtualMachine) -> Self {
        let status = vm.status.clone().unwrap_or_default();
        let spec = &vm.spec;
        let (agents, operator_owns_phase) = status_writers(vm);
        VmEntry {
            key: VmKey {
                namespace: vm.namespace().unwrap_or_default(),
                name: vm.name_any(),
            },
            uid: vm.metadata.uid.clone().unwrap_or_default(),
            created: vm
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_default(),
            deleting: vm.metadata.deletion_timestamp.is_some(),
            demand: vm_demand(spec).map_err(|e| e.to_string()),
            run_strategy: spec.run_strategy,
            request: Request {
                namespace: vm.namespace().unwrap_or_default(),
                compute: Capacity::default(),
                node_selector: spec.node_selector.clone(),
                node_name: spec.node_name.clone(),
                anti_affinity_group: spec.anti_affinity_group.clone(),
                host_ports: host_ports(spec),
                clone_source: Default::default(),
                tpm: spec.tpm.is_some(),
                restores_from: spec
                    .disks
                    .iter()
                    .filter_map(|d| d.source.backup.as_ref().map(|b| b.name.clone()))
                    .collect(),
                backups: BackupNeed::default(),
            },
            restart_elsewhere: hosts::restart_elsewhere(spec),
            label_node: vm.labels().get(labels::NODE).cloned(),
            legacy_annotation: vm.annotations().contains_key(LEGACY_ADMITTED_ANNOTATION),
            status_node: status.node_name.clone(),
            status_vcpus: status.vcpus,
            admitted: status.admitted.as_ref().and_then(Units::from_admitted),
            admitted_ports: status
                .admitted
                .as_ref()
                .and_then(|a| a.host_ports.as_ref())
                .map(|ps| {
                    let set: BTreeSet<HostPort> = ps.iter().map(|p| (p.protocol, p.port)).collect();
                    set.into_iter().collect()
                }),
            phase: status.phase,
            printable: status.printable_status.clone(),
            scheduled: find_condition(&status.conditions, condition_type::SCHEDULED).cloned(),
            ready: find_condition(&status.conditions, condition_type::READY).cloned(),
            tenant: find_condition(&status.conditions, condition_type::TENANT).cloned(),
            agents,
            operator_owns_phase,
            net: VmNet::from_spec(spec),
            template: spec.template,
            clones: super::clones::clone_refs(spec),
            operation: status.operation.clone(),
        }
    }

    /// Whether vCPUs and memory are reserved for it, as its status says: placed
    /// (`status.nodeName`) and Scheduled=True with reason Scheduled, or a refused resize
    /// (the admitted size stays reserved). A placement with no Scheduled condition counts
    /// unless Halted (never written so by this operator; erring on counting). A VM going
    /// Halted keeps its reservation until the operator records the release, so a fast
    /// Halted→Always flip can never double-book.
    pub fn observed_compute_reserved(&self) -> bool {
        if self.status_node.is_none() {
            return false;
        }
        match &self.scheduled {
            None => self.run_strategy.counts_compute(),
            Some(c) => {
                (c.status == condition_status::TRUE && c.reason != REASON_SCHEDULED_HALTED)
                    || c.reason == REASON_RESIZE_QUOTA_EXCEEDED
                    || c.reason == REASON_CHANGE_NOT_ADMITTED
            }
        }
    }

    /// The host ports the VM holds on its host: the admitted ones when recorded, else (an
    /// unplaced VM, or one an older operator placed) its spec's.
    pub fn counted_ports(&self) -> &[HostPort] {
        self.admitted_ports
            .as_deref()
            .unwrap_or(&self.request.host_ports)
    }

    /// The size the VM counts at while placed: `status.admitted`; for a VM an older
    /// operator placed (`status.nodeName` set, no `status.admitted`: it recorded the size in
    /// an annotation, which is tenant-writable and never read) its spec with the vCPUs its
    /// status reports; `None` when unplaced or the spec is invalid.
    pub fn admitted_size(&self) -> Option<Units> {
        if let Some(a) = self.admitted {
            return Some(a);
        }
        self.status_node.as_ref()?;
        let mut d = self.demand.as_ref().ok().copied()?;
        if let Some(v) = self.status_vcpus {
            d.vcpus = i128::from(v);
        }
        Some(d)
    }
}

/// Nodes whose agent wrote the status, and whether the operator owns `status.phase`.
fn status_writers(vm: &VirtualMachine) -> (BTreeSet<String>, bool) {
    let (mut agents, mut operator_owns_phase) = (BTreeSet::new(), false);
    for mf in vm.metadata.managed_fields.iter().flatten() {
        if mf.subresource.as_deref() != Some("status") {
            continue;
        }
        let manager = mf.manager.as_deref().unwrap_or_default();
        if let Some(node) = manager.strip_prefix("ironvisor-agent/") {
            agents.insert(node.to_owned());
        } else if manager == labels::OPERATOR_MANAGER {
            let fields = mf
                .fields_v1
                .as_ref()
                .map(|f| f.0.to_string())
                .unwrap_or_default();
            operator_owns_phase = fields.contains("\"f:phase\"");
        }
    }
    (agents, operator_owns_phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> VmEntry {
        VmEntry::from_vm(&serde_json::from_value(v).expect("valid VM"))
    }

    #[test]
    fn managed_fields_tell_which_agent_wrote_the_status_and_whether_the_operator_owns_phase() {
        let e = parse(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "ns", "labels": {"ironvisor.io/node": "h1"},
                "managedFields": [
                    {"manager": "ironvisor-agent/h1", "operation": "Apply", "subresource": "status",
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:phase": {}}}},
                    {"manager": "ironvisor-operator", "operation": "Apply", "subresource": "status",
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:phase": {}, "f:nodeName": {}}}}
                ]},
            "spec": {"memory": {"size": "1Gi"}, "cpu": {"cores": 2}},
            "status": {"nodeName": "h1", "conditions": [{"type": "Scheduled", "status": "True",
                        "reason": "ScheduledHalted", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }));
        assert!(e.agents.contains("h1"));
        assert!(e.operator_owns_phase);
        assert_eq!(e.label_node.as_deref(), Some("h1"));
        assert!(
            !e.observed_compute_reserved(),
            "ScheduledHalted reserves no compute"
        );
        assert_eq!(e.demand.as_ref().map(|d| d.vcpus).ok(), Some(2));
    }

    #[test]
    fn a_label_and_an_admitted_annotation_alone_are_neither_a_placement_nor_a_size() {
        let e = parse(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "ns",
                "labels": {"ironvisor.io/node": "h1"},
                "annotations": {"ironvisor.io/admitted": "vcpus=64,memory=1073741824,storage=0"}},
            "spec": {"memory": {"size": "1Gi"}, "cpu": {"cores": 64}},
            "status": {"conditions": [{"type": "Scheduled", "status": "True", "reason": "Scheduled",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }));
        assert_eq!(e.status_node, None);
        assert!(!e.observed_compute_reserved());
        assert_eq!(e.admitted_size(), None);
        assert!(e.legacy_annotation);
    }

    #[test]
    fn the_admitted_size_comes_from_the_status_or_for_an_older_operators_vm_from_status_vcpus() {
        let vm = |status: serde_json::Value| {
            parse(serde_json::json!({
                "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
                "metadata": {"name": "a", "namespace": "ns",
                    "annotations": {"ironvisor.io/admitted": "vcpus=8,memory=1073741824,storage=0"}},
                "spec": {"memory": {"size": "2Gi"}, "cpu": {"cores": 8}},
                "status": status,
            }))
        };
        let recorded = vm(serde_json::json!({"nodeName": "h1", "vcpus": 2,
            "admitted": {"vcpus": 2, "memory": "1Gi", "storage": "0"}}));
        let a = recorded.admitted_size().expect("recorded");
        assert_eq!((a.vms, a.vcpus, a.memory), (1, 2, 1 << 30));
        // Placed by an older operator: the annotation says 8, the status says 2 vCPUs.
        let legacy = vm(serde_json::json!({"nodeName": "h1", "vcpus": 2}));
        let a = legacy.admitted_size().expect("placed");
        assert_eq!((a.vcpus, a.memory), (2, 2 << 30));
    }
}
