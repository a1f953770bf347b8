//! A VM that was a template moves off the layer its linked clones read before it runs again.
//!
//! A template's active layer is the frozen base of its linked clones (pinned, see
//! [`super::pins`]). Set back to `template: false` and started, its QEMU would write into
//! that layer under the clones' feet. So before the domain is defined or started, the VM
//! moves to a new, empty active layer on top of the pinned one, as an offline snapshot does
//! (but no snapshot owns the frozen layer: the pins keep it). The clones go on reading what
//! they were made from.
//!
//! Idempotent: the new layer's id is derived from the frozen layer's id, so an agent killed
//! half-way finds the layer it made and records it as active instead of making another.
//! This module never writes, merges or removes a pinned layer.

use super::found::{FoundError, read_tree};
use super::take::{Request, TakeError, take_offline};
use ironvisor_crds::snapshot::FreezePolicy;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// Why the VM could not move off its clones' base.
#[derive(Debug, thiserror::Error)]
pub enum UnfreezeError {
    /// The pins could not be read.
    #[error("cannot read which layers linked clones read")]
    Pins(#[from] std::io::Error),
    /// The layer tree could not be read.
    #[error(transparent)]
    Found(#[from] FoundError),
    /// The new layer could not be made or recorded.
    #[error("cannot put a new layer on top of the clones' base")]
    Take(#[from] TakeError),
}

/// The id of the layer a VM moves to off the frozen layer `frozen` ("t-" and 16 hex digits
/// of the frozen id's SHA-256: a plain name whatever `frozen` is, and the same on a retry).
pub fn layer_above(frozen: &str) -> String {
    let digest = Sha256::digest(frozen.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("t-{hex}")
}

/// When linked clones read the active layer of the (halted) VM in `vm_dir`, put a new empty
/// layer on top of it for every disk in `disks` and record it as active. Returns the frozen
/// layer and the new one when it moved, `None` when the active layer is free (or the VM
/// has no directory or disks yet).
pub async fn move_off_pinned(
    state_dir: &Path,
    vm_dir: &Path,
    disks: &[String],
) -> Result<Option<(String, String)>, UnfreezeError> {
    let Some(first) = disks.first() else {
        return Ok(None);
    };
    if !tokio::fs::try_exists(vm_dir).await? {
        return Ok(None);
    }
    let pins = super::pins::live_pins(state_dir, vm_dir).await?;
    if pins.is_empty() {
        return Ok(None);
    }
    let mut tree = read_tree(vm_dir, first, &BTreeMap::new()).await?;
    for pin in &pins {
        tree.pin(&pin.layer);
    }
    let active = tree.active().to_owned();
    if !tree.is_frozen(&active) {
        return Ok(None);
    }
    let new_layer = layer_above(&active);
    take_offline(&Request {
        vm_dir,
        disks,
        active: &active,
        new_layer: &new_layer,
        freeze: FreezePolicy::Never,
    })
    .await?;
    Ok(Some((active, new_layer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::chain::ROOT;
    use crate::snapshot::files::{layer_file, parse_layer_file};
    use crate::snapshot::pins::write_pin;
    use crate::snapshot::state::read_active;
    use crate::storage::layout;
    use crate::storage::qcow2::ensure_blank;

    fn sum(f: &Path) -> Vec<u8> {
        Sha256::digest(std::fs::read(f).unwrap()).to_vec()
    }

    /// A template's directory with two disks on the root layer and a live clone `c` whose
    /// pin names the root layer.
    async fn template_with_a_clone(state: &Path) -> std::path::PathBuf {
        let tpl = layout::vm_dir(state, "tpl-uid").unwrap();
        std::fs::create_dir_all(&tpl).unwrap();
        for d in ["root", "data"] {
            ensure_blank(&layer_file(&tpl, d, ROOT), 1 << 20)
                .await
                .unwrap();
        }
        std::fs::create_dir_all(layout::vm_dir(state, "c").unwrap()).unwrap();
        write_pin(&tpl, "c", "data", ROOT, false).await.unwrap();
        tpl
    }

    #[tokio::test]
    async fn a_former_template_moves_every_disk_onto_a_new_layer_and_the_base_is_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path();
        let tpl = template_with_a_clone(state).await;
        let disks = vec!["root".to_owned(), "data".to_owned()];
        let before: Vec<Vec<u8>> = disks
            .iter()
            .map(|d| sum(&layer_file(&tpl, d, ROOT)))
            .collect();
        let moved = move_off_pinned(state, &tpl, &disks).await.unwrap();
        let new = layer_above(ROOT);
        assert_eq!(moved, Some((ROOT.to_owned(), new.clone())));
        assert_eq!(read_active(&tpl), new);
        for (d, was) in disks.iter().zip(&before) {
            let top = layer_file(&tpl, d, &new);
            let header = crate::storage::qcow2::info(&top).await.unwrap();
            assert_eq!(
                header.backing_filename.as_deref(),
                layer_file(&tpl, d, ROOT).to_str()
            );
            assert_eq!(&sum(&layer_file(&tpl, d, ROOT)), was, "{d}'s base changed");
        }
        // Done once: the new layer is not pinned, so nothing moves again.
        assert_eq!(move_off_pinned(state, &tpl, &disks).await.unwrap(), None);
        assert_eq!(read_active(&tpl), new);
    }

    #[tokio::test]
    async fn a_vm_without_live_clones_stays_on_its_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path();
        let tpl = template_with_a_clone(state).await;
        // The clone is gone: its pin is stale.
        std::fs::remove_dir_all(layout::vm_dir(state, "c").unwrap()).unwrap();
        let disks = vec!["root".to_owned(), "data".to_owned()];
        assert_eq!(move_off_pinned(state, &tpl, &disks).await.unwrap(), None);
        assert_eq!(read_active(&tpl), ROOT);
        // No directory yet, or no disks: nothing to do.
        let none = layout::vm_dir(state, "none").unwrap();
        assert_eq!(move_off_pinned(state, &none, &disks).await.unwrap(), None);
        assert_eq!(move_off_pinned(state, &tpl, &[]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_move_cut_short_before_the_record_finishes_with_the_same_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path();
        let tpl = template_with_a_clone(state).await;
        let new = layer_above(ROOT);
        // A crash after the first overlay was made, before the active layer was recorded.
        crate::snapshot::qemu_img::ensure_overlay(
            &layer_file(&tpl, "root", &new),
            &layer_file(&tpl, "root", ROOT),
        )
        .await
        .unwrap();
        let disks = vec!["root".to_owned(), "data".to_owned()];
        let moved = move_off_pinned(state, &tpl, &disks).await.unwrap();
        assert_eq!(moved, Some((ROOT.to_owned(), new.clone())));
        let layers: Vec<String> = std::fs::read_dir(&tpl)
            .unwrap()
            .filter_map(|e| parse_layer_file(&e.unwrap().file_name().to_string_lossy()))
            .map(|(d, l)| format!("{d}/{l}"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            layers,
            [
                format!("data/{ROOT}"),
                format!("data/{new}"),
                format!("root/{ROOT}"),
                format!("root/{new}")
            ]
        );
    }

    #[test]
    fn the_new_layer_id_is_a_plain_stable_name() {
        let id = layer_above("s-6c1f0a1e-1111-4000-8000-000000000001");
        assert_eq!(id, layer_above("s-6c1f0a1e-1111-4000-8000-000000000001"));
        assert_ne!(id, layer_above(ROOT));
        assert_eq!(id.len(), 18);
        assert!(parse_layer_file(&format!("disk-d.{id}.qcow2")).is_some());
    }
}
