//! The layer tree as it is on the host: the layer files of a VM directory, each with the
//! backing file its qcow2 header names, plus the owners the API knows and the active layer
//! the agent recorded. Level-triggered: rebuilt from scratch whenever it is needed.

use super::chain::{Layer, ROOT, Tree};
use super::files::parse_layer_file;
use super::state::read_active;
use crate::storage::qcow2::info;
use std::collections::BTreeMap;
use std::path::Path;

/// Why the tree could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FoundError {
    /// The VM directory could not be listed.
    #[error("cannot list the VM directory")]
    Io(#[from] std::io::Error),
    /// A layer's header could not be read.
    #[error("cannot read layer {0}")]
    Header(String, #[source] crate::storage::qcow2::Qcow2Error),
    /// The files do not make a tree.
    #[error(transparent)]
    Chain(#[from] super::chain::ChainError),
}

/// The tree of `disk`'s layers in `vm_dir` (every disk of a VM has the same tree), with
/// `owners` (layer id → snapshot uid) from the API.
pub async fn read_tree(
    vm_dir: &Path,
    disk: &str,
    owners: &BTreeMap<String, String>,
) -> Result<Tree, FoundError> {
    let mut layers = BTreeMap::new();
    let mut dir = tokio::fs::read_dir(vm_dir).await?;
    while let Some(entry) = dir.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((d, id)) = parse_layer_file(&name) else {
            continue;
        };
        if d != disk {
            continue;
        }
        let parent = if id == ROOT {
            None
        } else {
            let header = info(&entry.path())
                .await
                .map_err(|e| FoundError::Header(id.clone(), e))?;
            header
                .backing_filename
                .as_deref()
                .and_then(|b| Path::new(b).file_name())
                .and_then(|f| parse_layer_file(&f.to_string_lossy()))
                .map(|(_, parent)| parent)
        };
        let owner = owners.get(&id).cloned();
        layers.insert(id, Layer { parent, owner });
    }
    Ok(Tree::from_layers(layers, &read_active(vm_dir))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::files::layer_file;
    use crate::snapshot::qemu_img::ensure_overlay;
    use crate::snapshot::state::write_active;

    #[tokio::test]
    async fn the_tree_is_read_back_from_the_layer_files_and_their_headers() {
        let dir = tempfile::tempdir().unwrap();
        let vm = dir.path();
        crate::storage::qcow2::ensure_blank(&layer_file(vm, "data", ROOT), 1 << 20)
            .await
            .unwrap();
        for (id, parent) in [("s-1", ROOT), ("s-2", "s-1"), ("r-3", ROOT)] {
            ensure_overlay(&layer_file(vm, "data", id), &layer_file(vm, "data", parent))
                .await
                .unwrap();
        }
        write_active(vm, "r-3").unwrap();
        std::fs::write(vm.join("seed.iso"), b"not a layer").unwrap();
        let owners = BTreeMap::from([
            (ROOT.to_owned(), "snap-a".to_owned()),
            ("s-1".to_owned(), "snap-b".to_owned()),
        ]);
        let mut t = read_tree(vm, "data", &owners).await.unwrap();
        assert_eq!(t.active(), "r-3");
        assert_eq!(t.chain("s-2"), ["s-2", "s-1", ROOT]);
        assert_eq!(t.layer_of("snap-b"), Some("s-1"));
        // s-2 (the old active layer before a restore) is nobody's: the first step removes it.
        assert_eq!(
            t.settle(),
            [crate::snapshot::chain::Step::Remove {
                layer: "s-2".into()
            }]
        );
    }

    #[tokio::test]
    async fn a_layer_whose_backing_file_is_missing_makes_no_tree() {
        let dir = tempfile::tempdir().unwrap();
        let vm = dir.path();
        let base = layer_file(vm, "data", ROOT);
        crate::storage::qcow2::ensure_blank(&base, 1 << 20)
            .await
            .unwrap();
        ensure_overlay(&layer_file(vm, "data", "s-1"), &base)
            .await
            .unwrap();
        std::fs::rename(&base, vm.join("elsewhere.qcow2")).unwrap();
        assert!(read_tree(vm, "data", &BTreeMap::new()).await.is_err());
    }
}
