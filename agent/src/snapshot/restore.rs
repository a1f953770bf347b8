//! Restoring a halted VM to a snapshot: a new, empty layer on top of the snapshot's layer
//! of every disk becomes active. The old active layer is left for the tree's next step to
//! remove, and every other snapshot's layer is untouched (the chain becomes a tree).
//!
//! Never on a running VM: QEMU would keep writing to the old layer. The caller stops it first.

use super::files::layer_file;
use super::qemu_img::ensure_overlay;
use super::state::write_active;
use crate::storage::qcow2::Qcow2Error;
use std::path::Path;

/// Why a restore could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A layer file could not be made.
    #[error("cannot make the restored layer")]
    Layer(#[from] Qcow2Error),
    /// The active-layer record could not be written.
    #[error("cannot record the active layer")]
    Io(#[from] std::io::Error),
}

/// Put `new_layer` on top of `snapshot_layer` for every disk and make it active. Idempotent.
pub async fn restore_offline(
    vm_dir: &Path,
    disks: &[String],
    snapshot_layer: &str,
    new_layer: &str,
) -> Result<(), RestoreError> {
    for disk in disks {
        let base = layer_file(vm_dir, disk, snapshot_layer);
        ensure_overlay(&layer_file(vm_dir, disk, new_layer), &base).await?;
    }
    write_active(vm_dir, new_layer)?;
    Ok(())
}
