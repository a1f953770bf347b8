//! Which layers of a VM directory linked clones read: a pin per clone disk, kept in the
//! base VM's directory (`clones/<clone uid>.<disk>`, holding the layer id).
//!
//! A pin holds while the clone's own directory exists: the clone's overlay names the pinned
//! layer's file as its backing file, so that layer and every layer below it must never be
//! written, merged or removed, and the base VM's directory must not go. The clone's
//! directory is made before its pin and removed when the clone is deleted, so a pin whose
//! clone directory is gone is stale and is dropped here; nothing else ever removes a pin of
//! a live clone. A full copy pins its source only while copying (`.copy` pins).

use crate::storage::layout;
use std::path::{Path, PathBuf};

/// Sub-directory of a VM directory holding the pins of its clones.
pub const PINS_DIR: &str = "clones";

/// One live pin.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pin {
    /// The uid of the clone VM.
    pub clone_uid: String,
    /// The layer of the base VM it reads.
    pub layer: String,
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 80
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The pin file of `clone_uid`'s disk `disk` in `base_dir`; `copy` for a full copy's.
pub fn pin_file(base_dir: &Path, clone_uid: &str, disk: &str, copy: bool) -> PathBuf {
    let suffix = if copy { ".copy" } else { "" };
    base_dir
        .join(PINS_DIR)
        .join(format!("{clone_uid}.{disk}{suffix}"))
}

/// Record that `clone_uid`'s disk `disk` reads `layer` of the VM in `base_dir`. Written
/// (and synced) before the clone's overlay is made.
pub async fn write_pin(
    base_dir: &Path,
    clone_uid: &str,
    disk: &str,
    layer: &str,
    copy: bool,
) -> std::io::Result<()> {
    let dir = base_dir.join(PINS_DIR);
    tokio::fs::create_dir_all(&dir).await?;
    let file = pin_file(base_dir, clone_uid, disk, copy);
    let tmp = dir.join(format!(".{clone_uid}.{disk}.tmp"));
    tokio::fs::write(&tmp, format!("{layer}\n")).await?;
    tokio::fs::File::open(&tmp).await?.sync_all().await?;
    tokio::fs::rename(&tmp, &file).await
}

/// Drop a pin (a full copy's, once the copy is made).
pub async fn drop_pin(
    base_dir: &Path,
    clone_uid: &str,
    disk: &str,
    copy: bool,
) -> std::io::Result<()> {
    match tokio::fs::remove_file(pin_file(base_dir, clone_uid, disk, copy)).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The live pins on the VM in `base_dir` (a clone whose directory exists under
/// `state_dir`); stale pins are removed on the way.
pub async fn live_pins(state_dir: &Path, base_dir: &Path) -> std::io::Result<Vec<Pin>> {
    let mut out = Vec::new();
    let mut rd = match tokio::fs::read_dir(base_dir.join(PINS_DIR)).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    while let Some(e) = rd.next_entry().await? {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Some((clone_uid, _)) = name.split_once('.') else {
            continue;
        };
        let Some(clone_dir) = layout::vm_dir(state_dir, clone_uid) else {
            continue;
        };
        if !tokio::fs::try_exists(&clone_dir).await? {
            // The clone is gone: its pin no longer holds anything.
            let _ = tokio::fs::remove_file(e.path()).await;
            continue;
        }
        let layer = tokio::fs::read_to_string(e.path()).await?;
        let layer = layer.trim();
        if is_label(layer) {
            out.push(Pin {
                clone_uid: clone_uid.to_owned(),
                layer: layer.to_owned(),
            });
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Why a VM directory must stay: the clones that read it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the disks of this VM are the base of {} linked clone(s) (VM uids {}); it is kept until \
     they are deleted (or re-created as full copies)",
    .0.len(),
    .0.join(", ")
)]
pub struct BaseInUse(pub Vec<String>);

/// Refuse when linked clones read the VM in `base_dir`.
pub async fn ensure_unused(state_dir: &Path, base_dir: &Path) -> std::io::Result<()> {
    let mut users: Vec<String> = live_pins(state_dir, base_dir)
        .await?
        .into_iter()
        .map(|p| p.clone_uid)
        .collect();
    users.dedup();
    if users.is_empty() {
        Ok(())
    } else {
        Err(std::io::Error::other(BaseInUse(users)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pin_holds_while_its_clone_directory_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path();
        let base = layout::vm_dir(state, "base-uid").unwrap();
        let clone = layout::vm_dir(state, "clone-uid").unwrap();
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&clone).unwrap();
        assert!(ensure_unused(state, &base).await.is_ok());
        write_pin(&base, "clone-uid", "root", "s-1", false)
            .await
            .unwrap();
        assert_eq!(
            live_pins(state, &base).await.unwrap(),
            [Pin {
                clone_uid: "clone-uid".into(),
                layer: "s-1".into()
            }]
        );
        let err = ensure_unused(state, &base).await.unwrap_err();
        assert!(err.to_string().contains("1 linked clone(s)"), "{err}");
        std::fs::remove_dir_all(&clone).unwrap();
        assert!(live_pins(state, &base).await.unwrap().is_empty());
        assert!(!pin_file(&base, "clone-uid", "root", false).exists());
        assert!(ensure_unused(state, &base).await.is_ok());
    }

    #[tokio::test]
    async fn hostile_pin_files_pin_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path();
        let base = layout::vm_dir(state, "b").unwrap();
        std::fs::create_dir_all(base.join(PINS_DIR)).unwrap();
        std::fs::create_dir_all(state.join("vms/c")).unwrap();
        std::fs::write(base.join(PINS_DIR).join("c.root"), "../../etc\n").unwrap();
        std::fs::write(base.join(PINS_DIR).join("...root"), "s-1\n").unwrap();
        assert!(live_pins(state, &base).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_copy_pin_is_dropped_once_the_copy_is_made() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path();
        let base = layout::vm_dir(state, "b").unwrap();
        std::fs::create_dir_all(state.join("vms/c")).unwrap();
        write_pin(&base, "c", "root", "base", true).await.unwrap();
        assert_eq!(live_pins(state, &base).await.unwrap().len(), 1);
        drop_pin(&base, "c", "root", true).await.unwrap();
        assert!(live_pins(state, &base).await.unwrap().is_empty());
    }
}
