//! Clone sources as placement sees them: each VM's clone disks (by source name, in its own
//! namespace) and the snapshots they may name, with the host their layers are on.
//!
//! Pure: fed by the VM and snapshot watches. A clone is placed on its source's host (its
//! linked overlay reads the source's files for ever; a full copy reads them while it is
//! made), and waits while the source is not ready.

use std::collections::BTreeMap;

use ironvisor_crds::snapshot::{SnapshotPhase, VirtualMachineSnapshot};
use ironvisor_crds::vm::{CloneOf, VirtualMachineSpec};
use kube::ResourceExt;

use super::{Index, VmKey};
use crate::placement::CloneSource;
use crate::quota::Exceeded;

/// The source a clone disk names (in the VM's own namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloneRef {
    /// A VirtualMachineSnapshot, by name.
    Snapshot(String),
    /// A template VM, by name.
    Template(String),
}

/// The clone sources a spec names.
pub fn clone_refs(spec: &VirtualMachineSpec) -> Vec<CloneRef> {
    spec.disks
        .iter()
        .filter_map(|d| match d.clone_of()? {
            CloneOf::Snapshot { name, .. } => Some(CloneRef::Snapshot(name.to_owned())),
            CloneOf::Template { name, .. } => Some(CloneRef::Template(name.to_owned())),
        })
        .collect()
}

/// What placement needs of a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The host its layers are on.
    pub node: Option<String>,
    /// Taken and usable.
    pub ready: bool,
}

impl SnapshotEntry {
    fn from_snapshot(s: &VirtualMachineSnapshot) -> (VmKey, Self) {
        let st = s.status.clone().unwrap_or_default();
        let key = VmKey {
            namespace: s.namespace().unwrap_or_default(),
            name: s.name_any(),
        };
        let ready = st.phase == SnapshotPhase::Succeeded
            && st.ready_to_use
            && s.metadata.deletion_timestamp.is_none();
        (
            key,
            SnapshotEntry {
                node: st.node_name,
                ready,
            },
        )
    }
}

impl Index {
    /// A snapshot was added or changed.
    pub fn apply_snapshot(&mut self, s: &VirtualMachineSnapshot) {
        let (k, e) = SnapshotEntry::from_snapshot(s);
        self.snapshots.insert(k, e);
    }

    /// A snapshot is gone.
    pub fn delete_snapshot(&mut self, s: &VirtualMachineSnapshot) {
        let (k, _) = SnapshotEntry::from_snapshot(s);
        self.snapshots.remove(&k);
    }

    /// Every snapshot, after a relist.
    pub fn reset_snapshots<'a>(
        &mut self,
        ss: impl IntoIterator<Item = &'a VirtualMachineSnapshot>,
    ) {
        self.snapshots = ss.into_iter().map(SnapshotEntry::from_snapshot).collect();
    }

    /// Where the sources of the clone disks of `vm` are: one host for all of them, or not
    /// ready (a source missing, not taken, not placed, being deleted, not a template, or
    /// sources on two hosts).
    pub fn clone_source(&self, vm: &VmKey, refs: &[CloneRef]) -> CloneSource {
        let mut host: Option<&str> = None;
        for r in refs {
            let at = match r {
                CloneRef::Snapshot(name) => self
                    .snapshots
                    .get(&key(vm, name))
                    .filter(|s| s.ready)
                    .and_then(|s| s.node.as_deref()),
                CloneRef::Template(name) => self
                    .vms
                    .get(&key(vm, name))
                    .filter(|t| t.template && !t.deleting)
                    .and_then(|t| t.status_node.as_deref()),
            };
            match (at, host) {
                (None, _) => return CloneSource::NotReady,
                (Some(a), Some(h)) if a != h => return CloneSource::NotReady,
                (Some(a), _) => host = Some(a),
            }
        }
        host.map_or(CloneSource::None, |h| CloneSource::On(h.to_owned()))
    }

    /// The clone sources of every VM not placed yet, for the pass.
    pub fn clone_sources(&self) -> BTreeMap<VmKey, CloneSource> {
        self.vms
            .values()
            .filter(|v| !v.clones.is_empty() && v.status_node.is_none())
            .map(|v| (v.key.clone(), self.clone_source(&v.key, &v.clones)))
            .collect()
    }
}

fn key(vm: &VmKey, name: &str) -> VmKey {
    VmKey {
        namespace: vm.namespace.clone(),
        name: name.to_owned(),
    }
}

/// The quota refusal of a VM, saying how clone disks count when the VM has any.
pub fn quota_message(e: &Exceeded, has_clones: bool) -> String {
    let storage = e
        .resources
        .iter()
        .any(|r| r.resource == crate::units::Resource::Storage);
    if has_clones && storage {
        format!(
            "{e} (clone disks count their declared size, the most their overlay or copy can \
             grow to, as other disks do; the shared source is counted once, by its snapshot \
             or template)"
        )
    } else {
        e.to_string()
    }
}

#[cfg(test)]
#[path = "clones_tests.rs"]
mod tests;
