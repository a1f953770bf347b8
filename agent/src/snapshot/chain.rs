//! The layer tree of a VM's disks: which qcow2 layer each snapshot owns, which layer the VM
//! writes to, and what a snapshot, a restore or a delete turns the tree into.
//!
//! Pure: no files, no libvirt. Every disk of a VM has the same tree (a snapshot freezes all
//! disks at once), so the model speaks of layer ids and [`super::files`] maps an id and a
//! disk to a file. The agent rebuilds a [`Tree`] from what is on disk and in the API, asks
//! for the next [`Step`], carries it out idempotently, and asks again: a restarted agent
//! picks up from the files as they are.
//!
//! Rules, as in vSphere's snapshot tree:
//! - a snapshot freezes the active layer, takes it as its own, and puts a new empty active
//!   layer on top of it;
//! - a restore puts a new empty active layer on top of the snapshot's layer; the old active
//!   layer is thrown away, and every other snapshot stays restorable (the chain becomes a
//!   tree);
//! - a layer nobody needs any more is removed, and a layer owned by nobody with one child is
//!   merged with that child (the child's data is committed down into it, and it takes the
//!   child's place); a layer with two or more children stays until the tree allows it.
//!
//! After [`Tree::next_step`] returns `None`, every layer is owned by a snapshot, is the active
//! layer, or has at least two children: a tree of `n` snapshots has at most `2n + 1` layers,
//! so a VM's chain never grows without bound.
//!
//! A layer that linked clones (other VMs' overlays) read is **pinned**: neither it nor any
//! layer below it is ever written, merged or removed while the pin holds, since the clones'
//! overlays name that file as their backing file and read every layer beneath it.

use std::collections::{BTreeMap, BTreeSet};

/// The id of the root layer: the VM's original disk file.
pub const ROOT: &str = "base";

/// Most snapshots one VM may have: each is a qcow2 layer QEMU walks on every uncached read.
pub const MAX_SNAPSHOTS: usize = 32;

/// Why a change to the tree is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The tree on disk is not a tree (a layer names a missing parent, or a cycle).
    #[error("layer {0:?} has no path to the base layer; the disk chain is damaged")]
    Broken(String),
    /// A layer id is used twice.
    #[error("layer {0:?} exists already")]
    Exists(String),
    /// No such snapshot.
    #[error("snapshot {0:?} owns no layer of this VM")]
    UnknownSnapshot(String),
    /// The snapshot limit.
    #[error(
        "the VM has {MAX_SNAPSHOTS} snapshots, the most it may have; delete one before taking another"
    )]
    TooMany,
}

/// One qcow2 layer: what it is backed by and who needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The layer it is an overlay of; `None` for the root.
    pub parent: Option<String>,
    /// The snapshot (by uid) whose point in time this layer holds, if any.
    pub owner: Option<String>,
}

/// The layer tree of one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    layers: BTreeMap<String, Layer>,
    active: String,
    pinned: BTreeSet<String>,
}

/// One change the agent makes to the files, then reports (the tree is rebuilt after it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Delete the layer's files: nobody reads them any more.
    Remove {
        /// The layer.
        layer: String,
    },
    /// Commit `child` down into `into` (its only child); `into` then takes `child`'s owner,
    /// its children, and its place as the active layer if it was. `child` is removed after.
    Merge {
        /// The layer whose data moves down.
        child: String,
        /// Its parent, owned by nobody, which receives the data.
        into: String,
    },
}

impl Tree {
    /// A VM with no snapshot: only the root layer, which is active.
    pub fn new() -> Self {
        let mut layers = BTreeMap::new();
        layers.insert(
            ROOT.to_owned(),
            Layer {
                parent: None,
                owner: None,
            },
        );
        Self {
            layers,
            active: ROOT.to_owned(),
            pinned: BTreeSet::new(),
        }
    }

    /// A tree from what is found: every layer with its parent and owner, and the active one.
    /// Refused unless every layer reaches the root and the active layer exists.
    pub fn from_layers(layers: BTreeMap<String, Layer>, active: &str) -> Result<Self, ChainError> {
        let tree = Self {
            layers,
            active: active.to_owned(),
            pinned: BTreeSet::new(),
        };
        if !tree.layers.contains_key(active) {
            return Err(ChainError::Broken(active.to_owned()));
        }
        for id in tree.layers.keys() {
            tree.check_reaches_root(id)?;
        }
        Ok(tree)
    }

    fn check_reaches_root(&self, id: &str) -> Result<(), ChainError> {
        let mut at = id;
        for _ in 0..=self.layers.len() {
            match self.layers.get(at) {
                None => return Err(ChainError::Broken(id.to_owned())),
                Some(Layer { parent: None, .. }) if at == ROOT => return Ok(()),
                Some(Layer { parent: None, .. }) => return Err(ChainError::Broken(id.to_owned())),
                Some(Layer {
                    parent: Some(p), ..
                }) => at = p,
            }
        }
        Err(ChainError::Broken(id.to_owned()))
    }

    /// Pin `layer`: linked clones read it (and so every layer below it). Pinning a layer
    /// that is not in the tree changes nothing.
    pub fn pin(&mut self, layer: &str) {
        if self.layers.contains_key(layer) {
            self.pinned.insert(layer.to_owned());
        }
    }

    /// Whether `layer` is pinned or lies below a pinned layer: it is never written or removed.
    pub fn is_frozen(&self, layer: &str) -> bool {
        self.pinned
            .iter()
            .any(|p| self.chain(p).iter().any(|l| l == layer))
    }

    /// The layer the VM writes to.
    pub fn active(&self) -> &str {
        &self.active
    }

    /// Every layer by id.
    pub fn layers(&self) -> &BTreeMap<String, Layer> {
        &self.layers
    }

    /// The layers from `id` down to the root, `id` first (what QEMU opens for it).
    pub fn chain(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = Some(id.to_owned());
        while let Some(id) = at {
            at = self.layers.get(&id).and_then(|l| l.parent.clone());
            out.push(id);
        }
        out
    }

    /// The layers whose parent is `id`.
    pub fn children(&self, id: &str) -> Vec<String> {
        self.layers
            .iter()
            .filter(|(_, l)| l.parent.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The layer a snapshot owns.
    pub fn layer_of(&self, snapshot: &str) -> Option<&str> {
        self.layers
            .iter()
            .find(|(_, l)| l.owner.as_deref() == Some(snapshot))
            .map(|(k, _)| k.as_str())
    }

    /// The snapshots with a layer in this tree.
    pub fn snapshots(&self) -> BTreeSet<String> {
        self.layers
            .values()
            .filter_map(|l| l.owner.clone())
            .collect()
    }

    /// Take a snapshot: the active layer becomes `snapshot`'s, and `new_active` (an empty
    /// overlay of it) becomes active. Taking the same snapshot again changes nothing.
    pub fn snapshot(&mut self, snapshot: &str, new_active: &str) -> Result<(), ChainError> {
        if self.layer_of(snapshot).is_some() {
            return Ok(());
        }
        if self.snapshots().len() >= MAX_SNAPSHOTS {
            return Err(ChainError::TooMany);
        }
        if self.layers.contains_key(new_active) {
            return Err(ChainError::Exists(new_active.to_owned()));
        }
        let frozen = self.active.clone();
        if let Some(l) = self.layers.get_mut(&frozen) {
            l.owner = Some(snapshot.to_owned());
        }
        self.add_active(new_active, &frozen);
        Ok(())
    }

    /// Restore to `snapshot`: `new_active`, an empty overlay of its layer, becomes active.
    /// The old active layer is left for [`Tree::next_step`] to remove.
    pub fn restore(&mut self, snapshot: &str, new_active: &str) -> Result<(), ChainError> {
        let base = self
            .layer_of(snapshot)
            .ok_or_else(|| ChainError::UnknownSnapshot(snapshot.to_owned()))?
            .to_owned();
        if self.active == new_active {
            return Ok(());
        }
        if self.layers.contains_key(new_active) {
            return Err(ChainError::Exists(new_active.to_owned()));
        }
        self.add_active(new_active, &base);
        Ok(())
    }

    fn add_active(&mut self, id: &str, parent: &str) {
        self.layers.insert(
            id.to_owned(),
            Layer {
                parent: Some(parent.to_owned()),
                owner: None,
            },
        );
        self.active = id.to_owned();
    }

    /// Give up a snapshot: its layer is owned by nobody (and merged or removed by
    /// [`Tree::next_step`] where the tree allows). Forgetting an unknown snapshot is a no-op.
    pub fn forget(&mut self, snapshot: &str) {
        for l in self.layers.values_mut() {
            if l.owner.as_deref() == Some(snapshot) {
                l.owner = None;
            }
        }
    }

    /// The next change that makes the tree smaller, or `None` when every layer is needed.
    /// Removals come first (they cost nothing), then merges, deepest first. Frozen layers
    /// (pinned by clones, or below a pinned one) are never touched.
    pub fn next_step(&self) -> Option<Step> {
        let idle =
            |id: &str, l: &Layer| l.owner.is_none() && id != self.active && !self.is_frozen(id);
        let removable = self
            .layers
            .iter()
            .find(|(id, l)| idle(id, l) && id.as_str() != ROOT && self.children(id).is_empty());
        if let Some((id, _)) = removable {
            return Some(Step::Remove { layer: id.clone() });
        }
        self.layers
            .iter()
            .filter(|(id, l)| idle(id, l))
            .filter_map(|(id, _)| match self.children(id).as_slice() {
                [child] => Some((self.chain(id).len(), id.clone(), child.clone())),
                _ => None,
            })
            .max()
            .map(|(_, into, child)| Step::Merge { child, into })
    }

    /// Record that a step was carried out.
    pub fn apply(&mut self, step: &Step) {
        match step {
            Step::Remove { layer } => {
                self.layers.remove(layer);
            }
            Step::Merge { child, into } => {
                let Some(gone) = self.layers.remove(child) else {
                    return;
                };
                if let Some(l) = self.layers.get_mut(into) {
                    l.owner = gone.owner;
                }
                for l in self.layers.values_mut() {
                    if l.parent.as_deref() == Some(child.as_str()) {
                        l.parent = Some(into.clone());
                    }
                }
                if self.active == *child {
                    self.active = into.clone();
                }
            }
        }
    }

    /// Whether `step` touches a layer QEMU has open while the VM runs (the active layer's
    /// chain): such a merge must go through libvirt's block commit, not `qemu-img`.
    pub fn is_online(&self, step: &Step) -> bool {
        let running = self.chain(&self.active);
        match step {
            Step::Remove { layer } => running.contains(layer),
            Step::Merge { child, into } => running.contains(child) || running.contains(into),
        }
    }

    /// Apply every step until none is left; returns them in order.
    pub fn settle(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        while let Some(step) = self.next_step() {
            self.apply(&step);
            steps.push(step);
        }
        steps
    }
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
