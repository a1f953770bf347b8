//! Clone sources: a disk whose initial content is a snapshot's disk or a template VM's disk,
//! either as a linked clone (a qcow2 overlay on the frozen, shared base) or a full copy.
//!
//! A clone names its source by name only, in its own namespace: never a path, never another
//! namespace. The agent of the source's host resolves the name to a layer file itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a clone's disk is made from its source.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CloneMode {
    /// A qcow2 overlay on the source layer, which stays frozen and shared while any clone
    /// uses it (the source's snapshot or template VM cannot go meanwhile). Made in
    /// milliseconds; the clone must run on the source's host.
    #[default]
    Linked,
    /// A standalone copy of the source's content (`qemu-img convert`): nothing is shared
    /// once it is made. Takes as long as copying the data.
    Full,
}

/// A disk made from one disk of a `VirtualMachineSnapshot` in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotCloneSource {
    /// Name of the snapshot, in the clone's namespace. It must be ready (phase Succeeded).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The disk of the snapshot's VM to start from; defaults to the disk of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub disk: Option<String>,
    /// Linked (an overlay on the snapshot's frozen layer, the default) or Full (a copy).
    #[serde(default)]
    pub mode: CloneMode,
}

/// A disk made from one disk of a template VM (`spec.template: true`) in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmCloneSource {
    /// Name of the template VM, in the clone's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The template's disk to start from; defaults to the disk of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub disk: Option<String>,
    /// Linked (an overlay on the template's frozen disk, the default) or Full (a copy).
    #[serde(default)]
    pub mode: CloneMode,
}

/// Where a clone disk comes from, resolved from either kind of source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloneOf<'a> {
    /// A snapshot, by name.
    Snapshot {
        /// Snapshot name.
        name: &'a str,
        /// The source disk's name.
        disk: &'a str,
        /// Linked or full.
        mode: CloneMode,
    },
    /// A template VM, by name.
    Template {
        /// VM name.
        name: &'a str,
        /// The source disk's name.
        disk: &'a str,
        /// Linked or full.
        mode: CloneMode,
    },
}

impl CloneOf<'_> {
    /// Linked or full.
    pub fn mode(&self) -> CloneMode {
        match self {
            CloneOf::Snapshot { mode, .. } | CloneOf::Template { mode, .. } => *mode,
        }
    }
}

impl super::Disk {
    /// The clone source of this disk, if it is a clone.
    pub fn clone_of(&self) -> Option<CloneOf<'_>> {
        if let Some(s) = &self.source.snapshot {
            return Some(CloneOf::Snapshot {
                name: &s.name,
                disk: s.disk.as_deref().unwrap_or(&self.name),
                mode: s.mode,
            });
        }
        self.source.vm.as_ref().map(|v| CloneOf::Template {
            name: &v.name,
            disk: v.disk.as_deref().unwrap_or(&self.name),
            mode: v.mode,
        })
    }
}

impl super::VirtualMachineSpec {
    /// Whether any disk is a linked clone (it must run where its base is).
    pub fn has_linked_clone(&self) -> bool {
        self.disks
            .iter()
            .filter_map(super::Disk::clone_of)
            .any(|c| c.mode() == CloneMode::Linked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(source: serde_json::Value) -> super::super::Disk {
        serde_json::from_value(serde_json::json!({"name": "root", "size": "1Gi", "source": source}))
            .unwrap()
    }

    #[test]
    fn a_clone_source_defaults_to_a_linked_clone_of_the_disk_of_the_same_name() {
        let d = disk(serde_json::json!({"snapshot": {"name": "gold"}}));
        assert_eq!(
            d.clone_of(),
            Some(CloneOf::Snapshot {
                name: "gold",
                disk: "root",
                mode: CloneMode::Linked
            })
        );
        let d = disk(serde_json::json!({"vm": {"name": "tpl", "disk": "os", "mode": "Full"}}));
        assert_eq!(
            d.clone_of(),
            Some(CloneOf::Template {
                name: "tpl",
                disk: "os",
                mode: CloneMode::Full
            })
        );
        assert_eq!(disk(serde_json::json!({"blank": {}})).clone_of(), None);
    }

    #[test]
    fn only_linked_clones_tie_a_vm_to_its_base() {
        let spec = |mode: &str| -> super::super::VirtualMachineSpec {
            serde_json::from_value(serde_json::json!({
                "memory": {"size": "64Mi"},
                "disks": [{"name": "a", "size": "1Gi", "source": {"snapshot": {"name": "s", "mode": mode}}}]
            }))
            .unwrap()
        };
        assert!(spec("Linked").has_linked_clone());
        assert!(!spec("Full").has_linked_clone());
    }
}
